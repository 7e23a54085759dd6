"""Configuration: the only module that reads the environment.

Each function has one settings model, validated at cold start so a misconfigured deployment
fails on its first invocation with the name of the missing variable, not deep inside a job.
Variable names are the upper-case field names (JOBS_TABLE, BUCKET, ...). A function's settings
are built from the slices its flows take (flows/configs.py), so services.py passes them whole;
a default shared with a lower module is that module's constant, never a second number.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, NamedTuple, Self

from pydantic import BaseModel, ConfigDict, Field, Json, model_validator

from klingflow.flows.configs import (
    MAX_MANIFEST_BYTES,
    AcceptConfig,
    ArchiveConfig,
    Deadlines,
    DispatchConfig,
    Polling,
    ProviderCalls,
    QueriesConfig,
    SweepConfig,
    WebhookConfig,
)
from klingflow.jobs.store import DUE_SHARDS
from klingflow.money.ledger import RETENTION_DAYS
from klingflow.providers.defaults import USD_PER_CNY


def _upper(name: str) -> str:
    return name.upper()


class AwsCalls(NamedTuple):
    """How a function's AWS clients call: tries in all, connect and read timeouts (seconds)."""

    attempts: int = 3
    connect_timeout_s: float = 1.0
    read_timeout_s: float = 3.0


class _Settings(BaseModel):
    # defer_build: a function builds the validator of its own settings only (on `from_env`),
    # not those of the other five functions' settings at import.
    model_config = ConfigDict(
        alias_generator=_upper, populate_by_name=True, extra="ignore", frozen=True, defer_build=True
    )

    jobs_table: str = Field(min_length=1)
    # TTL of finished jobs, idempotency keys and spend days.
    retention_days: int = Field(default=RETENTION_DAYS, ge=1)
    powertools_metrics_namespace: str | None = None
    powertools_metrics_disabled: bool = False
    # Every AWS client's calls (runtime.py): botocore's standard retry mode with this many tries
    # in all, and these timeouts, so that a call gives up (tries and backoff included) within
    # half the function's Timeout; tests/unit/test_client_config.py holds each function to it.
    aws_call_attempts: int = Field(default=3, ge=1, le=5)
    aws_connect_timeout_s: float = Field(default=1.0, gt=0, le=30)
    aws_read_timeout_s: float = Field(default=3.0, gt=0, le=60)

    @property
    def aws_calls(self) -> AwsCalls:
        return AwsCalls(self.aws_call_attempts, self.aws_connect_timeout_s, self.aws_read_timeout_s)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        return cls.model_validate(dict(os.environ if environ is None else environ))


class _ProviderSettings(_Settings, ProviderCalls):
    # Where provider credentials live, {"<provider>": {"api_key": ...}}: the Secrets Manager
    # secret in AWS; for local runs, a JSON file or the JSON itself may stand in for it.
    provider_secret_arn: str = ""
    provider_credentials_file: str | None = None
    provider_credentials: Json[dict[str, dict[str, str]]] | None = None
    # JSON: {"<provider>": {"base_url": ..., "enabled": ..., "price_per_second": {...}, ...}}
    provider_overrides: Json[dict[str, dict[str, Any]]] = Field(default_factory=dict)
    usd_per_cny: float = Field(default=USD_PER_CNY, gt=0)

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


class _ScheduleSettings(_Settings, Polling, Deadlines):
    due_shards: int = Field(default=DUE_SHARDS, ge=1, le=64)


class _BudgetSettings(_Settings):
    # What klingflow may commit (reserved + settled) per UTC day, and the most one job may cost.
    daily_budget_usd: float = Field(default=100, ge=0)
    max_job_cost_usd: float = Field(default=25, ge=0)


class SubmitSettings(_ProviderSettings, _ScheduleSettings, _BudgetSettings, AcceptConfig, DispatchConfig):
    # A decoded base64 image (a few MB) is sent to S3 within the connect timeout.
    aws_connect_timeout_s: float = Field(default=2.0, gt=0, le=30)
    aws_read_timeout_s: float = Field(default=5.0, gt=0, le=60)
    bucket: str = Field(min_length=1)
    event_bus: str = Field(min_length=1)
    submit_queue_url: str = Field(min_length=1)
    archive_queue_url: str = Field(min_length=1)
    callback_secret_arn: str = Field(min_length=1)
    # SSM parameter holding the HTTP API's URL (a direct reference would be a template cycle).
    api_url_parameter: str = Field(min_length=1)
    input_url_ttl_s: int = Field(default=6 * 3600, ge=600, le=7 * 24 * 3600)
    max_manifest_bytes: int = Field(default=MAX_MANIFEST_BYTES, ge=1024)


class CallbackSettings(_ScheduleSettings):
    # Its function's Timeout is 10 s: every AWS call gives up within 5.
    aws_call_attempts: int = Field(default=2, ge=1, le=5)
    aws_connect_timeout_s: float = Field(default=0.5, gt=0, le=30)
    aws_read_timeout_s: float = Field(default=1.5, gt=0, le=60)
    callback_secret_arn: str = Field(min_length=1)
    archive_queue_url: str = Field(min_length=1)
    event_bus: str = Field(min_length=1)
    provider_overrides: Json[dict[str, dict[str, Any]]] = Field(default_factory=dict)


class ArchiveSettings(_ProviderSettings, _ScheduleSettings, _BudgetSettings, ArchiveConfig):
    # An output's 8 MiB parts are sent within the connect timeout (urllib3 sends a body under it).
    aws_connect_timeout_s: float = Field(default=5.0, gt=0, le=30)
    aws_read_timeout_s: float = Field(default=10.0, gt=0, le=60)
    bucket: str = Field(min_length=1)
    event_bus: str = Field(min_length=1)


class SweeperSettings(_ProviderSettings, _ScheduleSettings, _BudgetSettings, SweepConfig):
    archive_queue_url: str = Field(min_length=1)
    # Jobs waiting to be sent again (a pinned provider that said "later") go back to submit.
    submit_queue_url: str = Field(min_length=1)
    event_bus: str = Field(min_length=1)


class JobsSettings(_BudgetSettings, QueriesConfig):
    bucket: str = Field(min_length=1)


class WebhookSettings(_Settings, WebhookConfig):
    webhook_secret_arn: str = Field(min_length=1)
    webhook_queue_url: str = Field(min_length=1)
