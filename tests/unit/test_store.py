"""The jobs table's conditional writes, against a moto table built from template.yaml's own schema."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from klingflow.core.codes import Actor, AttemptOutcome
from klingflow.core.errors import RequestRejected
from klingflow.core.models import Attempt, Job, Source
from klingflow.core.states import JobStatus
from klingflow.infra.dynamo import Table
from klingflow.jobs.attempts import MAX_ATTEMPTS
from klingflow.jobs.reservations import Claim
from klingflow.jobs.store import JobStore
from klingflow.money.ledger import Ledger
from klingflow_dev.clock import ManualClock
from tests.unit.counting import CountingTable


def _job(job_id: str = "01JOB", **changes: Any) -> Job:
    data: dict[str, Any] = {
        "job_id": job_id,
        "kind": "motion_control",
        "status": JobStatus.QUEUED,
        "request": {"image": "a.png"},
        "source": Source(type="api"),
        "created_at": "2026-11-21T12:00:00Z",
        "updated_at": "2026-11-21T12:00:00Z",
        "deadline_at": 10**10,
        "due_at": 0,
    }
    data.update(changes)
    return Job.model_validate(data)


def test_the_same_idempotency_key_yields_the_first_job(store: JobStore) -> None:
    first, created = store.create(_job("01A"), idempotency_key="k")
    second, created_again = store.create(_job("01B"), idempotency_key="k")
    assert created and not created_again
    assert second.job_id == first.job_id == "01A"
    assert store.get("01B") is None


@pytest.mark.parametrize(
    ("changes", "field", "rule"),
    [
        (
            {"request": {"dynamic_masks": [{"trajectories": [{"x": 10**40 + 7}]}]}},
            "dynamic_masks.0.trajectories.0.x",
            "number_digits",
        ),
        ({"request": {"cfg_scale": 1e-200}}, "cfg_scale", "number_magnitude"),
        ({"request": {"prompt": "p" * 250_000}}, "prompt", "item_size"),
    ],
)
def test_a_job_the_table_cannot_hold_is_refused_by_its_field_before_anything_is_written(
    store: JobStore, table: Table, changes: dict[str, Any], field: str, rule: str
) -> None:
    with pytest.raises(RequestRejected) as refused:
        store.create(_job("01BIG", **changes), idempotency_key="big")
    assert [(e.field, e.rule) for e in refused.value.errors] == [(field, rule)]
    # Neither the key nor the job was written: the same key is free for a request that fits
    assert table.client.scan(TableName=table.name)["Count"] == 0
    assert store.create(_job("01FITS"), idempotency_key="big")[1]


def test_a_transition_names_its_sources_so_duplicates_and_late_signals_are_no_ops(store: JobStore) -> None:
    store.create(_job())
    assert store.transition("01JOB", JobStatus.SUBMITTED, by=Actor.ARCHIVE, due_in_s=10) is not None
    assert store.transition("01JOB", JobStatus.SUBMITTED, by=Actor.ARCHIVE) is None  # duplicate
    assert store.transition("01JOB", JobStatus.SUCCEEDED, by=Actor.ARCHIVE) is not None
    assert store.transition("01JOB", JobStatus.RUNNING, by=Actor.ARCHIVE) is None  # late, would go backwards
    job = store.get("01JOB")
    assert job is not None
    assert [h.status for h in job.history] == [JobStatus.SUBMITTED, JobStatus.SUCCEEDED]


def test_a_terminal_state_absorbs_everything_and_leaves_the_due_index(
    store: JobStore, clock: ManualClock
) -> None:
    store.create(_job())
    store.transition("01JOB", JobStatus.SUBMITTED, by=Actor.ARCHIVE, due_in_s=0)
    assert [j.job_id for j in store.due_jobs(limit=10)] == ["01JOB"]
    store.transition("01JOB", JobStatus.FAILED, by=Actor.ARCHIVE)
    for target in (
        JobStatus.SUBMITTED,
        JobStatus.RUNNING,
        JobStatus.SUCCEEDED,
        JobStatus.ARCHIVED,
        JobStatus.TIMED_OUT,
    ):
        assert store.transition("01JOB", target, by=Actor.ARCHIVE) is None
    assert list(store.due_jobs(limit=10)) == []


def test_only_jobs_whose_time_has_come_are_due(store: JobStore, clock: ManualClock) -> None:
    for index in range(6):
        store.create(_job(f"01J{index}"))
        store.transition(f"01J{index}", JobStatus.SUBMITTED, by=Actor.ARCHIVE, due_in_s=index * 60)
    clock.advance(150)
    assert sorted(j.job_id for j in store.due_jobs(limit=100)) == ["01J0", "01J1", "01J2"]
    assert len(list(store.due_jobs(limit=2))) == 2


def test_only_one_caller_ever_claims_a_submission(store: JobStore) -> None:
    job, _ = store.create(_job())
    assert store.reserve_and_claim(job, "first", "gateway", 0.35)[0] is Claim.CLAIMED
    assert store.reserve_and_claim(job, "second", "gateway", 0.35) == (Claim.TAKEN, None)


def test_a_hint_is_recorded_only_when_it_is_further_along(store: JobStore) -> None:
    store.create(_job())
    store.transition("01JOB", JobStatus.SUBMITTED, by=Actor.ARCHIVE)
    active = frozenset({JobStatus.SUBMITTED, JobStatus.RUNNING})
    assert store.record_hint("01JOB", JobStatus.SUCCEEDED, active=active) is not None
    assert store.record_hint("01JOB", JobStatus.SUCCEEDED, active=active) is None
    assert store.record_hint("01JOB", JobStatus.RUNNING, active=active) is None


def test_listing_is_newest_first_and_pages_with_an_opaque_token(store: JobStore) -> None:
    for index in range(5):
        store.create(_job(f"01J{index}"))
    page = store.list_jobs(limit=2)
    assert [j.job_id for j in page.jobs] == ["01J4", "01J3"]
    assert page.next_token is not None
    rest = store.list_jobs(limit=10, next_token=page.next_token)
    assert [j.job_id for j in rest.jobs] == ["01J2", "01J1", "01J0"]


def test_a_write_naming_a_field_a_job_does_not_have_fails_loudly(store: JobStore) -> None:
    store.create(_job())
    with pytest.raises(ValueError, match=r"a job has no attribute \['provder'\]"):
        store.touch("01JOB", status_in=frozenset({JobStatus.QUEUED}), fields={"provder": "gateway"})  # type: ignore[arg-type]
    assert store.get("01JOB") is not None


class _PagesTable:
    """A due index answering with set pages: the second repeats a job of the first, as a job
    whose due time moved past the first page's cursor (still due) is found again."""

    name = "pages"

    def __init__(self, pages: list[list[str]]) -> None:
        self._pages = pages

    def query(self, **request: Any) -> dict[str, Any]:
        number = 0 if "ExclusiveStartKey" not in request else int(request["ExclusiveStartKey"]["page"])
        items = [
            {"pk": f"JOB#{job_id}", **_job(job_id).model_dump(mode="json")} for job_id in self._pages[number]
        ]
        answer: dict[str, Any] = {"Items": items}
        if number + 1 < len(self._pages):
            answer["LastEvaluatedKey"] = {"page": str(number + 1)}  # the first page was cut short
        return answer


