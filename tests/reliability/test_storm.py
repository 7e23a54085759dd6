"""A storm: many jobs across all four dialects while callbacks are dropped, duplicated, reordered
and forged, creates answer 5xx/429/402, downloads are cut off and archives crash mid-upload.

Then every invariant the pipeline promises is checked: every job ends in a justified terminal
state, none is lost, none archived twice, none goes backwards, none paid for twice, every
archived sha256 is the bytes in S3, and the day's spend agrees with what the jobs were billed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from klingflow.core.states import JobStatus
from klingflow.infra.storage import Storage
from klingflow_dev import ASSETS
from tests.integration.conftest import Stack, deterministic_stack
from tests.reliability.conftest import CHAOS

JOBS = 240 if CHAOS else 16
SEED = int(os.environ.get("KLINGFLOW_CHAOS_SEED", "20261126"))
DIALECTS = ("apimaster", "evolink", "gateway", "kling")
# Create failures a provider may answer with; each is definite (nothing was created) or, for 500
# after the work, found again by lookup.
CREATE_FAULTS: list[dict[str, Any]] = [
    {"create_status": 503},
    {"create_status": 429, "retry_after_s": 5},
    {"create_status": 402},
]
TERMINAL = {"ARCHIVED", "FAILED", "TIMED_OUT", "CANCELLED"}
# Why a job may end other than ARCHIVED in this storm: each is a justified ending.
JUSTIFIED = {
    "FAILED": {"ALL_PROVIDERS_FAILED", "NO_HEALTHY_PROVIDER", "PROVIDER_FAILED"},
    "TIMED_OUT": {"DEADLINE_EXCEEDED"},
}


@pytest.fixture
def storm(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Stack, Counter[str]]]:
    counts: Counter[str] = Counter()
    rng = random.Random(SEED)
    real_upload = Storage.upload_stream

    def crashing_upload(self: Storage, key: str, chunks: Any, **kwargs: Any) -> Any:
        # An archive that dies mid-upload: the parts so far are aborted, the job is retried.
        if key.endswith(".mp4") and rng.random() < 0.2:
            counts["archive crashes"] += 1

            def some_then_crash() -> Iterator[bytes]:
                yield next(iter(chunks))
                raise RuntimeError("injected crash mid-upload")

            return real_upload(self, key, some_then_crash(), **kwargs)
        return real_upload(self, key, chunks, **kwargs)

    monkeypatch.setattr(Storage, "upload_stream", crashing_upload)
    with deterministic_stack({"DailyBudgetUsd": "100000"}) as stack:
        for name in ("character.png", "dance.mp4"):
            stack.s3.put_object(
                Bucket=stack.bucket, Key=f"incoming/storm/{name}", Body=(ASSETS / name).read_bytes()
            )
        yield stack, counts


def test_a_storm_of_jobs_and_faults_keeps_every_invariant(storm: tuple[Stack, Counter[str]]) -> None:
    stack, counts = storm
    rng = random.Random(SEED)
    misbehave(stack, rng)

    # Jobs arrive while providers misbehave
    ids: list[str] = []
    for number in range(JOBS):
        dialect = DIALECTS[number % len(DIALECTS)]
        if rng.random() < 0.3:
            fault = rng.choice(CREATE_FAULTS)
            stack.emulator.set_faults(dialect, **fault)
            counts[f"create fault {fault['create_status']}"] += 1
        pinned = {"provider": dialect} if rng.random() < 0.5 else {}
        response = stack.api.request("POST", "/jobs", {**stack.request("incoming/storm"), **pinned})
        assert response.status_code == 202, response.text
        ids.append(response.json()["job_id"])
        stack.sandbox.deliver_submissions()
        stack.emulator.set_faults(dialect, create_status=None, retry_after_s=None)
    stack.emulator.set_faults("gateway", truncate_downloads=True)
    counts["jobs"] = len(ids)

    # And the world goes on: time passes, callbacks arrive (some forged), the sweeper runs
    rounds = 0
    for round_number in range(80):
        rounds += 1
        stack.clock.advance(30)
        if round_number == 3:
            stack.emulator.set_faults("gateway", truncate_downloads=False)
        _forge_callbacks(stack, rng, ids, counts)
        stack.sandbox.tick_providers()
        stack.sandbox.sweep()
        _drain(stack, "SubmitQueue")
        _drain(stack, "ArchiveQueue")
        items = {job_id: stack.item(job_id) for job_id in ids}
        if all(item["status"] in TERMINAL and "salvage_until" not in item for item in items.values()):
            break
    counts["rounds of 30 s"] = rounds
    _check_invariants(stack, ids, counts)
    print("\nstorm:", json.dumps(dict(sorted(counts.items())), indent=1))


def misbehave(stack: Stack, rng: random.Random) -> None:
    """Every provider slow, repeating, reordering or dropping its callbacks, as `rng` picks."""
    for dialect in DIALECTS:
        stack.emulator.set_faults(
            dialect,
            latency_s=rng.choice([20, 60, 300]),
            duplicate_callbacks=rng.choice([0, 1, 2]),
            reverse_callbacks=rng.random() < 0.5,
            drop_callbacks=rng.random() < 0.3,
        )


def assert_paid_once_and_stored(stack: Stack, job: dict[str, Any], tasks: list[Any]) -> None:
    """At most one task was made for the job (it was paid for once at most), and what it
    archived is exactly what is in S3."""
    mine = [
        task
        for task in tasks
        if task.external_task_id == job["job_id"]
        or job["job_id"] in (task.callback_url or "")
        or task.task_id == job.get("provider_task_id")
    ]
    assert len(mine) <= 1, (job["job_id"], [t.task_id for t in mine])
    for output in job["outputs"]:
        stored = stack.s3.get_object(Bucket=stack.bucket, Key=output["key"])["Body"].read()
        assert hashlib.sha256(stored).hexdigest() == output["sha256"]
        assert len(stored) == output["bytes"]


def _forge_callbacks(stack: Stack, rng: random.Random, ids: list[str], counts: Counter[str]) -> None:
    for job_id in rng.sample(ids, k=min(3, len(ids))):
        answer = stack.api.request(
            "POST", f"/callbacks/{job_id}/forged-token", {"status": "completed"}, signed=False
        )
        assert answer.status_code == 404
        counts["forged callbacks refused"] += 1


def _drain(stack: Stack, queue: str) -> None:
    sqs = stack.sandbox.client("sqs")
    for _ in range(500):
        depth = sqs.get_queue_attributes(
            QueueUrl=stack.sandbox.names[queue], AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]["ApproximateNumberOfMessages"]
        if depth == "0":
            return
        stack.sandbox.step("sqs-QueuedJobs" if queue == "SubmitQueue" else "sqs-ArchiveJobs")


def _check_invariants(stack: Stack, ids: list[str], counts: Counter[str]) -> None:
    jobs = [stack.job(job_id) for job_id in ids]
    tasks = list(stack.emulator.tasks.values())
    billed = 0.0
    for job in jobs:
        status = job["status"]
        counts[f"ended {status}"] += 1
        # Every job ends, and an ending other than ARCHIVED says why, for a reason this storm causes
        assert status in TERMINAL, job
        if status != "ARCHIVED":
            assert job["error"]["code"] in JUSTIFIED[status], job
        # Never backwards (salvage excepted), and archived once
        path = [JobStatus(entry["status"]) for entry in job["history"]]
        for before, after in itertools.pairwise(path):
            salvage = (before, after) == (JobStatus.TIMED_OUT, JobStatus.SUCCEEDED)
            assert after.rank > before.rank or salvage, (job["job_id"], path)
        assert path.count(JobStatus.ARCHIVED) <= 1
        assert_paid_once_and_stored(stack, job, tasks)
        billed += job["cost"].get("billed_usd") or 0.0
    # And the day's spend is what the jobs were billed, nothing reserved for a finished job
    spend = stack.spend()
    assert spend["settled_usd"] == pytest.approx(billed)
    possibly = sum(job["reservation"]["usd"] for job in jobs if job["cost"].get("possibly_billed"))
    assert spend["reserved_usd"] == pytest.approx(possibly)
    assert counts["ended ARCHIVED"] > 0
