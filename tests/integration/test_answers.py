"""Answers we could not read before: the gateway's manual's unified completed format, the upstream named
in later queries, and the extras providers make beside a clip (covers, watermarked copies)."""

from __future__ import annotations

import hashlib

from tests.integration.conftest import Stack
from tests.integration.test_kinds import post


def test_a_gateway_answering_in_the_unified_format_is_archived_with_its_cover(stack: Stack) -> None:
    # Given gateway answering finished tasks in the gateway's manual's unified format, its callbacks lost
    stack.emulator.set_faults("gateway", unified_answers=True, drop_callbacks=True)
    response = post(stack, "motion_control")
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    stack.sandbox.deliver_submissions()

    # When the sweeper polls after the task finished, and archive confirms
    stack.clock.advance(60)
    stack.sandbox.sweep()
    stack.sandbox.drain_archive()

    # Then the job is archived from data[]: the clip, and its cover as an extra output
    job = stack.job(job_id)
    assert (job["status"], job["provider"]) == ("ARCHIVED", "gateway")
    assert [o["role"] for o in job["outputs"]] == ["video", "cover"]
    video, cover = job["outputs"]
    assert video["duration_s"] is not None and cover["content_type"] == "image/png"
    stored = stack.s3.get_object(Bucket=stack.bucket, Key=cover["key"])["Body"].read()
    assert hashlib.sha256(stored).hexdigest() == cover["sha256"] and cover["key"].endswith(".png")
    # billed on usage.duration_seconds, the provider's own figure
    assert job["cost"]["billed_source"] == "provider"
    # And the upstream the unified answer named is passed as `provider` in later queries
    assert job["upstream_provider"] == "可灵AI"
    queries = [
        body
        for dialect, method, path, body in stack.emulator.requests
        if dialect == "gateway" and method == "GET" and path.startswith("/v1/videos/")
    ]
    assert queries[0] is None and queries[-1] == {"provider": "可灵AI"}


def test_kling_watermarked_copy_is_kept_beside_the_clip(stack: Stack) -> None:
    response = post(stack, "motion_control", provider="kling")
    job_id = response.json()["job_id"]
    stack.sandbox.deliver_submissions()
    stack.finish_at_provider()
    stack.sandbox.drain_archive()

    job = stack.job(job_id)
    assert job["status"] == "ARCHIVED"
    assert [(o["role"], o["key"].rsplit("/", 1)[-1]) for o in job["outputs"]] == [
        ("video", "output-1.mp4"),
        ("watermarked", "output-1-watermarked.mp4"),
    ]


def test_an_extra_that_cannot_be_fetched_never_holds_up_the_clip(stack: Stack) -> None:
    # Given covers served from a host outside gateway's download allowlist
    stack.emulator.set_faults("gateway", unified_answers=True, extra_host="localhost")
    response = post(stack, "motion_control")
    job_id = response.json()["job_id"]
    stack.sandbox.deliver_submissions()

    # When the task finishes and archive runs
    stack.finish_at_provider()
    stack.sandbox.drain_archive()

    # Then the paid clip is archived; the cover that may not be fetched is left out
    job = stack.job(job_id)
    assert job["status"] == "ARCHIVED"
    assert [o["role"] for o in job["outputs"]] == ["video"]


def test_a_unified_callback_sends_the_job_to_archive_which_asks_the_gateway(stack: Stack) -> None:
    # Given gateway answering and calling back in the unified format (no gateway task id in it)
    stack.emulator.set_faults("gateway", unified_answers=True)
    response = post(stack, "motion_control")
    job_id = response.json()["job_id"]
    stack.sandbox.deliver_submissions()

    # When its completion callback arrives (no sweep runs)
    stack.finish_at_provider()
    stack.sandbox.drain_archive()

    # Then archive asked the gateway and the job is archived
    assert stack.job(job_id)["status"] == "ARCHIVED"
