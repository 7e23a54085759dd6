"""Serve the emulator over real HTTP on loopback: one server (one port) per dialect."""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from klingflow_dev import ASSETS

from .core import Emulator, Task
from .dialects import DIALECTS, Dialect, Reply

CONTROL = "/_emulator"
# The still a provider makes of a clip (the gateway's manual's cover_url): any real PNG will do.
COVER = (ASSETS / "character.png").read_bytes()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # a provider takes many connections at once
    dialect: Dialect
    base: str

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (the point of the hang fault) is not an emulator error.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # One write per answer (headers and body buffered, flushed once) and no Nagle: a reply in
    # two small writes waits on the client's delayed ACK, 40 ms a request on loopback.
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the sandbox has its own log
        return

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode(errors="replace")

    def _send(self, reply: Reply) -> None:
        data = (
            reply.body
            if isinstance(reply.body, bytes)
            else json.dumps(reply.body, ensure_ascii=False).encode()
        )
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.headers.get("Content-Type", "application/json"))
        self.send_header("Content-Length", str(len(data)))
        for name, value in reply.headers.items():
            if name != "Content-Type":
                self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _dispatch(self, method: str) -> None:
        dialect = self.server.dialect
        emulator = dialect.emulator
        parts = urlsplit(self.path)
        body = self._body()
        if method == "GET" and parts.query:
            # A GET has no body: its query parameters stand in for one (page_num, page_size).
            body = {name: values[0] for name, values in parse_qs(parts.query).items()}
        headers = {k.lower(): v for k, v in self.headers.items()}
        with emulator._lock:
            emulator.requests.append((dialect.name, method, parts.path, body))
        # The knobs answer at the server root and under the dialect's base (".../v1/_emulator"),
        # the URL a user builds from the base URLs the sandbox prints.
        control = parts.path.removeprefix(dialect.prefix)
        if control.startswith(CONTROL):
            self._send(self._control(method, control, body))
            return
        if parts.path.startswith("/files/"):
            self._file(parts.path, parse_qs(parts.query))
            return
        faults = emulator.faults_for(dialect.name)
        if faults.request_latency_s:
            # A provider's own response time, on every API call (each request has its own
            # thread, so concurrent callers wait side by side, as on a real server).
            emulator.sleep(faults.request_latency_s)
        if method == "GET" and faults.query_status is not None:
            self._send(Reply(faults.query_status, dialect.error_body(faults.query_status, "injected fault")))
            return
        reply = dialect.handle(method, parts.path, headers, body, self.server.base)
        if method == "POST" and reply.status < 300 and (late := dialect.fault_reply(after_create=True)):
            reply = late  # the task exists; the answer says otherwise
        if method == "POST" and faults.hang_create_s:
            # A provider that takes the request (the task exists) and answers too late.
            time.sleep(faults.hang_create_s)
        if isinstance(reply.body, bytes) and faults.truncate_downloads:
            self._truncated(reply.body)
            return
        self._send(reply)

    def _control(self, method: str, path: str, body: Any) -> Reply:
        dialect = self.server.dialect
        if path == f"{CONTROL}/faults" and method == "POST" and isinstance(body, dict):
            try:
                return Reply(200, asdict(dialect.emulator.set_faults(dialect.name, **body)))
            except ValueError as error:
                return Reply(400, {"error": str(error)})
        if path == f"{CONTROL}/faults" and method == "GET":
            return Reply(200, asdict(dialect.emulator.faults_for(dialect.name)))
        if path == f"{CONTROL}/tasks":
            tasks = [t for t in dialect.emulator.tasks.values() if t.dialect == dialect.name]
            return Reply(200, [{"task_id": t.task_id, "external_task_id": t.external_task_id} for t in tasks])
        return Reply(404, {"error": "unknown control route"})

    def _file(self, path: str, query: dict[str, list[str]]) -> None:
        dialect = self.server.dialect
        emulator = dialect.emulator
        task_id = path.split("/")[2] if path.count("/") >= 3 else ""
        task: Task | None = emulator.tasks.get(task_id)
        expires = int((query.get("expires") or ["0"])[0] or 0)
        if task is None or task.phase(emulator.clock.now()) != "completed":
            self._send(Reply(404, {"error": "no such file"}))
            return
        if expires and emulator.clock.now().timestamp() > expires:
            self._send(Reply(403, {"error": "link expired"}))
            return
        if path.endswith("/cover.png"):
            data, content_type = emulator.cover_file(dialect.name, COVER)
        elif path.endswith("/output.mp4"):
            data, content_type = emulator.clip_file(dialect.name)
        else:  # a watermarked copy
            data, content_type = emulator.output_bytes(dialect.name), "video/mp4"
        if emulator.faults_for(dialect.name).download_delay_s:
            time.sleep(emulator.faults_for(dialect.name).download_delay_s)
        if emulator.faults_for(dialect.name).truncate_downloads:
            self._truncated(data)
            return
        self._send(Reply(200, data, {"Content-Type": content_type}))

    def _truncated(self, data: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self.close_connection = True

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")


class EmulatorServer:
    """Starts one loopback server per dialect and a driver that delivers callbacks."""

    def __init__(
        self, emulator: Emulator | None = None, *, dialects: tuple[str, ...] = tuple(DIALECTS)
    ) -> None:
        self.emulator = emulator or Emulator()
        self._dialects = {name: DIALECTS[name](self.emulator) for name in dialects}
        self._servers: list[_Server] = []
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self.base_urls: dict[str, str] = {}

    def start(self, *, drive: bool = True) -> dict[str, str]:
        for name, dialect in self._dialects.items():
            server = _Server(("127.0.0.1", 0), _Handler)
            server.dialect = dialect
            server.base = f"http://127.0.0.1:{server.server_address[1]}"
            self._servers.append(server)
            self.base_urls[name] = server.base + dialect.prefix
            # A short poll interval: shutdown waits for it, and tests start and stop servers often.
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"emulator-{name}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        self.emulator.base_urls = dict(self.base_urls)
        if drive:
            driver = threading.Thread(target=self._drive, name="emulator-driver", daemon=True)
            driver.start()
            self._threads.append(driver)
        return dict(self.base_urls)

    def tick(self) -> None:
        self.emulator.tick(self._notify)

    def reset(self) -> None:
        self.emulator.wait_idle()
        self.emulator.reset()
        for dialect in self._dialects.values():
            dialect.reset()

    def _notify(self, task: Task, phase: str) -> dict[str, Any] | None:
        return self._dialects[task.dialect].notify(task, phase)

    def _drive(self) -> None:
        while not self._stop.wait(0.1):
            self.tick()

    def stop(self) -> None:
        self._stop.set()
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self.emulator.close()

    def __enter__(self) -> EmulatorServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
