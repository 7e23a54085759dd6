"""Specification of what a webhook says: only what the job's record holds, only when the record
backs the outcome the event claims, and every try recorded on the job."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pytest

from klingflow.core.codes import Actor
from klingflow.core.errors import UnsafeUrl
from klingflow.core.models import Job, Source, WebhookAttempt
from klingflow.core.outcomes import WebhookOutcome
from klingflow.core.states import JobStatus
from klingflow.flows.webhook import DeliveryFailed, WebhookSender, message_id, verify_webhook
from klingflow.infra.dynamo import Table
from klingflow.infra.events import detail_for
from klingflow.infra.safehttp import DownloadFailed
from klingflow.jobs.store import JobStore
from klingflow.money.ledger import Ledger
from klingflow_dev.clock import ManualClock

SECRET = "unit-test-signing-secret"
HOOK = "https://hooks.example.com/klingflow"
ALL = ["Job Submitted", "Job Completed", "Job Failed", "Job Timed Out", "Job Cancelled"]
OUTPUT = {
    "role": "video",
    "s3_uri": "s3://klingflow-bucket/outputs/01JOB/output-1.mp4",
    "key": "outputs/01JOB/output-1.mp4",
    "bytes": 1000,
    "sha256": "ab" * 32,
}


class Receiver:
    """SafeHttp's POST as a receiver sees it: each answer in turn (a status, or an error)."""

    def __init__(self, *answers: int | Exception) -> None:
        self.answers = list(answers)
        self.posts: list[tuple[str, bytes, dict[str, str]]] = []

    def post(self, url: str, *, content: bytes, headers: Mapping[str, str], deadline_s: float) -> int:
        self.posts.append((url, content, dict(headers)))
        answer = self.answers.pop(0) if self.answers else 204
        if isinstance(answer, Exception):
            raise answer
        return answer


def _sender(store: JobStore, clock: ManualClock, receiver: Receiver) -> WebhookSender:
    return WebhookSender(
        store=store,
        http=receiver,  # type: ignore[arg-type]
        secret=lambda: SECRET,
        clock=lambda: clock.now().timestamp(),
        rand=lambda: 1.0,
    )


def _job(store: JobStore, *path: JobStatus, job_id: str = "01JOB", events: list[str] = ALL) -> Job:
    store.create(
        Job.model_validate(
            {
                "job_id": job_id,
                "kind": "motion_control",
                "status": JobStatus.QUEUED,
                "request": {"image": "a.png", "webhook": {"url": HOOK, "events": events}},
                "source": Source(type="api"),
                "created_at": "2026-11-21T12:00:00Z",
                "updated_at": "2026-11-21T12:00:00Z",
                "deadline_at": 10**10,
            }
        )
    )
    for status in path:
        fields: Any = {"provider": "kling"} if status is JobStatus.SUBMITTED else None
        if status is JobStatus.ARCHIVED:
            fields = {"outputs": [OUTPUT], "cost": {"estimated_usd": 0.35, "billed_usd": 0.35}}
        assert store.transition(job_id, status, by=Actor.ARCHIVE, fields=fields) is not None
    job = store.get(job_id)
    assert job is not None
    return job


def _event(kind: str, job_id: str = "01JOB", **detail: object) -> dict[str, Any]:
    return {
        "id": "evt-forged-or-not",
        "source": "klingflow",
        "detail-type": kind,
        "time": "2030-01-01T00:00:00Z",
        "detail": {"job_id": job_id, **detail},
    }


ARCHIVED = (JobStatus.SUBMITTED, JobStatus.RUNNING, JobStatus.SUCCEEDED, JobStatus.ARCHIVED)


def test_the_body_is_the_jobs_record_whatever_the_event_says(store: JobStore, clock: ManualClock) -> None:
    # Given an archived job, and a Job Completed whose detail names outputs somewhere else
    job = _job(store, *ARCHIVED)
    receiver = Receiver()
    forged_detail: dict[str, object] = {
        "job_id": "01JOB",
        "outputs": [{"s3_uri": "s3://attacker/evil.mp4"}],
        "cost": {"billed": 0},
        "status": "X",
    }

    # When it is delivered
    done = _sender(store, clock, receiver).deliver({**_event("Job Completed"), "detail": forged_detail})

    # Then the signed body is the record's detail (the shape the bus carries), nothing of the event's
    assert done.outcome is WebhookOutcome.DELIVERED
    _, body, headers = receiver.posts[0]
    payload = verify_webhook(body, headers, SECRET, now=clock.now().timestamp())
    assert payload["data"] == detail_for(job).model_dump(mode="json")
    assert b"attacker" not in body and payload["data"]["outputs"][0]["s3_uri"] == OUTPUT["s3_uri"]
    assert payload["timestamp"] == next(e.at for e in job.history if e.status is JobStatus.ARCHIVED)


