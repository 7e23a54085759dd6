"""Hostile webhook receivers on loopback, for the tests that hold deliveries to their deadline."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

ANSWER = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nX-Padding: " + b"p" * 40 + b"\r\n\r\n"


class TricklingReceiver:
    """Reads a request, then answers it one byte every `every_s` seconds (its status line and
    headers take len(ANSWER) * every_s in all), the way a slow-loris receiver holds a client that
    only has per-read timeouts. `sent` counts the bytes it got out before the client hung up."""

    def __init__(self, every_s: float, *, tls: ssl.SSLContext | None = None) -> None:
        self._every_s = every_s
        self._tls = tls
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.requests = 0
        self.sent: list[int] = []
        self.finished = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def url(self, path: str = "/hook", host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def __enter__(self) -> TricklingReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        # close() alone leaves accept() blocked on Linux; shutdown() wakes it.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(raw,), daemon=True).start()

    def _answer(self, raw: socket.socket) -> None:
        sent = 0
        try:
            conn = self._tls.wrap_socket(raw, server_side=True) if self._tls else raw
            with conn:
                conn.recv(65536)
                self.requests += 1
                for byte in ANSWER:
                    if self._stop.wait(self._every_s):
                        return
                    conn.sendall(bytes([byte]))
                    sent += 1
        except OSError:
            pass  # the client hung up: what the deadline is for
        finally:
            self.sent.append(sent)
            self.finished.set()

    @property
    def whole_answer(self) -> int:
        return len(ANSWER)


class Receiver:
    """A webhook receiver on loopback that answers each POST with the next status given."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.answers: list[int] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(outer.answers.pop(0) if outer.answers else 204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/klingflow"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
