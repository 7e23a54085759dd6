"""Job requests (as users send them), the job record (as the store keeps it) and event details.

Every rule from PROVIDERS.md's common motion-control table that can be checked from the request
lives here; the rules that need the media itself are in `media_rules.py`.
"""

from __future__ import annotations

import json
import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
)
from pydantic_core import PydanticCustomError

from .errors import FieldError, RequestRejected
from .states import JobStatus

PROMPT_MAX_CHARS = 2500
METADATA_MAX_BYTES = 2048


class JobKind(StrEnum):
    MOTION_CONTROL = "motion_control"


class Mode(StrEnum):
    STD = "std"  # 720p
    PRO = "pro"  # 1080p


class Orientation(StrEnum):
    IMAGE = "image"  # character faces as in the image; reference video <= 10 s
    VIDEO = "video"  # character faces as in the video; reference video <= 30 s


# An object key (spaces allowed, no URL scheme), s3://bucket/key, an https URL or a data: URI.
_MEDIA_REF = re.compile(
    r"^(s3://[^/]+/.+|https://\S+|data:image/[a-z]+;base64,.+|(?![A-Za-z][A-Za-z0-9+.-]*:)\S.*)$", re.DOTALL
)


def _yes_no(value: Any) -> Any:
    # The dialects want the strings "yes"/"no"; a JSON boolean is an honest way to say the same.
    if isinstance(value, bool):
        return "yes" if value else "no"
    return value


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    provider: str | None = Field(default=None, description="pin the job to one provider")
    metadata: dict[str, str] = Field(default_factory=dict, description="echoed in every event")
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=128)

    @field_validator("metadata")
    @classmethod
    def _metadata_small(cls, value: dict[str, str]) -> dict[str, str]:
        if len(json.dumps(value).encode()) > METADATA_MAX_BYTES:
            raise PydanticCustomError(
                "metadata_size",
                "metadata must be at most {limit} bytes as JSON",
                {"limit": METADATA_MAX_BYTES},
            )
        return value


class MotionControlRequest(_Request):
    """A character image animated by a reference performance video."""

    kind: Literal[JobKind.MOTION_CONTROL] = JobKind.MOTION_CONTROL
    image: str = Field(
        min_length=1,
        description="reference image: an object key in the bucket, s3://bucket/key, an https URL "
        "or base64 (with or without a data:image/...;base64, prefix)",
    )
    video: str = Field(min_length=1, description="reference video: object key, s3://bucket/key or https URL")
    character_orientation: Orientation
    mode: Mode
    prompt: str | None = Field(default=None, max_length=PROMPT_MAX_CHARS)
    keep_original_sound: Annotated[Literal["yes", "no"], BeforeValidator(_yes_no)] = "yes"

    @field_validator("image", "video")
    @classmethod
    def _reference_form(cls, value: str) -> str:
        if value.startswith("http://"):
            raise PydanticCustomError("https_only", "media URLs must use https")
        if not _MEDIA_REF.match(value):
            raise PydanticCustomError(
                "media_reference", "must be an object key, s3://bucket/key, an https URL or base64 data"
            )
        return value


JobRequest = Annotated[MotionControlRequest, Field(discriminator="kind")]
_REQUEST_ADAPTER: TypeAdapter[MotionControlRequest] = TypeAdapter(JobRequest)


def field_errors(error: ValidationError, prefix: str = "") -> list[FieldError]:
    """Flatten pydantic's errors into (field, rule, message) triples a person can act on."""
    found = []
    for item in error.errors(include_url=False):
        loc = [str(part) for part in item["loc"] if part != JobKind.MOTION_CONTROL.value]
        name = ".".join(loc) or "(request)"
        found.append(FieldError(f"{prefix}{name}", item["type"], item["msg"]))
    return found


def parse_request(data: Any) -> MotionControlRequest:
    """Validate a raw request; raises RequestRejected naming every broken field and rule."""
    if not isinstance(data, dict):
        raise RequestRejected([FieldError("(request)", "object_type", "a job request must be a JSON object")])
    data = {"kind": JobKind.MOTION_CONTROL.value, **data}
    try:
        return _REQUEST_ADAPTER.validate_python(data)
    except ValidationError as error:
        raise RequestRejected(field_errors(error)) from None


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

    @property
    def motion_request(self) -> MotionControlRequest:
        return MotionControlRequest.model_validate(self.request)


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


class DetailType(StrEnum):
    SUBMITTED = "Job Submitted"
    COMPLETED = "Job Completed"
    FAILED = "Job Failed"
    TIMED_OUT = "Job Timed Out"
    REJECTED = "Job Rejected"
    REQUESTED = "Job Requested"  # inbound
