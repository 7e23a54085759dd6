"""Money through the real handlers: the daily budget, settlement from what each provider charged,
refunds, and never paying for an output that is then thrown away.

The sample motion-control job is 5 s of reference video at std, priced from
tests/fixtures/prices.py: gateway cheapest, then kling, apimaster, evolink.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest

from klingflow.core.codes import Actor
from klingflow.core.models import BilledSource
from klingflow.core.states import JobStatus
from klingflow.infra.dynamo import Table
from klingflow.jobs.reservations import Claim
from klingflow.jobs.store import JobStore
from klingflow.money.ledger import Budget, Ledger
from klingflow.money.settlement import Charge, Settle
from tests.fixtures.prices import evolink_credits, job_usd, kling_units, units_usd
from tests.integration.conftest import Stack, deterministic_stack
from tests.unit.test_store import _job

GATEWAY_JOB_USD = job_usd("gateway", "motion_control", "std", 5)
KLING_JOB_USD = job_usd("kling", "motion_control", "std", 5)
# What a $5 day holds of the sample job on gateway, and what is left once they are reserved.
FITS = int(5 // GATEWAY_JOB_USD)
LEFT_USD = 5 - FITS * GATEWAY_JOB_USD
OVERCHARGED_USD = round(GATEWAY_JOB_USD * 1.2, 5)


@pytest.fixture
def five_dollar_day(aws_env: None) -> Iterator[Stack]:
    with deterministic_stack({"DailyBudgetUsd": "5"}) as stack:
        yield stack


def _creates(stack: Stack) -> int:
    return sum(1 for _, method, path, _ in stack.emulator.requests if method == "POST" and "video" in path)


def test_jobs_past_the_days_budget_are_refused_and_spend_agrees_with_what_was_billed(
    five_dollar_day: Stack,
) -> None:
    stack = five_dollar_day
    # Given a $5 day and 20 jobs on gateway accepted at once (nothing is reserved before sending)
    accepted = [stack.post("incoming/b1") for _ in range(20)]
    assert {response.status_code for response in accepted} == {202}
    ids = [response.json()["job_id"] for response in accepted]

    # When the submit queue sends them
    stack.send_all(len(ids))

    # Then as many as fit went to a provider and the rest failed, each naming the budget, without a call
    jobs = [stack.job(job_id) for job_id in ids]
    sent = [job for job in jobs if job["status"] == "SUBMITTED"]
    refused = [job for job in jobs if job["status"] == "FAILED"]
    assert (len(sent), len(refused)) == (FITS, 20 - FITS)
    assert _creates(stack) == FITS
    for job in refused:
        assert job["error"]["code"] == "BUDGET_EXCEEDED"
        assert job["error"]["budget"]["daily_budget_usd"] == 5
        assert job["error"]["budget"]["estimate_usd"] == GATEWAY_JOB_USD
        assert job["error"]["budget"]["remaining_usd"] == pytest.approx(LEFT_USD)
        assert stack.events_for(job["job_id"]) == ["Job Failed"]
    spend = stack.spend()
    assert (spend["reserved_usd"], spend["settled_usd"]) == (pytest.approx(5 - LEFT_USD), 0.0)

    # When they finish and are archived
    stack.finish_at_provider()
    stack.archive_all(len(sent))

    # Then GET /spend settles to the sum of what the jobs were billed, nothing left reserved
    billed = [stack.job(job["job_id"])["cost"]["billed_usd"] for job in sent]
    spend = stack.spend()
    assert spend["settled_usd"] == pytest.approx(sum(billed)) == pytest.approx(5 - LEFT_USD)
    assert spend["reserved_usd"] == 0.0
    assert spend["remaining_usd"] == pytest.approx(LEFT_USD)
    settled = {"reserved_usd": 0.0, "settled_usd": pytest.approx(5 - LEFT_USD)}
    assert spend["by_provider"] == {"gateway": settled}
    assert spend["by_kind"] == {"motion_control": settled}

    # And a request that cannot fit what is left is refused at once, naming the figures
    response = stack.post("incoming/b1")
    assert response.status_code == 402
    error = response.json()["error"]
    assert error["code"] == "BUDGET_EXCEEDED"
    assert error["budget"] == {
        "daily_budget_usd": 5,
        "remaining_usd": pytest.approx(LEFT_USD),
        "estimate_usd": GATEWAY_JOB_USD,
        "max_job_cost_usd": 25,
    }


def test_a_job_dearer_than_max_job_cost_is_refused_before_it_is_stored(aws_env: None) -> None:
    cap = round(GATEWAY_JOB_USD * 0.8, 2)  # under even the cheapest provider's price
    with deterministic_stack({"MaxJobCostUsd": str(cap)}) as stack:
        response = stack.post("incoming/max")

        assert response.status_code == 402
        error = response.json()["error"]
        assert error["code"] == "BUDGET_EXCEEDED"
        assert f"MaxJobCostUsd ${cap}" in error["message"]
        assert error["budget"]["estimate_usd"] == GATEWAY_JOB_USD
        assert stack.api.get_json("/jobs")["jobs"] == []
        rejected = [e for e in stack.sandbox.collect_events() if e["detail-type"] == "Job Rejected"]
        assert [e["detail"]["error"]["code"] for e in rejected] == ["BUDGET_EXCEEDED"]


def test_a_manifest_over_the_budget_gets_its_rejected_report(aws_env: None) -> None:
    budget = round(GATEWAY_JOB_USD * 0.8, 2)  # the day cannot hold the cheapest provider's price
    with deterministic_stack({"DailyBudgetUsd": str(budget)}) as stack:
        stack.put_media("incoming/m-budget")
        manifest = {
            "image": "character.png",
            "video": "dance.mp4",
            "character_orientation": "image",
            "mode": "std",
        }
        key = "incoming/m-budget/job.json"
        stack.s3.put_object(Bucket=stack.bucket, Key=key, Body=json.dumps(manifest).encode())

        stack.sandbox.deliver_s3()

        report = json.loads(
            stack.s3.get_object(Bucket=stack.bucket, Key="rejected/m-budget/job.error.json")["Body"].read()
        )
        assert report["error"]["code"] == "BUDGET_EXCEEDED"
        assert report["error"]["budget"]["remaining_usd"] == budget
        assert _creates(stack) == 0


def test_a_manifest_accepted_and_then_refused_by_the_budget_when_sent_gets_its_report(
    aws_env: None,
) -> None:
    budget = round(GATEWAY_JOB_USD * 1.5, 2)  # the day holds one job, not two
    with deterministic_stack({"DailyBudgetUsd": str(budget)}) as stack:
        # Given two manifests each of which fits the day alone, both accepted (nothing is
        # reserved before a job is sent)
        stack.put_media("incoming/m-two")
        for name in ("first", "second"):
            stack.s3.put_object(
                Bucket=stack.bucket,
                Key=f"incoming/m-two/{name}.json",
                Body=json.dumps(
                    {
                        "image": "character.png",
                        "video": "dance.mp4",
                        "character_orientation": "image",
                        "mode": "std",
                    }
                ).encode(),
            )
        stack.sandbox.deliver_s3()
        assert [job["status"] for job in stack.all_jobs()] == ["QUEUED", "QUEUED"]

        # When the submit queue sends them
        stack.send_all(2)

        # Then one was sent, the other failed on the budget at its claim, and its manifest's
        # report under rejected/ says so
        [failed] = [job for job in stack.all_jobs() if job["status"] == "FAILED"]
        assert failed["error"]["code"] == "BUDGET_EXCEEDED"
        name = failed["source"]["ref"].rsplit("/", 1)[-1].removesuffix(".json")
        listed = stack.s3.list_objects_v2(Bucket=stack.bucket, Prefix="rejected/")["Contents"]
        assert [entry["Key"] for entry in listed] == [f"rejected/m-two/{name}.error.json"]
        report = json.loads(stack.s3.get_object(Bucket=stack.bucket, Key=listed[0]["Key"])["Body"].read())
        assert report["job_id"] == failed["job_id"]
        assert report["error"]["code"] == "BUDGET_EXCEEDED"
        assert _creates(stack) == 1


@pytest.mark.parametrize(
    ("provider", "source", "billed_usd"),
    [
        ("gateway", "provider", GATEWAY_JOB_USD),  # usage.seconds 5 at its price a second
        ("kling", "provider", units_usd("kling", kling_units("std", 5))),  # final_unit_deduction
        # usage credits at the credit's price
        ("evolink", "provider", units_usd("evolink", evolink_credits("motion_control", "std", 5))),
        ("apimaster", "rule", job_usd("apimaster", "motion_control", "std", 5)),  # no figure of its own
    ],
)
def test_each_job_settles_to_what_its_provider_charged(
    stack: Stack, provider: str, source: str, billed_usd: float
) -> None:
    job = stack.post_job(f"incoming/s-{provider}", provider=provider)
    stack.finish_at_provider()
    stack.sandbox.sweep()  # apimaster never calls back
    stack.sandbox.drain_archive()

    done = stack.job(job["job_id"])
    assert done["status"] == "ARCHIVED"
    assert (done["cost"]["billed_source"], done["cost"]["billed_usd"]) == (source, billed_usd)
    assert done["reservation"]["state"] == "settled"
    spend = stack.spend()
    assert (spend["reserved_usd"], spend["settled_usd"]) == (0.0, billed_usd)
    assert spend["by_provider"] == {provider: {"reserved_usd": 0.0, "settled_usd": billed_usd}}
    [completed] = [e for e in stack.sandbox.collect_events() if e["detail-type"] == "Job Completed"]
    assert completed["detail"]["cost"]["billed"] == billed_usd
    assert completed["detail"]["cost"]["billed_source"] == source


def test_a_task_the_provider_fails_is_refunded(stack: Stack) -> None:
    stack.emulator.set_faults("gateway", fail_tasks=True)
    job = stack.post_job("incoming/refund")
    assert stack.spend()["reserved_usd"] == GATEWAY_JOB_USD

    stack.finish_at_provider()
    stack.sandbox.drain_archive()

    done = stack.job(job["job_id"])
    assert done["status"] == "FAILED"
    assert (done["cost"]["billed_usd"], done["reservation"]["state"]) == (0.0, "released")
    spend = stack.spend()
    assert (spend["reserved_usd"], spend["settled_usd"], spend["remaining_usd"]) == (0.0, 0.0, 100.0)


def test_a_submission_whose_outcome_cannot_be_learned_stays_reserved_as_possibly_billed(
    stack: Stack,
) -> None:
    # Given apimaster taking the task but answering after we gave up (it has no lookup, no callback)
    stack.emulator.set_faults("apimaster", hang_create_s=2.5)

    job = stack.post_job("incoming/unknown", provider="apimaster")

    assert (job["status"], job["error"]["code"]) == ("FAILED", "SUBMIT_OUTCOME_UNKNOWN")
    assert job["cost"]["possibly_billed"] is True
    assert job["reservation"]["state"] == "reserved"
    assert stack.spend()["reserved_usd"] == job_usd("apimaster", "motion_control", "std", 5)


def test_a_task_that_completes_after_the_deadline_is_archived_late(stack: Stack) -> None:
    # Given a job with a 60 s deadline whose task takes 90 s
    stack.emulator.set_faults("gateway", latency_s=90)
    job = stack.post_job("incoming/late", deadline_s=60)
    assert job["deadline_at"] == int(stack.clock.now().timestamp()) + 60

    # When the deadline passes, the job times out, still reserved and watched
    stack.clock.advance(61)
    stack.sandbox.sweep()
    timed_out = stack.job(job["job_id"])
    assert timed_out["status"] == "TIMED_OUT"
    assert timed_out["cost"]["possibly_billed"] is True

    # When the task completes and its callback arrives
    stack.clock.advance(30)
    stack.sandbox.tick_providers()
    stack.sandbox.drain_archive()

    # Then the output is archived, late, with its cost settled
    done = stack.job(job["job_id"])
    assert (done["status"], done["late"]) == ("ARCHIVED", True)
    assert "error" not in done or done["error"] is None
    [output] = done["outputs"]
    assert output["key"] == f"outputs/{job['job_id']}/output-1.mp4"
    assert stack.s3.head_object(Bucket=stack.bucket, Key=output["key"])["ContentLength"] == output["bytes"]
    assert (done["cost"]["billed_usd"], done["cost"]["possibly_billed"]) == (GATEWAY_JOB_USD, False)
    assert [h["status"] for h in done["history"]] == [
        "QUEUED",
        "SUBMITTED",
        "TIMED_OUT",
        "SUCCEEDED",
        "ARCHIVED",
    ]
    assert stack.events_for(job["job_id"]) == ["Job Submitted", "Job Timed Out", "Job Completed"]
    [completed] = [e for e in stack.sandbox.collect_events() if e["detail-type"] == "Job Completed"]
    assert completed["detail"]["late"] is True
    assert stack.spend()["settled_usd"] == GATEWAY_JOB_USD


def test_a_late_task_whose_callback_is_lost_is_found_by_the_sweeper(stack: Stack) -> None:
    stack.emulator.set_faults("kling", latency_s=90, drop_callbacks=True)
    job = stack.post_job("incoming/late2", provider="kling", deadline_s=60)
    stack.clock.advance(61)
    stack.sandbox.sweep()
    assert stack.job(job["job_id"])["status"] == "TIMED_OUT"

    # When the task completes with no callback, the sweeper's salvage watch sees it
    stack.clock.advance(120)
    stack.sandbox.tick_providers()
    stack.sandbox.sweep()
    stack.sandbox.drain_archive()

    done = stack.job(job["job_id"])
    assert (done["status"], done["late"]) == ("ARCHIVED", True)
    assert done["cost"]["billed_source"] == "provider"


def test_a_task_that_fails_after_the_deadline_gives_its_reservation_back(stack: Stack) -> None:
    stack.emulator.set_faults("gateway", latency_s=90, fail_tasks=True)
    job = stack.post_job("incoming/late-fail", deadline_s=60)
    stack.clock.advance(61)
    stack.sandbox.sweep()

    stack.clock.advance(30)
    stack.sandbox.tick_providers()
    stack.sandbox.drain_archive()

    done = stack.job(job["job_id"])
    assert done["status"] == "TIMED_OUT"
    assert (done["cost"]["billed_usd"], done["cost"]["possibly_billed"]) == (0.0, False)
    assert done["reservation"]["state"] == "released"
    assert "due_shard" not in stack.item(job["job_id"])
    assert stack.spend()["reserved_usd"] == 0.0


def test_a_job_cancelled_before_it_is_sent_costs_nothing(stack: Stack) -> None:
    response = stack.post("incoming/c1")
    job_id = response.json()["job_id"]

    cancelled = stack.api.request("POST", f"/jobs/{job_id}/cancel")
    stack.send_all(1)

    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "CANCELLED"
    assert stack.job(job_id)["status"] == "CANCELLED"
    assert _creates(stack) == 0
    assert stack.events_for(job_id) == ["Job Cancelled"]
    assert stack.spend()["reserved_usd"] == 0.0
    # Cancelling again says the same
    assert stack.api.request("POST", f"/jobs/{job_id}/cancel").json()["status"] == "CANCELLED"


def test_a_pinned_job_waiting_on_its_provider_can_be_cancelled_and_its_reservation_returns(
    stack: Stack,
) -> None:
    stack.emulator.set_faults("kling", create_status=429, create_code=1303)
    job = stack.post_job("incoming/c2", provider="kling")
    assert job["status"] == "QUEUED"
    assert stack.spend()["reserved_usd"] == KLING_JOB_USD

    response = stack.api.request("POST", f"/jobs/{job['job_id']}/cancel")

    assert response.status_code == 200
    assert stack.job(job["job_id"])["status"] == "CANCELLED"
    assert stack.spend()["reserved_usd"] == 0.0
    stack.emulator.set_faults("kling", create_status=None)
    stack.clock.advance(600)
    stack.sandbox.sweep()
    stack.send_all(1)
    assert _creates(stack) == 1  # the one that answered 429, never another


def test_a_job_already_at_a_provider_cannot_be_cancelled_and_still_archives(stack: Stack) -> None:
    job = stack.post_job("incoming/c3")

    response = stack.api.request("POST", f"/jobs/{job['job_id']}/cancel")

    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "ALREADY_AT_PROVIDER"
    assert (error["provider"], error["provider_task_id"]) == ("gateway", job["provider_task_id"])
    stack.finish_at_provider()
    stack.sandbox.drain_archive()
    done = stack.job(job["job_id"])
    assert (done["status"], done["cost"]["billed_usd"]) == ("ARCHIVED", GATEWAY_JOB_USD)


def test_a_task_the_provider_cancels_ends_cancelled_and_refunded(stack: Stack) -> None:
    stack.emulator.set_faults("evolink", cancel_tasks=True)
    job = stack.post_job("incoming/c4", provider="evolink")
    stack.finish_at_provider()
    stack.sandbox.drain_archive()

    done = stack.job(job["job_id"])
    assert (done["status"], done["error"]["code"]) == ("CANCELLED", "PROVIDER_CANCELLED")
    assert done["cost"]["billed_usd"] == 0.0
    assert stack.events_for(job["job_id"]) == ["Job Submitted", "Job Cancelled"]


@pytest.mark.parametrize(
    "faults",
    [
        {"create_status": 429, "retry_after_s": 45},
        {"create_status": 429, "create_code": 1303},  # Kling: concurrency over the resource pack
        {"create_status": 503},
    ],
)
def test_a_pinned_job_waits_for_its_provider_instead_of_failing(stack: Stack, faults: dict[str, Any]) -> None:
    # Given the pinned provider saying "not now"
    stack.emulator.set_faults("kling", **faults)
    job = stack.post_job("incoming/w1", provider="kling")

    # Then the job waits, reserved once, with no claim on it
    assert job["status"] == "QUEUED"
    assert [a["outcome"] for a in job["attempts"]][-1] == "waiting"
    assert "submit_claim" not in stack.item(job["job_id"])
    assert stack.item(job["job_id"])["due_at"] >= stack.clock.now().timestamp() + faults.get(
        "retry_after_s", 0
    )

    # When the provider recovers and the wait is over, the sweeper hands it back to submit
    stack.emulator.set_faults("kling", create_status=None, create_code=None, retry_after_s=None)
    stack.clock.advance(60)
    stack.sandbox.sweep()
    stack.send_all(1)

    # Then it is sent, and the day holds one reservation for it
    sent = stack.job(job["job_id"])
    assert (sent["status"], sent["provider"]) == ("SUBMITTED", "kling")
    assert stack.spend()["reserved_usd"] == KLING_JOB_USD
    assert _creates(stack) == 2


def test_a_pinned_job_that_waits_past_its_deadline_times_out_released(stack: Stack) -> None:
    stack.emulator.set_faults("kling", create_status=503)
    job = stack.post_job("incoming/w2", provider="kling", deadline_s=60)
    stack.clock.advance(61)
    stack.sandbox.sweep()

    done = stack.job(job["job_id"])
    assert done["status"] == "TIMED_OUT"
    assert "provider_down" in done["error"]["message"]
    assert (done["reservation"]["state"], done["cost"]["possibly_billed"]) == ("released", False)


@pytest.mark.parametrize("deadline_s", [59, 86401, "soon"])
def test_a_deadline_outside_its_range_is_refused_naming_the_field(stack: Stack, deadline_s: Any) -> None:
    response = stack.post("incoming/d1", deadline_s=deadline_s)
    assert response.status_code == 400
    assert [d["field"] for d in response.json()["error"]["details"]] == ["deadline_s"]


def test_spend_for_another_day_and_a_malformed_day(stack: Stack) -> None:
    past = stack.spend("2020-01-01")
    assert (past["day"], past["settled_usd"], past["reserved_usd"]) == ("2020-01-01", 0.0, 0.0)
    response = stack.api.request("GET", "/spend?day=yesterday")
    assert response.status_code == 400
    assert response.json()["error"]["details"][0]["field"] == "day"


def test_many_submitters_at_once_never_overspend_the_day(five_dollar_day: Stack) -> None:
    """40 submitters, each with its own connection, claim 40 jobs at the same moment against a
    $5 day, on the sandbox's DynamoDB (whose conditional writes are atomic, as DynamoDB's are)."""
    stack = five_dollar_day
    clock = stack.clock
    endpoint = stack.sandbox.endpoint
    stores = []
    for _ in range(40):
        client = boto3.Session(region_name="us-east-1").client("dynamodb", endpoint_url=endpoint)
        table = Table(client, stack.table.name)
        stores.append(
            JobStore(table, clock, ledger=Ledger(table, clock, Budget(daily_usd=5, max_job_usd=25)))
        )
    jobs = [stores[0].create(_job(f"01CONCURRENT{i:02d}"))[0] for i in range(40)]
    start = threading.Barrier(len(jobs))

    def claim(index: int) -> Claim:
        start.wait()
        return stores[index].reserve_and_claim(jobs[index], f"claim-{index}", "gateway", GATEWAY_JOB_USD)[0]

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        outcomes = list(pool.map(claim, range(len(jobs))))

    # Then exactly as many as fit were claimed, and the day holds exactly their reservations
    assert outcomes.count(Claim.CLAIMED) == FITS
    assert outcomes.count(Claim.NO_ROOM) == 40 - FITS
    spend = stack.spend()
    assert spend["reserved_usd"] == pytest.approx(FITS * GATEWAY_JOB_USD)
    assert spend["remaining_usd"] == pytest.approx(5 - FITS * GATEWAY_JOB_USD)
    held = [stores[0].get(job.job_id) for job in jobs]
    assert sum(1 for job in held if job is not None and job.reservation is not None) == FITS


def test_a_pinned_job_waits_out_its_providers_open_breaker_without_calling_it(stack: Stack) -> None:
    # Given kling down, a job pinned to it fails three times (the breaker opens on the third)
    stack.emulator.set_faults("kling", create_status=503)
    job = stack.post_job("incoming/w3", provider="kling")
    for _ in range(2):
        stack.clock.advance(5)
        stack.sandbox.sweep()
        stack.send_all(1)
    assert _creates(stack) == 3

    # When it comes due again while the breaker is open
    stack.clock.advance(5)
    stack.sandbox.sweep()
    stack.send_all(1)

    # Then kling is not called: the job waits for the breaker's cool-down
    waiting = stack.job(job["job_id"])
    assert [a["outcome"] for a in waiting["attempts"]][-2:] == ["skipped_unhealthy", "waiting"]
    assert _creates(stack) == 3
    assert stack.item(job["job_id"])["due_at"] >= stack.clock.now().timestamp() + 60

    # And once kling is back and the cool-down is over, the probe sends it
    stack.emulator.set_faults("kling", create_status=None)
    stack.clock.advance(61)
    stack.sandbox.sweep()
    stack.send_all(1)
    assert stack.job(job["job_id"])["status"] == "SUBMITTED"
    assert stack.spend()["reserved_usd"] == KLING_JOB_USD


def test_a_late_task_is_salvaged_though_the_query_endpoint_was_down_at_the_deadline(stack: Stack) -> None:
    # Given callbacks lost and kling's query endpoint down through the deadline
    stack.emulator.set_faults("kling", latency_s=90, drop_callbacks=True)
    job = stack.post_job("incoming/late-down", provider="kling", deadline_s=60)
    stack.emulator.set_faults("kling", query_status=503)
    stack.clock.advance(61)
    stack.sandbox.sweep()
    assert stack.job(job["job_id"])["status"] == "TIMED_OUT"

    # When it is back after the task completed
    stack.clock.advance(60)
    stack.sandbox.sweep()  # still down: watched again later
    stack.emulator.set_faults("kling", query_status=None)
    stack.clock.advance(10)
    stack.sandbox.sweep()
    stack.sandbox.drain_archive()

    done = stack.job(job["job_id"])
    assert (done["status"], done["late"]) == ("ARCHIVED", True)


def test_a_task_whose_create_answer_was_lost_is_adopted_by_its_callback_after_the_deadline(
    stack: Stack,
) -> None:
    # Given evolink (no lookup) taking the task but answering after we gave up
    stack.emulator.set_faults("evolink", latency_s=90, hang_create_s=2.5)
    job = stack.post_job("incoming/lost-create", provider="evolink", deadline_s=60)
    assert (job["status"], job["provider"]) == ("QUEUED", None)
    stack.emulator.set_faults("evolink", hang_create_s=0)

    # When the deadline passes, it times out, still reserved: the task may exist
    stack.clock.advance(61)
    stack.sandbox.sweep()
    timed_out = stack.job(job["job_id"])
    assert (timed_out["status"], timed_out["cost"]["possibly_billed"]) == ("TIMED_OUT", True)

    # Then the task's own callback adopts it, and it is archived late, paid for once
    stack.clock.advance(30)
    stack.sandbox.tick_providers()
    stack.sandbox.drain_archive()
    done = stack.job(job["job_id"])
    assert (done["status"], done["late"], done["provider"]) == ("ARCHIVED", True, "evolink")
    assert "found_after_deadline" in [a["outcome"] for a in done["attempts"]]
    assert _creates(stack) == 1
    assert stack.spend()["reserved_usd"] == 0.0


def test_a_task_whose_create_answer_was_lost_is_found_by_lookup_after_the_deadline(stack: Stack) -> None:
    # Given gateway taking the task, answering too late, and its lookups failing through the deadline
    stack.emulator.set_faults(
        "gateway", latency_s=90, hang_create_s=2.5, query_status=503, drop_callbacks=True
    )
    job = stack.post_job("incoming/lost-lookup", deadline_s=60)
    stack.emulator.set_faults("gateway", hang_create_s=0)
    stack.clock.advance(61)
    stack.sandbox.sweep()
    assert stack.job(job["job_id"])["status"] == "TIMED_OUT"

    # When lookups work again after the task completed
    stack.emulator.set_faults("gateway", query_status=None)
    stack.clock.advance(30)
    stack.sandbox.sweep()  # found by our task id, and adopted
    stack.clock.advance(2)
    stack.sandbox.sweep()  # completed: handed to archive
    stack.sandbox.drain_archive()

    done = stack.job(job["job_id"])
    assert (done["status"], done["late"], done["provider"]) == ("ARCHIVED", True, "gateway")
    assert _creates(stack) == 1


# The 40.8 credits evolink reserves for the sample job, priced (more than the $0.50 below).
EVOLINK_RESERVED_USD = units_usd("evolink", evolink_credits("motion_control", "std", 5))


def _cheap_evolink(budget: str) -> dict[str, str]:
    """A deployment whose evolink price is out of date: $0.10/s, so $0.50 for the sample job,
    while evolink reserves (and charges) its 40.8 credits, EVOLINK_RESERVED_USD."""
    overrides = {"evolink": {"price_per_second": {"motion_control": {"std": 0.1}}}}
    return {"DailyBudgetUsd": budget, "ProviderOverrides": json.dumps(overrides)}


def test_a_reservation_rises_to_what_the_provider_reserved_and_settles_without_overrun(
    aws_env: None,
) -> None:
    with deterministic_stack(_cheap_evolink("5")) as stack:
        job = stack.post_job("incoming/held", provider="evolink")

        # The job reserved its $0.50 estimate, then followed evolink's usage.credits_reserved
        assert job["status"] == "SUBMITTED"
        assert (job["reservation"]["usd"], job["reservation"]["state"]) == (EVOLINK_RESERVED_USD, "reserved")
        assert stack.spend()["reserved_usd"] == EVOLINK_RESERVED_USD

        stack.finish_at_provider()
        stack.sandbox.drain_archive()
        spend = stack.spend()
        assert (spend["settled_usd"], spend["reserved_usd"]) == (EVOLINK_RESERVED_USD, 0.0)
        assert (spend["overrun_usd"], spend["overruns"]) == (0.0, 0)


def test_an_overcharge_is_settled_counted_and_refuses_new_jobs_while_the_day_is_over(aws_env: None) -> None:
    # Given a $0.52 day: the $0.50 estimate fits, evolink's reservation does not
    assert EVOLINK_RESERVED_USD > 0.52
    with deterministic_stack(_cheap_evolink("0.52")) as stack:
        job = stack.post_job("incoming/over", provider="evolink")
        assert (job["status"], job["reservation"]["usd"]) == ("SUBMITTED", 0.5)

        # When evolink charges what it reserved
        stack.finish_at_provider()
        stack.sandbox.drain_archive()

        # Then the job is billed what was charged, and the day says by how much it is over
        done = stack.job(job["job_id"])
        assert (done["status"], done["cost"]["billed_usd"]) == ("ARCHIVED", EVOLINK_RESERVED_USD)
        spend = stack.spend()
        assert spend["settled_usd"] == EVOLINK_RESERVED_USD
        assert (spend["overrun_usd"], spend["overruns"]) == (pytest.approx(EVOLINK_RESERVED_USD - 0.5), 1)
        over = pytest.approx(EVOLINK_RESERVED_USD - 0.52)
        assert (spend["remaining_usd"], spend["over_budget_usd"]) == (0.0, over)

        # And a new job is refused at once, the answer saying why the day is full
        response = stack.post("incoming/over2", provider="gateway")
        assert response.status_code == 402
        message = response.json()["error"]["message"]
        assert "more than was reserved (1 overrun(s))" in message
        assert "no job is sent until it is back under" in message


def test_concurrent_overcharged_jobs_pass_the_budget_only_by_the_recorded_overrun(
    five_dollar_day: Stack,
) -> None:
    """40 submitters on their own connections each claim a job at gateway's price and settle it
    at once 20 % over (a provider overcharging), all racing, against a $5 day."""
    stack = five_dollar_day
    endpoint = stack.sandbox.endpoint
    stores = []
    for _ in range(40):
        client = boto3.Session(region_name="us-east-1").client("dynamodb", endpoint_url=endpoint)
        table = Table(client, stack.table.name)
        ledger = Ledger(table, stack.clock, Budget(daily_usd=5, max_job_usd=25))
        stores.append(JobStore(table, stack.clock, ledger=ledger))
    jobs = [stores[0].create(_job(f"01OVER{i:02d}"))[0] for i in range(40)]
    start = threading.Barrier(len(jobs))

    def claim_and_settle(index: int) -> Claim:
        store = stores[index]
        start.wait()
        outcome = store.reserve_and_claim(jobs[index], f"claim-{index}", "gateway", GATEWAY_JOB_USD)[0]
        if outcome is Claim.CLAIMED:
            job_id = jobs[index].job_id
            store.transition(job_id, JobStatus.SUBMITTED, by=Actor.ARCHIVE, fields={"provider": "gateway"})
            store.transition(job_id, JobStatus.SUCCEEDED, by=Actor.ARCHIVE)
            charge = Charge(usd=OVERCHARGED_USD, source=BilledSource.PROVIDER)
            assert (
                store.transition(job_id, JobStatus.ARCHIVED, by=Actor.ARCHIVE, money=Settle(charge))
                is not None
            )
        return outcome

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        outcomes = list(pool.map(claim_and_settle, range(len(jobs))))

    # Then every charge is settled and counted, and the day passes $5 by no more than the overruns
    claimed = outcomes.count(Claim.CLAIMED)
    assert 0 < claimed <= FITS and outcomes.count(Claim.NO_ROOM) == 40 - claimed
    spend = stack.spend()
    assert spend["reserved_usd"] == 0.0
    assert spend["settled_usd"] == pytest.approx(OVERCHARGED_USD * claimed)
    assert spend["overruns"] == claimed
    assert spend["overrun_usd"] == pytest.approx((OVERCHARGED_USD - GATEWAY_JOB_USD) * claimed)
    assert spend["committed_usd"] - spend["overrun_usd"] <= 5 + 1e-9
    # And with less than a job's estimate left, no further claim fits
    late, _ = stores[0].create(_job("01OVERLATE"))
    assert stores[0].reserve_and_claim(late, "late", "gateway", GATEWAY_JOB_USD)[0] is Claim.NO_ROOM
