"""Rows: one sweep of a due backlog against its floor, its speed-up over serial polling, and the
items a sweep reads per due job.

Everything runs on loopback: the sandbox's moto server (in a process of its own, see `Stack`)
with the resources template.yaml declares, and the provider emulator (`request_latency_s` is
the provider's response time); time is a manual clock. The sweeper is the one
`services.build_sweeper` builds from the sweeper's settings (the template's defaults), as its
Lambda container would, with its real clients over HTTP. The due jobs are at apimaster, each
with a task at the emulator that is still processing, so every visit is one provider query and
one conditional write (SUBMITTED -> RUNNING in the unmeasured first sweep, then a reschedule).

The sweep row's floor is the least work those visits could be: the same provider queries with
the same request latency, each followed by one conditional UpdateItem of the same shape as the
sweeper's (next due time, poll counted) on the same moto server, at the concurrency the sweep
reaches, from a plain thread pool (httpx and a boto3 client whose pools hold that many
connections). It reads nothing: the sweep also reads its due jobs from the index, which against
DynamoDB is a few pages of a few ms each, and on the sandbox's moto (item answers sent as
JSON, `sandbox/dynamojson.py`) a few hundred ms; the notes give that read alone, so a gap
between the two sides can be told apart from the sweeper's own work. Serial polling is
estimated from the floor's pair of calls made one job after another on a sample of jobs, times
the backlog.

The items-read row counts what the sweep's due-index queries read (ScannedCount of every Query
the sweeper's DynamoDB client made, through botocore's event hooks) over the due jobs it took,
in a table that also holds jobs not due yet (in the index) and finished ones.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import httpx
from botocore.config import Config

from klingflow import runtime, services
from klingflow.core.clock import iso
from klingflow.core.models import Job, Source
from klingflow.core.outcomes import SweepOutcome
from klingflow.core.states import JobStatus
from klingflow.flows.sweep import Sweeper, poll_workers
from klingflow.jobs.listing import DUE_INDEX
from klingflow.jobs.store import JobStore
from klingflow.settings import SweeperSettings
from klingflow_dev.clock import ManualClock
from klingflow_dev.emulator import Emulator, EmulatorServer
from klingflow_dev.sandbox import template
from klingflow_dev.sandbox.aws import PSEUDO, REGION, STACK, ResourceBuilder

from .core import RowResult, interleaved

REPO = Path(__file__).resolve().parents[3]
DIALECT = "apimaster"
API_KEY = "bench-apimaster-key"
# Tasks that never finish while measured; jobs that never reach their deadline.
TASK_LATENCY_S = 10**7
DEADLINE = 10**10
# Between two measured sweeps the clock moves past every reschedule (POLL_MAX_INTERVAL_S).
NEXT_TICK_S = 3600
# Jobs in the due index that are not due at any sweep measured.
LATER_S = 10**6
SERIAL_SAMPLE = 8
GOAL_FLOOR = 1.3
GOAL_SPEEDUP = 15.0
GOAL_READS = 1.1
# Beside the backlog, in the items-read row: jobs in the due index not due yet, finished jobs.
NOT_DUE = 300
ENDED = 100


class _Capture:
    """Stands in for the table to learn the item `JobStore.create` writes, so the backlog can
    be loaded in batches (how jobs got there is not what is measured)."""

    name = "capture"

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def put_item(self, *, Item: dict[str, Any], **_: Any) -> dict[str, Any]:
        self.items.append(Item)
        return {}


class _Reads:
    """Every Query a DynamoDB client makes: the items it read (ScannedCount) and its index."""

    def __init__(self, client: Any) -> None:
        self.read = 0
        self.queries = 0
        self.indexes: set[str] = set()
        client.meta.events.register("provide-client-params.dynamodb.Query", self._asked)
        client.meta.events.register("after-call.dynamodb.Query", self._answered)

    def reset(self) -> None:
        self.read = self.queries = 0
        self.indexes.clear()

    def _asked(self, params: dict[str, Any], **_: Any) -> None:
        self.indexes.add(str(params.get("IndexName")))

    def _answered(self, parsed: dict[str, Any], **_: Any) -> None:
        self.queries += 1
        self.read += int(parsed.get("ScannedCount", 0))


class Stack:
    """The AWS side on a moto server of its own process (the sandbox's server, DynamoDB
    atomic), resources made from template.yaml, and the provider emulator on loopback.

    moto spends milliseconds of CPU on every request; in the sweeper's own interpreter that CPU
    would hold the GIL the sweeper's threads need, and every thread woken by an answer would
    queue behind it, which measures moto, not the sweeper. DynamoDB is never in the sweeper's
    process, so moto is not either (the floor talks to the same server).
    """

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self._exits = contextlib.ExitStack()

    def __enter__(self) -> Stack:
        try:
            self._start()
        except BaseException:
            self._exits.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._exits.close()

    def _start(self) -> None:
        port = _free_port()
        moto = subprocess.Popen(
            [sys.executable, "-c", _MOTO.format(port=port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.moto_pid = moto.pid
        self._exits.callback(_stop, moto)
        self.endpoint = f"http://127.0.0.1:{port}"
        _wait_for(self.endpoint)
        self._exits.enter_context(_environment(self.endpoint))
        self.session = boto3.Session(region_name=REGION)
        document = template.load(REPO / "template.yaml")
        parameters = template.parameter_values(document.get("Parameters", {}), {})
        resolver = template.Resolver(
            parameters=parameters, pseudo=PSEUDO, conditions=document.get("Conditions", {})
        )
        for logical, resource in document["Resources"].items():
            if resource["Type"].startswith("AWS::Serverless::"):
                resolver.refs[logical] = f"{STACK}-{logical}"
        self.names = (
            ResourceBuilder(self.session, self.endpoint, resolver)
            .build(document["Resources"], api_url="http://127.0.0.1:9")
            .names
        )
        self.emulator = Emulator(keys={DIALECT: API_KEY}, clock=self.clock)
        server = EmulatorServer(self.emulator, dialects=(DIALECT,))
        self.base_url = server.start(drive=False)[DIALECT]
        self._exits.callback(server.stop)
        self._exits.callback(runtime.reset)  # no cached client outlives the endpoint
        runtime.reset()

    def settings(self) -> SweeperSettings:
        """The sweeper's settings as a deployment gives them (template defaults), pointed here."""
        return SweeperSettings.model_validate(
            {
                "JOBS_TABLE": self.names["JobsTable"],
                "ARCHIVE_QUEUE_URL": self.names["ArchiveQueue"],
                "SUBMIT_QUEUE_URL": self.names["SubmitQueue"],
                "EVENT_BUS": self.names["OutcomeBus"],
                "PROVIDER_CREDENTIALS": json.dumps({DIALECT: {"api_key": API_KEY}}),
                "PROVIDER_OVERRIDES": json.dumps({DIALECT: {"base_url": self.base_url, "enabled": True}}),
                "POWERTOOLS_METRICS_DISABLED": "true",
            }
        )


