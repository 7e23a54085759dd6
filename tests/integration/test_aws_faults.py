"""klingflow on a DynamoDB that conflicts and throttles as AWS's does when busy (the sandbox's
`aws_faults`): every job still ends, with its event, none lost, none paid twice, the day's budget
held and GET /spend agreeing with what the jobs were billed."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from klingflow import runtime
from klingflow.infra.dynamo import Table
from klingflow.infra.dynamoretry import RetryPolicy
from klingflow.jobs.reservations import Claim
from klingflow.jobs.store import JobStore
from klingflow.money.ledger import Budget, Ledger
from klingflow_dev.sandbox.iam import CALLER
from tests.fixtures.prices import job_usd
from tests.integration.conftest import Stack, deterministic_stack
from tests.unit.test_store import _job

# Throttling is waited out in real time (botocore's standard mode waits up to 1 s, then 2 s):
# a small share here; the storm (tests/reliability/test_aws_faults.py) throttles a tenth.
FAULTS = {"transaction_conflict": 0.2, "throttling": 0.03}
GATEWAY_JOB_USD = job_usd("gateway", "motion_control", "std", 5)
BUDGET_USD = 2
FITS = int(BUDGET_USD // GATEWAY_JOB_USD)
TERMINAL = {"ARCHIVED", "FAILED", "TIMED_OUT", "CANCELLED"}
ENDING_EVENT = {
    "ARCHIVED": "Job Completed",
    "FAILED": "Job Failed",
    "TIMED_OUT": "Job Timed Out",
    "CANCELLED": "Job Cancelled",
}


@pytest.fixture
def busy_day(aws_env: None) -> Iterator[Stack]:
    with deterministic_stack({"DailyBudgetUsd": str(BUDGET_USD)}, aws_faults=FAULTS) as stack:
        yield stack


def run_until_all_end(stack: Stack, ids: list[str], rounds: int = 40) -> None:
    """Time passes; providers finish and call back, the sweeper runs, the queues drain."""
    for _ in range(rounds):
        stack.clock.advance(30)
        stack.sandbox.tick_providers()
        stack.sandbox.sweep()
        stack.send_all(3)
        stack.archive_all(3)
        items = [stack.item(job_id) for job_id in ids]
        # Ended, and no event still owed (the sweeper publishes an owed one until it is out)
        if all(item["status"] in TERMINAL and "due_at" not in item for item in items):
            return


def test_every_job_ends_on_a_dynamodb_that_conflicts_and_throttles(busy_day: Stack) -> None:
    stack = busy_day
    # Given a $2 day, and more gateway jobs accepted than it holds
    accepted = [stack.post("incoming/busy") for _ in range(FITS + 4)]
    assert {response.status_code for response in accepted} == {202}, [r.text for r in accepted]
    ids = [response.json()["job_id"] for response in accepted]

    # When they are sent, run and archived while DynamoDB refuses a share of the calls
    stack.send_all(len(ids))
    run_until_all_end(stack, ids)

    # Then the refusals happened, every kind of them
    injected = stack.sandbox.aws.faults.injected
    for refusal in (
        "TransactionCanceledException/TransactionConflict",
        "TransactionConflictException",
        "ProvisionedThroughputExceededException",
    ):
        assert injected[refusal] > 0, injected
    # and every job ended as if they had not: those that fit archived, the rest refused by the budget
    jobs = [stack.job(job_id) for job_id in ids]
    assert sorted(job["status"] for job in jobs) == ["ARCHIVED"] * FITS + ["FAILED"] * 4
    for job in jobs:
        if job["status"] == "FAILED":
            assert job["error"]["code"] == "BUDGET_EXCEEDED", job
        # each with its ending's event
        assert ENDING_EVENT[job["status"]] in stack.events_for(job["job_id"]), job["job_id"]
    # none paid twice: one task at most per job
    tasks = [task for task in stack.emulator.tasks.values() if task.external_task_id in ids]
    assert len(tasks) == len({task.external_task_id for task in tasks}) == FITS
    # and the day holds what the jobs were billed, within its budget, nothing left reserved
    billed = sum(job["cost"].get("billed_usd") or 0.0 for job in jobs)
    spend = stack.spend()
    assert spend["settled_usd"] == pytest.approx(billed) == pytest.approx(FITS * GATEWAY_JOB_USD)
    assert spend["reserved_usd"] == 0.0
    assert spend["settled_usd"] <= BUDGET_USD


def test_submitters_that_overlap_on_the_days_budget_conflict_and_retry_to_the_exact_cap(
    aws_env: None,
) -> None:
    """Transactions in flight at once on the day's budget item conflict, as DynamoDB's do; each
    submitter retries with jitter, and exactly as many jobs as fit are claimed."""
    # 17 submitters at once on a $5 day (13 jobs fit)
    fits = int(5 // GATEWAY_JOB_USD)
    with deterministic_stack({"DailyBudgetUsd": "5"}, aws_faults={"transaction_conflict": 0}) as stack:
        clock = stack.clock
        # Patient retries: this test is about the outcome of overlapping, not the default's bounds
        patient = RetryPolicy(attempts=30, cap_s=0.2, total_s=30)
        table = Table(runtime.client("dynamodb"), stack.table.name, retry=patient)
        store = JobStore(table, clock, ledger=Ledger(table, clock, Budget(daily_usd=5, max_job_usd=25)))
        jobs = [store.create(_job(f"01OVERLAP{i:02d}"))[0] for i in range(fits + 4)]
        start = threading.Barrier(len(jobs))

        def claim(index: int) -> Claim:
            CALLER.set("SubmitFunction")  # a submit function's container calls the table
            start.wait()
            return store.reserve_and_claim(jobs[index], f"claim-{index}", "gateway", GATEWAY_JOB_USD)[0]

        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            outcomes = list(pool.map(claim, range(len(jobs))))

        assert stack.sandbox.aws.faults.injected["TransactionCanceledException/TransactionConflict"] > 0
        assert outcomes.count(Claim.CLAIMED) == fits
        assert outcomes.count(Claim.NO_ROOM) == 4
        assert stack.spend()["reserved_usd"] == pytest.approx(fits * GATEWAY_JOB_USD)
