"""The sandbox: moto on loopback, resources from template.yaml, the emulator, the API, the
event sources, and the real handlers, all in one process.
"""

from __future__ import annotations

import json
import os
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import httpx

from klingflow import runtime, services
from klingflow.core.clock import Clock
from klingflow_dev.clock import START, ManualClock
from klingflow_dev.emulator import Emulator, EmulatorServer

from . import aws, buspolicy, faults, iam, template
from .apiserver import ApiServer, Route
from .aws import ACCOUNT, PSEUDO, REGION, STACK, MotoServer, ResourceBuilder, ensure_aws_models
from .lambdas import Function, Invoker
from .sources import Loop, RuleQueue, S3Notifications, Schedule, SqsBatches

REPO = Path(__file__).resolve().parents[3]
FUNCTION = "AWS::Serverless::Function"


# Illustrative prices for the kinds the providers leave unpriced (gateway's
# text/image-to-video, omni
# and elements; Kling's omni), so every kind can be tried here. A deployment sets real ones in
# ProviderOverrides; without a price a kind is not routed to that provider.
SANDBOX_PRICES: dict[str, dict[str, Any]] = {
    "gateway": {
        "price_per_second": {
            "text_to_video": {"std": 0.5, "pro": 0.8, "std_sound": 0.75, "pro_sound": 1.2},
            "image_to_video": {
                "std": 0.5,
                "pro": 0.8,
                "std_sound": 0.75,
                "pro_sound": 1.2,
                "std_sound_voice": 0.9,
                "pro_sound_voice": 1.4,
            },
            "omni_video": {"std": 0.6, "pro": 0.9},
        },
        "flat_prices": {"custom_element": 0.2},
    },
    "kling": {"price_per_second": {"omni_video": {"std": 0.1, "pro": 0.13}}},
}


@dataclass
class SandboxOptions:
    repo: Path = REPO
    # The template says every minute; a demo cannot wait that long between sweeps.
    schedule_every_s: float = 1.0
    poll_every_s: float = 0.2
    provider_latency_s: float = 3.0
    parameters: dict[str, Any] = field(default_factory=dict)
    # Sandbox-only settings: plain http to loopback, short first polls.
    environment: dict[str, str] = field(
        default_factory=lambda: {
            "ALLOW_LOOPBACK_HTTP": "true",
            # Receivers here are on loopback: one that takes 2 s to answer is being hostile.
            "WEBHOOK_TIMEOUT_S": "2",
            "FIRST_POLL_WITH_CALLBACK_S": "5",
            "FIRST_POLL_WITHOUT_CALLBACK_S": "1",
            "POLL_MAX_INTERVAL_S": "2",
            "ARCHIVE_STALL_S": "30",
            "SALVAGE_POLL_S": "2",
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_DISABLED": "true",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
        }
    )
    provider_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Containers each function may run at once (ReservedConcurrentExecutions caps it), and SQS
    # batches polled at once per queue (ScalingConfig.MaximumConcurrency caps it): Lambda runs
    # events side by side, so the sandbox does too, and races show here before production.
    function_concurrency: int = 4
    sqs_pollers: int = 4
    # DynamoDB's passing refusals, which moto never makes ({"transaction_conflict": 0.2,
    # "throttling": 0.1, "seed": 7}): the share of the functions' calls refused (faults.py).
    aws_faults: dict[str, float] = field(default_factory=dict)
    # Deterministic mode for tests: no background loops, time moves only when the test says so;
    # the test steps the event sources itself (deliver_s3, drain_archive, sweep, tick_providers).
    clock: Clock | None = None