def test_a_job_found_again_on_a_later_page_is_given_once(clock: ManualClock) -> None:
    # Given a shard whose second page holds a job the first page gave
    store = JobStore(_PagesTable([["01A", "01B"], ["01B", "01C"]]), clock, due_shards=1)  # type: ignore[arg-type]
    # When its due jobs are read, then each job is given once
    assert [job.job_id for job in store.due_jobs(limit=10)] == ["01A", "01B", "01C"]


def test_an_id_too_long_to_be_a_key_is_simply_not_found(
    table: Table, clock: ManualClock, ledger: Ledger
) -> None:
    # DynamoDB refuses a partition key over 2,048 bytes with a ValidationException (moto does
    # not): such an id from a request path is not found without asking the table at all
    counting = CountingTable(table)
    store = JobStore(counting, clock, due_shards=4, ledger=ledger)  # type: ignore[arg-type]
    assert store.get("x" * 3000) is None
    assert store.get("é" * 1100) is None
    assert counting.calls["get_item"] == 0
    assert store.get("01JEXAMPLE") is None and counting.calls["get_item"] == 1


def test_a_job_keeps_its_first_attempts_and_the_newest_and_counts_the_rest(store: JobStore) -> None:
    # Given a pinned job told "not now" twenty times
    store.create(_job())
    for n in range(20):
        store.add_attempt(
            "01JOB",
            Attempt(provider="kling", outcome=AttemptOutcome.WAITING, at=f"2026-11-21T12:{n:02d}:00Z"),
        )

    job = store.get("01JOB")

    # Then its record holds MAX_ATTEMPTS of them, the last one the newest, and says how many it let go
    assert job is not None and len(job.attempts) == MAX_ATTEMPTS
    assert job.attempts[-2].at == f"2026-11-21T12:{MAX_ATTEMPTS - 2:02d}:00Z"
    assert job.attempts[-1].at == "2026-11-21T12:19:00Z"
    assert job.attempts_omitted == 20 - MAX_ATTEMPTS


def test_an_attempt_for_a_job_that_does_not_exist_writes_nothing(store: JobStore, table: Table) -> None:
    with pytest.raises(ClientError, match="ConditionalCheckFailed"):
        store.add_attempt(
            "01NONE", Attempt(provider="kling", outcome=AttemptOutcome.WAITING, at="2026-11-21T12:00:00Z")
        )
    assert store.get("01NONE") is None


def test_a_job_written_before_the_bound_with_more_attempts_is_appended_to_in_order(
    store: JobStore, table: Table
) -> None:
    # Given a job an earlier klingflow gave more attempts than MAX_ATTEMPTS
    older = [
        Attempt(provider="kling", outcome=AttemptOutcome.WAITING, at=f"2026-11-21T11:{n:02d}:00Z")
        for n in range(MAX_ATTEMPTS + 2)
    ]
    store.create(_job(attempts=older))

    store.add_attempt(
        "01JOB", Attempt(provider="kling", outcome=AttemptOutcome.WAITING, at="2026-11-21T12:00:00Z")
    )

    # Then the newest comes last, none of the earlier ones overwritten
    job = store.get("01JOB")
    assert job is not None and len(job.attempts) == MAX_ATTEMPTS + 3
    assert job.attempts[-1].at == "2026-11-21T12:00:00Z"
    assert [a.at for a in job.attempts[:-1]] == [a.at for a in older]
