"""Every bad input gets a clear 4xx or a rejection report: never a 500, never silence.

Bodies of every JSON type and shape on POST /jobs, manifests that are not requests, events
whose detail is not a request, and callbacks with tokens and bodies of any kind.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from klingflow_dev import ASSETS
from tests.integration.conftest import Stack

DEEP = "[" * 100_000 + "]" * 100_000


def _rejected_events(stack: Stack) -> list[dict[str, Any]]:
    return [e for e in stack.sandbox.collect_events() if e["detail-type"] == "Job Rejected"]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"null",
        b"[]",
        b"42",
        b'"a string"',
        b"{not json",
        b"\xff\xfe\x00garbage",
        DEEP.encode(),
        json.dumps({"kind": ["motion_control"]}).encode(),
        json.dumps({"kind": {"a": 1}}).encode(),
        json.dumps({"kind": 7}).encode(),
        json.dumps({"kind": None}).encode(),
        json.dumps({"kind": True}).encode(),
        json.dumps({"metadata": [1, 2]}).encode(),
        json.dumps({"metadata": {"a": {"b": "c"}}}).encode(),
        json.dumps({"prompt": "x" * 1_000_000}).encode(),
        json.dumps({"image": {"nested": "x" * 10}, "video": [1], "mode": {"std": 1}}).encode(),
    ],
    ids=lambda body: body[:24].decode(errors="replace"),
)
def test_no_body_on_post_jobs_gets_a_500(stack: Stack, body: bytes) -> None:
    response = stack.api.request("POST", "/jobs", raw=body)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]["code"] == "VALIDATION_FAILED"
    assert response.json()["error"]["details"], "a refusal names the field and the rule"
    assert stack.api.get_json("/jobs")["jobs"] == []


def _dead_letters(stack: Stack, queue: str = "SubmitDLQ") -> int:
    sqs = stack.sandbox.client("sqs")
    attributes = sqs.get_queue_attributes(
        QueueUrl=stack.sandbox.names[queue], AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("empty", b""),
        ("not-json", b"{not json"),
        ("a-list", b"[1, 2, 3]"),
        ("a-number", b"42"),
        ("not-utf8", b"\xff\xfe\x00garbage"),
        ("kind-list", json.dumps({"kind": ["omni_video"]}).encode()),
        ("kind-object", json.dumps({"kind": {"a": 1}, "metadata": {"x": "y"}}).encode()),
        ("deep", DEEP.encode()),
        ("too-large", json.dumps({"prompt": "x" * 300_000}).encode()),
    ],
)
def test_a_manifest_that_cannot_become_a_job_always_gets_its_report_and_event(
    stack: Stack, name: str, body: bytes
) -> None:
    # When a manifest that is not a request is dropped
    stack.s3.put_object(Bucket=stack.bucket, Key=f"incoming/{name}.json", Body=body)
    stack.sandbox.deliver_s3()

    # Then its report names why, a Job Rejected says so, and nothing was dead-lettered
    report = json.loads(
        stack.s3.get_object(Bucket=stack.bucket, Key=f"rejected/{name}.error.json")["Body"].read()
    )
    assert report["error"]["code"] == "VALIDATION_FAILED"
    assert report["error"]["details"][0]["field"]
    assert [e["detail"]["source"]["ref"] for e in _rejected_events(stack)] == [
        f"s3://{stack.bucket}/incoming/{name}.json"
    ]
    assert _dead_letters(stack) == 0
    assert stack.api.get_json("/jobs")["jobs"] == []


@pytest.mark.parametrize(
    "detail",
    [
        {"kind": ["motion_control"]},
        {"kind": {"nested": {"deeper": [1, 2]}}},
        {"image": [[[[[[[[[[]]]]]]]]]], "metadata": "not a map"},
        {},
    ],
)
def test_a_job_requested_event_that_is_not_a_request_is_rejected_not_dead_lettered(
    stack: Stack, detail: dict[str, Any]
) -> None:
    stack.sandbox.client("events").put_events(
        Entries=[
            {
                "Source": "com.example.orders",
                "DetailType": "Job Requested",
                "Detail": json.dumps(detail),
                "EventBusName": stack.sandbox.names["EventBus"],
            }
        ]
    )
    stack.sandbox.step("rule")
    assert stack.sandbox.invoker is not None
    stack.sandbox.invoker.wait_idle()

    [rejected] = _rejected_events(stack)
    assert rejected["detail"]["error"]["code"] == "VALIDATION_FAILED"
    assert _dead_letters(stack) == 0


@pytest.mark.parametrize(
    ("token", "body"),
    [
        ("not-the-token", b'{"task_id": "x", "task_status": "succeed"}'),
        ("%C3%A9t%C3%A9-%E2%9C%93", b"{}"),  # non-ASCII
        ("x" * 5000, b"[]"),
        ("not-the-token", DEEP.encode()),
        ("not-the-token", b"\xff\xfe"),
    ],
)
def test_a_callback_with_a_token_that_is_not_the_jobs_gets_404_whatever_it_carries(
    stack: Stack, token: str, body: bytes
) -> None:
    job = stack.post_job("incoming/cb-bad", provider="kling")
    response = stack.api.request("POST", f"/callbacks/{job['job_id']}/{token}", raw=body, signed=False)
    assert response.status_code == 404
    assert stack.item(job["job_id"])["status"] == "SUBMITTED"
    assert stack.item(job["job_id"]).get("callbacks", 0) == 0


@pytest.mark.parametrize("body", [b"", b"null", b"[1]", b"\xff\xfe", DEEP.encode(), b'{"task_status": 5}'])
def test_a_callback_with_the_jobs_token_and_any_body_is_a_hint_never_a_500(stack: Stack, body: bytes) -> None:
    job = stack.post_job("incoming/cb-odd", provider="kling")
    url = stack.callback_url(job["job_id"]).removeprefix(stack.api.base_url)

    response = stack.api.request("POST", url, raw=body, signed=False)

    # Then it is acknowledged; archive asks the provider, who says the task is still running
    assert response.status_code == 200
    stack.sandbox.drain_archive()
    assert stack.job(job["job_id"])["status"] in ("SUBMITTED", "RUNNING")


def _objects(stack: Stack) -> set[str]:
    listed = stack.s3.list_objects_v2(Bucket=stack.bucket).get("Contents", [])
    return {item["Key"] for item in listed}


def test_a_rejected_request_leaves_nothing_of_its_base64_image_in_the_bucket(stack: Stack) -> None:
    # Given a request whose image is base64 and whose video does not exist
    image = base64.b64encode((ASSETS / "character.png").read_bytes()).decode()
    before = _objects(stack)

    response = stack.api.request(
        "POST",
        "/jobs",
        {
            "image": image,
            "video": "incoming/missing/dance.mp4",
            "character_orientation": "image",
            "mode": "std",
        },
    )

    # Then it is refused naming the video, and the decoded image was never stored
    assert response.status_code == 400
    assert [d["field"] for d in response.json()["error"]["details"]] == ["video"]
    assert _objects(stack) == before


def test_an_accepted_base64_image_is_stored_beside_its_job_and_sent_as_a_link(stack: Stack) -> None:
    stack.put_media("incoming/b64")
    image = "data:image/png;base64," + base64.b64encode((ASSETS / "character.png").read_bytes()).decode()

    job = stack.post_job("incoming/b64", image=image)

    assert job["status"] == "SUBMITTED"
    key = f"incoming/{job['job_id']}/image.png"
    assert job["request"]["image"] == key
    stored = stack.s3.get_object(Bucket=stack.bucket, Key=key)
    assert stored["Body"].read() == (ASSETS / "character.png").read_bytes()
    assert stored["ContentType"] == "image/png"


def test_an_early_completed_hint_never_silences_the_real_completion(stack: Stack) -> None:
    # Given a kling job, and a "succeed" callback with its token while the task still runs
    job = stack.post_job("incoming/early", provider="kling")
    url = stack.callback_url(job["job_id"]).removeprefix(stack.api.base_url)
    early = {"task_id": job["provider_task_id"], "task_status": "succeed", "task_result": {"videos": []}}
    assert stack.api.request("POST", url, early, signed=False).status_code == 200
    stack.sandbox.drain_archive()  # the provider says it is not done: nothing archived
    assert stack.job(job["job_id"])["status"] in ("SUBMITTED", "RUNNING")

    # When the task really completes and Kling calls back (no sweep runs)
    stack.finish_at_provider()
    stack.sandbox.drain_archive()

    # Then the real completion is heard and archived
    assert stack.job(job["job_id"])["status"] == "ARCHIVED"


def test_media_that_lies_about_itself_is_refused_before_any_spend(stack: Stack) -> None:
    # Given a PNG header claiming 20000x20000 in 57 bytes and a video with half its data gone
    png = (ASSETS / "character.png").read_bytes()
    lying = png[:16] + (20000).to_bytes(4, "big") * 2 + png[24:33] + bytes(24)
    video = (ASSETS / "dance.mp4").read_bytes()
    stack.s3.put_object(Bucket=stack.bucket, Key="incoming/lies/character.png", Body=lying)
    stack.s3.put_object(Bucket=stack.bucket, Key="incoming/lies/dance.mp4", Body=video[: len(video) // 2])

    response = stack.api.request("POST", "/jobs", stack.request("incoming/lies"))

    # Then both are refused, each naming its field and rule, and no provider was asked
    assert response.status_code == 400
    named = {(d["field"], d["rule"]) for d in response.json()["error"]["details"]}
    assert named == {("image", "image_size_consistent"), ("video", "video_truncated")}
    assert not [r for r in stack.emulator.requests if r[1] == "POST"]
