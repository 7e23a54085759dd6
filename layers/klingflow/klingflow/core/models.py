"""The job record (as the store keeps it and the read API returns it) and event details.

What users send, per job kind, is in `kinds.py`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field

from .codes import Actor, AttemptOutcome, JobErrorCode
from .states import JobStatus
from .vocab import JobKind

# The request models are loaded by what parses requests (`parsed_request` here), not by every
# reader of a job record.
if TYPE_CHECKING:
    from .kinds import AnyRequest


class _Record(BaseModel):
    """Every model here builds its validator on first use, not at import. The functions whose
    first event reads or writes a job build the job record's models with their service
    (`build_job_models`); the callback, whose usual event is one conditional write, builds
    almost none, and an event detail's models are built when the first event is published."""

    model_config = ConfigDict(defer_build=True)


# ---- the job record ---------------------------------------------------------------------------


class Source(_Record):
    """Where a request came from, so an operator can trace a job back to its trigger."""

    type: Literal["api", "s3", "event"]
    ref: str | None = None


class MediaFacts(_Record):
    """What probing an input found; kept on the job so a later reader sees what was checked."""

    source: str
    content_type: str | None = None
    bytes: int | None = None
    width: int | None = None
    height: int | None = None
    duration_s: float | None = None
    format: str | None = None


class OutputRole(StrEnum):
    VIDEO = "video"
    COVER = "cover"  # a still the provider made of the clip (the gateway's manual's cover_url)
    WATERMARKED = "watermarked"  # the clip with the provider's watermark (Kling's watermark_url)


class Output(_Record):
    role: OutputRole = OutputRole.VIDEO
    s3_uri: str
    key: str
    bytes: int
    sha256: str
    duration_s: float | None = None
    width: int | None = None
    height: int | None = None
    content_type: str = "video/mp4"


class BilledSource(StrEnum):
    """Where a job's billed cost came from."""

    PROVIDER = "provider"  # the provider's own figure (Kling units, gateway seconds, evolink credits)
    RULE = "rule"  # the documented billing rule applied to what the job asked for and measured


class Cost(_Record):
    estimated_usd: float | None = None
    billed_usd: float | None = None
    billed_source: BilledSource | None = None
    currency: str | None = None
    provider_amount: float | None = None
    billed_seconds: int | None = None
    # The provider may have charged for a task whose outcome we never learned (a create answer
    # lost on a dialect we cannot ask, or a task still unfinished when we stopped watching): its
    # reservation stays against the day's budget.
    possibly_billed: bool = False


class SpendState(StrEnum):
    RESERVED = "reserved"  # counted against the day's budget, not charged yet
    SETTLED = "settled"  # replaced by what the provider charged
    RELEASED = "released"  # nothing was charged (never sent, failed, cancelled)


class Reservation(_Record):
    """A job's share of a day's budget: reserved once when the job is claimed for sending,
    moved with the job on fail-over, and settled or released when it ends."""

    day: str
    usd: float
    provider: str
    state: SpendState = SpendState.RESERVED


class JobError(_Record):
    # Ours, or the provider's own code when its failed task carried one (evolink).
    code: JobErrorCode | str
    message: str
    # BUDGET_EXCEEDED: the day's budget, what was left of it, and the job's estimate.
    budget: dict[str, float] | None = None


class HistoryEntry(_Record):
    at: str
    status: JobStatus
    by: Actor
    note: str | None = None


class Attempt(_Record):
    provider: str
    outcome: AttemptOutcome
    at: str
    latency_ms: int | None = None
    detail: str | None = None


class WebhookAttempt(_Record):
    """One try at a job's webhook, as the webhook function recorded it."""

    event: str  # the outcome it carried (`Job Completed`...)
    at: str
    outcome: Literal["delivered", "failed", "refused"]
    status_code: int | None = None  # what the receiver answered, if it answered
    detail: str | None = None


class WebhookDelivery(_Record):
    """A job's webhook as delivered so far (GET /jobs/{job_id} shows it)."""

    url: str
    attempts: int = Field(default=0, description="tries so far, every outcome counted")
    delivered: list[str] = Field(default_factory=list, description="the outcomes a receiver took (2xx)")
    last: WebhookAttempt | None = None
    next_try_at: str | None = Field(default=None, description="when a failed delivery is tried again")