class Sandbox:
    # moto keeps its state per process, not per server, so a second sandbox would wipe the
    # first one's resources: one runs at a time.
    _running: ClassVar[Sandbox | None] = None

    def __init__(self, options: SandboxOptions | None = None) -> None:
        self.options = options or SandboxOptions()
        self.events: list[dict[str, Any]] = []
        self._events_lock = threading.Lock()
        self._loops: list[Loop] = []
        self._notifications: list[S3Notifications] = []
        self._queues: list[str] = []
        self._moto: MotoServer | None = None
        self.emulator_server: EmulatorServer | None = None
        self.api: ApiServer | None = None
        self.invoker: Invoker | None = None
        self.names: dict[str, str] = {}
        self._saved_env: dict[str, str | None] = {}
        self._clients: dict[str, Any] = {}
        self._clients_lock = threading.Lock()

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Sandbox:
        if Sandbox._running is not None:
            raise RuntimeError(
                "a sandbox is already running in this process; stop it first (moto's state is per process)"
            )
        # Bad parameters are refused before anything starts, as CloudFormation refuses them.
        document = template.load(self.options.repo / "template.yaml")
        parameters = template.parameter_values(document.get("Parameters", {}), self.options.parameters)
        faults.check(self.options.aws_faults)
        try:
            given_overrides = json.loads(parameters["ProviderOverrides"])
        except ValueError as error:
            raise ValueError(f"ProviderOverrides is not JSON: {error}") from None
        # Metrics are disabled here; Powertools still warns when a handler flushes none.
        warnings.filterwarnings("ignore", message="No application metrics to publish")
        Sandbox._running = self
        try:
            ensure_aws_models()
            self._boot(document, parameters, given_overrides)
        except BaseException:
            self.stop()
            raise
        return self

    def _boot(
        self, document: dict[str, Any], parameters: dict[str, Any], given_overrides: dict[str, Any]
    ) -> None:
        self._moto = MotoServer(
            ip_address="127.0.0.1", port=0, verbose=False, aws_faults=self.options.aws_faults
        )
        self._moto.start()
        host, port = self._moto.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        # moto keeps its state per process, not per server: start from nothing.
        httpx.post(f"{self.endpoint}/moto-api/reset", timeout=10).raise_for_status()
        self._set_env(
            {
                "AWS_ACCESS_KEY_ID": "sandbox",
                "AWS_SECRET_ACCESS_KEY": "sandbox",
                "AWS_SESSION_TOKEN": "sandbox",
                "AWS_DEFAULT_REGION": REGION,
                "AWS_REGION": REGION,
                "AWS_ENDPOINT_URL": self.endpoint,
                # reset() purges every queue between tests, more often than SQS's once a minute.
                "MOTO_SQS_ENFORCE_STRICT_QUEUE_PURGE_BEHAVIOUR": "false",
            }
        )
        self.session = aws.session()
        runtime.reset()

        # The provider secret a user fills in after deploying, and what the emulator expects.
        self.provider_keys: dict[str, dict[str, str]] = {
            "apimaster": {"api_key": "sandbox-apimaster-key"},
            "evolink": {"api_key": "sandbox-evolink-key"},
            "gateway": {"api_key": "sandbox-gateway-key"},
            "kling": {
                "access_key": "sandbox-kling-ak",
                "secret_key": "sandbox-kling-secret-key-of-32-bytes!",
            },
        }
        expected = {name: ":".join(fields.values()) for name, fields in self.provider_keys.items()}
        self.emulator = Emulator(keys=expected, clock=self.options.clock)
        self.emulator_server = EmulatorServer(self.emulator)
        base_urls = self.emulator_server.start(drive=self.options.clock is None)
        for dialect in base_urls:
            self.emulator.set_faults(dialect, latency_s=self.options.provider_latency_s)

        overrides: dict[str, dict[str, Any]] = {
            name: {"base_url": url, "enabled": True, **SANDBOX_PRICES.get(name, {})}
            for name, url in base_urls.items()
        }
        for name, extra in self.options.provider_overrides.items():
            overrides[name] = {**overrides.get(name, {}), **extra}
        # The stack's parameters as a deployment would have them: checked against their
        # declarations; a ProviderOverrides given is merged over the emulator's endpoints.
        for name, extra in given_overrides.items():
            overrides[name] = {**overrides.get(name, {}), **extra}
        parameters["ProviderOverrides"] = json.dumps(overrides)
        self.parameters = parameters
        self.resolver = template.Resolver(
            parameters=parameters, pseudo=PSEUDO, conditions=document.get("Conditions", {})
        )
        resources = document["Resources"]
        for logical, resource in resources.items():
            if resource["Type"] in (FUNCTION, "AWS::Serverless::HttpApi", "AWS::Serverless::LayerVersion"):
                self.resolver.refs[logical] = f"{STACK}-{logical}"

        functions = self._functions(document)
        if self.options.clock is not None:
            for function in functions.values():
                function.on_load = self._inject_clock
        self.invoker = Invoker(functions, self._send_to_dlq)
        self.api = ApiServer(self._routes(resources), self.invoker)
        self.api.start()
        builder = ResourceBuilder(self.session, self.endpoint, self.resolver)
        created = builder.build(resources, api_url=self.api.url)
        self.names = created.names
        self.skipped = created.skipped
        assert self._moto is not None
        self.bus_policy = self._moto.bus_policy
        self.bus_policy.rules = [rule for p in created.bus_policies.values() for rule in buspolicy.denials(p)]
        buspolicy.install(runtime._session())
        faults.install(runtime._session())
        # What a user does after deploying: put the provider keys into the secret.
        self.client("secretsmanager").put_secret_value(
            SecretId=self.names["ProviderKeysSecret"],
            SecretString=json.dumps(self.provider_keys),
        )
        self._environment(document, functions)
        self._guard_table(resources)
        self._event_sources(resources)
        if self.options.clock is None:
            for loop in self._loops:
                loop.start()

    def stop(self) -> None:
        for loop in self._loops:
            loop.stop()
        if self.invoker:
            self.invoker.close()
        if self.api:
            self.api.stop()
        if self.emulator_server:
            self.emulator_server.stop()
        if self._moto:
            self._moto.stop()
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        runtime.reset()  # no cached client may outlive the endpoint it points at
        self._clients.clear()
        if Sandbox._running is self:
            Sandbox._running = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- helpers for users of the sandbox ------------------------------------------------------

    def client(self, service: str) -> Any:
        """A client of this sandbox's moto endpoint, made once (clients are thread-safe)."""
        with self._clients_lock:
            if service not in self._clients:
                self._clients[service] = self.session.client(service, endpoint_url=self.endpoint)  # type: ignore[call-overload]
            return self._clients[service]

    @property
    def bucket(self) -> str:
        return self.names["MediaBucket"]

    @property
    def base_urls(self) -> dict[str, str]:
        assert self.emulator_server is not None
        return self.emulator_server.base_urls

    @property
    def aws(self) -> MotoServer:
        """moto's server: its injected faults (`aws.faults.injected`) and refusals (`aws.limits`)."""
        assert self._moto is not None
        return self._moto

    def captured_events(self) -> list[dict[str, Any]]:
        with self._events_lock:
            return list(self.events)

    def loop_errors(self) -> list[str]:
        return [error for loop in self._loops for error in loop.errors]

    # ---- stepping, for deterministic tests ---------------------------------------------------

    def reset(self) -> None:
        """A clean stack again, still warm: no jobs, messages, objects, events, tasks or faults,
        the clock back at its start and every container's services rebuilt on it (tests share
        one sandbox per module and reset it between tests)."""
        clock = self.options.clock
        assert clock is not None and self.invoker is not None and self.emulator_server is not None
        self.invoker.wait_idle()
        self.emulator_server.reset()
        self.aws.faults.reset()
        for dialect in self.base_urls:
            self.emulator.set_faults(dialect, latency_s=self.options.provider_latency_s)
        table = self.session.resource("dynamodb", endpoint_url=self.endpoint).Table(self.names["JobsTable"])
        scan: dict[str, Any] = {"ProjectionExpression": "pk"}
        with table.batch_writer() as batch:
            while True:
                page = table.scan(**scan)
                for item in page.get("Items", []):
                    batch.delete_item(Key={"pk": item["pk"]})
                if "LastEvaluatedKey" not in page:
                    break
                scan["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        sqs = self.client("sqs")
        for url in [*(u for u in self.names.values() if "/123456789012/" in u), *self._queues]:
            sqs.purge_queue(QueueUrl=url)
        s3 = self.client("s3")
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=self.bucket):
            doomed = [
                {"Key": entry["Key"], "VersionId": entry["VersionId"]}
                for entry in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
            ]
            if doomed:
                s3.delete_objects(Bucket=self.bucket, Delete={"Objects": doomed, "Quiet": True})
        with self._events_lock:
            self.events.clear()
        for notifications in self._notifications:
            notifications.prime()
        if isinstance(clock, ManualClock):
            clock.set(START)
        # Clients cached by another sandbox started meanwhile point at its (stopped) endpoint.
        runtime.reset()
        self.table_guard.install(runtime._session())  # the new session's clients are held too
        buspolicy.install(runtime._session())
        faults.install(runtime._session())
        for function in self.invoker.functions.values():
            for container in function.warm():
                self._inject_clock(container.module, function.logical_id)

    def step(self, kind: str) -> None:
        """Run every event source of one kind once: s3, sqs, schedule, rule or tap."""
        for loop in self._loops:
            if loop.name.startswith(f"{kind}-") or loop.name == kind:
                loop.step()

    def deliver_s3(self) -> None:
        self.step("s3")
        assert self.invoker is not None
        self.invoker.wait_idle()

    def drain_archive(self, *, most: int = 100) -> None:
        """Run the archive queue until it is empty (a batch is one message)."""
        sqs = self.client("sqs")
        url = self.names["ArchiveQueue"]
        for _ in range(most):
            depth = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
            if depth["Attributes"]["ApproximateNumberOfMessages"] == "0":
                return
            self.step("sqs-ArchiveJobs")

    def deliver_submissions(self) -> None:
        """Run the submit queue once: jobs POST /jobs accepted are sent to providers."""
        self.step("sqs-QueuedJobs")

    def sweep(self) -> None:
        self.step("schedule")

    def tick_providers(self) -> None:
        """Deliver due provider callbacks and wait until they have been answered."""
        assert self.emulator_server is not None
        self.emulator_server.tick()
        self.emulator.wait_idle()

    def collect_events(self) -> list[dict[str, Any]]:
        """Every event on the bus so far (the tap takes ten at a time: drain it)."""
        while True:
            seen = len(self.captured_events())
            self.step("tap")
            if len(self.captured_events()) == seen:
                return self.captured_events()

    def _inject_clock(self, module: Any, logical_id: str) -> None:
        assert self.options.clock is not None
        # Each handler's lazily built services, rebuilt on the test's clock.
        builders: dict[str, dict[str, Callable[[Any, Clock], Any]]] = {
            "SubmitFunction": {"service": services.build_intake, "canceller": services.build_canceller},
            "CallbackFunction": {"service": services.build_receiver},
            "ArchiveFunction": {"service": services.build_archiver},
            "SweeperFunction": {"service": services.build_sweeper},
            "JobsFunction": {"service": services.build_queries},
            "WebhookFunction": {"service": services.build_webhooks},
        }
        for name, build in builders.get(logical_id, {}).items():
            getattr(module, name).override(build(module.settings, self.options.clock))

    # ---- building ----------------------------------------------------------------------------

    def _set_env(self, values: dict[str, str]) -> None:
        for name, value in values.items():
            self._saved_env.setdefault(name, os.environ.get(name))
            os.environ[name] = value

    def _functions(self, document: dict[str, Any]) -> dict[str, Function]:
        defaults = document.get("Globals", {}).get("Function", {})
        functions = {}
        for logical, resource in document["Resources"].items():
            if resource["Type"] != FUNCTION:
                continue
            props = {**defaults, **resource["Properties"]}
            invoke_config = props.get("EventInvokeConfig", {})
            default = self.options.function_concurrency
            functions[logical] = Function(
                logical_id=logical,
                code_dir=self.options.repo / props["CodeUri"],
                handler=props["Handler"],
                timeout_s=float(props.get("Timeout", 3)),
                memory_mb=int(self.resolver(props.get("MemorySize", 128))),
                max_retries=int(invoke_config.get("MaximumRetryAttempts", 2)),
                concurrency=int(self.resolver(props.get("ReservedConcurrentExecutions", default))),
            )
        return functions

    def _environment(self, document: dict[str, Any], functions: dict[str, Function]) -> None:
        """Each function's variables, from Globals and its own; one process holds them all, so
        two functions giving one variable different values is an error, not a silent pick."""
        common = document.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
        merged: dict[str, str] = {}
        for logical, function in functions.items():
            props = document["Resources"][logical]["Properties"]
            variables = {**common, **props.get("Environment", {}).get("Variables", {})}
            function.environment = {k: str(self.resolver(v)) for k, v in variables.items()}
            dlq = props.get("DeadLetterQueue", {})
            if dlq.get("TargetArn"):
                arn = str(self.resolver(dlq["TargetArn"]))
                function.dead_letter_queue_url = f"{self.endpoint}/{ACCOUNT}/{arn.rsplit(':', 1)[-1]}"
            for name, value in function.environment.items():
                if merged.setdefault(name, value) != value:
                    raise RuntimeError(
                        f"{name} differs between functions; the sandbox runs them in one process"
                    )
        self._set_env({**merged, **self.options.environment})

    def _guard_table(self, resources: dict[str, Any]) -> None:
        """Each function's table calls held to its role in the template, as AWS holds them."""
        grants = {
            logical: iam.statements(resource["Properties"].get("Policies", []), self.resolver)
            for logical, resource in resources.items()
            if resource["Type"] == FUNCTION
        }
        self.table_guard = iam.Guard(grants)
        self.table_guard.install(runtime._session())
        iam.propagate_to_threads()

    def _routes(self, resources: dict[str, Any]) -> list[Route]:
        routes = []
        for logical, resource in resources.items():
            if resource["Type"] != FUNCTION:
                continue
            for event in resource["Properties"].get("Events", {}).values():
                if event["Type"] != "HttpApi":
                    continue
                props = event["Properties"]
                public = props.get("Auth", {}).get("Authorizer") == "NONE"
                routes.append(Route(props["Method"].upper(), props["Path"], logical, iam=not public))
        return routes

    def _event_sources(self, resources: dict[str, Any]) -> None:
        assert self.invoker is not None
        s3, sqs, events = self.client("s3"), self.client("sqs"), self.client("events")
        every = self.options.poll_every_s
        for logical, resource in resources.items():
            if resource["Type"] != FUNCTION:
                continue
            for name, event in resource["Properties"].get("Events", {}).items():
                props = event.get("Properties", {})
                kind = event["Type"]
                if kind == "S3":
                    rules = {
                        r["Name"]: r["Value"]
                        for r in props.get("Filter", {}).get("S3Key", {}).get("Rules", [])
                    }
                    source = S3Notifications(
                        s3,
                        str(self.resolver(props["Bucket"])),
                        prefix=rules.get("prefix", ""),
                        suffix=rules.get("suffix", ""),
                        function=logical,
                        invoker=self.invoker,
                    )
                    source.prime()
                    self._notifications.append(source)
                    self._loops.append(Loop(f"s3-{name}", every, source.step))
                elif kind == "SQS":
                    arn = str(self.resolver(props["Queue"]))
                    url = f"{self.endpoint}/{ACCOUNT}/{arn.rsplit(':', 1)[-1]}"
                    # A function allowed to change its messages' visibility backs off on its own
                    # (the webhook function); the others' retries the sandbox hurries along.
                    backs_off = _grants(resource, "sqs:ChangeMessageVisibility", props["Queue"])
                    batches = SqsBatches(
                        sqs,
                        url,
                        int(props.get("BatchSize", 10)),
                        logical,
                        self.invoker,
                        wait_s=self._wait_s,
                        retry_after_s=None if backs_off else 2,
                    )
                    # A test steps one batch at a time; running, Lambda polls several at once.
                    scaling = self.resolver(props.get("ScalingConfig", {}))
                    limit = int(scaling.get("MaximumConcurrency", self.options.sqs_pollers))
                    pollers = 1 if self.options.clock is not None else min(limit, self.options.sqs_pollers)
                    self._loops.extend(Loop(f"sqs-{name}", 0.05, batches.step) for _ in range(pollers))
                elif kind in ("ScheduleV2", "Schedule"):
                    schedule = Schedule(logical, self.invoker, name)
                    self._loops.append(Loop(f"schedule-{name}", self.options.schedule_every_s, schedule.step))
                elif kind == "EventBridgeRule":
                    bus = str(self.resolver(props.get("EventBusName", "default")))
                    queue = self._rule_queue(events, sqs, bus, f"{logical}-{name}", props["Pattern"])
                    self._loops.append(
                        Loop(
                            f"rule-{name}",
                            0.05,
                            RuleQueue(sqs, queue, logical, self.invoker, wait_s=self._wait_s).step,
                        )
                    )
        # A tap on the outcome bus: every event klingflow emits, for the demo's summary and the tests.
        bus = self.names["OutcomeBus"]
        tap = self._rule_queue(events, sqs, bus, "sandbox-tap", {"source": ["klingflow"]})
        tap_queue = RuleQueue(sqs, tap, None, self.invoker, self._capture, wait_s=self._wait_s)
        self._loops.append(Loop("tap", 0.05, tap_queue.step))

    @property
    def _wait_s(self) -> int:
        # Running, pollers long-poll like Lambda's; stepped by a test, an empty queue answers at once.
        return 0 if self.options.clock is not None else 1

    def _rule_queue(self, events: Any, sqs: Any, bus: str, name: str, pattern: dict[str, Any]) -> str:
        url = str(sqs.create_queue(QueueName=f"{STACK}-rule-{name}")["QueueUrl"])
        self._queues.append(url)
        arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{STACK}-rule-{name}"
        events.put_rule(Name=name, EventBusName=bus, EventPattern=json.dumps(pattern), State="ENABLED")
        events.put_targets(Rule=name, EventBusName=bus, Targets=[{"Id": "sandbox", "Arn": arn}])
        return url

    def _capture(self, event: dict[str, Any]) -> None:
        with self._events_lock:
            self.events.append(event)

    def _send_to_dlq(self, queue_url: str, event: dict[str, Any]) -> None:
        self.client("sqs").send_message(QueueUrl=queue_url, MessageBody=json.dumps(event))


def _grants(function: dict[str, Any], action: str, resource: Any) -> bool:
    """The function's own policy statements allow `action` on `resource` (as the template says it)."""
    for policy in function["Properties"].get("Policies", []):
        for statement in policy.get("Statement", []) if isinstance(policy, dict) else []:
            actions = statement.get("Action")
            resources = statement.get("Resource")
            if action in (actions if isinstance(actions, list) else [actions]) and resource in (
                resources if isinstance(resources, list) else [resources]
            ):
                return bool(statement.get("Effect") == "Allow")
    return False