@pytest.mark.parametrize(
    "case",
    [
        ((JobStatus.SUBMITTED,), "Job Completed", "01JOB", "is SUBMITTED"),  # not archived
        ((JobStatus.SUBMITTED, JobStatus.RUNNING), "Job Failed", "01JOB", "is RUNNING"),
        (ARCHIVED, "Job Failed", "01JOB", "is ARCHIVED"),
        ((), "Job Submitted", "01JOB", "is QUEUED"),  # never submitted
        ((JobStatus.CANCELLED,), "Job Timed Out", "01JOB", "is CANCELLED"),
        (ARCHIVED, "Job Completed", "01NOSUCHJOB", "no such job"),
        (ARCHIVED, "Job Completed", "0" * 5000, "no such job"),  # longer than any key
        (ARCHIVED, "Job Requested", "01JOB", "never was"),  # not an outcome at all
    ],
)
def test_an_outcome_the_record_does_not_back_is_not_sent_counted_and_never_retried(
    store: JobStore, clock: ManualClock, case: tuple[tuple[JobStatus, ...], str, str, str]
) -> None:
    path, kind, job_id, why = case
    _job(store, *path)
    receiver = Receiver()

    done = _sender(store, clock, receiver).deliver(_event(kind, job_id, error={"code": "MADE_UP"}))

    assert done.outcome is WebhookOutcome.UNBACKED and why in done.detail
    assert receiver.posts == []
    job = store.get("01JOB")
    assert job is not None and job.webhook is None  # nothing recorded: nothing was tried


def test_an_event_from_another_source_is_not_sent(store: JobStore, clock: ManualClock) -> None:
    _job(store, *ARCHIVED)
    receiver = Receiver()
    event = {**_event("Job Completed"), "source": "partner.app"}
    assert _sender(store, clock, receiver).deliver(event).outcome is WebhookOutcome.UNBACKED
    assert receiver.posts == []


@pytest.mark.parametrize(
    "later", [(JobStatus.RUNNING,), (JobStatus.RUNNING, JobStatus.SUCCEEDED, JobStatus.ARCHIVED)]
)
def test_a_submission_handled_after_the_job_moved_on_is_still_sent(
    store: JobStore, clock: ManualClock, later: tuple[JobStatus, ...]
) -> None:
    job = _job(store, JobStatus.SUBMITTED, *later)
    receiver = Receiver()

    done = _sender(store, clock, receiver).deliver(_event("Job Submitted"))

    assert done.outcome is WebhookOutcome.DELIVERED
    payload = json.loads(receiver.posts[0][1])
    assert payload["type"] == "Job Submitted"
    assert payload["timestamp"] == next(e.at for e in job.history if e.status is JobStatus.SUBMITTED)
    assert payload["data"]["status"] == job.status.value  # the record as it is now


def test_a_salvaged_job_still_backs_its_timed_out(store: JobStore, clock: ManualClock) -> None:
    _job(store, JobStatus.SUBMITTED, JobStatus.TIMED_OUT, JobStatus.SUCCEEDED, JobStatus.ARCHIVED)
    receiver = Receiver()
    assert (
        _sender(store, clock, receiver).deliver(_event("Job Timed Out")).outcome is WebhookOutcome.DELIVERED
    )


def test_every_copy_of_one_outcome_carries_the_same_webhook_id(store: JobStore, clock: ManualClock) -> None:
    # Given two events for one outcome (a re-publication, or a copy someone put again)
    _job(store, *ARCHIVED)
    receiver = Receiver()
    sender = _sender(store, clock, receiver)
    sender.deliver(_event("Job Completed"))
    sender.deliver({**_event("Job Completed"), "id": "another-event-id"})

    # Then a receiver can drop the second: both have the job's id and the outcome as webhook-id
    assert {headers["webhook-id"] for _, _, headers in receiver.posts} == {
        message_id("01JOB", "Job Completed")
    }
    assert message_id("01JOB", "Job Completed") == "01JOB.job-completed"


def test_an_outcome_the_job_did_not_ask_for_is_not_sent(store: JobStore, clock: ManualClock) -> None:
    _job(store, JobStatus.SUBMITTED, events=["Job Completed"])
    receiver = Receiver()
    assert (
        _sender(store, clock, receiver).deliver(_event("Job Submitted")).outcome is WebhookOutcome.NOT_ASKED
    )
    assert receiver.posts == []