class Job(_Record):
    """The job item, as stored (minus key attributes) and as returned by the read API."""

    model_config = ConfigDict(extra="ignore")

    job_id: str
    kind: JobKind
    status: JobStatus
    request: dict[str, Any]
    source: Source
    created_at: str
    updated_at: str
    deadline_at: int
    provider: str | None = None
    provider_task_id: str | None = None
    external_task_id: str | None = None
    inputs: dict[str, MediaFacts] = Field(default_factory=dict)
    history: list[HistoryEntry] = Field(default_factory=list)
    attempts: list[Attempt] = Field(
        default_factory=list,
        description="provider calls, oldest first; past the most a job keeps, the newest replaces the last",
    )
    attempts_omitted: int = Field(default=0, description="attempts replaced to keep the job's record small")
    cost: Cost = Field(default_factory=Cost)
    outputs: list[Output] = Field(default_factory=list)
    error: JobError | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    polls: int = 0
    # Times a pinned provider said "not now" and the job waited to be sent again.
    send_retries: int = 0
    due_at: int | None = None
    hint_status: JobStatus | None = None
    callbacks: int = 0
    last_callback_at: str | None = None
    result_key: str | None = None
    # The provider a submission was being sent to (set before the call, kept after it).
    submitting_to: str | None = None
    # The event a state change owes until EventBridge has taken it (the outbox).
    pending_event: str | None = None

    # What a custom_element job made: the id to use in later video jobs.
    element_id: str | None = None
    reservation: Reservation | None = None
    # Archived after its deadline had passed (salvaged from TIMED_OUT: paid for, so kept).
    late: bool = False
    # While set, a TIMED_OUT job's task is still watched, until this epoch second.
    salvage_until: int | None = None
    succeeded_at: int | None = None  # when the provider's success was confirmed (epoch)
    # Why the last copy of a SUCCEEDED job's outputs did not finish (it is being retried).
    archive_error: JobError | None = None
    # Downloads of its outputs that were not what they claimed (kept under quarantine/); a few
    # are retried, then the job fails OUTPUT_INVALID.
    invalid_downloads: int = 0
    # What the provider last said of its progress (percent), when it expects to finish (epoch
    # seconds, from its own estimate) and its own words; shown, never acted upon.
    progress: int | None = None
    eta_at: int | None = None
    provider_message: str | None = None
    # Where a gateway routed the task (its answers' `provider`), named in later queries.
    upstream_provider: str | None = None
    # sha256 of the request as sent (canonical JSON): an idempotency key reused with another
    # request is refused rather than answered with this job.
    request_sha256: str | None = None
    # How its webhook's deliveries went (written by the webhook function only).
    webhook: WebhookDelivery | None = None

    @property
    def at_provider(self) -> bool:
        """A provider may hold a task for this job (sent, or sent with the answer lost)."""
        return self.provider is not None or self.submitting_to is not None

    @property
    def salvaging(self) -> bool:
        return self.status is JobStatus.TIMED_OUT and self.salvage_until is not None

    @property
    def parsed_request(self) -> AnyRequest:
        from .kinds import load_request  # noqa: PLC0415 (see the module's imports)

        return load_request(self.request)


def build_job_models() -> None:
    """Build the job record's validators now, for a function whose first event reads or writes
    a job (all but the callback), as its service is built rather than inside that event."""
    records: list[type[_Record]] = [Source, MediaFacts, Output, Cost, Reservation, JobError, HistoryEntry]
    records += [Attempt, WebhookAttempt, WebhookDelivery, Job]
    for model in records:
        model.model_rebuild()


class JobPatch(TypedDict, total=False):
    """The job fields a caller's write may set, as stored (JSON values). A misspelled field is
    a type error here, and the store refuses any attribute a job does not have."""

    provider: str
    provider_task_id: str
    external_task_id: str | None
    submitting_to: str
    cost: dict[str, Any]
    outputs: list[dict[str, Any]]
    result_key: str
    element_id: str | None
    error: dict[str, Any]
    archive_error: dict[str, Any]
    invalid_downloads: int
    late: bool
    salvage_until: int
    succeeded_at: int
    progress: int
    eta_at: int
    provider_message: str
    upstream_provider: str


def progress_of(report: Any, now: int) -> JobPatch:
    """What a provider's task report says of progress (and where a gateway routed the task),
    as a job write."""
    patch = progress_patch(progress=report.progress, eta_s=report.eta_s, message=report.message, now=now)
    if report.upstream:
        patch["upstream_provider"] = str(report.upstream)[:100]
    return patch


def progress_patch(*, progress: int | None, eta_s: float | None, message: str | None, now: int) -> JobPatch:
    """The progress a provider reported, as a job write (only what it said)."""
    patch: JobPatch = {}
    if progress is not None:
        patch["progress"] = progress
    if eta_s is not None:
        patch["eta_at"] = now + max(0, round(eta_s))
    if message:
        patch["provider_message"] = message[:500]
    return patch


# ---- events -----------------------------------------------------------------------------------


class EventOutput(_Record):
    role: OutputRole = OutputRole.VIDEO
    s3_uri: str
    bytes: int
    sha256: str
    duration_s: float | None = None


class EventCost(_Record):
    estimated: float | None = Field(default=None, description="USD, before submission")
    billed: float | None = Field(default=None, description="USD, as settled when the job ended")
    billed_source: BilledSource | None = Field(
        default=None, description="provider: the provider's own figure; rule: the documented billing rule"
    )
    possibly_billed: bool = Field(
        default=False, description="the outcome at the provider is unknown: it may have charged"
    )


class JobEventDetail(_Record):
    """Detail of every event klingflow puts on its bus (source `klingflow`)."""

    version: Literal["1"] = "1"
    job_id: str | None
    kind: JobKind
    status: str
    provider: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    outputs: list[EventOutput] = Field(default_factory=list)
    cost: EventCost = Field(default_factory=EventCost)
    error: JobError | None = None
    source: Source | None = None
    element_id: str | None = Field(default=None, description="what a custom_element job made")
    late: bool = Field(default=False, description="archived after its deadline (salvaged)")


class DetailType(StrEnum):
    SUBMITTED = "Job Submitted"
    COMPLETED = "Job Completed"
    FAILED = "Job Failed"
    TIMED_OUT = "Job Timed Out"
    CANCELLED = "Job Cancelled"
    REJECTED = "Job Rejected"
    REQUESTED = "Job Requested"  # inbound
