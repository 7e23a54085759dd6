"""The event outbox: a state change that owes an event keeps owing it until EventBridge takes it."""

from __future__ import annotations

from typing import Any

from klingflow.core.codes import Actor
from klingflow.core.models import DetailType
from klingflow.core.outcomes import SweepOutcome
from klingflow.core.states import JobStatus
from klingflow.flows.configs import SweepConfig
from klingflow.flows.sweep import Sweeper
from klingflow.infra.events import EventPublisher
from klingflow.jobs.endings import announce, end_job
from klingflow.jobs.leases import RunLease
from klingflow.jobs.store import JobStore
from klingflow.money.settlement import Release
from klingflow.providers.registry import Registry, load_configs
from klingflow_dev.clock import ManualClock
from tests.unit.test_store import _job


class FlakyBus:
    """Stands in for EventBridge: refuses every entry while `down`, records what it accepts."""

    def __init__(self) -> None:
        self.down = False
        self.accepted: list[dict[str, Any]] = []

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        if self.down:
            return {"FailedEntryCount": 1, "Entries": [{"ErrorCode": "ThrottlingException"}]}
        self.accepted.extend(Entries)
        return {"FailedEntryCount": 0, "Entries": [{"EventId": "e"}]}


class NoQueue:
    def enqueue(self, job_id: str, reason: str) -> None:
        raise AssertionError("nothing to archive here")


def sweeper(
    store: JobStore,
    clock: ManualClock,
    *,
    events: EventPublisher | None = None,
    registry: Any = None,
    ceiling: int = 2,
    max_jobs: int = 10,
    lease: RunLease | None = None,
) -> Sweeper:
    """A sweeper with nothing to archive or resubmit: for tests of what it polls and publishes.
    Its run lease is the one item every sweeper on the store's table shares, as in the stack."""
    return Sweeper(
        store=store,
        queue=NoQueue(),  # type: ignore[arg-type]
        events=events or EventPublisher(FlakyBus(), "klingflow"),  # type: ignore[arg-type]
        registry=registry or Registry(load_configs({}), lambda _: {}),
        clock=clock,
        config=SweepConfig(poll_concurrency=ceiling, max_jobs_per_run=max_jobs),
        resolve_unknown=lambda job_id, provider: None,
        adopt_late=lambda job, provider, task_id: None,
        submit_queue=NoQueue(),  # type: ignore[arg-type]
        lease=lease or RunLease(store._items.table, clock, "sweeper", hold_s=SweepConfig.lease_s),
    )


def test_an_event_the_bus_refused_is_owed_and_the_sweeper_publishes_it(
    store: JobStore, clock: ManualClock
) -> None:
    # Given a job that fails while EventBridge refuses everything
    bus = FlakyBus()
    events = EventPublisher(bus, "klingflow")  # type: ignore[arg-type]
    store.create(_job("01OWED"))
    bus.down = True
    ended = end_job(
        store, events, "01OWED", JobStatus.FAILED, by=Actor.ARCHIVE, code="X", message="m", money=Release()
    )

    # Then the state is written, the event is owed, and the finished job stays due for it
    assert ended is not None and ended.status is JobStatus.FAILED
    assert store.get("01OWED").pending_event == "Job Failed"  # type: ignore[union-attr]
    assert bus.accepted == []
    clock.advance(61)
    assert [j.job_id for j in store.due_jobs(limit=10)] == ["01OWED"]

    # When the bus is back and the sweeper runs
    bus.down = False
    outcomes = sweeper(store, clock, events=events).sweep()

    # Then the event is published once, the debt is cleared, and the job leaves the index
    assert outcomes == {SweepOutcome.ANNOUNCED: 1}
    assert [e["DetailType"] for e in bus.accepted] == ["Job Failed"]
    assert store.get("01OWED").pending_event is None  # type: ignore[union-attr]
    clock.advance(3600)
    assert list(store.due_jobs(limit=10)) == []


def test_a_published_event_leaves_nothing_owed(store: JobStore, clock: ManualClock) -> None:
    bus = FlakyBus()
    events = EventPublisher(bus, "klingflow")  # type: ignore[arg-type]
    store.create(_job("01PAID"))
    moved = store.transition(
        "01PAID", JobStatus.SUBMITTED, by=Actor.ARCHIVE, due_in_s=30, announce=DetailType.SUBMITTED.value
    )
    assert moved is not None
    assert announce(store, events, moved, DetailType.SUBMITTED)
    job = store.get("01PAID")
    assert job is not None and job.pending_event is None
    assert job.due_at is not None  # still polled: only the debt was cleared
