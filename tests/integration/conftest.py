"""The deterministic sandbox: real handlers, moto server and the provider emulator on loopback,
with a manual clock and event sources stepped by the test instead of background loops."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest

from klingflow.infra.dynamo import Table
from klingflow_dev import ASSETS
from klingflow_dev.clock import ManualClock
from klingflow_dev.emulator import Emulator, EmulatorServer
from klingflow_dev.sandbox import Sandbox
from klingflow_dev.sandbox.client import ApiClient
from tests.conftest import TEST_CREDENTIALS
from tests.fixtures.prices import sandbox_options, with_prices

from .emulated import KEYS, Providers


class Stack:
    """A sandbox plus the few moves every scenario makes."""

    def __init__(self, sandbox: Sandbox, clock: ManualClock) -> None:
        self.sandbox = sandbox
        self.clock = clock
        assert sandbox.api is not None
        self.api = ApiClient(sandbox.api.url)
        self.s3 = sandbox.client("s3")
        self.table = Table(sandbox.client("dynamodb"), sandbox.names["JobsTable"])
        self.emulator = sandbox.emulator
        self._media: set[str] = set()

    @property
    def bucket(self) -> str:
        return self.sandbox.bucket

    def put_media(self, folder: str) -> None:
        self.s3.put_object(
            Bucket=self.bucket, Key=f"{folder}/character.png", Body=(ASSETS / "character.png").read_bytes()
        )
        self.s3.put_object(
            Bucket=self.bucket, Key=f"{folder}/dance.mp4", Body=(ASSETS / "dance.mp4").read_bytes()
        )

    def request(self, folder: str, **changes: Any) -> dict[str, Any]:
        request: dict[str, Any] = {
            "image": f"{folder}/character.png",
            "video": f"{folder}/dance.mp4",
            "character_orientation": "image",
            "mode": "std",
            "metadata": {"test": folder},
        }
        request.update(changes)
        return {k: v for k, v in request.items() if v is not None}

    def post_job(self, folder: str, **changes: Any) -> dict[str, Any]:
        self.put_media(folder)
        response = self.api.request("POST", "/jobs", self.request(folder, **changes))
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "QUEUED"  # accepted; sent from the submit queue
        self.sandbox.deliver_submissions()
        return self.job(response.json()["job_id"])

    def deliver_manifests(self) -> None:
        """S3 notifies submit of the manifests dropped under incoming/ (each becomes a QUEUED
        job or a report under rejected/), then the submit queue sends the jobs accepted, as it
        does for POST /jobs: only its consumer calls providers."""
        self.sandbox.deliver_s3()
        self.sandbox.deliver_submissions()

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.api.request("GET", f"/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def item(self, job_id: str) -> dict[str, Any]:
        return dict(self.table.get_item(Key={"pk": f"JOB#{job_id}"}, ConsistentRead=True)["Item"])

    def finish_at_provider(self) -> None:
        """Let every provider task run to its end, then deliver the callbacks that follow."""
        self.clock.advance(60)
        self.sandbox.tick_providers()

    def reset(self) -> None:
        self.sandbox.reset()
        self._media.clear()

    def post(self, folder: str, **changes: Any) -> Any:
        """POST /jobs with the sample media under `folder` (uploaded once per folder)."""
        if folder not in self._media:
            self.put_media(folder)
            self._media.add(folder)
        return self.api.request("POST", "/jobs", self.request(folder, **changes))

    def send_all(self, count: int) -> None:
        """Run the submit queue until `count` messages have been handled (one per step)."""
        for _ in range(count):
            self.sandbox.deliver_submissions()

    def archive_all(self, count: int) -> None:
        for _ in range(count):
            self.sandbox.drain_archive()

    def all_jobs(self) -> list[dict[str, Any]]:
        """Every job GET /jobs lists, page after page."""
        jobs: list[dict[str, Any]] = []
        token = None
        while True:
            page = self.api.get_json("/jobs?limit=100" + (f"&next_token={token}" if token else ""))
            jobs += page["jobs"]
            token = page["next_token"]
            if not token:
                return jobs

    def request_event(self, detail: dict[str, Any], *, source: str = "com.example.orders") -> None:
        """A partner puts `Job Requested` on the request bus; its rule delivers it to submit,
        which stores the job QUEUED (or rejects it), and the submit queue sends it on."""
        self.sandbox.client("events").put_events(
            Entries=[
                {
                    "Source": source,
                    "DetailType": "Job Requested",
                    "Detail": json.dumps(detail),
                    "EventBusName": self.sandbox.names["EventBus"],
                }
            ]
        )
        self.sandbox.step("rule")
        assert self.sandbox.invoker is not None
        self.sandbox.invoker.wait_idle()
        self.sandbox.deliver_submissions()

    def spend(self, day: str | None = None) -> dict[str, Any]:
        return dict(self.api.get_json("/spend" + (f"?day={day}" if day else "")))

    def events_for(self, job_id: str) -> list[str]:
        return [
            e["detail-type"] for e in self.sandbox.collect_events() if e["detail"].get("job_id") == job_id
        ]

    def fetched_content(self, task_id: str) -> bool:
        """Whether archive fetched apimaster's authenticated /content endpoint for this task."""
        return ("apimaster", "GET", f"/v1/videos/{task_id}/content", None) in self.emulator.requests

    def callback_url(self, job_id: str) -> str:
        task = next(t for t in self.emulator.tasks.values() if t.external_task_id == job_id)
        assert task.callback_url is not None
        return task.callback_url


