"""The archive lease: the right to copy a SUCCEEDED job's outputs, one holder at a time."""

from __future__ import annotations

from typing import Any

from klingflow.core.clock import epoch, iso
from klingflow.core.models import Job, JobError
from klingflow.core.states import JobStatus

from .items import JobItems
from .writes import JobWrite, LeaseFree, LeaseHeld

_SUCCEEDED = frozenset({JobStatus.SUCCEEDED})


def take_lease(items: JobItems, job_id: str, owner: str, *, for_s: int) -> Job | None:
    """See `JobStore.take_lease`."""
    now = epoch(items.clock.now())
    write = JobWrite(
        status_in=_SUCCEEDED,
        sets={"archive_lease": owner, "archive_lease_until": now + for_s},
        guards=(LeaseFree(now),),
    )
    return items.update(job_id, write)


def drop_lease(
    items: JobItems, job_id: str, owner: str, error: JobError | None, *, invalid: bool
) -> Job | None:
    """See `JobStore.drop_lease`."""
    sets: dict[str, Any] = {"updated_at": iso(items.clock.now())}
    if error is not None:
        sets["archive_error"] = error.model_dump(mode="json", exclude_none=True)
    write = JobWrite(
        status_in=_SUCCEEDED,
        sets=sets,
        removes=("archive_lease", "archive_lease_until"),
        increments={"invalid_downloads": 1} if invalid else {},
        guards=(LeaseHeld(owner),),
    )
    return items.update(job_id, write)
