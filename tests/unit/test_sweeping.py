"""The sweeper at scale: its concurrency follows the due backlog, each due-index shard's quota
follows what the shard has due, and a sweep reads only the due jobs it visits."""

from __future__ import annotations

import threading
import zlib
from collections import Counter
from typing import Any

import pytest

from klingflow.core.models import Job
from klingflow.core.outcomes import SweepOutcome
from klingflow.core.states import JobStatus
from klingflow.flows.sweep import poll_workers
from klingflow.jobs.store import JobStore
from klingflow.money.ledger import Ledger
from klingflow.providers.base import TaskReport
from klingflow_dev.clock import ManualClock
from tests.unit.counting import CountingTable
from tests.unit.test_outbox import sweeper
from tests.unit.test_store import _job

SHARDS = 4
# Only a broken test waits this long: a gate that never opens.
GATE_TIMEOUT_S = 20.0


class GatedProvider:
    """A provider whose answers wait until `expected` polls are in flight at the same moment:
    a sweep that polls fewer at once never opens the gate, and its polls fail."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.in_flight = 0
        self.peak = 0
        self.polls = 0
        self.threads: set[str] = set()
        self._gate = threading.Event()
        self._lock = threading.Lock()

    def job_report(self, job: Job) -> TaskReport:
        with self._lock:
            self.polls += 1
            self.threads.add(threading.current_thread().name)
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            if self.in_flight >= self.expected:
                self._gate.set()
        opened = self._gate.wait(GATE_TIMEOUT_S)
        with self._lock:
            self.in_flight -= 1
        if not opened:
            raise AssertionError(f"only {self.peak} polls were ever in flight, not {self.expected}")
        assert job.provider_task_id is not None
        return TaskReport(
            task_id=job.provider_task_id, status=JobStatus.RUNNING, provider_status="processing"
        )


def _ids_in_shard(shard: int, count: int, prefix: str) -> list[str]:
    """`count` job ids the store files under due shard `shard` (its crc32 split)."""
    found: list[str] = []
    candidate = 0
    while len(found) < count:
        job_id = f"{prefix}{candidate:06d}"
        if zlib.crc32(job_id.encode()) % SHARDS == shard:
            found.append(job_id)
        candidate += 1
    return found


def _submitted(store: JobStore, job_ids: list[str], *, due_at: int = 0) -> None:
    """Jobs at a provider, due at `due_at` (0: long overdue)."""
    for job_id in job_ids:
        store.create(
            _job(
                job_id,
                status=JobStatus.SUBMITTED,
                provider="apimaster",
                provider_task_id=f"task-{job_id}",
                due_at=due_at,
            )
        )


@pytest.mark.parametrize(
    ("due", "ceiling", "workers"), [(0, 64, 1), (1, 64, 1), (3, 64, 3), (64, 64, 64), (500, 64, 64)]
)
def test_the_workers_are_one_per_due_job_up_to_the_ceiling(due: int, ceiling: int, workers: int) -> None:
    assert poll_workers(due, ceiling) == workers


@pytest.mark.parametrize(("backlog", "ceiling"), [(3, 64), (40, 64), (24, 8)])
def test_a_sweep_polls_as_many_jobs_at_once_as_are_due_up_to_the_ceiling(
    store: JobStore, clock: ManualClock, backlog: int, ceiling: int
) -> None:
    # Given `backlog` due jobs and a provider that answers only once min(backlog, ceiling)
    # polls wait on it together
    _submitted(store, [f"01DUE{index:04d}" for index in range(backlog)])
    provider = GatedProvider(expected=min(backlog, ceiling))

    # When one sweep runs
    outcomes = sweeper(store, clock, registry=provider, ceiling=ceiling, max_jobs=500).sweep()

    # Then every due job was polled, that many at once and never more than the ceiling, by
    # no more threads than that
    assert outcomes == Counter({SweepOutcome.POLLED: backlog})
    assert provider.peak == len(provider.threads) == min(backlog, ceiling)
    assert list(store.due_jobs(limit=500)) == []


def test_a_backlog_in_one_shard_is_drained_within_max_jobs_per_run(
    store: JobStore, clock: ManualClock
) -> None:
    # Given 40 jobs due in shard 0 and 2 in each of the other three (a fixed quarter each of a
    # 50-job pass would leave 27 of shard 0's waiting for later ticks)
    skewed = _ids_in_shard(0, 40, "01HOT")
    others = [job_id for shard in (1, 2, 3) for job_id in _ids_in_shard(shard, 2, "01COLD")]
    _submitted(store, skewed + others)
    provider = GatedProvider(expected=1)

    # When one sweep runs with room for 50 jobs
    outcomes = sweeper(store, clock, registry=provider, ceiling=16, max_jobs=50).sweep()

    # Then all 46 due jobs were visited in that one sweep, and none is due any more
    assert outcomes == Counter({SweepOutcome.POLLED: 46})
    assert list(store.due_jobs(limit=500)) == []


def test_a_backlog_bigger_than_one_run_fills_the_run_and_still_serves_every_shard(
    store: JobStore, clock: ManualClock
) -> None:
    # Given 30 jobs due in shard 0 and 3 in each other shard
    skewed = _ids_in_shard(0, 30, "01HOT")
    others = {shard: _ids_in_shard(shard, 3, f"01S{shard}") for shard in (1, 2, 3)}
    _submitted(store, skewed + [job_id for ids in others.values() for job_id in ids])

    # When the due jobs are read with room for 20
    due = [job.job_id for job in store.due_jobs(limit=20)]

    # Then the run is full: every other shard's jobs, and shard 0's for the rest
    assert len(due) == len(set(due)) == 20
    assert all(job_id in due for ids in others.values() for job_id in ids)
    assert sum(job_id in skewed for job_id in due) == 11


def test_the_most_overdue_jobs_of_a_shard_come_first(store: JobStore, clock: ManualClock) -> None:
    # Given one shard's jobs due at different moments
    job_ids = _ids_in_shard(2, 6, "01ORD")
    for due_at, job_id in zip((50, 10, 60, 20, 40, 30), job_ids, strict=True):
        _submitted(store, [job_id], due_at=due_at)

    # When three are read
    due = [job.due_at for job in store.due_jobs(limit=3)]

    # Then they are the three longest overdue, oldest first
    assert due == [10, 20, 30]


@pytest.mark.parametrize(("backlog", "max_jobs"), [(40, 500), (40, 15)])
def test_a_sweep_reads_only_the_due_jobs_it_visits(
    table: Any, clock: ManualClock, ledger: Ledger, backlog: int, max_jobs: int
) -> None:
    # Given `backlog` due jobs, as many more in the due index that are not due yet, and jobs
    # that have ended (out of the index)
    counting = CountingTable(table)
    store = JobStore(counting, clock, due_shards=SHARDS, ledger=ledger)  # type: ignore[arg-type]
    now = int(clock.now().timestamp())
    _submitted(store, [f"01DUE{index:04d}" for index in range(backlog)], due_at=now - 5)
    _submitted(store, [f"01LATER{index:04d}" for index in range(backlog)], due_at=now + 3600)
    for index in range(10):
        store.create(_job(f"01DONE{index:04d}", status=JobStatus.ARCHIVED, due_at=None))
    counting.reset()

    # When one sweep runs
    outcomes = sweeper(
        store, clock, registry=GatedProvider(expected=1), ceiling=16, max_jobs=max_jobs
    ).sweep()

    # Then it read exactly the due jobs it visited (the floor), in a handful of queries
    visited = sum(outcomes.values())
    assert visited == min(backlog, max_jobs)
    assert counting.read <= 1.1 * visited
    assert counting.read == visited
    assert counting.calls["query"] <= 2 * SHARDS + 1


def test_no_poll_starts_when_the_invocation_is_nearly_out_of_time(
    store: JobStore, clock: ManualClock
) -> None:
    # Given due jobs and less time left than one provider call may take
    _submitted(store, [f"01LATE{index:02d}" for index in range(5)])
    provider = GatedProvider(expected=1)

    # When a sweep runs
    outcomes = sweeper(store, clock, registry=provider, ceiling=64, max_jobs=500).sweep(
        time_left_s=lambda: 10.0
    )

    # Then every job is left for the next tick and no provider was asked
    assert outcomes == Counter({SweepOutcome.DEFERRED: 5})
    assert provider.polls == 0
    assert len(list(store.due_jobs(limit=500))) == 5


def test_a_reschedule_writes_the_next_look_and_reads_nothing_back(
    store: JobStore, clock: ManualClock
) -> None:
    # Given a job at a provider
    _submitted(store, ["01NEXT"])
    running = frozenset({JobStatus.RUNNING})
    polled = frozenset({JobStatus.SUBMITTED, JobStatus.RUNNING})

    # When the sweeper reschedules it, once from a state it is not in and once from its own
    refused = store.reschedule("01NEXT", status_in=running, due_in_s=30)
    written = store.reschedule("01NEXT", status_in=polled, due_in_s=30, increments={"polls": 1})

    # Then only the second wrote: the job is due 30 s from now, its poll counted
    job = store.get("01NEXT")
    assert (refused, written) == (False, True)
    assert job is not None
    assert (job.due_at, job.polls) == (int(clock.now().timestamp()) + 30, 1)


class SlowShards:
    """The jobs table, where every shard but `fast` answers only once `released` is set."""

    def __init__(self, table: Any, fast: str) -> None:
        self._table = table
        self.fast = fast
        self.released = threading.Event()

    def query(self, **kwargs: Any) -> Any:
        if kwargs["ExpressionAttributeValues"][":shard"] != self.fast:
            assert self.released.wait(GATE_TIMEOUT_S), "a shard was read before the fast one answered"
        return self._table.query(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._table, name)


def test_the_first_due_jobs_come_while_slower_shards_are_still_being_read(
    table: Any, clock: ManualClock, ledger: Ledger
) -> None:
    # Given two due jobs in each shard, and every shard but shard 2 slow to answer
    slow = SlowShards(table, fast="2")
    store = JobStore(slow, clock, due_shards=SHARDS, ledger=ledger)  # type: ignore[arg-type]
    _submitted(store, [job_id for shard in range(SHARDS) for job_id in _ids_in_shard(shard, 2, "01SIDE")])

    # When the due jobs are read
    due = store.due_jobs(limit=100)
    first = next(due)
    slow.released.set()
    rest = list(due)

    # Then the fast shard's job came first, before any slow shard had answered, and all came
    assert store.due_shard(first.job_id) == "2"
    assert len({first.job_id, *(job.job_id for job in rest)}) == 2 * SHARDS