def test_every_try_is_recorded_on_the_job_with_when_the_next_one_is_due(
    store: JobStore, clock: ManualClock
) -> None:
    # Given a receiver that answers 500, then cannot be reached, then takes it
    _job(store, *ARCHIVED)
    receiver = Receiver(500, DownloadFailed("receiver host 'hooks.example.com' did not answer within 10 s"))
    sender = _sender(store, clock, receiver)

    # When the first try fails
    with pytest.raises(DeliveryFailed) as first:
        sender.deliver(_event("Job Completed"), attempt=1)

    # Then the job shows it, and when the next try is due (the backoff the queue is told)
    job = store.get("01JOB")
    assert job is not None and job.webhook is not None
    assert first.value.retry_in_s == 30
    assert (job.webhook.url, job.webhook.attempts, job.webhook.delivered) == (HOOK, 1, [])
    assert job.webhook.last is not None
    assert (job.webhook.last.outcome, job.webhook.last.status_code) == ("failed", 500)
    assert job.webhook.next_try_at == "2026-11-21T12:00:30.000Z"

    # And after a second failure and a success, the job says it was delivered, nothing is due
    with pytest.raises(DeliveryFailed, match="did not answer within"):
        sender.deliver(_event("Job Completed"), attempt=2)
    sender.deliver(_event("Job Completed"), attempt=3)
    job = store.get("01JOB")
    assert job is not None and job.webhook is not None
    assert (job.webhook.attempts, job.webhook.delivered, job.webhook.next_try_at) == (
        3,
        ["Job Completed"],
        None,
    )
    assert job.webhook.last is not None and job.webhook.last.outcome == "delivered"
    assert job.status is JobStatus.ARCHIVED and len(job.history) == 4  # nothing else touched


def test_a_url_the_guard_refuses_is_recorded_once_and_not_retried(
    store: JobStore, clock: ManualClock
) -> None:
    _job(store, *ARCHIVED)
    receiver = Receiver(
        UnsafeUrl("output URL host 'hooks.example.com' resolves to 10.0.0.7, a private address")
    )
    done = _sender(store, clock, receiver).deliver(_event("Job Completed"))
    job = store.get("01JOB")
    assert done.outcome is WebhookOutcome.REFUSED
    assert job is not None and job.webhook is not None and job.webhook.last is not None
    assert (job.webhook.last.outcome, job.webhook.next_try_at) == ("refused", None)


def test_an_ended_job_is_kept_until_a_day_after_its_webhooks_next_try(
    table: Table, clock: ManualClock, ledger: Ledger
) -> None:
    # Given a stack that keeps ended jobs one day, and a job archived now
    store = JobStore(table, clock, due_shards=4, ledger=ledger, retention_days=1)
    _job(store, *ARCHIVED)
    ended = _expires_at(table)
    assert ended == int(clock.now().timestamp()) + 86_400

    # When its webhook fails and is due again in 30 h (past the job's expiry)
    attempt = WebhookAttempt(event="Job Completed", at="2026-11-21T12:00:00Z", outcome="failed")
    store.record_webhook_attempt("01JOB", HOOK, attempt, next_try_at="2026-11-22T18:00:00.000Z")

    # Then the job outlives that try by a day, so the retry finds the job that backs it
    next_try = int(datetime.fromisoformat("2026-11-22T18:00:00Z").timestamp())
    assert _expires_at(table) == next_try + 86_400
    # And a later record with an earlier next try never brings the expiry forward
    store.record_webhook_attempt("01JOB", HOOK, attempt, next_try_at="2026-11-21T12:00:30.000Z")
    assert _expires_at(table) == next_try + 86_400


def test_a_retried_webhook_gives_a_job_that_has_not_ended_no_expiry(store: JobStore, table: Table) -> None:
    _job(store, JobStatus.SUBMITTED)
    attempt = WebhookAttempt(event="Job Submitted", at="2026-11-21T12:00:00Z", outcome="failed")
    store.record_webhook_attempt("01JOB", HOOK, attempt, next_try_at="2026-11-22T18:00:00.000Z")
    assert _expires_at(table) is None


def _expires_at(table: Table, job_id: str = "01JOB") -> int | None:
    item = table.get_item(Key={"pk": f"JOB#{job_id}"})["Item"]
    return None if "expires_at" not in item else int(item["expires_at"])


def test_recording_a_try_for_no_job_creates_nothing(store: JobStore, clock: ManualClock) -> None:
    attempt = WebhookAttempt(event="Job Completed", at="2026-11-21T12:00:00Z", outcome="delivered")
    assert store.record_webhook_attempt("01GHOST", HOOK, attempt, next_try_at=None) is False
    assert store.get("01GHOST") is None
