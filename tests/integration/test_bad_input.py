"""Every bad input gets a clear 4xx or a rejection report: never a 500, never silence.

Bodies of every JSON type and shape on POST /jobs, manifests that are not requests, events
whose detail is not a request, and callbacks with tokens and bodies of any kind.
"""

from __future__ import annotations

import base64
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from klingflow.core.payload import BASE64_MAX_BYTES, BASE64_MAX_CHARS
from klingflow.infra.storage import Storage
from klingflow_dev import ASSETS
from klingflow_dev.sandbox.client import ApiClient
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
    stack.request_event(detail)

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


# ---- numbers the table cannot hold, through every source ---------------------------------------

FORTY_ONE_DIGITS = 10**40 + 7
_PNG = base64.b64encode((ASSETS / "character.png").read_bytes()).decode()
# A trajectory x of 41 digits is out of its range (the request model); a cfg_scale of 1e-200 is
# within its range but too close to zero for DynamoDB (the store's check, before any write).
HOSTILE: dict[str, tuple[dict[str, Any], str]] = {
    "trajectory_x": (
        {
            "kind": "image_to_video",
            "image": _PNG,
            "prompt": "a wave",
            "dynamic_masks": [
                {"mask": _PNG, "trajectories": [{"x": FORTY_ONE_DIGITS, "y": 1}, {"x": 2, "y": 2}]}
            ],
        },
        "dynamic_masks.0.trajectories.0.x",
    ),
    "cfg_scale": (
        {"kind": "image_to_video", "image": _PNG, "prompt": "a wave", "cfg_scale": 1e-200},
        "cfg_scale",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_an_unstorable_number_is_a_400_naming_its_field_and_leaves_nothing(stack: Stack, case: str) -> None:
    request, field = HOSTILE[case]
    before = _objects(stack)

    response = stack.api.request("POST", "/jobs", request, headers={"Idempotency-Key": f"hostile-{case}"})

    assert response.status_code == 400, response.text
    assert [d["field"] for d in response.json()["error"]["details"]] == [field]
    [rejected] = _rejected_events(stack)
    assert field in rejected["detail"]["error"]["message"]
    assert stack.api.get_json("/jobs")["jobs"] == []
    assert _objects(stack) == before, "no base64 image of a refused request is stored"


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_an_unstorable_number_is_not_quoted_either(stack: Stack, case: str) -> None:
    request, field = HOSTILE[case]

    response = stack.api.request("POST", "/jobs/quote", request)

    assert response.status_code == 400, response.text
    assert [d["field"] for d in response.json()["error"]["details"]] == [field]


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_an_unstorable_number_in_a_manifest_gets_its_report_and_event_never_a_dead_letter(
    stack: Stack, case: str
) -> None:
    request, field = HOSTILE[case]
    stack.s3.put_object(Bucket=stack.bucket, Key=f"incoming/{case}.json", Body=json.dumps(request).encode())

    stack.sandbox.deliver_s3()

    report = json.loads(
        stack.s3.get_object(Bucket=stack.bucket, Key=f"rejected/{case}.error.json")["Body"].read()
    )
    assert [d["field"] for d in report["error"]["details"]] == [field]
    [rejected] = _rejected_events(stack)
    assert rejected["detail"]["source"]["ref"] == f"s3://{stack.bucket}/incoming/{case}.json"
    assert _dead_letters(stack) == 0
    assert stack.api.get_json("/jobs")["jobs"] == []
    assert _objects(stack) == {f"incoming/{case}.json", f"rejected/{case}.error.json"}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_an_unstorable_number_in_a_job_requested_event_is_rejected_never_dead_lettered(
    stack: Stack, case: str
) -> None:
    request, field = HOSTILE[case]

    stack.request_event(request)

    [rejected] = _rejected_events(stack)
    assert rejected["detail"]["error"]["code"] == "VALIDATION_FAILED"
    assert field in rejected["detail"]["error"]["message"]
    assert _dead_letters(stack) == 0
    assert stack.api.get_json("/jobs")["jobs"] == []
    assert _objects(stack) == set()


def test_a_base64_image_too_large_to_reach_the_function_whole_is_a_413_pointing_to_s3(stack: Stack) -> None:
    # Given a request whose base64 image passes what one invocation can carry by one character
    # (the figures: core/payload.py)
    stack.put_media("incoming/big")
    image = "data:image/png;base64," + "A" * (BASE64_MAX_CHARS - len("data:image/png;base64,") + 1)
    before = _objects(stack)

    response = stack.api.request("POST", "/jobs", stack.request("incoming/big", image=image))

    # Then it is refused before anything is stored, naming the field, the limit and the S3 route
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["code"] == "REQUEST_TOO_LARGE"
    [detail] = error["details"]
    assert (detail["field"], detail["rule"]) == ("image", "base64_max_bytes")
    assert f"{BASE64_MAX_BYTES:,} bytes" in detail["message"] and "under incoming/" in detail["message"]
    assert stack.api.get_json("/jobs")["jobs"] == []
    assert _objects(stack) == before
    assert [e["detail"]["error"]["code"] for e in _rejected_events(stack)] == ["REQUEST_TOO_LARGE"]


# ---- nothing stored for a request that is not stored -------------------------------------------


def _images(stack: Stack) -> set[str]:
    """The base64 images intake stored (each in its job's own folder)."""
    return {key for key in _objects(stack) if key.count("/") == 2 and key.endswith("/image.png")}


def test_twenty_racing_deliveries_of_one_idempotency_key_leave_one_job_and_one_image(stack: Stack) -> None:
    stack.put_media("incoming/race")
    request = stack.request("incoming/race", image=_PNG)
    start = threading.Barrier(20)

    def post(_: int) -> Any:
        client = ApiClient(stack.api.base_url)
        try:
            start.wait()
            return client.request("POST", "/jobs", request, headers={"Idempotency-Key": "race-1"})
        finally:
            client.close()

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(post, range(20)))

    assert [a.status_code for a in answers] == [202] * 20
    [job_id] = {a.json()["job_id"] for a in answers}
    assert _images(stack) == {f"incoming/{job_id}/image.png"}
    # One object version, not one key rewritten by every loser (the bucket keeps each version)
    versions = stack.s3.list_object_versions(Bucket=stack.bucket, Prefix=f"incoming/{job_id}/")
    assert [v["Key"] for v in versions.get("Versions", [])] == [f"incoming/{job_id}/image.png"]
    stack.send_all(20)
    assert stack.job(job_id)["status"] == "SUBMITTED"


def test_a_request_whose_create_loses_to_another_request_leaves_no_image(stack: Stack) -> None:
    stack.put_media("incoming/lost")
    first = stack.api.request(
        "POST", "/jobs", stack.request("incoming/lost"), headers={"Idempotency-Key": "k-1"}
    )
    assert first.status_code == 202

    # The same key with another request (a base64 image instead of the key) is refused: 409
    again = stack.api.request(
        "POST", "/jobs", stack.request("incoming/lost", image=_PNG), headers={"Idempotency-Key": "k-1"}
    )

    assert again.status_code == 409, again.text
    assert _images(stack) == set()


def test_a_crash_between_the_job_and_its_image_is_mended_by_the_retry_or_failed_unsent(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the image write fails once, after the job was created
    stack.put_media("incoming/crash")
    real = Storage.put_new
    crashes = iter([True, True])

    def crashing(self: Storage, key: str, data: bytes, content_type: str) -> bool:
        if next(crashes, False):
            raise RuntimeError("injected crash after the create")
        return real(self, key, data, content_type)

    monkeypatch.setattr(Storage, "put_new", crashing)
    request = stack.request("incoming/crash", image=_PNG)
    assert (
        stack.api.request("POST", "/jobs", request, headers={"Idempotency-Key": "crash-1"}).status_code == 500
    )
    keyless = stack.api.request("POST", "/jobs", request)
    assert keyless.status_code == 500
    [with_key, without_key] = [j["job_id"] for j in reversed(stack.api.get_json("/jobs")["jobs"])]
    assert _images(stack) == set()

    # When the client retries with its key, the retry writes the image before the job is sent
    retry = stack.api.request("POST", "/jobs", request, headers={"Idempotency-Key": "crash-1"})
    assert (retry.status_code, retry.json()["job_id"]) == (202, with_key)
    stack.send_all(1)
    assert stack.job(with_key)["status"] == "SUBMITTED"
    assert _images(stack) == {f"incoming/{with_key}/image.png"}

    # And the job nobody retried is failed when it comes to be sent: nothing sent, nothing charged
    stack.clock.advance(400)
    stack.sandbox.sweep()
    stack.send_all(1)
    failed = stack.job(without_key)
    assert (failed["status"], failed["error"]["code"]) == ("FAILED", "INPUT_MISSING")
    assert "send the request again" in failed["error"]["message"]
    assert len([r for r in stack.emulator.requests if r[1] == "POST"]) == 1  # the mended job's only


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/jobs?limit=%C2%B2", "limit"),  # ²
        ("/jobs?limit=%E2%91%A0", "limit"),  # ①
        ("/elements?limit=%D9%A3", "limit"),  # Arabic-Indic three
        ("/elements/presets?provider=gateway&page_size=%C2%B2", "page_size"),
        (
            "/jobs?next_token=" + base64.urlsafe_b64encode(b"[" * 10_000 + b"]" * 10_000).decode(),
            "next_token",
        ),
    ],
)
def test_a_query_parameter_of_unicode_digits_is_a_400_naming_it_never_a_500(
    stack: Stack, path: str, field: str
) -> None:
    response = stack.api.request("GET", path)

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert [d["field"] for d in error["details"]] == [field]
    assert error["message"].startswith(f"query parameter rejected: {field}: ")
