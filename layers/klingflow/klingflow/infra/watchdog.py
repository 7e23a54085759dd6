"""One outgoing request's wall-clock limit, DNS lookup included (`SafeHttp.post`)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import suppress
from typing import Final

import httpx


class LookupTooSlow(Exception):
    """The lookup did not answer within what was left of the limit."""


# A timeout capped to what is left may fire a hair before the limit by the monotonic clock.
_TIMER_SLACK_S = 0.01


class Watchdog:
    """One request's wall-clock limit. httpx's timeouts apply to each read or write, so a
    receiver that trickles its answer a byte at a time never trips them; when this limit runs
    out, a timer shuts the connection's socket down, which ends whatever read or write is
    blocked on it (as an httpx TransportError)."""

    def __init__(self, limit_s: float) -> None:
        self._ends_at = time.monotonic() + limit_s
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._finished = False
        self.expired = False
        self._timer = threading.Timer(limit_s, self._cut)
        self._timer.daemon = True
        self._timer.start()

    def run(self, lookup: Callable[[str, int], list[str]], host: str, port: int) -> list[str]:
        """The lookup's answer if it comes within what is left of the limit. No socket of ours
        to cut: the system resolver blocks for as long as a slow authoritative server makes it,
        so the lookup runs on a pool thread and only the wait for it is bounded."""
        future = _lookups().submit(lookup, host, port)
        try:
            return future.result(timeout=max(0.0, self._ends_at - time.monotonic()))
        except FutureTimeout:
            future.cancel()  # still queued behind busy lookups: not run for no one
            with self._lock:
                self.expired = True
            raise LookupTooSlow(host) from None

    @property
    def ran_out(self) -> bool:
        """The limit is spent: the timer cut the socket, or a timeout capped to the limit fired
        first (on a busy machine it can), which is the same failure."""
        return self.expired or time.monotonic() >= self._ends_at - _TIMER_SLACK_S

    def capped(self, timeout: httpx.Timeout) -> dict[str, float | None]:
        """Each operation's timeout, never past what is left of the limit."""
        left = max(0.001, self._ends_at - time.monotonic())
        return {
            name: left if value is None else min(value, left) for name, value in timeout.as_dict().items()
        }

    def trace(self, name: str, info: Mapping[str, object]) -> None:
        # httpcore's trace extension: the stream each connection step made (the TLS socket
        # replaces the plain one, which TLS detaches from its descriptor).
        if name in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            stream = info.get("return_value")
            found = getattr(stream, "get_extra_info", lambda _: None)("socket")
            if isinstance(found, socket.socket):
                with self._lock:
                    self._socket = found

    def _cut(self) -> None:
        with self._lock:
            if self._finished:
                return
            self.expired = True
            if self._socket is not None:
                # The plain socket's shutdown, not SSLSocket's (which would drop its TLS state
                # under the reading thread); a closed socket answers EBADF and is left alone.
                with suppress(OSError):
                    socket.socket.shutdown(self._socket, socket.SHUT_RDWR)

    def finish(self) -> None:
        with self._lock:
            self._finished = True
        self._timer.cancel()


# A lookup that outlives its delivery keeps its thread until the system resolver gives up on
# its own (resolv.conf's timeout x attempts; the interpreter's exit waits for it too); the bound
# caps how many one container holds, and a lookup queued behind them still fails at its own
# deadline.
_LOOKUP_THREADS: Final = 4
_lookup_pool: ThreadPoolExecutor | None = None
_lookup_pool_lock = threading.Lock()


def _lookups() -> ThreadPoolExecutor:
    global _lookup_pool  # noqa: PLW0603 - one pool per process, made on the first POST
    with _lookup_pool_lock:
        if _lookup_pool is None:
            _lookup_pool = ThreadPoolExecutor(_LOOKUP_THREADS, thread_name_prefix="safehttp-dns")
        return _lookup_pool
