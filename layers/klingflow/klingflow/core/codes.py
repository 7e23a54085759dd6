"""Every public code klingflow writes, each value written once: the error codes of HTTP answers
and of failed jobs, the outcome of each provider attempt a job records, and who moved a job
(its history's `by`). They are StrEnums, so the JSON on the wire and the stored items carry the
same strings as before; the models type their fields with them so that the OpenAPI document and
the event schemas list them. tests/unit/test_codes.py refuses a literal copy anywhere else.
"""

from __future__ import annotations

from enum import StrEnum


class JobErrorCode(StrEnum):
    """The `code` of an error answer (`{"error": {"code": ...}}`) and of a job's `error`."""

    # Answers to requests (HTTP)
    INTERNAL = "INTERNAL"
    VALIDATION_FAILED = "VALIDATION_FAILED"
    # A request too large to reach the function whole (core/payload.py): 413, naming the field
    REQUEST_TOO_LARGE = "REQUEST_TOO_LARGE"
    NOT_FOUND = "NOT_FOUND"
    CONFLICT = "CONFLICT"
    ALREADY_AT_PROVIDER = "ALREADY_AT_PROVIDER"  # cancel: the task is at a provider
    ALREADY_FINISHED = "ALREADY_FINISHED"  # cancel: the job has ended
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    UNSAFE_URL = "UNSAFE_URL"
    RESPONSE_TOO_LARGE = "RESPONSE_TOO_LARGE"
    TOO_MANY_REDIRECTS = "TOO_MANY_REDIRECTS"
    PROVIDER_ERROR = "PROVIDER_ERROR"
    # Refusals: an answer to a request, or a job that ends FAILED before it is sent
    NO_PROVIDER = "NO_PROVIDER"
    BUDGET_EXCEEDED = "BUDGET_EXCEEDED"
    # Jobs that end without an output
    INPUT_MISSING = "INPUT_MISSING"  # its base64 image was not in the bucket when it was sent
    # An element the job names was deleted while it waited to be sent: released, nothing sent.
    ELEMENT_DELETED = "ELEMENT_DELETED"
    ALL_PROVIDERS_FAILED = "ALL_PROVIDERS_FAILED"
    PROVIDER_REJECTED = "PROVIDER_REJECTED"
    NO_HEALTHY_PROVIDER = "NO_HEALTHY_PROVIDER"
    SUBMIT_OUTCOME_UNKNOWN = "SUBMIT_OUTCOME_UNKNOWN"
    SUBMIT_ABANDONED = "SUBMIT_ABANDONED"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    CANCELLED = "CANCELLED"
    PROVIDER_CANCELLED = "PROVIDER_CANCELLED"
    PROVIDER_FAILED = "PROVIDER_FAILED"
    NO_OUTPUTS = "NO_OUTPUTS"
    DOWNLOAD_FAILED = "DOWNLOAD_FAILED"
    ARCHIVE_FAILED = "ARCHIVE_FAILED"
    # An output link on a host outside the provider's allowlist: retried until the job's
    # deadline (an operator may allow the host), then the job fails with this code.
    OUTPUT_HOST_NOT_ALLOWED = "OUTPUT_HOST_NOT_ALLOWED"
    # A paid output whose bytes are not what they claim (an HTML page, a truncated MP4):
    # downloaded again a few times, then the job fails with this code, its bytes quarantined.
    OUTPUT_INVALID = "OUTPUT_INVALID"
    # Written by versions before c4cd6b4 (an output URL refused); jobs stored then still say it.
    OUTPUT_REFUSED = "OUTPUT_REFUSED"
    WEBHOOK_NOT_DELIVERED = "WEBHOOK_NOT_DELIVERED"


