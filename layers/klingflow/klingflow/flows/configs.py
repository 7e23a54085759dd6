"""Each flow's settings slice, declared once: the field, its default and its bounds.

settings.py builds every function's settings from these slices (an environment variable is the
upper-case field name), and services.py hands each flow its function's settings as its slice,
so a setting is never copied field by field. Kept apart from the flows (only pydantic here):
every handler loads its settings at cold start, and must not load the flows it does not run.
"""

from __future__ import annotations

from typing import ClassVar, Final

from pydantic import BaseModel, ConfigDict, Field

from klingflow.providers.defaults import BREAKER_COOL_DOWN_S, BREAKER_FAILURES, PROVIDER_TIMEOUT_S

# A QUEUED job the sweeper sees after this long lost its submitter: the job accept stores is
# first due then, and the sweeper resolves one that waited this long.
SUBMIT_GRACE_S: Final = 300
# The sweeper's most visits in flight; every AWS client's connection pool holds this many, so
# no visit waits for a connection (runtime.py).
MAX_POLL_CONCURRENCY: Final = 128
# The largest request manifest submit reads (manifests.py).
MAX_MANIFEST_BYTES: Final = 256 * 1024
# One webhook delivery's whole wall-clock limit (connect, send, the answer's headers).
WEBHOOK_TIMEOUT_S: Final = 10.0
# A sweep stops starting visits when less than one provider call (and this margin) is left.
_TIME_GUARD_MARGIN_S: Final = 5


class _Slice(BaseModel):
    # defer_build: a slice's validator is built only by the settings that validate it.
    model_config = ConfigDict(frozen=True, defer_build=True)


class Polling(_Slice):
    # First poll when the provider will call back (the callback usually wins) / when it never does.
    first_poll_with_callback_s: int = Field(default=120, ge=1)
    first_poll_without_callback_s: int = Field(default=20, ge=1)
    poll_max_interval_s: int = Field(default=300, ge=1)


class Deadlines(_Slice):
    job_deadline_s: int = Field(default=3 * 3600, ge=60)
    # Re-enqueue a SUCCEEDED job whose archive has not finished after this long.
    archive_stall_s: int = Field(default=900, ge=30)
    # A SUCCEEDED job still not archived this long after its deadline fails (ARCHIVE_FAILED).
    archive_deadline_s: int = Field(default=24 * 3600, ge=60)
    # After TIMED_OUT, a task at a provider is still watched this long (it is paid for if it
    # completes), polled every salvage_poll_s. Inside every provider's link lifetime.
    salvage_window_hours: float = Field(default=24, ge=0, le=72)
    salvage_poll_s: int = Field(default=600, ge=1)

    @property
    def salvage_window_s(self) -> int:
        return int(self.salvage_window_hours * 3600)


class ProviderCalls(_Slice):
    provider_timeout_s: float = Field(default=PROVIDER_TIMEOUT_S, gt=0)
    # Sandbox only: lets the safe HTTP client fetch plain http from loopback addresses (and a
    # webhook go to a loopback receiver, webhookurls.py).
    allow_loopback_http: bool = False
    # Circuit breaker per provider: open after this many consecutive failures, probe after cool-down.
    breaker_failures: int = Field(default=BREAKER_FAILURES, ge=1)
    breaker_cool_down_s: int = Field(default=BREAKER_COOL_DOWN_S, ge=1)


class AcceptConfig(Deadlines, ProviderCalls):
    submit_grace_s: ClassVar[int] = SUBMIT_GRACE_S


class DispatchConfig(Polling, ProviderCalls):
    # A pinned job whose provider said "not now" asks again after the first poll's delay,
    # doubling up to the poll cap (or after the provider's Retry-After, or its circuit breaker's
    # cool-down, if longer).
    @property
    def retry_base_s(self) -> int:
        return self.first_poll_without_callback_s

    @property
    def retry_max_s(self) -> int:
        return self.poll_max_interval_s


class ArchiveConfig(Polling, Deadlines):
    # At most 5 GiB: an invalid download is set aside with one CopyObject, which S3 caps there.
    max_output_bytes: int = Field(default=2 * 1024**3, ge=1024, le=5 * 1024**3)
    part_size_bytes: int = Field(default=8 * 1024**2, ge=5 * 1024**2)
    download_timeout_s: float = Field(default=60.0, gt=0)
    # How long a worker holds a job while copying it: longer than the function may run.
    lease_s: ClassVar[int] = 330
    # Downloads that are not what they claim (each retried by the sweeper, like a failed one)
    # before the job fails OUTPUT_INVALID.
    max_invalid_downloads: ClassVar[int] = 3

    @property
    def poll_again_s(self) -> int:
        return self.first_poll_without_callback_s


class QueriesConfig(_Slice):
    # How long a job's output and result links stay valid, and the largest page a list returns.
    output_link_ttl_s: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    max_page_size: int = Field(default=100, ge=1, le=1000)


class WebhookConfig(_Slice):
    # Sandbox only: a webhook to a loopback receiver over plain http.
    allow_loopback_http: bool = False
    # One delivery's whole wall-clock limit (connect, send, the answer): under the function's
    # Timeout, which must also cover reading the job and recording the try.
    webhook_timeout_s: float = Field(default=WEBHOOK_TIMEOUT_S, gt=0, le=20)


class SweepConfig(Polling, Deadlines, ProviderCalls):
    # The most visits (provider polls and their writes) in flight at once; the clients' HTTP
    # connection pools hold as many, or each visit past them would open a connection of its own
    # (runtime.py, providers/client.py). 500 due jobs at 200 ms a poll take about 2 s at 64,
    # well inside the one-minute schedule.
    poll_concurrency: int = Field(default=64, ge=1, le=MAX_POLL_CONCURRENCY)
    # The most due jobs one sweep reads and visits; the rest wait for the next tick.
    max_jobs_per_run: int = Field(default=500, ge=1)
    # How long a QUEUED job may wait for its submitter before the sweeper resolves it.
    submit_grace_s: ClassVar[int] = SUBMIT_GRACE_S
    # How long a tick holds the run lease (jobs/leases.RunLease): past the function's Timeout
    # (60 s), so a sweep that died without giving it back delays only the next tick, never one
    # still running; under two ticks (120 s), so the tick after that runs.
    lease_s: ClassVar[int] = 90

    @property
    def first_poll_s(self) -> int:
        return self.first_poll_without_callback_s

    @property
    def time_guard_s(self) -> float:
        """Stop starting visits when less than this is left of the invocation."""
        return self.provider_timeout_s + _TIME_GUARD_MARGIN_S
