"""The callback's acknowledgement: one conditional write, one send when the news is an end.

Everything the callback must check (the job is live, at the provider its URL was made for, on
the task the body names, and the news is new) is in the write's condition; anything unusual
comes back from that failed write, so even the slow path reads nothing.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from klingflow.core.errors import JobNotFound
from klingflow.core.models import Job
from klingflow.core.outcomes import CallbackOutcome
from klingflow.core.states import JobStatus
from klingflow.core.tokens import CallbackSigner
from klingflow.flows.callback import CallbackReceiver
from klingflow.jobs.store import JobStore
from klingflow.providers.registry import Registry, load_configs
from klingflow_dev.clock import ManualClock
from tests.unit.counting import CountingTable
from tests.unit.test_store import _job


class RecordingQueue:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def enqueue(self, job_id: str, reason: str) -> None:
        self.sent.append((job_id, reason))


def _adoption_not_expected(job: Job, provider: str, task_id: str) -> Job:
    raise AssertionError("no adoption expected")


@pytest.fixture
def counted(table: Any) -> CountingTable:
    return CountingTable(table)


@pytest.fixture
def jobs(counted: CountingTable, clock: ManualClock) -> JobStore:
    return JobStore(counted, clock)  # type: ignore[arg-type]


@pytest.fixture
def queue() -> RecordingQueue:
    return RecordingQueue()


SIGNER = CallbackSigner(lambda: "callback-key")


@pytest.fixture
def receiver(jobs: JobStore, queue: RecordingQueue, clock: ManualClock) -> CallbackReceiver:
    return CallbackReceiver(
        store=jobs,
        queue=queue,  # type: ignore[arg-type]
        signer=SIGNER,
        registry=Registry(load_configs({}), lambda _: {}, clock=clock),
        adopt=_adoption_not_expected,
        adopt_late=_adoption_not_expected,
        clock=clock,
    )


def _at_gateway(jobs: JobStore, counted: CountingTable, **changes: Any) -> str:
    fields = {"status": JobStatus.SUBMITTED, "provider": "gateway", "provider_task_id": "task-1", **changes}
    jobs.create(_job("01CB", **fields))
    counted.reset()
    return "01CB"


def test_an_end_is_acknowledged_with_one_send_and_one_conditional_write(
    receiver: CallbackReceiver, jobs: JobStore, counted: CountingTable, queue: RecordingQueue
) -> None:
    # Given a job submitted to gateway
    job_id = _at_gateway(jobs, counted)

    # When gateway calls back on its own URL to say the task completed
    done = receiver.receive(
        job_id, SIGNER.token(job_id, "gateway"), lambda: {"id": "task-1", "status": "completed"}
    )

    # Then archive is told, and the hint is recorded, with one write and no read
    assert done.outcome is CallbackOutcome.QUEUED
    assert queue.sent == [(job_id, "callback-completed")]
    assert counted.calls == Counter({"update_item": 1})
    job = jobs.get(job_id)
    assert job is not None and job.hint_status is JobStatus.SUCCEEDED and job.callbacks == 1


def test_running_moves_the_job_and_notes_its_progress_in_the_same_single_write(
    receiver: CallbackReceiver, jobs: JobStore, counted: CountingTable, queue: RecordingQueue
) -> None:
    # Given a job submitted to evolink, which reports progress
    job_id = _at_gateway(jobs, counted, provider="evolink")
    body = {"id": "task-1", "status": "processing", "progress": 40}

    # When evolink says the task is processing
    done = receiver.receive(job_id, SIGNER.token(job_id, "evolink"), lambda: body)

    # Then one write moved it to RUNNING with its history entry and progress; nothing was sent
    assert done.outcome is CallbackOutcome.RECORDED and queue.sent == []
    assert counted.calls == Counter({"update_item": 1})
    job = jobs.get(job_id)
    assert job is not None and job.status is JobStatus.RUNNING and job.progress == 40
    assert [(h.status, h.by) for h in job.history][-1] == (JobStatus.RUNNING, "callback")


def test_a_duplicate_end_writes_nothing_and_reads_nothing(
    receiver: CallbackReceiver, jobs: JobStore, counted: CountingTable
) -> None:
    # Given a completion already recorded
    job_id = _at_gateway(jobs, counted)
    token = SIGNER.token(job_id, "gateway")
    receiver.receive(job_id, token, lambda: {"id": "task-1", "status": "completed"})
    before = jobs.get(job_id)
    counted.reset()

    # When the provider retries it
    done = receiver.receive(job_id, token, lambda: {"id": "task-1", "status": "completed"})

    # Then the refused write brought the job back, and nothing changed
    assert done.outcome is CallbackOutcome.IGNORED
    assert counted.calls == Counter({"update_item": 1})
    assert jobs.get(job_id) == before


def test_a_callback_for_another_task_or_from_another_provider_changes_nothing(
    receiver: CallbackReceiver, jobs: JobStore, counted: CountingTable, queue: RecordingQueue
) -> None:
    job_id = _at_gateway(jobs, counted)
    before = jobs.get(job_id)

    other_task = receiver.receive(
        job_id, SIGNER.token(job_id, "gateway"), lambda: {"id": "task-9", "status": "processing"}
    )
    other_provider = receiver.receive(
        job_id, SIGNER.token(job_id, "evolink"), lambda: {"id": "task-1", "status": "processing"}
    )

    assert other_task.outcome is other_provider.outcome is CallbackOutcome.IGNORED
    assert jobs.get(job_id) == before and queue.sent == []


def test_a_token_for_another_job_or_a_job_that_is_gone_is_not_found(
    receiver: CallbackReceiver, jobs: JobStore, counted: CountingTable, queue: RecordingQueue
) -> None:
    job_id = _at_gateway(jobs, counted)
    with pytest.raises(JobNotFound):
        receiver.receive(job_id, SIGNER.token("01OTHER", "gateway"), lambda: {"id": "task-1"})
    with pytest.raises(JobNotFound):
        receiver.receive(
            "01GONE", SIGNER.token("01GONE", "gateway"), lambda: {"id": "t", "status": "processing"}
        )
    assert counted.calls["update_item"] == 1 and queue.sent == []


def test_a_url_from_before_tokens_named_providers_still_counts(
    receiver: CallbackReceiver, jobs: JobStore, counted: CountingTable, queue: RecordingQueue
) -> None:
    # Given a job whose callback URL was handed out by the previous release
    job_id = _at_gateway(jobs, counted)

    # When its provider calls back on it
    done = receiver.receive(job_id, SIGNER.token(job_id), lambda: {"id": "task-1", "status": "completed"})

    # Then it is read first (the job says whose dialect it is) and recorded as before
    assert done.outcome is CallbackOutcome.QUEUED and queue.sent == [(job_id, "callback-completed")]
    job = jobs.get(job_id)
    assert job is not None and job.hint_status is JobStatus.SUCCEEDED
