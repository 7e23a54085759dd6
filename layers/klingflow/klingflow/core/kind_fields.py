"""What every job kind's request is made of: the field types, their checks, and the base model.

Each family of kinds has its module (`kind_motion`, `kind_video`, `kind_omni`, `kind_element`);
`kinds.py` joins them into one request and parses it. The vocabulary (kinds, modes, tiers,
billing) lives apart in `vocab.py`, without pydantic.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
)
from pydantic_core import PydanticCustomError

from .errors import FieldError
from .vocab import Billing, JobKind, MediaRef

PROMPT_MAX_CHARS = 2500
METADATA_MAX_BYTES = 2048
METADATA_KEY_MAX_CHARS = 128
# An object key is at most 1,024 bytes and a provider takes URLs of at most 2,048 characters
# (evolink's callback rule); only a base64 image is longer.
MEDIA_REF_MAX_CHARS = 2048
# A request may set its own deadline within these bounds (seconds).
DEADLINE_S = (60, 86400)


# An object key (spaces allowed, no URL scheme), s3://bucket/key, an https URL or a data: URI.
_MEDIA_REF = re.compile(
    r"^(s3://[^/]+/.+|https://\S+|data:image/[a-z]+;base64,.+|(?![A-Za-z][A-Za-z0-9+.-]*:)\S.*)$", re.DOTALL
)
# Set while a request is rebuilt with the URLs a provider fetches (presigned, maybe http on a
# sandbox), so the "https only" rule for user input does not refuse our own links.
RESOLVED = "resolved_media"


def _yes_no(value: Any) -> Any:
    # The dialects want the strings "yes"/"no"; a JSON boolean is an honest way to say the same.
    if isinstance(value, bool):
        return "yes" if value else "no"
    return value


def _on_off(value: Any) -> Any:
    # gateway says sound "on"/"off"; we keep a boolean and accept both spellings.
    if value in ("on", "yes"):
        return True
    if value in ("off", "no"):
        return False
    return value


def media_reference(value: str, info: ValidationInfo) -> str:
    if info.context and info.context.get(RESOLVED):
        return value
    if value.startswith("http://"):
        raise PydanticCustomError("https_only", "media URLs must use https")
    if not _MEDIA_REF.match(value):
        raise PydanticCustomError(
            "media_reference", "must be an object key, s3://bucket/key, an https URL or base64 data"
        )
    if len(value) > MEDIA_REF_MAX_CHARS and not value.startswith("data:") and not _BASE64.fullmatch(value):
        raise PydanticCustomError(
            "media_reference_length",
            "an object key or URL is at most {limit} characters (found {found}); base64 images may be longer",
            {"limit": MEDIA_REF_MAX_CHARS, "found": len(value)},
        )
    return value


_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]+")
# pydantic's own words for a number outside its bounds name one bound; these name both.
_RANGE_ERRORS = frozenset({"greater_than_equal", "less_than_equal", "greater_than", "less_than"})


def between(low: float, high: float, unit: str = "") -> WrapValidator:
    """A number's range in the refusal: `Annotated[int, Field(ge=low, le=high), between(low, high)]`
    (Field keeps the range in the schema; this names it whole when a value is outside it)."""

    def check(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError as error:
            broken = next((e for e in error.errors() if e["type"] in _RANGE_ERRORS), None)
            if broken is None:
                raise
            raise PydanticCustomError(
                broken["type"],
                "must be from {low} to {high}{unit} (found {found})",
                {"low": low, "high": high, "unit": unit, "found": shown(value)},
            ) from None

    return WrapValidator(check)


def shown(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**20:
        return f"a number of about {int(abs(value).bit_length() * 0.30103) + 1} digits"
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}... ({len(text)} characters)"


# A media input: checked where it sits, so an error names its exact place (reference_images.1).
MediaInput = Annotated[str, Field(min_length=1), AfterValidator(media_reference)]
YesNo = Annotated[Literal["yes", "no"], BeforeValidator(_yes_no)]
OnOff = Annotated[bool, BeforeValidator(_on_off)]
Prompt = Annotated[str, Field(min_length=1, max_length=PROMPT_MAX_CHARS)]
OptionalPrompt = Annotated[str | None, Field(default=None, max_length=PROMPT_MAX_CHARS)]


# Element ids (from a custom_element job or a provider's presets), sent as the dialect's
# element_list. The providers give no count for motion control or image-to-video (?): the
# most any kind takes (omni without a video) bounds them.
ELEMENTS_MAX = 7
ElementIds = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]],
    Field(default_factory=list, max_length=ELEMENTS_MAX, description="element ids, sent as element_list"),
]
_ELEMENT_REF = re.compile(r"<<<element_(\d+)>>>")


def element_reference_errors(prompt: str | None, elements: list[str]) -> list[FieldError]:
    """`<<<element_N>>>` in a prompt must name one of the request's elements (N from 1)."""
    return [
        FieldError(
            "prompt",
            "element_reference",
            f"prompt refers to <<<element_{number}>>> but the request has {len(elements)} element(s)",
        )
        for number in sorted(set(_ELEMENT_REF.findall(prompt or "")), key=int)
        if not 1 <= int(number) <= len(elements)
    ]


