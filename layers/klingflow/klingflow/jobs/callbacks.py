"""What a callback writes to its job: the hint it carries (and a move to RUNNING), in one
conditional write that reads nothing first; forgetting a hint the provider contradicted."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from klingflow.core.clock import iso
from klingflow.core.codes import Actor
from klingflow.core.models import HistoryEntry, Job, JobPatch
from klingflow.core.states import JobStatus, allowed_sources

from .items import JobItems
from .writes import Condition, FromProvider, HintBelow, JobWrite, is_conditional_failure


@dataclass(frozen=True)
class CallbackNews:
    """What a verified callback says, for `JobStore.record_callback`."""

    provider: str  # whose URL it came to
    task_id: str
    hint: JobStatus | None  # RUNNING or an end; None: progress only
    note: str  # the provider's own word for the status, for the history
    fields: JobPatch  # progress, ETA, the provider's message


@dataclass(frozen=True)
class NotRecorded:
    """A callback's write did not apply; the job as it was (None: there is no such job)."""

    job: Job | None


def record_hint(items: JobItems, job_id: str, hint: JobStatus, *, active: frozenset[JobStatus]) -> Job | None:
    """See `JobStore.record_hint`."""
    now = items.clock.now()
    write = JobWrite(
        status_in=active,
        sets={"hint_status": hint.value, "hint_rank": hint.rank, "last_callback_at": iso(now)},
        increments={"callbacks": 1},
        guards=(HintBelow(hint.rank),),
    )
    return items.update(job_id, write)


def forget_hint(items: JobItems, job_id: str) -> None:
    """See `JobStore.forget_hint`."""
    write = JobWrite(
        status_in=frozenset({JobStatus.SUBMITTED, JobStatus.RUNNING}),
        sets={"updated_at": iso(items.clock.now())},
        removes=("hint_status", "hint_rank"),
    )
    items.update(job_id, write)


def record_callback(
    items: JobItems, job_id: str, news: CallbackNews, *, active: frozenset[JobStatus]
) -> NotRecorded | None:
    """See `JobStore.record_callback`."""
    request = items.request(job_id, _callback_write(items, job_id, news, active))
    try:
        items.table.update_item(**request, ReturnValues="NONE", ReturnValuesOnConditionCheckFailure="ALL_OLD")
    except ClientError as error:
        if not is_conditional_failure(error):
            raise
        # The table hands the refused write's item back plain (dynamo.Table).
        old: Mapping[str, Any] | None = error.response.get("Item")  # type: ignore[assignment]
        return NotRecorded(items.job(old) if old else None)
    return None


def _callback_write(
    items: JobItems, job_id: str, news: CallbackNews, active: frozenset[JobStatus]
) -> JobWrite:
    now = items.clock.now()
    sets: dict[str, Any] = {"updated_at": iso(now), **news.fields}
    # A task named by our own job id (external id) is always ours.
    guards: list[Condition] = [FromProvider(news.provider, None if news.task_id == job_id else news.task_id)]
    increments: dict[str, int] = {}
    appends: dict[str, list[Any]] = {}
    status_in = active
    hint = news.hint
    if hint is not None:
        sets |= {"hint_status": hint.value, "hint_rank": hint.rank, "last_callback_at": iso(now)}
        increments = {"callbacks": 1}
        guards.append(HintBelow(hint.rank))
    if hint is JobStatus.RUNNING:
        # The move itself, in the same write: SUBMITTED -> RUNNING with its history entry.
        status_in = allowed_sources(JobStatus.RUNNING) & active
        sets["status"] = JobStatus.RUNNING.value
        entry = HistoryEntry(at=iso(now), status=JobStatus.RUNNING, by=Actor.CALLBACK, note=news.note)
        appends = {"history": [entry.model_dump(mode="json")]}
    return JobWrite(
        status_in=status_in, sets=sets, appends=appends, increments=increments, guards=tuple(guards)
    )