class Bench:
    """The stack, the sweeper built on it, and the moves the rows make."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.clock = stack.clock
        self.emulator = stack.emulator
        self.settings = stack.settings()
        self.base_url = stack.base_url
        self.table_name = stack.names["JobsTable"]
        self._table = stack.session.resource("dynamodb", endpoint_url=stack.endpoint).Table(self.table_name)
        self.task_ids: dict[str, str] = {}
        self._next = 0

    def sweeper(self, **changes: Any) -> tuple[Sweeper, _Reads]:
        """The sweeper as its container builds it (fresh clients, settings changed as asked)."""
        runtime.reset()
        settings = self.settings.model_copy(update=changes) if changes else self.settings
        sweeper = services.build_sweeper(settings, self.clock)
        return sweeper, _Reads(runtime.client("dynamodb"))

    def load(self, due: int, *, later: int = 0, ended: int = 0) -> list[str]:
        """`due` jobs due now at apimaster (each with a processing task), `later` due a day
        from now, `ended` finished (out of the due index); returns the due ones' ids."""
        self.emulator.set_faults(DIALECT, latency_s=TASK_LATENCY_S)
        now = int(self.clock.now().timestamp())
        capture = _Capture()
        store = JobStore(capture, self.clock)  # type: ignore[arg-type]
        due_ids: list[str] = []
        for index in range(due + later + ended):
            self._next += 1
            job_id = f"01SWEEP{self._next:019d}"
            task = self.emulator.create(DIALECT, {}, prefix="task_", input_url=None)
            self.task_ids[job_id] = task.task_id
            status = JobStatus.ARCHIVED if index >= due + later else JobStatus.SUBMITTED
            due_at = None if status.terminal else now - 1 if index < due else now + LATER_S
            store.create(_job(job_id, status, task.task_id, due_at))
            if index < due:
                due_ids.append(job_id)
        with self._table.batch_writer() as batch:
            for item in capture.items:
                batch.put_item(Item=item)
        return due_ids

    def clear(self) -> None:
        """Delete every job loaded so far, so the next row starts with nothing due."""
        with self._table.batch_writer() as batch:
            for job_id in self.task_ids:
                batch.delete_item(Key={"pk": f"JOB#{job_id}"})
        self.task_ids.clear()

    def sweep(self, sweeper: Sweeper, expected: int) -> float:
        """One sweep of everything due (the clock moved past every reschedule); seconds."""
        self.clock.advance(NEXT_TICK_S)
        started = time.perf_counter()
        outcomes = sweeper.sweep(time_left_s=lambda: 900.0)
        took = time.perf_counter() - started
        if outcomes != Counter({SweepOutcome.POLLED: expected}):
            raise RuntimeError(f"the sweep did not poll every due job: {dict(outcomes)}")
        return took

    def clients(self, concurrency: int) -> tuple[httpx.Client, Any]:
        """The floor's clients: pools that hold `concurrency` connections, like the sweeper's."""
        http = httpx.Client(
            timeout=30,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        dynamodb = self.stack.session.client(
            "dynamodb", endpoint_url=self.stack.endpoint, config=Config(max_pool_connections=concurrency)
        )
        return http, dynamodb

    def floor_visit(self, http: httpx.Client, dynamodb: Any) -> Callable[[str], None]:
        """The least a visit can do: one provider query, then one conditional write of what it
        learned (the next poll's time, the poll counted: what the sweeper's write holds)."""
        headers = {"Accept": "application/json", "Authorization": f"Bearer {API_KEY}"}
        store = JobStore(None, self.clock)  # type: ignore[arg-type]  # only for its shard rule

        def visit(job_id: str) -> None:
            answer = http.get(f"{self.base_url}/videos/{self.task_ids[job_id]}", headers=headers)
            answer.raise_for_status()
            answer.json()
            now = int(self.clock.now().timestamp())
            dynamodb.update_item(
                TableName=self.table_name,
                Key={"pk": {"S": f"JOB#{job_id}"}},
                UpdateExpression="SET updated_at = :at, due_at = :due, due_shard = :shard, "
                "polls = if_not_exists(polls, :zero) + :one",
                ConditionExpression="attribute_exists(pk) AND #status IN (:submitted, :running)",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":at": {"S": iso(self.clock.now())},
                    ":due": {"N": str(now + 60)},
                    ":shard": {"S": store.due_shard(job_id)},
                    ":zero": {"N": "0"},
                    ":one": {"N": "1"},
                    ":submitted": {"S": JobStatus.SUBMITTED.value},
                    ":running": {"S": JobStatus.RUNNING.value},
                },
            )

        return visit