class StrictModel(BaseModel):
    # Validators are built on first use, not at import: of the functions that load this module
    # (an adapter's checks, a stored request read back), only submit parses requests on its
    # first event, and it builds the default kind's with its service (`build_request_models`).
    # No NaN or infinity: no provider takes them and DynamoDB cannot hold them.
    model_config = ConfigDict(
        extra="forbid", str_strip_whitespace=True, defer_build=True, allow_inf_nan=False
    )


# The outcomes a webhook may ask for (a rejected request has no job to carry a webhook).
WEBHOOK_EVENTS = ("Job Submitted", "Job Completed", "Job Failed", "Job Timed Out", "Job Cancelled")
_LOOPBACK_HTTP = re.compile(r"^http://(127\.0\.0\.1|localhost|\[::1\])(:\d+)?(/|$)")


def webhook_url(value: str) -> str:
    # The shape only; intake checks the rest (webhookurls.py: a public host; loopback http
    # only where the sandbox's configuration allows it), so a stored request always reads back.
    if not (value.startswith("https://") or _LOOPBACK_HTTP.match(value)):
        raise PydanticCustomError("webhook_https", "a webhook URL must use https (plain http is refused)")
    return value


class Webhook(StrictModel):
    """Where the job's outcomes are POSTed, signed per Standard Webhooks."""

    url: Annotated[
        str,
        Field(min_length=9, max_length=2048, description="https to a public host (checked when posted)"),
        AfterValidator(webhook_url),
    ]
    events: list[Literal[WEBHOOK_EVENTS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["Job Completed", "Job Failed", "Job Timed Out", "Job Cancelled"],
        min_length=1,
        max_length=len(WEBHOOK_EVENTS),
        description="which outcomes to send (default: how the job ended)",
    )


class BaseRequest(StrictModel):
    kind: JobKind
    provider: str | None = Field(default=None, max_length=64, description="pin the job to one provider")
    metadata: dict[Annotated[str, Field(min_length=1, max_length=METADATA_KEY_MAX_CHARS)], str] = Field(
        default_factory=dict, description="echoed in every event"
    )
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=128)
    webhook: Webhook | None = None
    deadline_s: Annotated[
        int | None, Field(ge=DEADLINE_S[0], le=DEADLINE_S[1]), between(*DEADLINE_S, " s")
    ] = Field(
        default=None,
        description="seconds the job may take before TIMED_OUT (the stack's JobDeadlineSeconds otherwise)",
    )

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

    def media(self) -> list[MediaRef]:
        """Every media input, in a stable order; the intake probes each one."""
        return []

    def combination_errors(self) -> list[FieldError]:
        """Rules between fields, all of them at once, each naming the field it concerns."""
        return []

    def billing(self, measured_seconds: dict[str, float | None]) -> Billing:
        """The price tier and billed seconds, given the probed durations of the media by name."""
        raise NotImplementedError
