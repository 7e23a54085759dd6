"""Typed domain errors, and the one place they become HTTP answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .codes import JobErrorCode, ProviderErrorClass


@dataclass(frozen=True)
class FieldError:
    """One broken rule: which field, which rule, and a sentence a person can act on."""

    field: str
    rule: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "rule": self.rule, "message": self.message}


class KlingflowError(Exception):
    """Base of every error klingflow raises on purpose."""

    code: JobErrorCode = JobErrorCode.INTERNAL
    http_status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


class Refused(KlingflowError):
    """A request that cannot become a job, or a job that cannot be sent: nothing was spent."""


class RequestRejected(Refused):
    """The job request breaks one or more documented rules; nothing was spent."""

    code = JobErrorCode.VALIDATION_FAILED
    http_status = 400
    # What was refused, the message's first words.
    refused = "job request"

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        summary = "; ".join(f"{e.field}: {e.message} [{e.rule}]" for e in errors)
        super().__init__(f"{self.refused} rejected: {summary}")

    def body(self) -> dict[str, Any]:
        body = super().body()
        body["error"]["details"] = [e.as_dict() for e in self.errors]
        return body


class RequestTooLarge(RequestRejected):
    """A request larger than a function can be handed (Lambda's 6 MB payload, core/payload.py):
    each detail names the field, the limit and the way round it; nothing was spent."""

    code = JobErrorCode.REQUEST_TOO_LARGE
    http_status = 413


class QueryRejected(RequestRejected):
    """A query parameter of a read route breaks its rule (the same 400 and shape)."""

    refused = "query parameter"


class JobNotFound(KlingflowError):
    code = JobErrorCode.NOT_FOUND
    http_status = 404


class ElementNotFound(KlingflowError):
    code = JobErrorCode.NOT_FOUND
    http_status = 404


class NoProviderAvailable(Refused):
    """No enabled provider supports this job (or the pinned one is not usable)."""

    code = JobErrorCode.NO_PROVIDER
    http_status = 422


class IdempotencyConflict(Refused):
    """An idempotency key already used for a different request: returning the first job would
    silently drop this one."""

    code = JobErrorCode.IDEMPOTENCY_KEY_REUSED
    http_status = 409

    def __init__(self, message: str, *, job_id: str) -> None:
        super().__init__(message)
        self.job_id = job_id

    def body(self) -> dict[str, Any]:
        body = super().body()
        body["error"]["job_id"] = self.job_id
        return body


class BudgetExceeded(Refused):
    """The job would pass MaxJobCostUsd, or the day's remaining budget (DailyBudgetUsd)."""

    code = JobErrorCode.BUDGET_EXCEEDED
    http_status = 402

    def __init__(
        self,
        message: str,
        *,
        budget_usd: float,
        remaining_usd: float,
        estimate_usd: float,
        max_job_usd: float,
    ) -> None:
        super().__init__(message)
        self.budget = {
            "daily_budget_usd": budget_usd,
            "remaining_usd": remaining_usd,
            "estimate_usd": estimate_usd,
            "max_job_cost_usd": max_job_usd,
        }

    def body(self) -> dict[str, Any]:
        body = super().body()
        body["error"]["budget"] = self.budget
        return body


class JobConflict(KlingflowError):
    """The job is in a state that does not allow what was asked (cancel after sending)."""

    code = JobErrorCode.CONFLICT
    http_status = 409

    def __init__(self, code: JobErrorCode, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.details = details

    def body(self) -> dict[str, Any]:
        body = super().body()
        body["error"].update(self.details)
        return body


class UnsafeUrl(KlingflowError):
    """A URL that the safe HTTP client refuses to fetch (scheme, host, address or size)."""

    code = JobErrorCode.UNSAFE_URL
    http_status = 400


class ProviderError(KlingflowError):
    """A provider call failed; `error_class` says whether another provider might succeed."""

    code = JobErrorCode.PROVIDER_ERROR
    http_status = 502

    def __init__(
        self,
        provider: str,
        error_class: ProviderErrorClass,
        message: str,
        *,
        status_code: int | None = None,
        provider_code: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(f"{provider}: {error_class.value}: {message}")
        self.provider = provider
        self.error_class = error_class
        self.status_code = status_code
        self.provider_code = provider_code
        self.retry_after_s = retry_after_s

    @property
    def request_may_have_landed(self) -> bool:
        return self.error_class is ProviderErrorClass.UNKNOWN_OUTCOME


@dataclass
class HttpAnswer:
    status: int
    body: dict[str, Any] = field(default_factory=dict)


def to_http(error: Exception) -> HttpAnswer:
    """Map any exception to an HTTP answer; unknown ones never leak their text."""
    if isinstance(error, KlingflowError):
        return HttpAnswer(error.http_status, error.body())
    return HttpAnswer(500, {"error": {"code": JobErrorCode.INTERNAL, "message": "internal error"}})
