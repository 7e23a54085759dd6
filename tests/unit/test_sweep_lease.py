"""The sweeper runs alone through a lease item in the jobs table, not through reserved
concurrency (which an account with a concurrency quota under 100 cannot grant): a tick that
finds another sweep holding the lease visits nothing, a lease whose holder died is taken over
once it expires, and only its holder can give it back."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from klingflow.core.models import Job
from klingflow.core.outcomes import SweepOutcome
from klingflow.core.states import JobStatus
from klingflow.flows.configs import SweepConfig
from klingflow.infra.dynamo import Table
from klingflow.jobs.leases import RunLease
from klingflow.jobs.store import JobStore
from klingflow.providers.base import TaskReport
from klingflow_dev.clock import ManualClock
from klingflow_dev.sandbox import iam
from tests.unit.test_outbox import sweeper
from tests.unit.test_store import _job
from tests.unit.test_table_rights import DOCUMENT, GRANTS, _key

# Only a broken test waits this long: a poll that is never let go.
WAIT_S = 20.0


class HeldProvider:
    """A provider whose polls wait until the test lets them go, counting who asked."""

    def __init__(self) -> None:
        self.polls = 0
        self.polling = threading.Event()
        self.go = threading.Event()
        self._lock = threading.Lock()

    def job_report(self, job: Job) -> TaskReport:
        with self._lock:
            self.polls += 1
        self.polling.set()
        assert self.go.wait(WAIT_S), "the poll was never let go"
        assert job.provider_task_id is not None
        return TaskReport(
            task_id=job.provider_task_id, status=JobStatus.RUNNING, provider_status="processing"
        )


def _due(store: JobStore, count: int) -> None:
    for index in range(count):
        store.create(
            _job(
                f"01DUE{index:03d}",
                status=JobStatus.SUBMITTED,
                provider="apimaster",
                provider_task_id=f"task-{index}",
            )
        )


def _lease(table: Table, clock: ManualClock) -> RunLease:
    return RunLease(table, clock, "sweeper", hold_s=SweepConfig.lease_s)


def test_of_two_sweeps_at_once_only_the_lease_holder_visits(
    table: Table, store: JobStore, clock: ManualClock
) -> None:
    # Given three due jobs and a first sweep in the middle of polling them
    _due(store, 3)
    provider = HeldProvider()
    with ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(sweeper(store, clock, registry=provider, ceiling=3).sweep)
        assert provider.polling.wait(WAIT_S)

        # When a second sweep starts meanwhile (another container, the next tick)
        second = sweeper(store, clock, registry=provider, ceiling=3).sweep()

        # Then it returns at once having visited nothing, and says so
        assert second == Counter({SweepOutcome.OVERLAPPED: 1})
        provider.go.set()
        assert first.result(WAIT_S) == Counter({SweepOutcome.POLLED: 3})
    # And each job was polled once, by the first
    assert provider.polls == 3

    # When the first has ended (its lease given back), the next tick runs
    clock.advance(3600)
    assert sweeper(store, clock, registry=provider).sweep() == Counter({SweepOutcome.POLLED: 3})


def test_a_lease_whose_holder_died_is_taken_over_once_it_expires(
    table: Table, store: JobStore, clock: ManualClock
) -> None:
    # Given a sweep that took the lease and died without giving it back (its function timed out)
    dead = _lease(table, clock).take()
    assert dead is not None
    _due(store, 2)
    provider = HeldProvider()
    provider.go.set()

    # When the next tick comes a minute later, inside the lease
    clock.advance(60)
    assert sweeper(store, clock, registry=provider).sweep() == Counter({SweepOutcome.OVERLAPPED: 1})
    assert provider.polls == 0

    # Then the tick after its expiry takes it over and sweeps
    clock.advance(SweepConfig.lease_s - 60)
    assert sweeper(store, clock, registry=provider).sweep() == Counter({SweepOutcome.POLLED: 2})
    # And the dead holder, were it to wake up, could no longer give back a lease it lost
    assert not _lease(table, clock).release(dead)


def test_a_release_by_anyone_but_the_holder_does_nothing(table: Table, clock: ManualClock) -> None:
    lease = _lease(table, clock)
    holder = lease.take()
    assert holder is not None

    assert not lease.release("someone-else")
    assert lease.take() is None  # still held
    clock.advance(SweepConfig.lease_s - 1)
    assert lease.take() is None  # held until it expires

    assert lease.release(holder)
    assert lease.take() is not None  # given back: free at once


def test_the_sweeper_needs_no_reserved_concurrency_and_its_role_may_take_the_lease() -> None:
    function = DOCUMENT["Resources"]["SweeperFunction"]["Properties"]
    assert "ReservedConcurrentExecutions" not in function
    # The lease outlasts an invocation (its Timeout) and is free again by the tick after next.
    [schedule] = function["Events"].values()
    assert schedule["Properties"]["ScheduleExpression"] == "rate(1 minute)"
    assert int(function["Timeout"]) < SweepConfig.lease_s < 2 * 60
    # Only the sweeper's role reaches the lease item (the lease uses UpdateItem alone).
    take = next(iam.accesses("UpdateItem", _key("LEASE#sweeper")))
    assert [name for name, statements in GRANTS.items() if iam.allowed(statements, take)] == [
        "SweeperFunction"
    ]
