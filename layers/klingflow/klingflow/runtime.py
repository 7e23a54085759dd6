"""What every function's service is made of, once per container, lazily: the AWS clients (from
one botocore session and the trimmed models), secrets and parameters, the table, the budget, the
provider registry. `services.py` builds each function's service from these.

Handlers hold a `Lazy` of their service; tests replace it with `override()` to inject a clock,
clients or an emulator. Nothing here runs at import time, so importing a handler costs nothing
until the first event arrives.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import botocore.session
from botocore.config import Config
from botocore.loaders import Loader, create_loader

from .core.clock import Clock
from .flows.configs import MAX_POLL_CONCURRENCY
from .infra import awsmodels, coldstart
from .infra.dynamo import Table
from .infra.parameters import CachedValues, parameter_value, secret_string
from .jobs.store import DUE_SHARDS, JobStore
from .money.ledger import Budget, Ledger, SpendMetrics
from .settings import (
    AwsCalls,
    _BudgetSettings,
    _ProviderSettings,
    _ScheduleSettings,
    _Settings,
)

# Services are imported by the builders that need them, not here: a handler loads only what
# its own function uses (the jobs function never loads the probe, archiving or the adapters).
if TYPE_CHECKING:
    from .infra.storage import Storage
    from .jobs.elements import ElementDirectory
    from .providers.registry import Registry
    from .providers.telemetry import ProviderMetrics

T = TypeVar("T")
SECRET_MAX_AGE_S = 300


class Lazy(Generic[T]):
    """A value built on first use and kept for the container's life; replaceable in tests."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._value: T | None = None

    def get(self) -> T:
        if self._value is None:
            try:
                self._value = self._factory()
            finally:
                # The container's code and service are loaded; or the build failed, and a
                # container that stays broken must still collect its garbage.
                coldstart.settle()
        return self._value

    def override(self, value: T | None) -> None:
        self._value = value


# Clients are shared by a function's threads (the sweeper visits up to POLL_CONCURRENCY jobs at
# once): botocore keeps 10 connections by default, and every request past them opens a new one
# (a TLS handshake) and throws it away after ("Connection pool is full"). Unused room costs nothing.
_POOLED = Config(max_pool_connections=MAX_POLL_CONCURRENCY)
_CALLS = AwsCalls()


def client_config(service: str, calls: AwsCalls = _CALLS) -> Config:
    """A function's clients as Lambda needs them: botocore's standard retry mode (not legacy's
    up to 10 tries for DynamoDB) with the function's tries and timeouts (settings.AwsCalls), so a
    call fails well inside the function's own timeout instead of outliving it."""
    config = _POOLED.merge(
        Config(
            retries={"mode": "standard", "total_max_attempts": calls.attempts},
            connect_timeout=calls.connect_timeout_s,
            read_timeout=calls.read_timeout_s,
        )
    )
    # Presigned links must be SigV4: S3 URLs are still signed with SigV2 in some regions.
    return config.merge(Config(signature_version="s3v4")) if service == "s3" else config


def client(service: str, calls: AwsCalls = _CALLS) -> Any:
    """The service's client for a function's AwsCalls, made once (the default: AwsCalls())."""
    return _client(service, calls)


@cache
def _client(service: str, calls: AwsCalls) -> Any:
    # botocore's own clients: `import boto3` adds s3transfer and its S3 client injections to
    # every cold start (40-90 ms) and klingflow uses none of what it adds (dynamo.py, storage.py).
    if service not in awsmodels.OPERATIONS:
        raise ValueError(f"klingflow makes no {service} client: list its operations in awsmodels.py")
    return _session().create_client(service, config=client_config(service, calls))


@cache
def _session() -> botocore.session.Session:
    # One session for every client, and one loader for every session: the loader keeps the
    # endpoint data and models it has read, so a reset (a new sandbox) does not read them again.
    session = botocore.session.get_session()
    if awsmodels.MODELS.is_dir():
        # The models trimmed to klingflow's operations first, botocore's own after them (and
        # after any data path the environment gives).
        paths = [str(awsmodels.MODELS), session.get_config_variable("data_path")]
        session.set_config_variable("data_path", os.pathsep.join(filter(None, paths)))
    session.register_component("data_loader", _loader(session.get_config_variable("data_path")))
    return session


