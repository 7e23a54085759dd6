"""Run the template's functions in this process, the way Lambda would call them."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from .aws import ACCOUNT, REGION
from .iam import CALLER


class FakeContext:
    """The parts of LambdaContext that handlers and Powertools read."""

    def __init__(self, name: str, timeout_s: float, memory_mb: int) -> None:
        self.function_name = name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
        self.memory_limit_in_mb = memory_mb
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{name}"
        self.log_stream_name = "sandbox"
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


# Lambda imports each handler in a process of its own; here all share one, and two handlers
# importing at once trip circular imports that are not thread-safe (Powertools' data_classes
# raised "partially initialized module" from a concurrent S3 notification and API call).
_IMPORTS = threading.Lock()
# A handler's router keeps the request being served on itself (`http.Router.current_event`, as
# Powertools' event handler did): one per handler module, which in Lambda is one per container.
# Containers here are threads of one process sharing the module, so HTTP requests are served one
# at a time (a request read after another's arrival would see the other's body); queue, S3,
# event and schedule invocations still run side by side.
_HTTP = threading.Lock()


@dataclass
class Container:
    """One warm execution environment: its own copy of the handler module and its globals."""

    module: ModuleType
    handler: Callable[[dict[str, Any], Any], Any]


@dataclass
class Function:
    logical_id: str
    code_dir: Path
    handler: str
    timeout_s: float
    memory_mb: int
    max_retries: int = 2
    dead_letter_queue_url: str | None = None
    environment: dict[str, str] = field(default_factory=dict)
    on_load: Callable[[ModuleType, str], None] | None = None
    # How many events may run at once, each in a container of its own (Lambda scales out; a
    # container never runs two events at once). ReservedConcurrentExecutions caps it.
    concurrency: int = 1
    _idle: list[Container] = field(default_factory=list)
    _started: int = 0
    _slots: threading.Condition = field(default_factory=threading.Condition)

    @property
    def containers(self) -> int:
        return self._started

    def acquire(self) -> Container:
        """A warm container if one is idle, a new one while under the concurrency limit, or
        wait for one to come free."""
        with self._slots:
            while not self._idle and self._started >= self.concurrency:
                self._slots.wait()
            if self._idle:
                return self._idle.pop()
            self._started += 1
            number = self._started
        try:
            return self._cold_start(number)
        except BaseException:
            with self._slots:
                self._started -= 1
                self._slots.notify()
            raise

    def warm(self) -> list[Container]:
        """The containers started so far that are idle now."""
        with self._slots:
            return list(self._idle)

    def release(self, container: Container) -> None:
        with self._slots:
            self._idle.append(container)
            self._slots.notify()

    def _cold_start(self, number: int) -> Container:
        module_file, _, attribute = self.handler.rpartition(".")
        path = self.code_dir / f"{module_file}.py"
        name = f"sandbox_{self.logical_id}_{module_file}_{number}"
        with _IMPORTS:
            spec = importlib.util.spec_from_file_location(name, path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        if self.on_load is not None:
            self.on_load(module, self.logical_id)
        return Container(module, getattr(module, attribute))


@dataclass
class Invocation:
    function: str
    source: str
    ok: bool
    error: str | None = None


class Invoker:
    """Synchronous calls (API, SQS) and asynchronous ones (S3, EventBridge, schedule) with
    Lambda's retry policy and dead-letter queue."""

    def __init__(
        self, functions: dict[str, Function], send_to_dlq: Callable[[str, dict[str, Any]], None]
    ) -> None:
        self.functions = functions
        self._send_to_dlq = send_to_dlq
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="sandbox-async")
        self.log: list[Invocation] = []
        self._log_lock = threading.Lock()
        self._pending: set[Future[Any]] = set()

    def invoke(self, logical_id: str, event: dict[str, Any], *, source: str) -> Any:
        function = self.functions[logical_id]
        container = function.acquire()
        caller = CALLER.set(logical_id)
        try:
            context = FakeContext(logical_id, function.timeout_s, function.memory_mb)
            with _HTTP if "routeKey" in event else contextlib.nullcontext():
                result = container.handler(event, context)
        except Exception as error:
            self._record(Invocation(logical_id, source, False, f"{type(error).__name__}: {error}"))
            raise
        finally:
            CALLER.reset(caller)
            function.release(container)
        self._record(Invocation(logical_id, source, True))
        return result

    def invoke_async(self, logical_id: str, event: dict[str, Any], *, source: str) -> Future[Any]:
        future = self._pool.submit(self._with_retries, logical_id, event, source)
        with self._log_lock:
            self._pending.add(future)
        future.add_done_callback(self._done)
        return future

    def _done(self, future: Future[Any]) -> None:
        with self._log_lock:
            self._pending.discard(future)

    def wait_idle(self, timeout_s: float = 60) -> None:
        """Wait for every asynchronous invocation started so far (deterministic tests)."""
        with self._log_lock:
            pending = list(self._pending)
        wait(pending, timeout=timeout_s)

    def _with_retries(self, logical_id: str, event: dict[str, Any], source: str) -> Any:
        function = self.functions[logical_id]
        for attempt in range(function.max_retries + 1):
            try:
                return self.invoke(logical_id, event, source=source)
            except Exception:
                if attempt == function.max_retries:
                    traceback.print_exc(file=sys.stderr)
                    if function.dead_letter_queue_url:
                        self._send_to_dlq(function.dead_letter_queue_url, event)
        return None

    def _record(self, invocation: Invocation) -> None:
        with self._log_lock:
            self.log.append(invocation)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
