"""A job whose provider calls back is first looked at when the provider expects it done (plus the
callback's own retries), not on a fixed ladder; one whose provider never calls back is polled soon."""

from __future__ import annotations

from typing import Any

import pytest

from klingflow.core.clock import epoch
from klingflow.core.models import Job
from klingflow.core.states import JobStatus
from klingflow.jobs.store import JobStore
from klingflow.jobs.submissions import CALLBACK_GRACE_S, expected_finish_s
from klingflow.providers.base import Submission, TaskReport
from klingflow.providers.registry import Registry, load_configs
from klingflow_dev.clock import ManualClock
from tests.unit.test_outbox import sweeper
from tests.unit.test_salvage import recorder
from tests.unit.test_store import _job

REQUEST = {"image": "a.png", "video": "b.mp4", "character_orientation": "image", "mode": "std"}


@pytest.mark.parametrize(
    ("eta_s", "first_poll_s"),
    [(300.0, 300 + CALLBACK_GRACE_S), (None, 120)],
    ids=["the provider's estimate", "no estimate: the callback default"],
)
def test_a_job_that_will_be_called_back_is_first_polled_at_its_expected_finish(
    store: JobStore, clock: ManualClock, eta_s: float | None, first_poll_s: int
) -> None:
    job, _ = store.create(_job("01CB", request=REQUEST))

    sent = recorder(store, clock).submitted(job, "gateway", Submission("task-1", eta_s=eta_s))

    assert sent.due_at == epoch(clock.now()) + first_poll_s


def test_a_job_that_is_never_called_back_is_polled_soon_whatever_its_estimate(
    store: JobStore, clock: ManualClock
) -> None:
    job, _ = store.create(_job("01NOCB", request=REQUEST))

    sent = recorder(store, clock).submitted(job, "apimaster", Submission("task-2", eta_s=900.0))

    assert sent.due_at == epoch(clock.now()) + 20


def test_the_expected_finish_is_the_estimate_plus_the_callbacks_retries() -> None:
    assert expected_finish_s(100.4, 120) == 100 + CALLBACK_GRACE_S
    assert expected_finish_s(None, 120) == 120


class EstimatingProvider:
    """A provider whose task is still running and expected to take `eta_s` more."""

    def __init__(self, eta_s: float) -> None:
        self.eta_s = eta_s
        self._registry = Registry(load_configs({}), lambda _: {})

    @property
    def configs(self) -> Any:
        return self._registry.configs

    def adapter(self, name: str) -> Any:
        return self._registry.adapter(name)

    def job_report(self, job: Job) -> TaskReport:
        assert job.provider_task_id is not None
        return TaskReport(
            task_id=job.provider_task_id,
            status=JobStatus.RUNNING,
            provider_status="processing",
            eta_s=self.eta_s,
        )


@pytest.mark.parametrize(
    ("provider", "next_poll_s"),
    [("gateway", 400 + CALLBACK_GRACE_S), ("apimaster", 20)],
    ids=["calls back: at its new expected finish", "never calls back: on the ladder"],
)
def test_a_poll_that_hears_a_new_estimate_looks_again_when_it_says(
    store: JobStore, clock: ManualClock, provider: str, next_poll_s: int
) -> None:
    # Given a job at a provider, overdue for a look (its callback was lost)
    store.create(
        _job("01POLL", status=JobStatus.SUBMITTED, provider=provider, provider_task_id="t-1", request=REQUEST)
    )

    # When a sweep polls it and hears it needs 400 s more
    sweeper(store, clock, registry=EstimatingProvider(eta_s=400)).sweep()

    # Then the next look is at that finish for a provider that calls back, on the ladder otherwise
    polled = store.get("01POLL")
    assert polled is not None and polled.status is JobStatus.RUNNING
    assert polled.due_at == epoch(clock.now()) + next_poll_s