@cache
def _loader(data_path: str | None) -> Loader:
    return create_loader(data_path)


def table(name: str, calls: AwsCalls = _CALLS) -> Table:
    return _table(name, calls)


@cache
def _table(name: str, calls: AwsCalls) -> Table:
    # The low-level client under a thin wrapper: a DynamoDB resource costs a cold start ~100 ms.
    return Table(client("dynamodb", calls), name)


@cache
def _secrets(calls: AwsCalls) -> CachedValues:
    return CachedValues(secret_string(client("secretsmanager", calls)), max_age_s=SECRET_MAX_AGE_S)


@cache
def _ssm(calls: AwsCalls) -> CachedValues:
    return CachedValues(parameter_value(client("ssm", calls)), max_age_s=SECRET_MAX_AGE_S)


def storage(bucket: str, calls: AwsCalls = _CALLS) -> Storage:
    """The bucket, for the functions that read or write it (not the callback, sweeper, webhook)."""
    from .infra.storage import Storage

    return Storage(client("s3", calls), bucket)


def parameter_text(name: str, calls: AwsCalls = _CALLS) -> str:
    return _ssm(calls).get(name)


def secret_text(arn: str, calls: AwsCalls = _CALLS) -> str:
    return _secrets(calls).get(arn)


def provider_credentials(settings: _ProviderSettings) -> Callable[[str], Mapping[str, str]]:
    """Credentials per provider from one JSON document: {"<provider>": {"api_key": ...}}.

    In AWS the document is the provider secret (cached for SECRET_MAX_AGE_S, so a rotated key
    is picked up without a deploy); locally it may be PROVIDER_CREDENTIALS or a file.
    """

    def document() -> Any:
        if settings.provider_credentials is not None:
            return settings.provider_credentials
        if settings.provider_credentials_file:
            return json.loads(Path(settings.provider_credentials_file).read_text())
        return json.loads(secret_text(settings.provider_secret_arn, settings.aws_calls))

    def lookup(provider: str) -> Mapping[str, str]:
        found = document()
        entry = found.get(provider, {}) if isinstance(found, dict) else {}
        return {str(k): str(v) for k, v in entry.items()}

    return lookup


def registry(settings: _ProviderSettings, clock: Clock, *, connections: int | None = None) -> Registry:
    """The providers; `connections`: calls one provider may have in flight at once (its HTTP
    client keeps that many connections open), for a function that calls from many threads."""
    from .providers.registry import Registry, load_configs

    return Registry(
        load_configs(settings.provider_overrides),
        provider_credentials(settings),
        usd_per_cny=settings.usd_per_cny,
        timeout_s=settings.provider_timeout_s,
        clock=clock,
        connections=connections,
    )


def ledger(settings: _BudgetSettings, clock: Clock) -> Ledger:
    return Ledger(
        table(settings.jobs_table, settings.aws_calls),
        clock,
        Budget(daily_usd=settings.daily_budget_usd, max_job_usd=settings.max_job_cost_usd),
        retention_days=settings.retention_days,
        metrics=SpendMetrics(
            namespace=settings.powertools_metrics_namespace, enabled=not settings.powertools_metrics_disabled
        ),
    )


def store(settings: _Settings, clock: Clock, money: Ledger | None = None) -> JobStore:
    """The jobs table; with the day's ledger where the function moves money."""
    return JobStore(
        table(settings.jobs_table, settings.aws_calls),
        clock,
        due_shards=settings.due_shards if isinstance(settings, _ScheduleSettings) else DUE_SHARDS,
        retention_days=settings.retention_days,
        ledger=money,
    )


def provider_metrics(settings: _ProviderSettings) -> ProviderMetrics:
    from .providers.telemetry import ProviderMetrics

    return ProviderMetrics(
        namespace=settings.powertools_metrics_namespace, enabled=not settings.powertools_metrics_disabled
    )


def element_directory(settings: _Settings, clock: Clock) -> ElementDirectory:
    from .jobs.elements import ElementDirectory, ElementStore

    return ElementDirectory(ElementStore(table(settings.jobs_table, settings.aws_calls)), clock)


def reset() -> None:
    """Forget every cached client (a new sandbox, a new moto endpoint)."""
    for cached in (_client, _session, _table, _secrets, _ssm):
        cached.cache_clear()
