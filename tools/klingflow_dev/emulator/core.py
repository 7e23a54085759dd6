"""The emulator's model: tasks that progress with an injected clock, faults, callbacks.

Dialect modules decide what goes over the wire; this module decides what happens. Time is
injected: a test moves a fake clock and calls `tick()`; the server's driver thread calls `tick()`
against the real clock.
"""

from __future__ import annotations

import io
import itertools
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx

from klingflow.core.clock import Clock, SystemClock
from klingflow.core.probe import probe_video
from klingflow.core.probe_reader import BytesReader, ProbeError
from klingflow.infra import tls
from klingflow_dev import ASSETS

PHASES = ("queued", "processing", "completed", "failed", "cancelled")
ENDS = ("completed", "failed", "cancelled")
# A task turns "processing" after this fraction of its latency.
PROCESSING_AT = 0.3
# What a CDN answers instead of a clip when something in front of it goes wrong.
HTML_PAGE = b"<!DOCTYPE html>\n<html><body><h1>403 Forbidden</h1></body></html>\n"
# The bodies `Faults.output_body` and `Faults.cover_body` may name.
OUTPUT_BODIES = ("html", "truncated", "empty")
COVER_BODIES = ("html", "mislabelled")


@dataclass
class Faults:
    """Per-dialect knobs. All default to a healthy provider."""

    create_status: int | None = None  # answer every create with this HTTP status (503, 429, 402...)
    create_code: int | None = None  # body code for dialects that carry one (kling: 1303)
    retry_after_s: int | None = None  # Retry-After header on 429/503
    hang_create_s: float = 0.0  # take the task, then answer this late (past client timeouts)
    create_after_fault: bool = (
        False  # create the task, then answer create_status anyway (a 5xx after the work)
    )
    query_status: int | None = None  # answer every task query with this HTTP status
    fail_tasks: bool = False  # tasks end failed instead of completed
    cancel_tasks: bool = False  # tasks end cancelled by the provider (evolink documents it)
    latency_s: float = 6.0  # time from create to completion
    request_latency_s: float = 0.0  # every API request (create, query, lists) answers this late
    drop_callbacks: bool = False
    duplicate_callbacks: int = 0  # send each callback this many extra times
    reverse_callbacks: bool = False  # send a task's callbacks newest first (out of order)
    callback_delay_s: float = 0.0
    output_bytes: int | None = None  # pad outputs to this size (a valid `free` box)
    truncate_downloads: bool = False  # close the connection halfway through an output
    download_delay_s: float = 0.0  # wait this long before serving an output (a slow CDN)
    link_ttl_s: float | None = None  # override the dialect's output-link lifetime
    output_host: str | None = None  # serve output links under this host name (e.g. "localhost")
    output_seconds_over: float = 0.0  # report clips this much longer than asked (a frame over)
    # Charge this fraction more than the task's price when it completes (gateway `usage.seconds`,
    # kling `final_unit_deduction`, evolink `credits_used`), beyond what its create reserved.
    overcharge: float = 0.0
    unified_answers: bool = False  # gateway: answer finished tasks in the gateway's manual's unified format
    extra_host: str | None = None  # serve covers and watermarked copies under this host name
    # A clip that is not one, as a whole 200 answer: "html" (a page, text/html), "truncated"
    # (the first half of the MP4, as video/mp4) or "empty"; for `bad_downloads` downloads of
    # the dialect's clips, then the real clip again (None: every download).
    output_body: str | None = None
    bad_downloads: int | None = None
    # A cover that is not what it is served as: "html" (a page, text/html) or "mislabelled"
    # (the PNG, served as text/html).
    cover_body: str | None = None


@dataclass
class Delivery:
    url: str
    body: dict[str, Any]
    due: datetime
    attempt: int = 0


@dataclass
class Task:
    task_id: str
    dialect: str
    body: dict[str, Any]
    created: datetime
    latency_s: float
    fails: bool
    cancelled: bool = False
    callback_url: str | None = None
    external_task_id: str | None = None
    kind: str = "motion_control"
    seconds: float | None = None  # the clip length asked for (generated kinds bill on it)
    element_id: str | None = None  # what an element task makes
    input_seconds: float | None = None
    input_error: str | None = None
    notified: list[str] = field(default_factory=list)
    held: list[dict[str, Any]] = field(default_factory=list)  # callbacks kept back to reorder
    base: str = ""  # the server address the task was created on (its output links live there)

    def phase(self, now: datetime) -> str:
        if self.input_error is not None:
            return "failed"
        elapsed = (now - self.created).total_seconds()
        if elapsed >= self.latency_s:
            return "cancelled" if self.cancelled else "failed" if self.fails else "completed"
        if elapsed >= self.latency_s * PROCESSING_AT:
            return "processing"
        return "queued"

    def finished_at(self) -> datetime:
        return self.created + timedelta(seconds=self.latency_s)

    def entered(self, phase: str) -> datetime:
        """When the task entered `phase` (what its callback for that phase is stamped with)."""
        if phase == "queued":
            return self.created
        if phase == "processing":
            return self.created + timedelta(seconds=self.latency_s * PROCESSING_AT)
        return self.finished_at()


