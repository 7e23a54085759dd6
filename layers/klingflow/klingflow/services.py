"""Each function's service, built from its settings once per container (handlers hold a
`runtime.Lazy` of it; tests replace it with `override()` to inject a clock, clients or an
emulator). Each builder imports its flow inside itself, so a handler loads only what its own
function uses (the jobs function never loads the probe, archiving or the adapters).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .core.clock import Clock, SystemClock
from .core.models import build_job_models
from .core.tokens import CallbackSigner
from .infra.events import EventPublisher
from .infra.queue import JobQueue
from .jobs.store import JobStore
from .runtime import (
    Lazy,
    client,
    element_directory,
    ledger,
    parameter_text,
    provider_metrics,
    registry,
    secret_text,
    storage,
    store,
    table,
)
from .settings import (
    ArchiveSettings,
    CallbackSettings,
    JobsSettings,
    SubmitSettings,
    SweeperSettings,
    WebhookSettings,
)

if TYPE_CHECKING:
    from .flows.archive import Archiver
    from .flows.callback import CallbackReceiver
    from .flows.cancel import Canceller
    from .flows.configs import Polling
    from .flows.dispatch import Dispatcher
    from .flows.inputs import Inputs
    from .flows.jobs import JobQueries
    from .flows.submit import Intake
    from .flows.sweep import Sweeper
    from .flows.webhook import WebhookSender
    from .jobs.elements import ElementAdmin
    from .jobs.submissions import SubmissionRecorder
    from .money.ledger import Ledger
    from .providers.registry import Registry
    from .providers.telemetry import ProviderMetrics


def build_intake(settings: SubmitSettings, clock: Clock | None = None) -> Intake:
    from .core.kinds import build_request_models
    from .core.vocab import JobKind
    from .flows.accept import Acceptor
    from .flows.inputs import Inputs
    from .flows.manifests import Manifests
    from .flows.submit import Intake

    # Every first event of submit parses a request, most often of the default kind; another
    # kind's model is built on its first request.
    build_request_models(JobKind.MOTION_CONTROL)
    clock = clock or SystemClock()
    build_job_models()  # its first event reads or writes a job
    money = ledger(settings, clock)
    jobs, providers = store(settings, clock, money), registry(settings, clock)
    events = EventPublisher(client("events", settings.aws_calls), settings.event_bus)
    bucket = storage(settings.bucket, settings.aws_calls)
    inputs = Inputs(bucket, url_ttl_s=settings.input_url_ttl_s)
    submit_queue = JobQueue(client("sqs", settings.aws_calls), settings.submit_queue_url)
    dispatcher = _dispatcher(
        settings, clock, jobs=jobs, money=money, providers=providers, events=events, inputs=inputs
    )
    acceptor = Acceptor(
        store=jobs,
        events=events,
        registry=providers,
        elements=element_directory(settings, clock),
        ledger=money,
        inputs=inputs,
        dispatcher=dispatcher,
        submit_queue=submit_queue,
        clock=clock,
        config=settings,
    )
    manifests = Manifests(
        storage=bucket, acceptor=acceptor, clock=clock, max_manifest_bytes=settings.max_manifest_bytes
    )
    return Intake(acceptor=acceptor, manifests=manifests, dispatcher=dispatcher)


def _dispatcher(
    settings: SubmitSettings,
    clock: Clock,
    *,
    jobs: JobStore,
    money: Ledger,
    providers: Registry,
    events: EventPublisher,
    inputs: Inputs,
) -> Dispatcher:
    from .flows.dispatch import Dispatcher
    from .providers.health import Breakers

    return Dispatcher(
        store=jobs,
        registry=providers,
        ledger=money,
        breakers=Breakers(
            table(settings.jobs_table, settings.aws_calls),
            clock,
            failure_threshold=settings.breaker_failures,
            cool_down_s=settings.breaker_cool_down_s,
            metrics=provider_metrics(settings),
        ),
        recorder=_recorder(
            settings,
            clock,
            jobs=jobs,
            events=events,
            providers=providers,
            metrics=provider_metrics(settings),
            archive_queue=JobQueue(client("sqs", settings.aws_calls), settings.archive_queue_url),
        ),
        inputs=inputs,
        signer=CallbackSigner(lambda: secret_text(settings.callback_secret_arn, settings.aws_calls)),
        api_url=lambda: parameter_text(settings.api_url_parameter, settings.aws_calls),
        clock=clock,
        config=settings,
    )


def _recorder(
    settings: Polling,
    clock: Clock,
    *,
    jobs: JobStore,
    events: EventPublisher,
    providers: Registry,
    metrics: ProviderMetrics | None = None,
    archive_queue: JobQueue | None = None,
) -> SubmissionRecorder:
    """What submit, the sweeper and the callback each record a submission with."""
    from .jobs.submissions import SubmissionRecorder

    return SubmissionRecorder(
        store=jobs,
        events=events,
        registry=providers,
        clock=clock,
        first_poll_with_callback_s=settings.first_poll_with_callback_s,
        first_poll_without_callback_s=settings.first_poll_without_callback_s,
        metrics=metrics,
        archive_queue=archive_queue,
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
        events=EventPublisher(client("events", settings.aws_calls), settings.event_bus),
    )


def build_receiver(settings: CallbackSettings, clock: Clock | None = None) -> CallbackReceiver:
    from .flows.callback import CallbackReceiver
    from .providers.base import Submission
    from .providers.registry import Registry, load_configs

    clock = clock or SystemClock()
    jobs = store(settings, clock)
    # Parsing callbacks and pricing an adopted task need the adapters and prices, never keys.
    providers = Registry(load_configs(settings.provider_overrides), lambda _: {}, clock=clock)
    events = EventPublisher(client("events", settings.aws_calls), settings.event_bus)
    recorder = _recorder(settings, clock, jobs=jobs, events=events, providers=providers)
    return CallbackReceiver(
        store=jobs,
        queue=JobQueue(client("sqs", settings.aws_calls), settings.archive_queue_url),
        signer=CallbackSigner(lambda: secret_text(settings.callback_secret_arn, settings.aws_calls)),
        registry=providers,
        adopt=lambda job, provider, task_id: recorder.submitted(job, provider, Submission(task_id)),
        adopt_late=recorder.adopt_late,
        clock=clock,
    )


def build_archiver(settings: ArchiveSettings, clock: Clock | None = None) -> Archiver:
    from .flows.archive import Archiver
    from .infra.safehttp import SafeHttp

    clock = clock or SystemClock()
    build_job_models()  # its first event reads or writes a job
    return Archiver(
        store=store(settings, clock, ledger(settings, clock)),
        storage=storage(settings.bucket, settings.aws_calls),
        events=EventPublisher(client("events", settings.aws_calls), settings.event_bus),
        registry=registry(settings, clock),
        http=SafeHttp(
            allow_loopback_http=settings.allow_loopback_http, read_timeout_s=settings.download_timeout_s
        ),
        clock=clock,
        config=settings,
        elements=element_directory(settings, clock),
    )


def build_sweeper(settings: SweeperSettings, clock: Clock | None = None) -> Sweeper:
    from .flows.sweep import Sweeper
    from .jobs.leases import RunLease

    clock = clock or SystemClock()
    build_job_models()  # its first event reads or writes a job
    jobs = store(settings, clock, ledger(settings, clock))
    events = EventPublisher(client("events", settings.aws_calls), settings.event_bus)
    providers = registry(settings, clock, connections=settings.poll_concurrency)
    recorder = _recorder(
        settings, clock, jobs=jobs, events=events, providers=providers, metrics=provider_metrics(settings)
    )
    return Sweeper(
        store=jobs,
        queue=JobQueue(client("sqs", settings.aws_calls), settings.archive_queue_url),
        events=events,
        registry=providers,
        clock=clock,
        config=settings,
        resolve_unknown=recorder.resolve_unknown,
        adopt_late=recorder.adopt_late,
        submit_queue=JobQueue(client("sqs", settings.aws_calls), settings.submit_queue_url),
        lease=RunLease(
            table(settings.jobs_table, settings.aws_calls), clock, "sweeper", hold_s=settings.lease_s
        ),
    )


def build_queries(settings: JobsSettings, clock: Clock | None = None) -> JobQueries:
    from .flows.jobs import JobQueries

    clock = clock or SystemClock()
    build_job_models()  # its first event reads or writes a job
    return JobQueries(
        store=JobStore(table(settings.jobs_table, settings.aws_calls), clock),
        storage=Lazy(lambda: storage(settings.bucket, settings.aws_calls)).get,
        ledger=ledger(settings, clock),
        elements=element_directory(settings, clock),
        clock=clock,
        config=settings,
    )


def build_webhooks(settings: WebhookSettings, clock: Clock | None = None) -> WebhookSender:
    from .flows.webhook import WebhookSender
    from .infra.safehttp import SafeHttp

    clock = clock or SystemClock()
    build_job_models()  # its first event reads or writes a job
    return WebhookSender(
        store=JobStore(table(settings.jobs_table, settings.aws_calls), clock),
        http=SafeHttp(
            allow_loopback_http=settings.allow_loopback_http, read_timeout_s=settings.webhook_timeout_s
        ),
        secret=lambda: secret_text(settings.webhook_secret_arn, settings.aws_calls),
        clock=lambda: clock.now().timestamp(),
        config=settings,
    )
