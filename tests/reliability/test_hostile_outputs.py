"""Hostile outputs: providers whose clip links serve an HTML page, half an MP4 or nothing, and
covers that are pages or mislabelled. Nothing that is not a video may be ARCHIVED, no job may be
lost (each ends as its case says, its bytes under quarantine/ when they were refused), and none
may go unbilled (the provider charged for every finished task: settled, never released).

The short form runs one job per case on gateway; `make chaos` runs several on every dialect.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from klingflow.core.outputcheck import OutputInvalid, check_video, image_type
from klingflow.infra.storage import Storage
from tests.integration.conftest import Stack
from tests.reliability.conftest import CHAOS

DIALECTS = ("apimaster", "evolink", "gateway", "kling") if CHAOS else ("gateway",)
JOBS_PER_DIALECT = 3 if CHAOS else 1
ROUNDS = 10  # each 31 s: past ARCHIVE_STALL_S, so the sweeper brings back every unfinished copy
TERMINAL = {"ARCHIVED", "FAILED", "TIMED_OUT", "CANCELLED"}


@dataclass(frozen=True)
class Case:
    name: str
    faults: dict[str, Any]
    ends: tuple[str, str | None]  # the status and error code every job must end with
    dialects: tuple[str, ...] = DIALECTS
    jobs: dict[str, int] = field(default_factory=dict)


CASES = [
    Case("html outputs", {"output_body": "html"}, ("FAILED", "OUTPUT_INVALID")),
    Case("truncated outputs", {"output_body": "truncated"}, ("FAILED", "OUTPUT_INVALID")),
    # Every job's first download is bad, the next one whole: each must be archived whole.
    Case(
        "empty, then whole outputs",
        {"output_body": "empty", "bad_downloads": JOBS_PER_DIALECT},
        ("ARCHIVED", None),
    ),
    Case("html covers", {"cover_body": "html", "unified_answers": True}, ("ARCHIVED", None), ("gateway",)),
    Case(
        "mislabelled covers",
        {"cover_body": "mislabelled", "unified_answers": True},
        ("ARCHIVED", None),
        ("gateway",),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_no_output_that_is_not_what_it_claims_is_archived_lost_or_unbilled(
    module_stack: Stack, case: Case
) -> None:
    stack = module_stack
    ids = _run(stack, case)
    counts = Counter({"archived but invalid": 0, "lost": 0, "unbilled": 0})
    storage = Storage(stack.s3, stack.bucket)
    billed = 0.0
    for job_id in ids:
        job = stack.job(job_id)
        error = (job.get("error") or {}).get("code")
        lost = (job["status"], error) != case.ends or not _kept(stack, job)
        if lost:
            print(
                "lost:",
                job["job_id"],
                job["provider"],
                job["status"],
                job.get("error"),
                job.get("archive_error"),
            )
        counts["lost"] += lost
        counts["archived but invalid"] += job["status"] == "ARCHIVED" and not _all_true(storage, job)
        counts["unbilled"] += not job["cost"].get("billed_usd") or job["reservation"]["state"] != "settled"
        billed += job["cost"].get("billed_usd") or 0.0
    spend = stack.spend()
    counts["unbilled"] += abs(spend["settled_usd"] - billed) > 1e-6 or spend["reserved_usd"] != 0
    print(f"\n{case.name} ({len(ids)} jobs):", ", ".join(f"{name} {n}" for name, n in counts.items()))
    assert counts == {"archived but invalid": 0, "lost": 0, "unbilled": 0}


def _run(stack: Stack, case: Case) -> list[str]:
    """Jobs pinned to each dialect under the case's faults, run until every one has ended."""
    stack.reset()
    for dialect in case.dialects:
        stack.emulator.set_faults(dialect, **case.faults)
    ids = []
    for dialect in case.dialects:
        for _ in range(JOBS_PER_DIALECT):
            response = stack.post("incoming/hostile", provider=dialect)
            assert response.status_code == 202, response.text
            ids.append(response.json()["job_id"])
            stack.sandbox.deliver_submissions()
    stack.finish_at_provider()
    for _ in range(ROUNDS):
        stack.sandbox.sweep()
        stack.sandbox.drain_archive()
        if all(stack.item(job_id)["status"] in TERMINAL for job_id in ids):
            break
        stack.clock.advance(31)
    return ids


def _all_true(storage: Storage, job: dict[str, Any]) -> bool:
    """Every output of an archived job is what it claims, read back from S3."""
    for output in job["outputs"]:
        reader = storage.reader(storage.head("output", output["key"]))
        if output["role"] == "cover":
            proven = image_type(reader.read(0, 32))
            if proven is None or proven.content_type != storage.head("output", output["key"]).content_type:
                return False
            continue
        try:
            check_video(reader, label=output["key"], served_as=None)
        except OutputInvalid:
            return False
    return True


def _kept(stack: Stack, job: dict[str, Any]) -> bool:
    """A refused job's bytes are under quarantine/ and nothing of it is under outputs/; an
    archived job has its outputs."""
    listed = stack.s3.list_objects_v2(Bucket=stack.bucket, Prefix=f"quarantine/{job['job_id']}/")
    if job["status"] == "FAILED":
        outputs = stack.s3.list_objects_v2(Bucket=stack.bucket, Prefix=f"outputs/{job['job_id']}/")
        return bool(listed.get("KeyCount", 0) > 0 and outputs.get("KeyCount", 0) == 0)
    return bool(job["outputs"])
