"""A create answer that arrives after the deadline timed its job out still hands the task over."""

from __future__ import annotations

from klingflow.core.codes import Actor
from klingflow.core.states import JobStatus
from klingflow.infra.events import EventPublisher
from klingflow.jobs.store import JobStore
from klingflow.jobs.submissions import SubmissionRecorder
from klingflow.money.settlement import Keep
from klingflow.providers.base import Submission
from klingflow.providers.registry import Registry, load_configs
from klingflow_dev.clock import ManualClock
from tests.unit.test_outbox import FlakyBus
from tests.unit.test_store import _job


def recorder(store: JobStore, clock: ManualClock) -> SubmissionRecorder:
    """A recorder with no metrics or archive queue, first polls at 120 s (callbacks) and 20 s."""
    return SubmissionRecorder(
        store=store,
        events=EventPublisher(FlakyBus(), "klingflow"),  # type: ignore[arg-type]
        registry=Registry(load_configs({}), lambda _: {}),
        clock=clock,
        first_poll_with_callback_s=120,
        first_poll_without_callback_s=20,
    )


def test_a_create_answer_after_the_deadline_is_adopted_for_the_salvage_watch(
    store: JobStore, clock: ManualClock
) -> None:
    # Given a job timed out while its create call was still waiting for an answer
    request = {"image": "a.png", "video": "b.mp4", "character_orientation": "image", "mode": "std"}
    job, _ = store.create(_job("01SLOW", submitting_to="apimaster", request=request))
    ended = store.transition(
        "01SLOW", JobStatus.TIMED_OUT, by=Actor.SWEEPER, money=Keep(), fields={"salvage_until": 10**10}
    )
    assert ended is not None and ended.salvaging
    # When the provider's answer finally arrives
    adopted = recorder(store, clock).submitted(job, "apimaster", Submission("task_late"))

    # Then the job stays TIMED_OUT but now follows that task, so a completion is archived late
    assert adopted.status is JobStatus.TIMED_OUT
    assert (adopted.provider, adopted.provider_task_id) == ("apimaster", "task_late")
    assert [a.outcome for a in adopted.attempts] == ["found_after_deadline"]
