"""Hostile numbers: values out of their documented range, and values DynamoDB cannot hold (41
digits, 1e-200, NaN, infinity, numbers in metadata, nesting), through every source a request
comes by (POST /jobs, a manifest under incoming/, a `Job Requested` event), each request
carrying a base64 image; and racing deliveries of one idempotency key.

One line per attack and source with its count of failures; every count must be 0:
- 5xx: the API answered a server error;
- lost: a manifest or event that became neither a job nor a `Job Rejected` (and a report);
- dead letters: a message in SubmitDLQ;
- stray objects: a base64 image in the bucket that no job refers to;
- unnamed: a refusal that does not name the attacked field.
"""

from __future__ import annotations

import base64
import json
import random
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from klingflow_dev import ASSETS
from klingflow_dev.sandbox.client import ApiClient
from tests.integration.conftest import Stack
from tests.reliability.conftest import CHAOS

SEED = 20261207
_PNG = base64.b64encode((ASSETS / "character.png").read_bytes()).decode()
# A base64 image in every request: a refused one must leave nothing of it in the bucket.
_BASE: dict[str, dict[str, Any]] = {
    "image_to_video": {"kind": "image_to_video", "image": _PNG, "prompt": "a wave"},
    "text_to_video": {"kind": "text_to_video", "prompt": "a wave", "metadata": {"order": "1"}},
    "omni_video": {"kind": "omni_video", "prompt": "<<<image_1>>> waves", "first_frame": _PNG},
}
# (kind, field path, where to put the value): every number a request carries.
_PLACES: list[tuple[str, tuple[str | int, ...]]] = [
    ("image_to_video", ("dynamic_masks", 0, "trajectories", 0, "x")),
    ("image_to_video", ("dynamic_masks", 0, "trajectories", 1, "y")),
    ("image_to_video", ("duration_s",)),
    ("image_to_video", ("cfg_scale",)),
    ("image_to_video", ("deadline_s",)),
    ("text_to_video", ("camera_control", "config", "zoom")),
    ("text_to_video", ("shots", 0, "duration_s")),
    ("text_to_video", ("metadata", "order")),
    ("omni_video", ("duration_s",)),
]
_HOSTILE: list[Any] = [
    10**40 + 7,  # 41 digits
    -(10**40),
    10**38,
    2**63,
    -1,
    1e-200,  # within 0..1 for cfg_scale, too close to zero for DynamoDB
    -1e-300,
    1e308,
    float("inf"),
    float("-inf"),
    float("nan"),
    10**4000,  # near the digits Python's JSON reader takes
    [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],  # 34 levels
]


def _attacks(rng: random.Random) -> list[tuple[str, dict[str, Any]]]:
    """Each place with each hostile value (chaos), or a fixed sample of them (short form)."""
    pairs = [(place, value) for place in _PLACES for value in _HOSTILE]
    chosen = pairs if CHAOS else [*rng.sample(pairs, 6), (_PLACES[0], 10**40 + 7), (_PLACES[3], 1e-200)]
    return [(".".join(map(str, path)), _request(kind, path, value)) for (kind, path), value in chosen]


