"""Leases: the right to do something one holder at a time, however many containers try.

- The archive lease, on the job item: the right to copy a SUCCEEDED job's outputs.
- A run lease, an item of its own (`LEASE#<name>`): the right to run a piece of work no two
  invocations may run at once (the sweeper's tick), shared by every container through the table
  instead of a function's reserved concurrency, which an account whose whole concurrency is
  below 100 cannot grant.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from klingflow.core.clock import Clock, epoch, iso
from klingflow.core.models import Job, JobError
from klingflow.core.states import JobStatus

from .items import JobItems
from .writes import JobWrite, LeaseFree, LeaseHeld, is_conditional_failure

if TYPE_CHECKING:
    from klingflow.infra.dynamo import Table

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


class RunLease:
    """One holder at a time for the run called `name`, held for at most `hold_s`.

    The item is `LEASE#<name>` with the holder's token and `expires_at` (the table's TTL
    attribute, so the item is eventually deleted once it lapses). `take` is one conditional
    write that succeeds only when no one holds it (no item, or given back) or the holder's
    `expires_at` has passed, by the injected clock; `release` gives it back (removes the
    holder) only if the caller still holds it. `hold_s` must outlast the holder's invocation
    (the function's Timeout): a holder that died without releasing keeps the run from others
    until then, never longer. Only UpdateItem is used, so the role needs no PutItem or
    DeleteItem on the table.
    """

    def __init__(self, table: Table, clock: Clock, name: str, *, hold_s: int) -> None:
        self._table = table
        self._clock = clock
        self._key = {"pk": f"LEASE#{name}"}
        self._hold_s = hold_s

    def take(self) -> str | None:
        """A new holder's token, or None while someone else's lease has not expired."""
        token = uuid.uuid4().hex
        now = self._clock.now()
        try:
            self._table.update_item(
                Key=self._key,
                UpdateExpression="SET holder = :token, expires_at = :until, taken_at = :at",
                ConditionExpression="attribute_not_exists(holder) OR expires_at <= :now",
                ExpressionAttributeValues={
                    ":token": token,
                    ":until": epoch(now) + self._hold_s,
                    ":at": iso(now),
                    ":now": epoch(now),
                },
            )
        except ClientError as error:
            if is_conditional_failure(error):
                return None
            raise
        return token

    def release(self, token: str) -> bool:
        """End the lease `token` holds now; False (and nothing written) if it is not the holder's
        any more (it expired and another took it) or never was."""
        now = self._clock.now()
        try:
            self._table.update_item(
                Key=self._key,
                UpdateExpression="SET expires_at = :now, released_at = :at REMOVE holder",
                ConditionExpression="holder = :token",
                ExpressionAttributeValues={":token": token, ":now": epoch(now), ":at": iso(now)},
            )
        except ClientError as error:
            if is_conditional_failure(error):
                return False
            raise
        return True
