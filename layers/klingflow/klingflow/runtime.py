"""Wiring: build each function's service from its settings, once per container, lazily.

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

from .core.clock import Clock, SystemClock
from .core.models import build_job_models
from .core.tokens import CallbackSigner
from .infra import awsmodels, coldstart
from .infra.dynamo import Table
from .infra.events import EventPublisher
from .infra.parameters import CachedValues, parameter_value, secret_string
from .infra.queue import JobQueue
from .jobs.store import JobStore
from .money.ledger import Budget, Ledger, SpendMetrics
from .settings import (
    MAX_POLL_CONCURRENCY,
    ArchiveSettings,
    CallbackSettings,
    JobsSettings,
    SubmitSettings,
    SweeperSettings,
    WebhookSettings,
    _BudgetSettings,
    _ProviderSettings,
    _ScheduleSettings,
    _Settings,
)

# Services are imported by the builders that need them, not here: a handler loads only what
# its own function uses (the jobs function never loads the probe, archiving or the adapters).
if TYPE_CHECKING:
    from .flows.archive import Archiver
    from .flows.callback import CallbackReceiver
    from .flows.cancel import Canceller
    from .flows.jobs import JobQueries
    from .flows.submit import Intake
    from .flows.sweep import Sweeper
    from .flows.webhook import WebhookSender
    from .infra.storage import Storage
    from .jobs.elements import ElementAdmin, ElementDirectory
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


@cache
def client(service: str) -> Any:
    # botocore's own clients: `import boto3` adds s3transfer and its S3 client injections to
    # every cold start (40-90 ms) and klingflow uses none of what it adds (dynamo.py, storage.py).
    if service not in awsmodels.OPERATIONS:
        raise ValueError(f"klingflow makes no {service} client: list its operations in awsmodels.py")
    # Presigned links must be SigV4: S3 URLs are still signed with SigV2 in some regions.
    config = _POOLED.merge(Config(signature_version="s3v4")) if service == "s3" else _POOLED
    return _session().create_client(service, config=config)


@cache
def _session() -> botocore.session.Session:
    # One session for every client: its loader keeps the endpoint data and models it has read.
    session = botocore.session.get_session()
    if awsmodels.MODELS.is_dir():
        # The models trimmed to klingflow's operations first, botocore's own after them (and
        # after any data path the environment gives).
        paths = [str(awsmodels.MODELS), session.get_config_variable("data_path")]
        session.set_config_variable("data_path", os.pathsep.join(filter(None, paths)))
    return session


@cache
def table(name: str) -> Table:
    # The low-level client under a thin wrapper: a DynamoDB resource costs a cold start ~100 ms.
    return Table(client("dynamodb"), name)


@cache
def _secrets() -> CachedValues:
    return CachedValues(secret_string(client("secretsmanager")), max_age_s=SECRET_MAX_AGE_S)


@cache
def _ssm() -> CachedValues:
    return CachedValues(parameter_value(client("ssm")), max_age_s=SECRET_MAX_AGE_S)


def storage(bucket: str) -> Storage:
    """The bucket, for the functions that read or write it (not the callback, sweeper, webhook)."""
    from .infra.storage import Storage

    return Storage(client("s3"), bucket)


def secret_text(arn: str) -> str:
    return _secrets().get(arn)


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
        return json.loads(secret_text(settings.provider_secret_arn))

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
        table(settings.jobs_table),
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
        table(settings.jobs_table),
        clock,
        due_shards=settings.due_shards if isinstance(settings, _ScheduleSettings) else 4,
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

    return ElementDirectory(ElementStore(table(settings.jobs_table)), clock)


def build_intake(settings: SubmitSettings, clock: Clock | None = None) -> Intake:
    from .core.kinds import build_request_models
    from .core.vocab import JobKind
    from .flows.submit import Intake, IntakeConfig
    from .providers.health import Breakers

    # Every first event of submit parses a request, most often of the default kind; another
    # kind's model is built on its first request.
    build_request_models(JobKind.MOTION_CONTROL)
    clock = clock or SystemClock()
    build_job_models()  # its first event reads or writes a job
    money = ledger(settings, clock)
    return Intake(
        ledger=money,
        breakers=Breakers(
            table(settings.jobs_table),
            clock,
            failure_threshold=settings.breaker_failures,
            cool_down_s=settings.breaker_cool_down_s,
        ),
        metrics=provider_metrics(settings),
        submit_queue=JobQueue(client("sqs"), settings.submit_queue_url),
        archive_queue=JobQueue(client("sqs"), settings.archive_queue_url),
        store=store(settings, clock, money),
        storage=storage(settings.bucket),
        events=EventPublisher(client("events"), settings.event_bus),
        registry=registry(settings, clock),
        elements=element_directory(settings, clock),
        signer=CallbackSigner(lambda: secret_text(settings.callback_secret_arn)),
        api_url=lambda: _ssm().get(settings.api_url_parameter),
        clock=clock,
        config=IntakeConfig(
            job_deadline_s=settings.job_deadline_s,
            input_url_ttl_s=settings.input_url_ttl_s,
            first_poll_with_callback_s=settings.first_poll_with_callback_s,
            first_poll_without_callback_s=settings.first_poll_without_callback_s,
            max_manifest_bytes=settings.max_manifest_bytes,
            retry_base_s=settings.first_poll_without_callback_s,
            retry_max_s=settings.poll_max_interval_s,
            breaker_cool_down_s=settings.breaker_cool_down_s,
            allow_loopback_http=settings.allow_loopback_http,
        ),
    )


def build_element_admin(settings: SubmitSettings, clock: Clock | None = None) -> ElementAdmin:
    from .jobs.elements import ElementAdmin

    clock = clock or SystemClock()
    return ElementAdmin(element_directory(settings, clock), registry(settings, clock))


def build_canceller(settings: SubmitSettings, clock: Clock | None = None) -> Canceller:
    from .flows.cancel import Canceller

    clock = clock or SystemClock()
    return Canceller(
        store=store(settings, clock, ledger(settings, clock)),
        events=EventPublisher(client("events"), settings.event_bus),
    )


def build_receiver(settings: CallbackSettings, clock: Clock | None = None) -> CallbackReceiver:
    from .flows.callback import CallbackReceiver
    from .jobs.submissions import SubmissionRecorder
    from .providers.base import Submission
    from .providers.registry import Registry, load_configs

    clock = clock or SystemClock()
    jobs = store(settings, clock)
    # Parsing callbacks and pricing an adopted task need the adapters and prices, never keys.
    providers = Registry(load_configs(settings.provider_overrides), lambda _: {}, clock=clock)
    recorder = SubmissionRecorder(
        store=jobs,
        events=EventPublisher(client("events"), settings.event_bus),
        registry=providers,
        clock=clock,
        first_poll_with_callback_s=settings.first_poll_with_callback_s,
        first_poll_without_callback_s=settings.first_poll_without_callback_s,
    )
    return CallbackReceiver(
        store=jobs,
        queue=JobQueue(client("sqs"), settings.archive_queue_url),
        signer=CallbackSigner(lambda: secret_text(settings.callback_secret_arn)),
        registry=providers,
        adopt=lambda job, provider, task_id: recorder.submitted(job, provider, Submission(task_id)),
        adopt_late=recorder.adopt_late,
        clock=clock,
    )


def build_archiver(settings: ArchiveSettings, clock: Clock | None = None) -> Archiver:
    from .flows.archive import ArchiveConfig, Archiver
    from .infra.safehttp import SafeHttp

    clock = clock or SystemClock()
    build_job_models()  # its first event reads or writes a job
    return Archiver(
        store=store(settings, clock, ledger(settings, clock)),
        storage=storage(settings.bucket),
        events=EventPublisher(client("events"), settings.event_bus),
        registry=registry(settings, clock),
        http=SafeHttp(
            allow_loopback_http=settings.allow_loopback_http, read_timeout_s=settings.download_timeout_s
        ),
        clock=clock,
        config=ArchiveConfig(
            max_output_bytes=settings.max_output_bytes,
            part_size_bytes=settings.part_size_bytes,
            archive_stall_s=settings.archive_stall_s,
            poll_again_s=settings.first_poll_without_callback_s,
        ),
        elements=element_directory(settings, clock),
    )


def build_sweeper(settings: SweeperSettings, clock: Clock | None = None) -> Sweeper:
    from .flows.sweep import SweepConfig, Sweeper
    from .jobs.submissions import SubmissionRecorder

    clock = clock or SystemClock()
    build_job_models()  # its first event reads or writes a job
    jobs = store(settings, clock, ledger(settings, clock))
    events = EventPublisher(client("events"), settings.event_bus)
    providers = registry(settings, clock, connections=settings.poll_concurrency)
    recorder = SubmissionRecorder(
        store=jobs,
        events=events,
        registry=providers,
        clock=clock,
        first_poll_with_callback_s=settings.first_poll_with_callback_s,
        first_poll_without_callback_s=settings.first_poll_without_callback_s,
        metrics=provider_metrics(settings),
    )
    return Sweeper(
        store=jobs,
        queue=JobQueue(client("sqs"), settings.archive_queue_url),
        events=events,
        registry=providers,
        clock=clock,
        config=SweepConfig(
            poll_concurrency=settings.poll_concurrency,
            max_jobs_per_run=settings.max_jobs_per_run,
            first_poll_s=settings.first_poll_without_callback_s,
            poll_max_interval_s=settings.poll_max_interval_s,
            archive_stall_s=settings.archive_stall_s,
            archive_deadline_s=settings.archive_deadline_s,
            time_guard_s=settings.provider_timeout_s + 5,
            salvage_window_s=settings.salvage_window_s,
            salvage_poll_s=settings.salvage_poll_s,
        ),
        resolve_unknown=recorder.resolve_unknown,
        adopt_late=recorder.adopt_late,
        submit_queue=JobQueue(client("sqs"), settings.submit_queue_url),
    )


def build_queries(settings: JobsSettings, clock: Clock | None = None) -> JobQueries:
    from .flows.jobs import JobQueries

    clock = clock or SystemClock()
    build_job_models()  # its first event reads or writes a job
    return JobQueries(
        store=JobStore(table(settings.jobs_table), clock),
        storage=Lazy(lambda: storage(settings.bucket)).get,
        ledger=ledger(settings, clock),
        elements=element_directory(settings, clock),
        clock=clock,
        link_ttl_s=settings.output_link_ttl_s,
        max_page_size=settings.max_page_size,
    )


def reset() -> None:
    """Forget every cached client (a new sandbox, a new moto endpoint)."""
    for cached in (client, _session, table, _secrets, _ssm):
        cached.cache_clear()


def build_webhooks(settings: WebhookSettings, clock: Clock | None = None) -> WebhookSender:
    from .flows.webhook import WebhookSender
    from .infra.safehttp import SafeHttp

    clock = clock or SystemClock()
    build_job_models()  # its first event reads or writes a job
    return WebhookSender(
        store=JobStore(table(settings.jobs_table), clock),
        http=SafeHttp(
            allow_loopback_http=settings.allow_loopback_http, read_timeout_s=settings.webhook_timeout_s
        ),
        secret=lambda: secret_text(settings.webhook_secret_arn),
        clock=lambda: clock.now().timestamp(),
        deadline_s=settings.webhook_timeout_s,
    )
