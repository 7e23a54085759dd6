"""What every dialect adapter provides: the contract, and the tasks, answers and usage it speaks of.

An adapter is pure translation: it builds requests and parses answers, so the providers' documented example
bodies can be round-tripped in unit tests without a network. `ProviderClient` (`client.py`)
does the I/O and turns transport failures into the shared error taxonomy; the body pieces
several dialects spell alike are in `bodies.py`.

A dialect supports a job kind by defining `create_<kind>`: the set of kinds is derived from
those methods, so what an adapter can build and what routing offers cannot drift apart.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast
from urllib.parse import urlsplit

from klingflow.core.clock import Clock, SystemClock
from klingflow.core.codes import JobErrorCode, ProviderErrorClass
from klingflow.core.errors import FieldError, ProviderError
from klingflow.core.states import JobStatus
from klingflow.core.vocab import Billing, JobKind

# The request models are loaded by the adapters that read them, not here: what a callback
# parses with needs none.
if TYPE_CHECKING:
    from klingflow.core.kinds import AnyRequest

R = TypeVar("R")


@dataclass(frozen=True)
class TaskSpec:
    """Everything a dialect needs to create a task of any kind.

    `request` carries, in place of each media reference, the URL the provider fetches.
    """

    job_id: str
    request: AnyRequest
    callback_url: str | None
    billing: Billing | None = None

    def of(self, kind: type[R]) -> R:
        """The request as the kind a builder was dispatched for."""
        assert isinstance(self.request, kind)
        return self.request


@dataclass(frozen=True)
class HttpCall:
    method: str
    path: str
    json: dict[str, Any] | None = None


@dataclass(frozen=True)
class Submission:
    task_id: str
    external_task_id: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)
    # Set when the create answer is already the outcome (gateway makes elements synchronously).
    element_id: str | None = None
    eta_s: float | None = None  # the provider's estimate of how long the task takes
    # What the provider says it set aside for the task (evolink's `usage.credits_reserved`): the
    # most it will charge, which the job's reservation then follows.
    reserved: Usage | None = None


@dataclass(frozen=True)
class TaskOutput:
    url: str
    duration_s: float | None = None
    # Extras some providers make beside the clip (the gateway's manual's cover_url, Kling's watermark_url):
    # kept as further outputs when they can be fetched; the clip never waits on them.
    cover_url: str | None = None
    watermarked_url: str | None = None


class UsageUnit(StrEnum):
    SECONDS = "seconds"  # seconds of video billed (gateway's usage.seconds)
    UNITS = "units"  # the provider's own currency of account: Kling units, evolink credits


@dataclass(frozen=True)
class Usage:
    """What a provider says it charged for a task, in its own unit."""

    amount: float
    unit: UsageUnit


@dataclass(frozen=True)
class TaskReport:
    """A provider's view of a task, in our vocabulary. `status` None: a word we do not know."""

    task_id: str
    status: JobStatus | None
    provider_status: str
    outputs: tuple[TaskOutput, ...] = ()
    error_code: JobErrorCode | str | None = None  # ours, or the provider's own (evolink)
    error_message: str | None = None
    usage: Usage | None = None  # the provider's own figure of what it charged, when it gives one
    external_task_id: str | None = None
    element_id: str | None = None  # what a custom_element task made
    # What the provider says of its progress: percent done, seconds it expects still to take,
    # and its own words (Kling's task_status_msg). Shown on the job, never acted upon.
    progress: int | None = None
    eta_s: float | None = None
    message: str | None = None
    # The upstream a gateway routed the task to (the gateway's manual's `provider`), to name in later queries.
    upstream: str | None = None


@dataclass(frozen=True)
class Download:
    url: str
    # True when the URL is the provider's own API and wants its credentials.
    authenticated: bool = False


