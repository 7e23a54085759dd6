"""Job states and the only transitions allowed between them.

Every write that changes a job's status names the states it may come from (see store.py), so a
late, duplicated or out-of-order signal fails its condition and becomes a no-op. Terminal states
never change, with one exception: salvage (TIMED_OUT -> SUCCEEDED -> ARCHIVED) when a provider
completes a task after the job's deadline.
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    QUEUED = "QUEUED"
    SUBMITTED = "SUBMITTED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    ARCHIVED = "ARCHIVED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def rank(self) -> int:
        """Position along the happy path; a job never moves to a lower rank."""
        return _RANK[self]


TERMINAL = frozenset({JobStatus.ARCHIVED, JobStatus.FAILED, JobStatus.TIMED_OUT, JobStatus.CANCELLED})

_RANK = {
    JobStatus.QUEUED: 0,
    JobStatus.SUBMITTED: 1,
    JobStatus.RUNNING: 2,
    JobStatus.SUCCEEDED: 3,
    JobStatus.ARCHIVED: 4,
    JobStatus.FAILED: 4,
    JobStatus.TIMED_OUT: 4,
    JobStatus.CANCELLED: 4,
}

# target -> the states a job may be in for the move to happen.
ALLOWED_SOURCES: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.SUBMITTED: frozenset({JobStatus.QUEUED}),
    JobStatus.RUNNING: frozenset({JobStatus.SUBMITTED}),
    # From TIMED_OUT too, the one way out of a terminal state: a task the provider finished after
    # the deadline was paid for, so it is salvaged (archived with `late`), never thrown away.
    JobStatus.SUCCEEDED: frozenset({JobStatus.SUBMITTED, JobStatus.RUNNING, JobStatus.TIMED_OUT}),
    JobStatus.ARCHIVED: frozenset({JobStatus.SUCCEEDED}),
    # A job that succeeded at the provider can still fail here when its outputs cannot be copied.
    JobStatus.FAILED: frozenset(
        {JobStatus.QUEUED, JobStatus.SUBMITTED, JobStatus.RUNNING, JobStatus.SUCCEEDED}
    ),
    # Not from SUCCEEDED: that job was paid for and its outputs exist; failing to copy them is
    # FAILED (ARCHIVE_FAILED) after the archive deadline, not a timeout.
    JobStatus.TIMED_OUT: frozenset({JobStatus.QUEUED, JobStatus.SUBMITTED, JobStatus.RUNNING}),
    JobStatus.CANCELLED: frozenset({JobStatus.QUEUED, JobStatus.SUBMITTED, JobStatus.RUNNING}),
}


def allowed_sources(target: JobStatus) -> frozenset[JobStatus]:
    """The states from which `target` may be entered; QUEUED is never a target."""
    try:
        return ALLOWED_SOURCES[target]
    except KeyError:
        raise ValueError(f"{target} is not a transition target") from None


def can_move(source: JobStatus, target: JobStatus) -> bool:
    return source in ALLOWED_SOURCES.get(target, frozenset())
