"""What each function did with one piece of work, as types: metrics and logs name them directly.

Each outcome's value is the metric it counts towards, so a new outcome cannot be miscounted and a
typo cannot invent one.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar


class ArchiveOutcome(StrEnum):
    ARCHIVED = "JobsArchived"
    FAILED = "JobsFailed"  # the provider failed or cancelled the task, or reported no output
    RELEASED = "SalvageReleased"  # a timed-out task failed after all: its reservation given back
    RUNNING = "ArchiveStillRunning"  # the hint was early: the task is still running
    NOT_FINISHED = "ArchiveNotReady"  # the hint was early or forged: forgotten
    IGNORED = "ArchiveIgnored"  # nothing to do (unknown, ended, not sent yet, duplicate)
    BUSY = "ArchiveBusy"  # another worker holds the job's lease and is copying it
    RETRY_LATER = "ArchiveRetryLater"  # a provider or download failed: the sweeper brings it back
    # A download was not what it claimed (quarantined): retried, or the job failed. Alarmed.
    OUTPUT_INVALID = "OutputsInvalid"


class CallbackOutcome(StrEnum):
    RECORDED = "CallbacksRecorded"  # a hint that moved the job forward
    QUEUED = "CallbacksQueued"  # handed to archive to confirm with the provider
    IGNORED = "CallbacksIgnored"  # late, duplicated, reordered or saying nothing new


class SubmitOutcome(StrEnum):
    SENT = "JobsSent"
    WAITING = "JobsWaiting"  # a pinned provider said "not now", or the outcome is being resolved
    FAILED = "JobsNotSent"  # refused (budget, no provider) or every provider failed
    IGNORED = "SubmitIgnored"  # not QUEUED any more (sent, cancelled, ended) or unknown


class SweepOutcome(StrEnum):
    ANNOUNCED = "SweepAnnounced"
    ANNOUNCE_FAILED = "SweepAnnounceFailed"
    POLLED = "SweepPolled"
    POLL_FAILED = "SweepPollFailed"
    FINISHED = "SweepFinished"
    TIMED_OUT = "SweepTimedOut"
    RE_ENQUEUED = "SweepReEnqueued"
    ARCHIVE_FAILED = "SweepArchiveFailed"
    RESENT = "SweepResent"
    WAITING = "SweepWaiting"
    AWAITING_CALLBACK = "SweepAwaitingCallback"
    LOOKUP_FAILED = "SweepLookupFailed"
    FOUND = "SweepFound"
    ABANDONED = "SweepAbandoned"
    FAILED_UNKNOWN = "SweepFailedUnknown"
    SALVAGE_WATCHING = "SweepSalvageWatching"
    SALVAGE_POLL_FAILED = "SweepSalvagePollFailed"
    SALVAGE_FINISHED = "SweepSalvageFinished"
    SALVAGE_RELEASED = "SweepSalvageReleased"
    SALVAGE_CLOSED = "SweepSalvageClosed"
    SALVAGE_FOUND = "SweepSalvageFound"
    SALVAGE_AWAITING_CALLBACK = "SweepSalvageAwaitingCallback"
    DEFERRED = "SweepDeferred"
    ERROR = "SweepError"
    SKIPPED = "SweepSkipped"
    # Another sweep holds the run lease (its tick overran, or two ticks came at once): this
    # tick visited nothing and returned at once.
    OVERLAPPED = "SweepOverlapped"


class WebhookOutcome(StrEnum):
    DELIVERED = "WebhooksDelivered"
    NOT_ASKED = "WebhooksNotAsked"  # the job named no webhook, or not this outcome
    REFUSED = "WebhooksRefused"  # the URL is one the SSRF guard will never fetch
    # The event claims what the job's record does not back (forged, or for no job): not sent.
    UNBACKED = "WebhooksUnbacked"
    RETRYING = "WebhooksRetrying"  # the receiver did not take it: tried again later


Outcome = TypeVar("Outcome", ArchiveOutcome, CallbackOutcome, SubmitOutcome, SweepOutcome, WebhookOutcome)


@dataclass(frozen=True)
class Done(Generic[Outcome]):
    """An outcome and, for the log, the particulars."""

    outcome: Outcome
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.outcome.name.lower()}: {self.detail}" if self.detail else self.outcome.name.lower()
