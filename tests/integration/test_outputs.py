"""Outputs are what they claim: a download that is not a video is never ARCHIVED (retried, then
FAILED OUTPUT_INVALID, settled, its bytes under quarantine/, counted for the alarm), and a cover
is stored as the image type its bytes prove, or dropped."""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

import httpx
import pytest

from klingflow.flows import archive as archiving
from klingflow.infra.outcomemetrics import OutcomeMetrics
from klingflow.jobs import endings
from klingflow.jobs.store import JobStore
from klingflow_dev.emulator.core import HTML_PAGE
from tests.fixtures.prices import job_usd
from tests.integration.conftest import Stack

ARCHIVE_STALL_S = 30  # the sandbox's: how soon the sweeper brings back a copy that did not finish


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Every outcome the handlers count, by outcome (the sandbox publishes no metrics)."""
    counts: Counter[str] = Counter()
    count = OutcomeMetrics.count

    def counting(self: OutcomeMetrics, outcome: str, value: int = 1) -> None:
        counts[str(outcome)] += value
        count(self, outcome, value)

    monkeypatch.setattr(OutcomeMetrics, "count", counting)
    return counts


def _keys(stack: Stack, prefix: str) -> list[str]:
    listed = stack.s3.list_objects_v2(Bucket=stack.bucket, Prefix=prefix)
    return sorted(entry["Key"] for entry in listed.get("Contents", []))


def _archive_again(stack: Stack) -> None:
    stack.clock.advance(ARCHIVE_STALL_S + 1)
    stack.sandbox.sweep()
    stack.sandbox.drain_archive()


def test_an_html_output_is_retried_then_fails_output_invalid_settled_and_quarantined(
    stack: Stack, counted: Counter[str]
) -> None:
    # Given a provider whose every download of the clip is an HTML page
    stack.emulator.set_faults("gateway", output_body="html")
    job_id = stack.post_job("incoming/html")["job_id"]
    stack.finish_at_provider()

    # When archive copies it: the page is not a video, so the job waits to be tried again
    stack.sandbox.drain_archive()
    waiting = stack.job(job_id)
    assert waiting["status"] == "SUCCEEDED"
    assert waiting["archive_error"]["code"] == "OUTPUT_INVALID"
    assert _keys(stack, f"outputs/{job_id}/") == []
    assert _keys(stack, f"quarantine/{job_id}/") == [f"quarantine/{job_id}/download-1/output-1.mp4"]

    # And after the retries the sweeper brings, it fails
    _archive_again(stack)
    assert stack.job(job_id)["status"] == "SUCCEEDED"
    _archive_again(stack)

    # Then FAILED OUTPUT_INVALID, saying what was wrong and where the bytes are
    job = stack.job(job_id)
    assert (job["status"], job["error"]["code"]) == ("FAILED", "OUTPUT_INVALID")
    message = job["error"]["message"]
    assert message.startswith(
        "output 1 is not a video: it starts with '<!DOCTYPE html>' (text/html; charset=utf-8)"
    )
    assert f"s3://{stack.bucket}/quarantine/{job_id}/" in message and "3 downloads" in message
    assert job["outputs"] == [] and "ARCHIVED" not in [h["status"] for h in job["history"]]
    # And the provider's charge is recorded: settled, not released
    gateway_job_usd = job_usd("gateway", "motion_control", "std", 5)
    assert job["cost"]["billed_usd"] == gateway_job_usd and job["reservation"]["state"] == "settled"
    spend = stack.spend()
    assert (spend["settled_usd"], spend["reserved_usd"]) == (gateway_job_usd, 0)
    # And each download's bytes are kept under quarantine/, never under outputs/, as opaque bytes
    assert _keys(stack, f"outputs/{job_id}/") == []
    kept = [f"quarantine/{job_id}/download-{n}/output-1.mp4" for n in (1, 2, 3)]
    assert _keys(stack, f"quarantine/{job_id}/") == kept
    stored = stack.s3.get_object(Bucket=stack.bucket, Key=kept[0])
    assert stored["Body"].read() == HTML_PAGE and stored["ContentType"] == "application/octet-stream"
    assert stored["Metadata"]["served-as"] == "text/html; charset=utf-8"
    # And every invalid download was counted for the alarm
    assert counted["OutputsInvalid"] == 3
    # And the Job Failed event carries the code and the message
    failed = [
        e
        for e in stack.sandbox.collect_events()
        if e["detail"]["job_id"] == job_id and e["detail-type"] == "Job Failed"
    ]
    assert [(e["detail"]["error"]["code"], e["detail"]["error"]["message"]) for e in failed] == [
        ("OUTPUT_INVALID", message)
    ]


def _at_the_last_invalid_download(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, folder: str, meanwhile: Any
) -> str:
    """A job whose clip is served as a page every time, archived up to its last allowed download;
    `meanwhile(job_id)` runs just before that archiver's ending write."""
    stack.emulator.set_faults("gateway", output_body="html")
    job_id = str(stack.post_job(folder)["job_id"])
    stack.finish_at_provider()
    stack.sandbox.drain_archive()
    _archive_again(stack)
    real = endings.end_job

    def ending(*args: Any, **kwargs: Any) -> Any:
        meanwhile(job_id)
        return real(*args, **kwargs)

    monkeypatch.setattr(archiving, "end_job", ending)
    _archive_again(stack)
    return job_id


