"""Configuration: the only module that reads the environment.

Each function has one settings model, validated at cold start so a misconfigured deployment
fails on its first invocation with the name of the missing variable, not deep inside a job.
Variable names are the upper-case field names (JOBS_TABLE, BUCKET, ...).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, Json, model_validator

# The sweeper's most visits in flight; every AWS client's connection pool holds this many, so
# no visit waits for a connection (runtime.py).
MAX_POLL_CONCURRENCY = 128


def _upper(name: str) -> str:
    return name.upper()


class _Settings(BaseModel):
    # defer_build: a function builds the validator of its own settings only (on `from_env`),
    # not those of the other five functions' settings at import.
    model_config = ConfigDict(
        alias_generator=_upper, populate_by_name=True, extra="ignore", frozen=True, defer_build=True
    )

    jobs_table: str = Field(min_length=1)
    # TTL of finished jobs, idempotency keys and spend days.
    retention_days: int = Field(default=90, ge=1)
    powertools_metrics_namespace: str | None = None
    powertools_metrics_disabled: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        return cls.model_validate(dict(os.environ if environ is None else environ))


class _ProviderSettings(_Settings):
    # Where provider credentials live, {"<provider>": {"api_key": ...}}: the Secrets Manager
    # secret in AWS; for local runs, a JSON file or the JSON itself may stand in for it.
    provider_secret_arn: str = ""
    provider_credentials_file: str | None = None
    provider_credentials: Json[dict[str, dict[str, str]]] | None = None
    # JSON: {"<provider>": {"base_url": ..., "enabled": ..., "price_per_second": {...}, ...}}
    provider_overrides: Json[dict[str, dict[str, Any]]] = Field(default_factory=dict)
    usd_per_cny: float = Field(default=0.14, gt=0)
    provider_timeout_s: float = Field(default=20.0, gt=0)
    # Sandbox only: lets the safe HTTP client fetch plain http from loopback addresses.
    allow_loopback_http: bool = False
    # Circuit breaker per provider: open after this many consecutive failures, probe after cool-down.
    breaker_failures: int = Field(default=3, ge=1)
    breaker_cool_down_s: int = Field(default=60, ge=1)

    @model_validator(mode="after")
    def _one_credential_source(self) -> Self:
        if not (
            self.provider_secret_arn
            or self.provider_credentials_file
            or self.provider_credentials is not None
        ):
            raise ValueError(
                "set PROVIDER_SECRET_ARN (or PROVIDER_CREDENTIALS_FILE / PROVIDER_CREDENTIALS locally)"
            )
        return self


class _ScheduleSettings(_Settings):
    due_shards: int = Field(default=4, ge=1, le=64)
    job_deadline_s: int = Field(default=3 * 3600, ge=60)
    # First poll when the provider will call back (the callback usually wins) / when it never does.
    first_poll_with_callback_s: int = Field(default=120, ge=1)
    first_poll_without_callback_s: int = Field(default=20, ge=1)
    poll_max_interval_s: int = Field(default=300, ge=1)
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


class _BudgetSettings(_Settings):
    # What klingflow may commit (reserved + settled) per UTC day, and the most one job may cost.
    daily_budget_usd: float = Field(default=100, ge=0)
    max_job_cost_usd: float = Field(default=25, ge=0)


class SubmitSettings(_ProviderSettings, _ScheduleSettings, _BudgetSettings):
    bucket: str = Field(min_length=1)
    event_bus: str = Field(min_length=1)
    submit_queue_url: str = Field(min_length=1)
    archive_queue_url: str = Field(min_length=1)
    callback_secret_arn: str = Field(min_length=1)
    # SSM parameter holding the HTTP API's URL (a direct reference would be a template cycle).
    api_url_parameter: str = Field(min_length=1)
    input_url_ttl_s: int = Field(default=6 * 3600, ge=600, le=7 * 24 * 3600)
    max_manifest_bytes: int = Field(default=256 * 1024, ge=1024)


class CallbackSettings(_ScheduleSettings):
    callback_secret_arn: str = Field(min_length=1)
    archive_queue_url: str = Field(min_length=1)
    event_bus: str = Field(min_length=1)
    provider_overrides: Json[dict[str, dict[str, Any]]] = Field(default_factory=dict)


class ArchiveSettings(_ProviderSettings, _ScheduleSettings, _BudgetSettings):
    bucket: str = Field(min_length=1)
    event_bus: str = Field(min_length=1)
    # At most 5 GiB: an invalid download is set aside with one CopyObject, which S3 caps there.
    max_output_bytes: int = Field(default=2 * 1024**3, ge=1024, le=5 * 1024**3)
    part_size_bytes: int = Field(default=8 * 1024**2, ge=5 * 1024**2)
    download_timeout_s: float = Field(default=60.0, gt=0)


class SweeperSettings(_ProviderSettings, _ScheduleSettings, _BudgetSettings):
    archive_queue_url: str = Field(min_length=1)
    # Jobs waiting to be sent again (a pinned provider that said "later") go back to submit.
    submit_queue_url: str = Field(min_length=1)
    event_bus: str = Field(min_length=1)
    # The most due jobs visited at once (a sweep starts one per due job up to this): 500 due
    # jobs at 200 ms a poll take about 2 s at 64, well inside the one-minute schedule.
    poll_concurrency: int = Field(default=64, ge=1, le=MAX_POLL_CONCURRENCY)
    max_jobs_per_run: int = Field(default=500, ge=1)


class JobsSettings(_BudgetSettings):
    bucket: str = Field(min_length=1)
    output_link_ttl_s: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    max_page_size: int = Field(default=100, ge=1, le=1000)


class WebhookSettings(_Settings):
    webhook_secret_arn: str = Field(min_length=1)
    webhook_queue_url: str = Field(min_length=1)
    # Sandbox only: a webhook to a loopback receiver over plain http.
    allow_loopback_http: bool = False
    # One delivery's whole wall-clock limit (connect, send, the answer): under the function's
    # Timeout, which must also cover reading the job and recording the try.
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=20)
