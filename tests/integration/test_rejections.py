"""Bad input gets a clear error naming the field and the rule, before any money is spent."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.conftest import Stack

MEDIA = Path(__file__).resolve().parents[1] / "fixtures" / "media"


def _provider_creates(stack: Stack) -> int:
    return sum(1 for _, method, _, _ in stack.emulator.requests if method == "POST")


def test_an_api_request_breaking_several_rules_is_refused_with_every_rule_named(stack: Stack) -> None:
    # Given a request with a bad mode, an over-long prompt, a typo'd field and no orientation
    stack.put_media("incoming/bad")
    request = stack.request(
        "incoming/bad", mode="ultra", prompt="x" * 2501, colour="red", character_orientation=None
    )

    # When it is posted
    answer = stack.api.request("POST", "/jobs", request)

    # Then it is refused with each field and rule, nothing is stored, no provider is called
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "VALIDATION_FAILED"
    named = {(d["field"], d["rule"]) for d in error["details"]}
    assert named == {
        ("mode", "enum"),
        ("prompt", "string_too_long"),
        ("colour", "extra_forbidden"),
        ("character_orientation", "missing"),
    }
    assert stack.api.get_json("/jobs")["jobs"] == []
    assert _provider_creates(stack) == 0
    [rejected] = [e for e in stack.sandbox.collect_events() if e["detail-type"] == "Job Rejected"]
    assert rejected["detail"]["error"]["code"] == "VALIDATION_FAILED"


def test_media_that_breaks_the_provider_limits_is_refused_after_probing(stack: Stack) -> None:
    # Given a 12 s reference video (image orientation allows 10 s) and a 200x900 image
    stack.s3.put_object(
        Bucket=stack.bucket, Key="incoming/lim/long.mp4", Body=(MEDIA / "long-12s.mp4").read_bytes()
    )
    stack.s3.put_object(
        Bucket=stack.bucket, Key="incoming/lim/narrow.png", Body=(MEDIA / "narrow-200x900.png").read_bytes()
    )

    # When it is posted
    answer = stack.api.request(
        "POST",
        "/jobs",
        {
            "image": "incoming/lim/narrow.png",
            "video": "incoming/lim/long.mp4",
            "character_orientation": "image",
            "mode": "std",
        },
    )

    # Then every broken media rule is named, with what was measured
    assert answer.status_code == 400
    details = {d["rule"]: d for d in answer.json()["error"]["details"]}
    assert set(details) == {"image_side_px", "image_aspect_ratio", "video_max_duration_image_orientation"}
    assert details["video_max_duration_image_orientation"]["field"] == "video.duration_s"
    assert "12" in details["video_max_duration_image_orientation"]["message"]
    assert _provider_creates(stack) == 0

    # And the same video is fine when the character follows the video's orientation (<= 30 s)
    stack.put_media("incoming/lim")
    ok = stack.api.request(
        "POST",
        "/jobs",
        {
            "image": "incoming/lim/character.png",
            "video": "incoming/lim/long.mp4",
            "character_orientation": "video",
            "mode": "std",
        },
    )
    assert ok.status_code == 202, ok.text


def test_a_manifest_that_cannot_become_a_job_gets_a_report_under_rejected(stack: Stack) -> None:
    # Given a manifest naming media that was never uploaded, and one that is not JSON
    manifest = {
        "image": "missing.png",
        "video": "missing.mp4",
        "character_orientation": "video",
        "mode": "pro",
    }
    stack.s3.put_object(Bucket=stack.bucket, Key="incoming/r1/job.json", Body=json.dumps(manifest).encode())
    stack.s3.put_object(Bucket=stack.bucket, Key="incoming/r2.json", Body=b"{not json")

    # When S3 notifies submit
    stack.sandbox.deliver_s3()

    # Then each manifest stays where it was and gets a report naming field and rule
    report = json.loads(
        stack.s3.get_object(Bucket=stack.bucket, Key="rejected/r1/job.error.json")["Body"].read()
    )
    assert report["manifest"] == f"s3://{stack.bucket}/incoming/r1/job.json"
    assert {(d["field"], d["rule"]) for d in report["error"]["details"]} == {
        ("image", "object_exists"),
        ("video", "object_exists"),
    }
    broken = json.loads(stack.s3.get_object(Bucket=stack.bucket, Key="rejected/r2.error.json")["Body"].read())
    assert broken["error"]["details"][0]["rule"] == "json"
    assert stack.s3.head_object(Bucket=stack.bucket, Key="incoming/r1/job.json")["ContentLength"] > 0
    assert stack.api.get_json("/jobs")["jobs"] == []
    assert [e["detail-type"] for e in stack.sandbox.collect_events()] == ["Job Rejected", "Job Rejected"]


def test_a_pinned_provider_that_is_unknown_is_named(stack: Stack) -> None:
    stack.put_media("incoming/p")
    answer = stack.api.request("POST", "/jobs", stack.request("incoming/p", provider="nope"))
    assert answer.status_code == 400
    assert answer.json()["error"]["details"][0]["field"] == "provider"


def test_inputs_outside_incoming_or_in_another_bucket_are_refused(stack: Stack) -> None:
    answer = stack.api.request(
        "POST",
        "/jobs",
        {
            "image": "outputs/someone-else/output-1.mp4",
            "video": "s3://other-bucket/incoming/v.mp4",
            "character_orientation": "image",
            "mode": "std",
        },
    )
    assert answer.status_code == 400
    assert {(d["field"], d["rule"]) for d in answer.json()["error"]["details"]} == {
        ("image", "incoming_prefix"),
        ("video", "own_bucket"),
    }