def test_the_last_invalid_download_ends_the_job_under_its_lease(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a duplicate archive message whose worker tries to take the job while it is being failed
    taken: list[bool] = []
    second = JobStore(stack.table, stack.clock)
    job_id = _at_the_last_invalid_download(
        stack,
        monkeypatch,
        "incoming/leased",
        lambda job_id: taken.append(second.take_lease(job_id, "duplicate", for_s=330) is not None),
    )

    # Then it could not: the lease was still held, and the job ended FAILED under it
    assert taken == [False]
    job = stack.job(job_id)
    assert (job["status"], job["error"]["code"]) == ("FAILED", "OUTPUT_INVALID")
    assert "3 downloads" in job["error"]["message"]
    assert "archive_lease" not in stack.item(job_id)


def test_an_archiver_whose_lease_passed_to_another_cannot_fail_the_job_over_it(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the last invalid download took longer than its lease, and a duplicate took the job
    second = JobStore(stack.table, stack.clock)

    def outlived(job_id: str) -> None:
        stack.clock.advance(1000)
        assert second.take_lease(job_id, "duplicate", for_s=330) is not None

    job_id = _at_the_last_invalid_download(stack, monkeypatch, "incoming/outlived", outlived)

    # Then the first archiver's ending is refused: the job is the new holder's to finish
    job = stack.job(job_id)
    assert job["status"] == "SUCCEEDED"
    assert stack.item(job_id)["archive_lease"] == "duplicate"
    assert stack.events_for(job_id) == ["Job Submitted"]


def test_a_truncated_clip_served_whole_is_downloaded_again_and_archived_when_it_comes_right(
    stack: Stack,
) -> None:
    # Given a CDN that serves the first half of the MP4 once (a whole 200 answer), then the clip
    stack.emulator.set_faults("gateway", output_body="truncated", bad_downloads=1)
    job_id = stack.post_job("incoming/half")["job_id"]
    stack.finish_at_provider()

    # When archive copies it, and again when the sweeper brings it back
    stack.sandbox.drain_archive()
    first = stack.job(job_id)
    assert first["status"] == "SUCCEEDED"
    assert "truncated" in first["archive_error"]["message"]
    _archive_again(stack)

    # Then it is archived whole, its half kept aside
    job = stack.job(job_id)
    assert job["status"] == "ARCHIVED" and job.get("archive_error") is None
    [output] = job["outputs"]
    assert output["sha256"] == hashlib.sha256(stack.emulator.output_bytes("gateway")).hexdigest()
    assert output["duration_s"] == 5.0
    assert _keys(stack, f"quarantine/{job_id}/") == [f"quarantine/{job_id}/download-1/output-1.mp4"]
    assert stack.events_for(job_id) == ["Job Submitted", "Job Completed"]


def test_a_job_whose_link_dies_after_an_invalid_download_fails_output_invalid_at_the_deadline(
    stack: Stack,
) -> None:
    # Given a clip served as a page once, and then no longer served at all (the link died)
    stack.emulator.set_faults("gateway", output_body="html", bad_downloads=1)
    job_id = stack.post_job("incoming/dies")["job_id"]
    stack.finish_at_provider()
    stack.sandbox.drain_archive()
    stack.emulator.set_faults("gateway", truncate_downloads=True)
    _archive_again(stack)
    assert stack.job(job_id)["archive_error"]["code"] == "DOWNLOAD_FAILED"

    # When the archive deadline passes (a day after the job's own)
    stack.clock.advance(10800 + 86400)
    stack.sandbox.sweep()

    # Then the sweeper ends it for what was seen: a download that was not a video, settled
    job = stack.job(job_id)
    assert (job["status"], job["error"]["code"]) == ("FAILED", "OUTPUT_INVALID")
    assert f"quarantine/{job_id}/" in job["error"]["message"]
    assert job["reservation"]["state"] == "settled" and job["cost"]["billed_usd"] > 0


def test_an_empty_clip_is_never_archived(stack: Stack) -> None:
    stack.emulator.set_faults("gateway", output_body="empty")
    job_id = stack.post_job("incoming/empty")["job_id"]
    stack.finish_at_provider()
    stack.sandbox.drain_archive()
    job = stack.job(job_id)
    assert job["status"] == "SUCCEEDED"
    assert job["archive_error"]["message"].startswith("output 1 is not a video: it is empty (video/mp4)")


def _archived_with_cover(stack: Stack, folder: str, cover_body: str) -> dict[str, Any]:
    stack.emulator.set_faults("gateway", unified_answers=True, cover_body=cover_body)
    job_id = stack.post_job(folder)["job_id"]
    stack.finish_at_provider()
    stack.sandbox.drain_archive()
    return stack.job(job_id)


def test_an_html_cover_is_dropped_and_never_holds_up_the_clip(stack: Stack) -> None:
    job = _archived_with_cover(stack, "incoming/cover-html", "html")
    assert job["status"] == "ARCHIVED"
    assert [o["role"] for o in job["outputs"]] == ["video"]
    assert _keys(stack, f"outputs/{job['job_id']}/") == [
        f"outputs/{job['job_id']}/output-1.mp4",
        f"outputs/{job['job_id']}/result.json",
    ]


def test_a_png_cover_served_as_html_is_stored_and_served_as_image_png(stack: Stack) -> None:
    job = _archived_with_cover(stack, "incoming/cover-png", "mislabelled")
    assert job["status"] == "ARCHIVED"
    [cover] = [o for o in job["outputs"] if o["role"] == "cover"]
    assert cover["key"] == f"outputs/{job['job_id']}/cover-1.png" and cover["content_type"] == "image/png"
    assert stack.s3.head_object(Bucket=stack.bucket, Key=cover["key"])["ContentType"] == "image/png"
    # And the presigned link the read API gives serves the proven type
    served = httpx.get(cover["url"])
    assert served.status_code == 200 and served.headers["content-type"] == "image/png"
    assert hashlib.sha256(served.content).hexdigest() == cover["sha256"]
