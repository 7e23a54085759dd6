"""Every move of a job's reservation, each one transaction with the job: the claim that
reserves, the fail-over that moves it to the next provider, and the ending that settles,
releases or keeps it."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from enum import StrEnum
from typing import Any

from klingflow.core.clock import iso
from klingflow.core.models import Job, Reservation
from klingflow.core.states import JobStatus
from klingflow.money.ledger import SpendChange, usd

from .items import JobItems, NoRoom
from .writes import ClaimHeld, Guard, JobWrite, Reserved

# A money write re-reads the job when a concurrent write moved its reservation meanwhile.
_MONEY_ATTEMPTS = 4
_QUEUED = frozenset({JobStatus.QUEUED})


class Claim(StrEnum):
    CLAIMED = "claimed"
    TAKEN = "taken"  # another submitter holds the job, or it is no longer QUEUED
    NO_ROOM = "no_room"  # the estimate does not fit what is left of today's budget


def write_with_money(items: JobItems, job_id: str, write: JobWrite) -> Job | None:
    """Make `write` and resolve the job's reservation as its `money` says, exactly once.

    The reservation is read, then both items are written on the condition that it has not
    changed meanwhile; a concurrent move (a cancel racing a claim) makes this read again.
    """
    money = write.money
    assert money is not None
    for _ in range(_MONEY_ATTEMPTS):
        job = items.get(job_id)
        if job is None or job.status not in write.status_in:
            return None
        reservation = job.reservation
        cost, change = money.apply(job)
        sets: dict[str, Any] = {"cost": cost.model_dump(mode="json", exclude_none=True)}
        spend = None
        if reservation is None:
            unchanged: Guard | Reserved = Guard.UNRESERVED
        else:
            unchanged = Reserved(reservation.usd, reservation.provider, reservation.state.value)
            if change is not None:
                assert items.ledger is not None, "a store that moves money needs the ledger"
                sets["reservation"] = reservation.model_copy(update={"state": money.state}).model_dump(
                    mode="json"
                )
                spend = items.ledger.update(change, must_fit=False)
        written = items.update(
            job_id,
            replace(
                write,
                sets={**write.sets, **sets},
                guards=(unchanged, *write.guards),
                money=None,
                spend=spend,
            ),
        )
        if written is not None:
            if change is not None and items.ledger is not None:
                items.ledger.written(change)
            return written
    return None


def reserve_and_claim(
    items: JobItems, job: Job, claim: str, provider: str, estimate_usd: float, *, elements: tuple[str, ...]
) -> tuple[Claim, Job | None]:
    """See `JobStore.reserve_and_claim`."""
    now = items.clock.now()
    sets = {"submit_claim": claim, "submit_claimed_at": iso(now), "updated_at": iso(now)}
    ledger = items.ledger
    assert ledger is not None, "a store that claims needs the ledger"
    if job.reservation is not None:
        write = JobWrite(
            status_in=_QUEUED,
            sets=sets,
            guards=(Guard.UNCLAIMED, Guard.RESERVED),
            # Its money is reserved already, but a day an overrun put over its budget sends
            # nothing until it is back under: not this job either.
            spend=ledger.under_budget(ledger.today()),
            elements=elements,
        )
        try:
            claimed = items.update(job.job_id, write)
        except NoRoom:
            return Claim.NO_ROOM, None
        return (Claim.CLAIMED, claimed) if claimed else (Claim.TAKEN, None)
    day = ledger.today()
    reservation = Reservation(day=day, usd=estimate_usd, provider=provider)
    change = SpendChange(day, job.kind, reserved={provider: usd(estimate_usd)})
    write = JobWrite(
        status_in=_QUEUED,
        sets={**sets, "reservation": reservation.model_dump(mode="json")},
        guards=(Guard.UNCLAIMED, Guard.UNRESERVED),
        spend=ledger.update(change, must_fit=True),
        elements=elements,
    )
    try:
        claimed = items.update(job.job_id, write)
    except NoRoom:
        return Claim.NO_ROOM, None
    if claimed is None:
        return Claim.TAKEN, None
    ledger.written(change)
    return Claim.CLAIMED, claimed


def move_reservation(items: JobItems, job: Job, claim: str, provider: str, estimate_usd: float) -> Job | None:
    """See `JobStore.move_reservation`."""
    assert items.ledger is not None and job.reservation is not None
    old = job.reservation
    if old.provider == provider and usd(old.usd) == usd(estimate_usd):
        return job
    delta = usd(estimate_usd) - usd(old.usd)
    moves = {old.provider: -usd(old.usd)}
    moves[provider] = moves.get(provider, Decimal(0)) + usd(estimate_usd)
    change = SpendChange(old.day, job.kind, reserved=moves)
    moved_to = old.model_copy(update={"provider": provider, "usd": estimate_usd})
    write = JobWrite(
        status_in=_QUEUED,
        sets={"reservation": moved_to.model_dump(mode="json")},
        guards=(ClaimHeld(claim), Reserved(old.usd, old.provider)),
        spend=items.ledger.update(change, must_fit=delta > 0),
    )
    moved = items.update(job.job_id, write)
    if moved is not None:
        items.ledger.written(change)
    return moved