class ProviderErrorClass(StrEnum):
    """One taxonomy for every dialect's failures; it decides what submit does next."""

    INVALID_REQUEST = "invalid_request"
    AUTH = "auth"
    INSUFFICIENT_BALANCE = "insufficient_balance"
    RATE_LIMITED = "rate_limited"
    CONCURRENCY_LIMIT = "concurrency_limit"
    CONTENT_POLICY = "content_policy"
    NOT_FOUND = "not_found"
    PROVIDER_DOWN = "provider_down"
    UNKNOWN_OUTCOME = "unknown_outcome"


_LOOKUP = "lookup_"


class AttemptOutcome(StrEnum):
    """What one provider attempt on a job came to (a job's `attempts[].outcome`, and the
    `outcome` dimension of the ProviderCalls metric)."""

    SUBMITTED = "submitted"
    WAITING = "waiting"  # a pinned provider said "not now": sent again later
    SKIPPED_UNHEALTHY = "skipped_unhealthy"  # its circuit breaker was open
    SKIPPED_BUDGET = "skipped_budget"  # its estimate did not fit the day's budget
    # The create call's outcome is unknown: the task is looked up again later, or its callback
    # is awaited.
    LOOKUP_DEFERRED = "lookup_deferred"
    AWAITING_CALLBACK = "awaiting_callback"
    FOUND_BY_LOOKUP = "found_by_lookup"
    FOUND_AFTER_DEADLINE = "found_after_deadline"
    # The create call failed: its error class.
    INVALID_REQUEST = ProviderErrorClass.INVALID_REQUEST.value
    AUTH = ProviderErrorClass.AUTH.value
    INSUFFICIENT_BALANCE = ProviderErrorClass.INSUFFICIENT_BALANCE.value
    RATE_LIMITED = ProviderErrorClass.RATE_LIMITED.value
    CONCURRENCY_LIMIT = ProviderErrorClass.CONCURRENCY_LIMIT.value
    CONTENT_POLICY = ProviderErrorClass.CONTENT_POLICY.value
    NOT_FOUND = ProviderErrorClass.NOT_FOUND.value
    PROVIDER_DOWN = ProviderErrorClass.PROVIDER_DOWN.value
    UNKNOWN_OUTCOME = ProviderErrorClass.UNKNOWN_OUTCOME.value
    # A lookup of a task whose create outcome was unknown failed: its error class.
    LOOKUP_INVALID_REQUEST = _LOOKUP + ProviderErrorClass.INVALID_REQUEST.value
    LOOKUP_AUTH = _LOOKUP + ProviderErrorClass.AUTH.value
    LOOKUP_INSUFFICIENT_BALANCE = _LOOKUP + ProviderErrorClass.INSUFFICIENT_BALANCE.value
    LOOKUP_RATE_LIMITED = _LOOKUP + ProviderErrorClass.RATE_LIMITED.value
    LOOKUP_CONCURRENCY_LIMIT = _LOOKUP + ProviderErrorClass.CONCURRENCY_LIMIT.value
    LOOKUP_CONTENT_POLICY = _LOOKUP + ProviderErrorClass.CONTENT_POLICY.value
    LOOKUP_NOT_FOUND = _LOOKUP + ProviderErrorClass.NOT_FOUND.value
    LOOKUP_PROVIDER_DOWN = _LOOKUP + ProviderErrorClass.PROVIDER_DOWN.value
    LOOKUP_UNKNOWN_OUTCOME = _LOOKUP + ProviderErrorClass.UNKNOWN_OUTCOME.value

    @classmethod
    def failed(cls, error_class: ProviderErrorClass) -> AttemptOutcome:
        return cls(error_class.value)

    @classmethod
    def lookup_failed(cls, error_class: ProviderErrorClass) -> AttemptOutcome:
        return cls(_LOOKUP + error_class.value)


class Actor(StrEnum):
    """Who moved a job to a status (its history's `by`)."""

    API = "api"  # the read/cancel API
    SUBMIT = "submit"
    CALLBACK = "callback"
    ARCHIVE = "archive"
    SWEEPER = "sweeper"