def _job(job_id: str, status: JobStatus, task_id: str, due_at: int | None) -> Job:
    return Job.model_validate(
        {
            "job_id": job_id,
            "kind": "motion_control",
            "status": status,
            "provider": DIALECT,
            "provider_task_id": task_id,
            "request": {"image": "a.png"},
            "source": Source(type="api"),
            "created_at": "2026-11-21T12:00:00Z",
            "updated_at": "2026-11-21T12:00:00Z",
            "deadline_at": DEADLINE,
            "due_at": due_at,
        }
    )


_MOTO = """
import sys
from klingflow_dev.sandbox.aws import MotoServer
server = MotoServer(ip_address="127.0.0.1", port={port}, verbose=False)
server.start()
sys.stdin.read()  # until the parent goes
server.stop()
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for(endpoint: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            httpx.get(f"{endpoint}/moto-api/", timeout=2)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"moto did not start at {endpoint}") from None
            time.sleep(0.1)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.stdin is not None:
        process.stdin.close()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def _environment(endpoint: str) -> Iterator[None]:
    """What runtime's clients read: this endpoint and throwaway credentials (restored after)."""
    values = {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_SESSION_TOKEN": "bench",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL": endpoint,
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _sweep_rows(bench: Bench, *, due: int, latency_s: float, runs: int) -> list[RowResult]:
    job_ids = bench.load(due)
    bench.emulator.set_faults(DIALECT, request_latency_s=latency_s)
    sweeper, _ = bench.sweeper()
    concurrency = poll_workers(due, bench.settings.poll_concurrency)
    http, dynamodb = bench.clients(concurrency)
    visit = bench.floor_visit(http, dynamodb)

    def ours() -> float:
        return bench.sweep(sweeper, due)

    def floor() -> float:
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            list(pool.map(visit, job_ids))
        return time.perf_counter() - started

    # One unmeasured round each: connections and threads started, and the first sweep's
    # SUBMITTED -> RUNNING moves made (every measured sweep then reschedules RUNNING jobs).
    ours()
    floor()
    mine, floors = interleaved(runs, ours, floor)
    bench.clock.advance(NEXT_TICK_S)
    started = time.perf_counter()
    read_alone = sum(1 for _ in runtime.store(bench.settings, bench.clock).due_jobs(limit=due))
    read_s = time.perf_counter() - started
    per_job = []
    for job_id in job_ids[:SERIAL_SAMPLE]:
        started = time.perf_counter()
        visit(job_id)
        per_job.append(time.perf_counter() - started)
    serial = statistics.median(per_job) * due
    one_job_ms = statistics.median(per_job) * 1000
    speedups = [serial / took for took in mine]
    http.close()
    ms = round(latency_s * 1000)
    notes = {
        "concurrency": f"{concurrency} (ceiling POLL_CONCURRENCY {bench.settings.poll_concurrency})",
        "x faster than serial": f"{statistics.median(speedups):.1f}",
        "serial estimate s": f"{serial:.1f} = {due} x {one_job_ms:.0f} ms (a poll + a write)",
        "reading the due jobs alone s": f"{read_s:.2f} ({read_alone} items)",
        "ours median s": f"{statistics.median(mine):.2f}",
        "floor median s": f"{statistics.median(floors):.2f}",
    }
    return [
        RowResult(
            path=f"one sweep of {due} due jobs at {ms} ms per provider query",
            floor=f"{due} polls at concurrency {concurrency} + one conditional UpdateItem each, same servers",
            unit="s",
            ours=mine,
            floors=floors,
            goal_op="<=",
            goal=GOAL_FLOOR,
            notes=notes,
        ),
        RowResult(
            path="sweep speed-up over serial polling",
            floor=f"serial: {due} x (one {ms} ms poll + one write)",
            unit="s",
            ours=mine,
            floors=[serial] * len(mine),
            goal_op=">=",
            goal=GOAL_SPEEDUP,
            notes={"speed-ups": " ".join(f"{s:.1f}" for s in speedups)},
            ratios_override=speedups,
        ),
    ]


def _reads_row(bench: Bench, sizes: tuple[int, ...]) -> RowResult:
    """One sweep (the default MAX_JOBS_PER_RUN) at each backlog, the backlog grown in place:
    the items its due-index queries read over the due jobs it took (all of them, or its run's
    worth). The table also holds jobs not due for days (in the index) and finished ones."""
    bench.emulator.set_faults(DIALECT, request_latency_s=0.0)
    bench.load(0, later=NOT_DUE, ended=ENDED)
    read: list[float] = []
    taken: list[float] = []
    notes: dict[str, str] = {}
    loaded = 0
    for due in sizes:
        bench.load(due - loaded)  # the earlier ones are due again at the next tick
        loaded = due
        sweeper, reads = bench.sweeper()
        expected = min(due, bench.settings.max_jobs_per_run)
        took = bench.sweep(sweeper, expected)
        if reads.indexes - {DUE_INDEX}:
            raise RuntimeError(f"the sweep queried more than the due index: {reads.indexes}")
        read.append(reads.read)
        taken.append(expected)
        notes[f"{due} due"] = f"{expected} swept, {reads.read} read in {reads.queries} queries ({took:.1f} s)"
    return RowResult(
        path=f"items read per sweep ({', '.join(str(size) for size in sizes)} due jobs)",
        floor=f"the due jobs a sweep takes (at most MAX_JOBS_PER_RUN {bench.settings.max_jobs_per_run}; "
        f"{NOT_DUE} jobs not due and {ENDED} finished in the table too)",
        unit="items",
        ours=read,
        floors=taken,
        goal_op="<=",
        goal=GOAL_READS,
        notes=notes,
        ratios_override=[r / t for r, t in zip(read, taken, strict=True)],
    )


def run(*, runs: int, quick: bool) -> list[RowResult]:
    with Stack(ManualClock()) as stack:
        bench = Bench(stack)
        if quick:
            rows = _sweep_rows(bench, due=40, latency_s=0.05, runs=1)
            bench.clear()
            return [*rows, _reads_row(bench, (40,))]
        rows = _sweep_rows(bench, due=500, latency_s=0.2, runs=runs)
        bench.clear()
        return [*rows, _reads_row(bench, (200, 1000, 5000))]


if __name__ == "__main__":  # python -m klingflow_dev.bench.sweep [runs] [--quick]
    quick = "--quick" in sys.argv
    numbers = [arg for arg in sys.argv[1:] if arg.isdigit()]
    for row in run(runs=int(numbers[0]) if numbers else 5, quick=quick):
        low, high = row.spread
        print(f"{row.path:<58} {row.ratio:6.2f}x ({low:.2f}-{high:.2f})  {row.notes}")
