"""Run the template's functions in this process, the way Lambda would call them."""

from __future__ import annotations

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
    module: ModuleType | None = None
    on_load: Callable[[ModuleType, str], None] | None = None
    # One container per function: Lambda never runs two events at once in one container.
    lock: threading.Lock = field(default_factory=threading.Lock)

    def load(self) -> Callable[[dict[str, Any], Any], Any]:
        module_file, _, attribute = self.handler.rpartition(".")
        with _IMPORTS:
            self._import(module_file)
        handler: Callable[[dict[str, Any], Any], Any] = getattr(self.module, attribute)
        return handler

    def _import(self, module_file: str) -> None:
        if self.module is None:
            path = self.code_dir / f"{module_file}.py"
            name = f"sandbox_{self.logical_id}_{module_file}"
            spec = importlib.util.spec_from_file_location(name, path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            self.module = module
            if self.on_load is not None:
                self.on_load(module, self.logical_id)


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
        handler = function.load()
        with function.lock:
            context = FakeContext(logical_id, function.timeout_s, function.memory_mb)
            try:
                result = handler(event, context)
            except Exception as error:
                self._record(Invocation(logical_id, source, False, f"{type(error).__name__}: {error}"))
                raise
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