class Emulator:
    """State shared by every dialect server: tasks, faults, callbacks, output files."""

    # Callback policy the providers document: 10 s timeout, 3 retries about 1, 2, 4 s apart.
    CALLBACK_TIMEOUT_S = 10.0
    CALLBACK_RETRY_DELAYS_S = (1.0, 2.0, 4.0)

    def __init__(self, *, clock: Clock | None = None, keys: dict[str, str] | None = None) -> None:
        self.clock = clock or SystemClock()
        self.keys = keys or {}
        self.faults: dict[str, Faults] = {}
        self.tasks: dict[str, Task] = {}
        self.requests: list[tuple[str, str, str, Any]] = []  # (dialect, method, path, body)
        self.callbacks_sent: list[tuple[str, str, int | str]] = []  # (task id, phase, status)
        self.base_urls: dict[str, str] = {}
        self.deleted_elements: set[tuple[str, str]] = set()  # (dialect, element id)
        # How the servers wait out `request_latency_s` (real time; a test may record it instead).
        self.sleep: Callable[[float], None] = time.sleep
        self._pending: list[Delivery] = []
        self._inflight: set[Future[None]] = set()
        self._ids = itertools.count(1)
        self._lock = threading.RLock()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="emulator-callback")
        self._http = httpx.Client(timeout=self.CALLBACK_TIMEOUT_S, verify=tls.context())
        self._output = (ASSETS / "output-std.mp4").read_bytes()
        self._bad_served: dict[str, int] = {}  # per dialect: clips served as `output_body`

    def faults_for(self, dialect: str) -> Faults:
        with self._lock:
            return self.faults.setdefault(dialect, Faults())

    def set_faults(self, dialect: str, **changes: Any) -> Faults:
        with self._lock:
            current = self.faults_for(dialect)
            for name, value in changes.items():
                if not hasattr(current, name):
                    raise ValueError(f"unknown fault {name!r}")
                for knob, allowed in (("output_body", OUTPUT_BODIES), ("cover_body", COVER_BODIES)):
                    if name == knob and value is not None and value not in allowed:
                        raise ValueError(f"{knob} must be one of {allowed} or null, not {value!r}")
                setattr(current, name, value)
            return current

    def reset(self) -> None:
        """Forget every task, request, callback and fault: a provider that never saw anyone."""
        with self._lock:
            self.faults.clear()
            self.tasks.clear()
            self.requests.clear()
            self.callbacks_sent.clear()
            self.deleted_elements.clear()
            self._pending.clear()
            self._bad_served.clear()

    def new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):06d}{int(self.clock.now().timestamp()) % 100000:05d}"

    def create(
        self,
        dialect: str,
        body: dict[str, Any],
        *,
        prefix: str,
        input_url: str | None,
        callback_url: str | None = None,
        external_task_id: str | None = None,
        kind: str = "motion_control",
        seconds: float | None = None,
    ) -> Task:
        faults = self.faults_for(dialect)
        task = Task(
            kind=kind,
            seconds=seconds,
            task_id=self.new_id(prefix),
            dialect=dialect,
            body=body,
            created=self.clock.now(),
            latency_s=faults.latency_s,
            fails=faults.fail_tasks,
            cancelled=faults.cancel_tasks,
            callback_url=callback_url,
            external_task_id=external_task_id,
        )
        task.input_seconds, task.input_error = self._measure(input_url)
        if kind == "custom_element":
            task.element_id = str(800000000000000000 + next(self._ids))
        with self._lock:
            self.tasks[task.task_id] = task
        return task

    def elements_made(self, dialect: str) -> set[str]:
        """The elements an account holds: its element tasks that completed, less those deleted."""
        now = self.clock.now()
        with self._lock:
            return {
                task.element_id
                for task in self.tasks.values()
                if task.dialect == dialect
                and task.element_id is not None
                and task.phase(now) == "completed"
                and (dialect, task.element_id) not in self.deleted_elements
            }

    def find(self, dialect: str, task_or_external_id: str) -> Task | None:
        with self._lock:
            task = self.tasks.get(task_or_external_id)
            if task is None:
                task = next(
                    (
                        t
                        for t in self.tasks.values()
                        if t.external_task_id == task_or_external_id and t.dialect == dialect
                    ),
                    None,
                )
            return task if task is not None and task.dialect == dialect else None

    def external_id_taken(self, dialect: str, external_task_id: str) -> bool:
        with self._lock:
            return any(
                t.dialect == dialect and t.external_task_id == external_task_id for t in self.tasks.values()
            )

    # ---- inputs and outputs ------------------------------------------------------------------

    def _measure(self, url: str | None) -> tuple[float | None, str | None]:
        """Fetch the reference video like a provider would, and bill on what it measures.

        Only loopback URLs are fetched (the sandbox's presigned S3 links); anything else is
        taken on trust, because this emulator must never reach outside the machine.
        """
        if not url:
            return None, None
        host = urlsplit(url).hostname or ""
        if host not in ("127.0.0.1", "localhost", "::1"):
            return 5.0, None
        try:
            answer = self._http.get(url, timeout=10)
        except httpx.HTTPError as error:
            return None, f"reference video could not be fetched: {error}"
        if answer.status_code != 200:
            return None, f"reference video could not be fetched: HTTP {answer.status_code}"
        try:
            return probe_video(BytesReader(answer.content)).duration_s, None
        except ProbeError as error:
            return None, f"reference video is not readable: {error}"

    def output_bytes(self, dialect: str) -> bytes:
        target = self.faults_for(dialect).output_bytes
        if target is None or target <= len(self._output) + 8:
            return self._output
        # A `free` box is valid anywhere at top level: the file stays a playable MP4.
        padding = target - len(self._output)
        buffer = io.BytesIO()
        buffer.write(self._output)
        buffer.write(struct.pack(">I4s", padding, b"free"))
        buffer.write(b"\0" * (padding - 8))
        return buffer.getvalue()

    def clip_file(self, dialect: str) -> tuple[bytes, str]:
        """A clip download's body and Content-Type, as the dialect's faults have it."""
        faults = self.faults_for(dialect)
        clip = self.output_bytes(dialect)
        with self._lock:
            served = self._bad_served.get(dialect, 0)
            if faults.output_body is None or (
                faults.bad_downloads is not None and served >= faults.bad_downloads
            ):
                return clip, "video/mp4"
            self._bad_served[dialect] = served + 1
        return {
            "html": (HTML_PAGE, "text/html; charset=utf-8"),
            "truncated": (clip[: len(clip) // 2], "video/mp4"),
            "empty": (b"", "video/mp4"),
        }[faults.output_body]

    def cover_file(self, dialect: str, image: bytes) -> tuple[bytes, str]:
        """A cover download's body and Content-Type, as the dialect's faults have it."""
        match self.faults_for(dialect).cover_body:
            case "html":
                return HTML_PAGE, "text/html; charset=utf-8"
            case "mislabelled":
                return image, "text/html"
            case _:
                return image, "image/png"

    # ---- callbacks ---------------------------------------------------------------------------

    def tick(self, notify: Callable[[Task, str], dict[str, Any] | None]) -> None:
        """Queue callbacks for phase changes (as `notify` decides), deliver the due ones."""
        now = self.clock.now()
        with self._lock:
            for task in list(self.tasks.values()):
                if task.callback_url:
                    self._queue_callbacks(task, now, notify)
            due_now = [d for d in self._pending if d.due <= now]
            self._pending = [d for d in self._pending if d.due > now]
        for delivery in due_now:
            future = self._pool.submit(self._deliver, delivery)
            with self._lock:
                self._inflight.add(future)
            future.add_done_callback(self._delivered)

    def _delivered(self, future: Future[None]) -> None:
        with self._lock:
            self._inflight.discard(future)

    def wait_idle(self, timeout_s: float = 30) -> None:
        """Wait until every callback handed to the pool has been answered (or failed)."""
        with self._lock:
            inflight = list(self._inflight)
        wait(inflight, timeout=timeout_s)

    def _queue_callbacks(
        self, task: Task, now: datetime, notify: Callable[[Task, str], dict[str, Any] | None]
    ) -> None:
        assert task.callback_url is not None
        phase = task.phase(now)
        if task.notified and task.notified[-1] == phase:
            return
        task.notified.append(phase)
        body = notify(task, phase)
        faults = self.faults_for(task.dialect)
        if body is None or faults.drop_callbacks:
            return
        bodies = [body]
        if faults.reverse_callbacks:
            task.held.append(body)
            if phase not in ENDS:
                return
            bodies, task.held = list(reversed(task.held)), []
        due = now + timedelta(seconds=faults.callback_delay_s)
        # Same due time for all: the list order is the send order.
        for item in bodies:
            for _ in range(1 + faults.duplicate_callbacks):
                self._pending.append(Delivery(task.callback_url, item, due))

    def _deliver(self, delivery: Delivery) -> None:
        status: int | str
        try:
            status = self._http.post(
                delivery.url, json=delivery.body, timeout=self.CALLBACK_TIMEOUT_S
            ).status_code
        except httpx.HTTPError as error:
            status = type(error).__name__
        task_id = str(delivery.body.get("id") or delivery.body.get("task_id") or "")
        phase = str(delivery.body.get("status") or delivery.body.get("task_status") or "")
        with self._lock:
            self.callbacks_sent.append((task_id, phase, status))
            ok = isinstance(status, int) and 200 <= status < 300
            if not ok and delivery.attempt < len(self.CALLBACK_RETRY_DELAYS_S):
                wait = self.CALLBACK_RETRY_DELAYS_S[delivery.attempt]
                self._pending.append(
                    Delivery(
                        delivery.url,
                        delivery.body,
                        self.clock.now() + timedelta(seconds=wait),
                        delivery.attempt + 1,
                    )
                )

    def pending_callbacks(self) -> int:
        with self._lock:
            return len(self._pending)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._http.close()


def iso_z(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