class Adapter(ABC):
    """One provider dialect. Subclasses set the class attributes and implement the translation."""

    dialect: ClassVar[str]
    sends_callbacks: ClassVar[bool]
    # Whether a task can be found again by the id we chose, to resolve an unknown outcome.
    supports_external_id: ClassVar[bool]
    status_words: ClassVar[Mapping[str, JobStatus]]
    # The model names requests carry per kind, unless the registry configures others.
    default_models: ClassVar[Mapping[JobKind, str]]
    # Derived from the `create_<kind>` methods a dialect defines.
    kinds: ClassVar[frozenset[JobKind]] = frozenset()
    # The kinds whose create body carries an element_list, or a watermark_info.
    element_kinds: ClassVar[frozenset[JobKind]] = frozenset()
    watermark_kinds: ClassVar[frozenset[JobKind]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.kinds = frozenset(
            kind for kind in JobKind if callable(getattr(cls, f"create_{kind.value}", None))
        )

    def __init__(
        self, base_url: str, *, models: Mapping[JobKind, str] | None = None, clock: Clock | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.models = {**self.default_models, **(models or {})}
        self.clock = clock or SystemClock()

    def naming_upstream(self, call: HttpCall, upstream: str) -> HttpCall:
        """A task query that names the upstream the task went to, where the dialect takes one."""
        return call

    def typical_eta_s(self, kind: JobKind) -> float | None:
        """How long a task of this kind usually takes, where the provider documents it."""
        return None

    def model_for(self, kind: JobKind) -> str:
        return self.models[kind]

    # requests
    def create(self, spec: TaskSpec) -> HttpCall:
        kind = spec.request.kind
        if kind not in self.kinds:
            raise ProviderError(
                self.dialect, ProviderErrorClass.NOT_FOUND, f"{self.dialect} has no {kind.value}"
            )
        builder = cast(Callable[[TaskSpec], HttpCall], getattr(self, f"create_{kind.value}"))
        return builder(spec)

    def calls_back(self, kind: JobKind) -> bool:
        """Whether tasks of this kind report back to a callback URL."""
        return self.sends_callbacks

    def looks_up(self, kind: JobKind) -> bool:
        """Whether a task of this kind can be found by the id we gave it (an unknown outcome)."""
        return self.supports_external_id and self.query("", kind) is not None

    def refusals(self, request: AnyRequest) -> list[FieldError]:
        """The options of a valid request this dialect does not take (routing then looks elsewhere)."""
        return []

    def option_refusals(self, request: AnyRequest) -> list[FieldError]:
        """Options this dialect's body has no field for: elements on a kind built without an
        element_list, a watermark choice without watermark_info, cfg_scale where the model
        takes none."""
        errors = []
        if getattr(request, "elements", None) and request.kind not in self.element_kinds:
            message = f"{self.dialect} takes no elements on {request.kind.value}"
            errors.append(FieldError("elements", f"{self.dialect}_no_elements", message))
        if getattr(request, "watermark", None) is not None and request.kind not in self.watermark_kinds:
            message = f"{self.dialect} documents no watermark_info on {request.kind.value}"
            errors.append(FieldError("watermark", f"{self.dialect}_no_watermark", message))
        if getattr(request, "shots", None) and not self.takes_shots(request.kind):
            message = f"{self.dialect}'s {request.kind.value} model makes no multi-shot clips"
            errors.append(FieldError("shots", f"{self.dialect}_no_multi_shot", message))
        if getattr(request, "cfg_scale", None) is not None and not self.takes_cfg_scale(request.kind):
            message = f"{self.dialect}'s {request.kind.value} model takes no cfg_scale"
            errors.append(FieldError("cfg_scale", f"{self.dialect}_no_cfg_scale", message))
        return errors

    def takes_cfg_scale(self, kind: JobKind) -> bool:
        return False

    def takes_shots(self, kind: JobKind) -> bool:
        """Whether this dialect's model for the kind makes multi-shot clips (Kling 3.0)."""
        return False

    # element management (the gateway's manual); a dialect that documents none keeps these defaults
    def list_elements(self, *, presets: bool, page_num: int, page_size: int) -> HttpCall | None:
        """How to list the account's own elements (or the provider's presets), one page."""
        return None

    def delete_element(self, element_id: str) -> HttpCall | None:
        return None

    def parse_elements(self, body: Any) -> list[dict[str, Any]]:
        raise NotImplementedError

    def parse_deleted(self, body: Any) -> None:  # noqa: B027 (optional: most answers need no check)
        """Raises ProviderError when a delete's answer says it was refused."""

    @abstractmethod
    def query(self, task_id: str, kind: JobKind = JobKind.MOTION_CONTROL) -> HttpCall | None:
        """How to ask about a task; None when the create answer was already final (no task)."""

    # answers
    @abstractmethod
    def parse_create(self, body: Any, kind: JobKind = JobKind.MOTION_CONTROL) -> Submission: ...

    @abstractmethod
    def parse_task(self, body: Any, *, task_id: str | None = None) -> TaskReport:
        """A task answer; `task_id` is the id that was asked for, if the answer omits it."""

    def parse_callback(self, body: Any) -> TaskReport:
        return self.parse_task(body)

    def download(self, task_id: str, output: TaskOutput) -> Download:
        return Download(output.url)

    def content_endpoint(self, task_id: str) -> Download | None:
        """The dialect's own, authenticated way to fetch a task's output, if it has one."""
        return None

    def auth_headers(self, credentials: Mapping[str, str]) -> dict[str, str]:
        key = credentials.get("api_key", "")
        return {"Authorization": f"Bearer {key}"}

    def status_of(self, word: str) -> JobStatus | None:
        return self.status_words.get(word.lower())

    def classify(self, status: int, body: Any, headers: Mapping[str, str]) -> ProviderError:
        """Map an error answer onto the taxonomy (dialects refine `error_class_for`)."""
        error_class, provider_code = self.error_class_for(status, body)
        retry_after = _retry_after(headers)
        if retry_after is None:
            retry_after = self.default_backoff_s(error_class)
        return ProviderError(
            self.dialect,
            error_class,
            _message(body) or f"HTTP {status}",
            status_code=status,
            provider_code=provider_code,
            retry_after_s=retry_after,
        )

    def error_class_for(self, status: int, body: Any) -> tuple[ProviderErrorClass, str | None]:
        """(class, the provider's own code) from the HTTP status; dialects with body codes refine."""
        error_class = {
            400: ProviderErrorClass.INVALID_REQUEST,
            401: ProviderErrorClass.AUTH,
            402: ProviderErrorClass.INSUFFICIENT_BALANCE,
            403: ProviderErrorClass.AUTH,
            404: ProviderErrorClass.NOT_FOUND,
            422: ProviderErrorClass.INVALID_REQUEST,
            429: ProviderErrorClass.RATE_LIMITED,
            501: ProviderErrorClass.PROVIDER_DOWN,
            503: ProviderErrorClass.PROVIDER_DOWN,
        }.get(status)
        if error_class is None:
            # Any other 5xx (500, 502, 504, a CDN's 52x) may come after the task was created:
            # only a lookup can tell, so it must not count as "down, try elsewhere".
            error_class = (
                ProviderErrorClass.UNKNOWN_OUTCOME if status >= 500 else ProviderErrorClass.INVALID_REQUEST
            )
        return error_class, None

    def default_backoff_s(self, error_class: ProviderErrorClass) -> float | None:
        """How long to wait when the provider said "slow down" without a Retry-After."""
        return None

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).hostname or ""


def _message(body: Any) -> str | None:
    if isinstance(body, dict):
        for key in ("message", "error", "msg", "detail"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                return str(value["message"])
    if isinstance(body, str) and body:
        return body[:300]
    return None


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after") or headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