@contextmanager
def deterministic_stack(
    parameters: dict[str, Any] | None = None, *, aws_faults: dict[str, float] | None = None
) -> Iterator[Stack]:
    """A sandbox on a manual clock, with the stack parameters a deployment would pass, priced
    from tests/fixtures/prices.py; `aws_faults`: DynamoDB's conflicts and throttling
    (`SandboxOptions.aws_faults`).

    Only one sandbox runs per process, so the shared one stops first (the next test that asks
    for `stack` starts it again)."""
    SHARED.stop()
    clock = ManualClock()
    parameters = dict(parameters or {})
    if "ProviderOverrides" in parameters:
        # A test's own prices over the fixture's, per kind and tier, never over production's
        parameters["ProviderOverrides"] = json.dumps(with_prices(json.loads(parameters["ProviderOverrides"])))
    options = sandbox_options(
        clock=clock,
        environment={"PROVIDER_TIMEOUT_S": "1"},
        parameters=parameters,
        aws_faults=aws_faults or {},
    )
    sandbox = Sandbox(options)
    sandbox.start()
    try:
        yield Stack(sandbox, clock)
    finally:
        sandbox.stop()


class SharedStack:
    """The default-parameter sandbox the tests of a module share (starting one costs more than
    a test), started on first use and reset by the `stack` fixture between tests."""

    def __init__(self) -> None:
        self._running: tuple[ExitStack, Stack] | None = None

    def get(self) -> Stack:
        if self._running is None:
            exits = ExitStack()
            patch = exits.enter_context(pytest.MonkeyPatch.context())
            for name, value in TEST_CREDENTIALS.items():
                patch.setenv(name, value)
            self._running = (exits, exits.enter_context(deterministic_stack()))
        return self._running[1]

    def stop(self) -> None:
        if self._running is not None:
            exits, _ = self._running
            self._running = None
            exits.close()


SHARED = SharedStack()


@pytest.fixture(scope="module")
def module_stack() -> Iterator[Stack]:
    """The shared sandbox for one module's tests, stopped when the module is done."""
    yield SHARED.get()
    SHARED.stop()


@pytest.fixture
def stack(module_stack: Stack) -> Stack:
    """The module's sandbox, reset: no jobs, objects, messages, events, tasks or faults, and the
    clock back at its start. A test before this one may have stopped it to run a sandbox with
    other parameters; then it starts again."""
    shared = SHARED.get()
    shared.reset()
    return shared


def body(response: Any) -> Any:
    return json.loads(response.text)


@pytest.fixture
def providers() -> Iterator[Providers]:
    """The emulator alone (no AWS), every dialect taking 10 s per task on a manual clock."""
    clock = ManualClock()
    emulator = Emulator(keys={name: ":".join(fields.values()) for name, fields in KEYS.items()}, clock=clock)
    server = EmulatorServer(emulator)
    server.start(drive=False)
    for dialect in KEYS:
        emulator.set_faults(dialect, latency_s=10)
    try:
        yield Providers(clock, server)
    finally:
        server.stop()
