"""The job record (as the store keeps it and the read API returns it) and event details.

What users send, per job kind, is in `kinds.py`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .kinds import AnyRequest, JobKind, load_request
from .states import JobStatus

# ---- the job record ---------------------------------------------------------------------------


class Source(BaseModel):
    """Where a request came from, so an operator can trace a job back to its trigger."""

    type: Literal["api", "s3", "event"]
    ref: str | None = None


class MediaFacts(BaseModel):
    """What probing an input found; kept on the job so a later reader sees what was checked."""

    source: str
    content_type: str | None = None
    bytes: int | None = None
    width: int | None = None
    height: int | None = None
    duration_s: float | None = None
    format: str | None = None


class Output(BaseModel):
    s3_uri: str
    key: str
    bytes: int
    sha256: str
    duration_s: float | None = None
    width: int | None = None
    height: int | None = None
    content_type: str = "video/mp4"


class Cost(BaseModel):
    estimated_usd: float | None = None
    billed_usd: float | None = None
    currency: str | None = None
    provider_amount: float | None = None
    billed_seconds: int | None = None


class JobError(BaseModel):
    code: str
    message: str


class HistoryEntry(BaseModel):
    at: str
    status: JobStatus
    by: str
    note: str | None = None


class Attempt(BaseModel):
    provider: str
    outcome: str
    at: str
    latency_ms: int | None = None
    detail: str | None = None


class Job(BaseModel):
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
    attempts: list[Attempt] = Field(default_factory=list)
    cost: Cost = Field(default_factory=Cost)
    outputs: list[Output] = Field(default_factory=list)
    error: JobError | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    polls: int = 0
    due_at: int | None = None
    hint_status: JobStatus | None = None
    callbacks: int = 0
    result_key: str | None = None
    # The provider a submission was being sent to (set before the call, kept after it).
    submitting_to: str | None = None
    # The event a state change owes until EventBridge has taken it (the outbox).
    pending_event: str | None = None

    # What a custom_element job made: the id to use in later video jobs.
    element_id: str | None = None

    @property
    def parsed_request(self) -> AnyRequest:
        return load_request(self.request)


# ---- events -----------------------------------------------------------------------------------


class EventOutput(BaseModel):
    s3_uri: str
    bytes: int
    sha256: str
    duration_s: float | None = None


class EventCost(BaseModel):
    estimated: float | None = Field(default=None, description="USD, before submission")
    billed: float | None = Field(default=None, description="USD, as the provider reported it")


class JobEventDetail(BaseModel):
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


class DetailType(StrEnum):
    SUBMITTED = "Job Submitted"
    COMPLETED = "Job Completed"
    FAILED = "Job Failed"
    TIMED_OUT = "Job Timed Out"
    REJECTED = "Job Rejected"
    REQUESTED = "Job Requested"  # inbound