def _request(kind: str, path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    request: dict[str, Any] = json.loads(json.dumps(_BASE[kind]))
    if path[0] == "dynamic_masks":
        request["dynamic_masks"] = [{"mask": _PNG, "trajectories": [{"x": 1, "y": 1}, {"x": 2, "y": 2}]}]
    if path[0] == "camera_control":
        request["camera_control"] = {"type": "simple", "config": {"zoom": 1}}
    if path[0] == "shots":
        request["shots"] = [{"prompt": "a", "duration_s": 2}, {"prompt": "b", "duration_s": 3}]
    place: Any = request
    for step in path[:-1]:
        place = place[step]
    place[path[-1]] = value
    return request


def _body(request: dict[str, Any]) -> bytes:
    return json.dumps(request).encode()  # NaN and Infinity as Python writes them


COUNTS: dict[str, Counter[str]] = {}


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    yield
    for attack, counts in sorted(COUNTS.items()):
        print(f"\nhostile numbers: {attack}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


@pytest.fixture
def stack(shared_stack: Stack) -> Stack:
    shared_stack.reset()
    return shared_stack


def _objects(stack: Stack) -> set[str]:
    pages = stack.s3.get_paginator("list_objects_v2").paginate(Bucket=stack.bucket)
    return {item["Key"] for page in pages for item in page.get("Contents", [])}


def _strays(stack: Stack) -> int:
    """Base64 images (incoming/<job id>/<field>.<ext>) whose job does not exist."""
    jobs = {job["job_id"] for job in stack.all_jobs()}
    images = [key for key in _objects(stack) if key.startswith("incoming/") and key.count("/") == 2]
    return sum(1 for key in images if key.split("/")[1] not in jobs and not key.endswith(".json"))


def _dead_letters(stack: Stack) -> int:
    attributes = stack.sandbox.client("sqs").get_queue_attributes(
        QueueUrl=stack.sandbox.names["SubmitDLQ"], AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


def _rejections(stack: Stack, source_type: str) -> list[dict[str, Any]]:
    return [
        e["detail"]
        for e in stack.sandbox.collect_events()
        if e["detail-type"] == "Job Rejected" and (e["detail"].get("source") or {}).get("type") == source_type
    ]


def _tally(name: str, **counts: int) -> None:
    COUNTS[name] = Counter(counts)


def test_hostile_numbers_through_the_api(stack: Stack) -> None:
    failures: Counter[str] = Counter()
    for field, request in _attacks(random.Random(SEED)):
        response = stack.api.request("POST", "/jobs", raw=_body(request))
        failures["5xx"] += response.status_code >= 500
        if response.status_code == 400:
            named = [d["field"] for d in response.json()["error"]["details"]]
            failures["unnamed"] += not any(
                n == field or n.startswith(f"{field}.") or field.startswith(n) for n in named
            )
    failures["stray objects"] += _strays(stack)
    _tally("POST /jobs", **{k: failures[k] for k in ("5xx", "unnamed", "stray objects")})
    assert failures.total() == 0, failures


def test_hostile_numbers_in_manifests(stack: Stack) -> None:
    failures: Counter[str] = Counter()
    attacks = _attacks(random.Random(SEED + 1))
    for number, (_, request) in enumerate(attacks):
        stack.s3.put_object(Bucket=stack.bucket, Key=f"incoming/hostile/m{number}.json", Body=_body(request))
        stack.sandbox.deliver_s3()
    objects = _objects(stack)
    by_source = {job["source"].get("ref") for job in stack.all_jobs()}
    refs = {d["source"]["ref"] for d in _rejections(stack, "s3")}
    for number in range(len(attacks)):
        source = f"s3://{stack.bucket}/incoming/hostile/m{number}.json"
        reported = f"rejected/hostile/m{number}.error.json" in objects and source in refs
        failures["lost"] += not (reported or source in by_source)
    failures["dead letters"] += _dead_letters(stack)
    failures["stray objects"] += _strays(stack)
    _tally("manifests", **{k: failures[k] for k in ("lost", "dead letters", "stray objects")})
    assert failures.total() == 0, failures


def test_hostile_numbers_in_job_requested_events(stack: Stack) -> None:
    failures: Counter[str] = Counter()
    attacks = _attacks(random.Random(SEED + 2))
    events = stack.sandbox.client("events")
    refused_by_the_bus = 0  # not JSON to EventBridge (NaN): the sender is told, nothing is lost
    for _, request in attacks:
        answer = events.put_events(
            Entries=[
                {
                    "Source": "com.example.orders",
                    "DetailType": "Job Requested",
                    "Detail": _body(request).decode(),
                    "EventBusName": stack.sandbox.names["EventBus"],
                }
            ]
        )
        refused_by_the_bus += answer["FailedEntryCount"]
        stack.sandbox.step("rule")
    assert stack.sandbox.invoker is not None
    stack.sandbox.invoker.wait_idle()
    accepted = [job for job in stack.all_jobs() if job["source"]["type"] == "event"]
    failures["lost"] += len(attacks) - refused_by_the_bus - len(accepted) - len(_rejections(stack, "event"))
    failures["dead letters"] += _dead_letters(stack)
    failures["stray objects"] += _strays(stack)
    _tally("events", **{k: failures[k] for k in ("lost", "dead letters", "stray objects")})
    assert failures.total() == 0, failures


def _race(stack: Stack, racers: int, key: str) -> list[int]:
    """`racers` clients POST one request with one idempotency key at the same moment."""
    start = threading.Barrier(racers)
    body = _body(_BASE["image_to_video"])

    def post(_: int) -> int:
        client = ApiClient(stack.api.base_url)
        try:
            start.wait()
            return int(
                client.request("POST", "/jobs", raw=body, headers={"Idempotency-Key": key}).status_code
            )
        finally:
            client.close()

    with ThreadPoolExecutor(max_workers=racers) as pool:
        return list(pool.map(post, range(racers)))


def test_racing_deliveries_of_one_idempotency_key_store_one_image(stack: Stack) -> None:
    racers = 40 if CHAOS else 10
    rounds = 5 if CHAOS else 1
    failures: Counter[str] = Counter()
    for round_ in range(rounds):
        failures["5xx"] += sum(status >= 500 for status in _race(stack, racers, f"race-{round_}"))
    images = [key for key in _objects(stack) if key.startswith("incoming/") and key.count("/") == 2]
    failures["stray objects"] += len(images) - rounds + _strays(stack)
    failures["jobs"] += abs(len(stack.all_jobs()) - rounds)
    _tally(f"{racers}-way idempotency races", **{k: failures[k] for k in ("5xx", "stray objects", "jobs")})
    assert failures.total() == 0, failures
