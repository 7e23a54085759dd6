"""Jobs of one scenario through the deterministic sandbox, one at a time, each in its own window.

The sandbox runs on a manual clock with the stack's own settings (the demo's short polls left
out), the emulated providers taking `provider_latency_s` per task; each simulated minute the
provider's due callbacks are delivered, the sweeper runs once (its schedule is every minute)
and the archive queue is drained. A job's window is everything from its POST to its end (its
event published, its webhooks delivered). A window of idle sweeps before the jobs measures what
a sweep costs with nothing due: a cost per minute, not per job (report.py subtracts it).
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from klingflow import runtime
from klingflow.infra.dynamo import from_dynamo
from klingflow.jobs.items import JobItems
from klingflow_dev import ASSETS
from klingflow_dev.clock import ManualClock
from klingflow_dev.demo import MANIFESTS, TERMINAL
from klingflow_dev.sandbox import Sandbox, SandboxOptions
from klingflow_dev.sandbox.client import ApiClient
from klingflow_dev.sandbox.template import load

from .capacity import Schema
from .recorder import Recorder

MEDIA = ("character.png", "dance.mp4")
FOLDER = "incoming/scale"
# The sandbox's own short polls make a demo quick; here the stack's defaults apply.
DEMO_ONLY = frozenset(
    {
        "FIRST_POLL_WITH_CALLBACK_S",
        "FIRST_POLL_WITHOUT_CALLBACK_S",
        "POLL_MAX_INTERVAL_S",
        "ARCHIVE_STALL_S",
        "SALVAGE_POLL_S",
    }
)
IDLE_SWEEPS = 5
MAX_MINUTES = 60
WARMUP = "warmup"
IDLE = "idle"
JOB = "job "


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str
    provider: str | None = None  # None: the cheapest, as routing chooses
    webhook: bool = False


SCENARIOS = (
    *(Scenario(kind, kind) for kind in MANIFESTS),
    # apimaster never calls back: the sweeper polls it to its end.
    Scenario("motion_control@apimaster", "motion_control", provider="apimaster"),
    Scenario("motion_control+webhook", "motion_control", webhook=True),
)


@dataclass
class Run:
    """What one scenario's jobs made the functions do, and what each job was billed."""

    scenario: Scenario
    recorder: Recorder
    memory_mb: dict[str, int]
    architecture: str
    providers: list[str] = field(default_factory=list)
    billed_usd: list[float] = field(default_factory=list)
    stored_bytes: list[int] = field(default_factory=list)

    @property
    def jobs(self) -> int:
        return len(self.billed_usd)


def run(scenario: Scenario, *, jobs: int, provider_latency_s: float, say: Callable[[str], None]) -> Run:
    clock = ManualClock()
    environment = {k: v for k, v in SandboxOptions().environment.items() if k not in DEMO_ONLY}
    options = SandboxOptions(clock=clock, environment=environment, provider_latency_s=provider_latency_s)
    with Sandbox(options) as sandbox, _receiver() as webhook_url:
        reader = sandbox.client("dynamodb")
        described = reader.describe_table(TableName=sandbox.names["JobsTable"])["Table"]
        recorder = Recorder(reader, Schema.described(described))
        recorder.install(runtime._session())  # before any handler makes a client
        assert sandbox.invoker is not None
        recorder.time(sandbox.invoker)
        memory, architecture = _functions(sandbox)
        found = Run(scenario, recorder, memory, architecture)
        driver = _Driver(sandbox, clock, scenario, webhook_url if scenario.webhook else None)
        try:
            recorder.window = WARMUP  # every function's first container, not measured
            driver.job(0)
            recorder.window = IDLE
            for _ in range(IDLE_SWEEPS):
                clock.advance(60)
                sandbox.sweep()
            for number in range(1, jobs + 1):
                recorder.window = f"{JOB}{number}"
                item = driver.job(number)
                found.providers.append(str(item.get("provider")))
                found.billed_usd.append(float((item.get("cost") or {}).get("billed_usd") or 0))
                found.stored_bytes.append(driver.stored_bytes(item))
        finally:
            driver.close()
        say(f"{scenario.name}: {jobs} jobs on {sorted(set(found.providers))}")
        return found


def _functions(sandbox: Sandbox) -> tuple[dict[str, int], str]:
    """Each function's MemorySize and the stack's architecture, as template.yaml says."""
    document = load(sandbox.options.repo / "template.yaml")
    defaults = document.get("Globals", {}).get("Function", {})
    memory = {}
    for logical, resource in document["Resources"].items():
        if resource["Type"] == "AWS::Serverless::Function":
            props = {**defaults, **resource["Properties"]}
            memory[logical] = int(sandbox.resolver(props.get("MemorySize", 128)))
    architectures = sandbox.resolver(defaults.get("Architectures", ["x86_64"]))
    return memory, str(architectures[0])


