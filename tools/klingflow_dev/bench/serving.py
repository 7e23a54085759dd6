"""Row: one request to the sandbox's own servers, against a plain loopback HTTP server.

The sandbox's API server and the provider emulator sit on every path a sandbox test, the demo
and every provider call in them take, so their per-request cost multiplies. The floor is the
least a Python HTTP/1.1 server on loopback can do: http.server answering a fixed body on a kept
connection. Both sides are asked over one reused httpx connection, as the pipeline's clients do.
"""

from __future__ import annotations

import functools
import socket
import statistics
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from klingflow_dev.emulator import EmulatorServer
from klingflow_dev.sandbox.apiserver import ApiServer
from klingflow_dev.sandbox.lambdas import Invoker

from .core import RowResult, interleaved, median_ms

GOAL_MS = 3.0


class _Plain(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = b'{"message": "Not Found"}'
        # One write, Nagle off (see setup): what any server that does not stall can do.
        self.wfile.write(
            b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def _plain_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Plain)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/nothing"
    finally:
        server.shutdown()
        server.server_close()


def run(*, runs: int, quick: bool) -> list[RowResult]:
    count = 20 if quick else 200
    runs = 1 if quick else runs
    rows = []
    emulator = EmulatorServer()
    emulator.start(drive=False)
    api = ApiServer([], Invoker({}, lambda url, event: None))
    api.start()
    try:
        with _plain_server() as plain, httpx.Client() as client:
            floor = median_ms(lambda: client.get(plain), count)
            targets = {
                # A query for a task the provider never made: the dialect's own routing and answer.
                "sandbox request: provider emulator": (
                    emulator.base_urls["gateway"] + "/v1/videos/no-such-task",
                    {"Authorization": "Bearer x"},
                ),
                # A route the template lacks: the server's own work, no function behind it.
                "sandbox request: API server": (api.url + "/nothing", {}),
            }
            for path, (url, headers) in targets.items():
                for warm in (url, plain):  # open both connections before timing
                    client.get(warm, headers=headers)
                ask = functools.partial(client.get, url, headers=headers)
                ours, floors = interleaved(runs, median_ms(ask, count), floor)
                rows.append(
                    RowResult(
                        path=path,
                        floor="plain loopback HTTP server",
                        unit="ms",
                        ours=ours,
                        floors=floors,
                        goal_op="<=",
                        goal=GOAL_MS,
                        # The goal is absolute: ms per request, the floor's ms shown beside it.
                        ratios_override=ours,
                        notes={"floor ms": f"{statistics.median(floors):.2f}"},
                    )
                )
    finally:
        api.stop()
        emulator.stop()
    return rows