class _Driver:
    def __init__(self, sandbox: Sandbox, clock: ManualClock, scenario: Scenario, webhook: str | None) -> None:
        assert sandbox.api is not None
        self.sandbox, self.clock, self.scenario, self.webhook = sandbox, clock, scenario, webhook
        self.api = ApiClient(sandbox.api.url)
        self.s3 = sandbox.client("s3")
        self.reader = sandbox.client("dynamodb")
        for name in MEDIA:
            self.s3.put_object(
                Bucket=sandbox.bucket, Key=f"{FOLDER}/{name}", Body=(ASSETS / name).read_bytes()
            )

    def close(self) -> None:
        self.api.close()

    def request(self, number: int) -> dict[str, Any]:
        """The demo's manifest of the kind, its bare file names as the keys of the media here."""
        request = {name: _keyed(value) for name, value in MANIFESTS[self.scenario.kind].items()}
        request["idempotency_key"] = f"scale-{self.scenario.name}-{number}"
        if self.scenario.provider:
            request["provider"] = self.scenario.provider
        if self.webhook:
            request["webhook"] = {"url": self.webhook}
        return request

    def job(self, number: int) -> dict[str, Any]:
        """POST one job and run the stack minute by minute until it has ended; its item."""
        response = self.api.request("POST", "/jobs", self.request(number))
        if response.status_code != 202:
            raise RuntimeError(
                f"{self.scenario.name}: POST /jobs answered {response.status_code}: {response.text}"
            )
        job_id = str(response.json()["job_id"])
        self.sandbox.deliver_submissions()
        for _ in range(MAX_MINUTES):
            self.sandbox.drain_archive()
            self._deliver_webhooks()
            assert self.sandbox.invoker is not None
            self.sandbox.invoker.wait_idle()
            item = self.item(job_id)
            if item.get("status") in TERMINAL and not item.get("pending_event") and self._quiet():
                if item["status"] != "ARCHIVED":
                    raise RuntimeError(
                        f"{self.scenario.name}: job {job_id} ended {item['status']}: {item.get('error')}"
                    )
                return item
            self.clock.advance(60)
            self.sandbox.tick_providers()
            self.sandbox.sweep()
        raise RuntimeError(
            f"{self.scenario.name}: job {job_id} did not end in {MAX_MINUTES} simulated minutes"
        )

    def item(self, job_id: str) -> dict[str, Any]:
        found = self.reader.get_item(
            TableName=self.sandbox.names["JobsTable"], Key=_typed(JobItems.key(job_id)), ConsistentRead=True
        )
        return from_dynamo(found.get("Item", {}))

    def stored_bytes(self, item: dict[str, Any]) -> int:
        """What the job left in S3 for good: its outputs and its result."""
        keys = [str(output["key"]) for output in item.get("outputs") or []]
        if item.get("result_key"):
            keys.append(str(item["result_key"]))
        return sum(
            int(self.s3.head_object(Bucket=self.sandbox.bucket, Key=key)["ContentLength"]) for key in keys
        )

    def _deliver_webhooks(self) -> None:
        """Every outcome reaches the webhook function (it finds whether the job asked for one)."""
        self.sandbox.collect_events()  # the outcome bus has routed every event to the webhook queue
        for _ in range(MAX_MINUTES):
            if not self._waiting("WebhookQueue"):
                return
            self.sandbox.step("sqs-JobOutcomes")

    def _quiet(self) -> bool:
        return not any(self._waiting(queue) for queue in ("ArchiveQueue", "WebhookQueue"))

    def _waiting(self, queue: str) -> bool:
        attributes = self.sandbox.client("sqs").get_queue_attributes(
            QueueUrl=self.sandbox.names[queue], AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        return str(attributes["ApproximateNumberOfMessages"]) != "0"


def _keyed(value: Any) -> Any:
    if isinstance(value, str) and value in MEDIA:
        return f"{FOLDER}/{value}"
    if isinstance(value, list):
        return [_keyed(member) for member in value]
    return value


def _typed(key: dict[str, str]) -> dict[str, Any]:
    return {name: {"S": value} for name, value in key.items()}


class _Taker(http.server.BaseHTTPRequestHandler):
    """A webhook receiver that takes every delivery."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@contextmanager
def _receiver() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Taker)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()
