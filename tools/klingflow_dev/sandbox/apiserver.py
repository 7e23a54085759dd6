"""Serve the template's HTTP API routes by invoking the real handlers with API Gateway v2 events."""

from __future__ import annotations

import base64
import json
import re
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from .aws import ACCOUNT
from .lambdas import Invoker


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # as in the template: /jobs/{job_id}
    function: str
    iam: bool

    @property
    def key(self) -> str:
        return f"{self.method} {self.path}"

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if method != self.method:
            return None
        pattern = "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.path)) + "$"
        found = re.match(pattern, path)
        # API Gateway hands path parameters over decoded (rawPath keeps the encoding).
        return {name: unquote(value) for name, value in found.groupdict().items()} if found else None


def api_event(
    route: Route,
    *,
    method: str,
    raw_path: str,
    query: str,
    headers: dict[str, str],
    body: bytes,
    params: dict[str, str],
) -> dict[str, Any]:
    host = headers.get("host", "")
    now = datetime.now(UTC)
    try:
        text_body, binary = (body.decode("utf-8"), False) if body else (None, False)
    except UnicodeDecodeError:
        # What API Gateway does with a body that is not text: base64, flagged.
        text_body, binary = base64.b64encode(body).decode(), True
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route.key,
        "rawPath": raw_path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": ACCOUNT,
            "apiId": "sandbox",
            "domainName": host,
            "domainPrefix": "sandbox",
            "http": {
                "method": method,
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": uuid.uuid4().hex,
            "routeKey": route.key,
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": binary,
    }
    if query:
        event["queryStringParameters"] = dict(parse_qsl(query))
    if params:
        event["pathParameters"] = params
    if text_body is not None:
        event["body"] = text_body
    if route.iam:
        event["requestContext"]["authorizer"] = {"iam": {"accessKey": "sandbox", "accountId": ACCOUNT}}
    return event


# Lambda's synchronous payload, each way: an event (the request body inside it) past this is
# refused before the function runs, and API Gateway answers 413; a function's answer past it is
# an invocation error (Lambda allows a little more for the answer's envelope), a 500.
REQUEST_MAX_BYTES = 6 * 1024 * 1024
RESPONSE_MAX_BYTES = REQUEST_MAX_BYTES + 100
TOO_LARGE = (413, {"Content-Type": "application/json"}, b'{"message":"Request Entity Too Large"}')
FAILED = (500, {"Content-Type": "application/json"}, b'{"message":"Internal Server Error"}')


def payload_bytes(value: Any) -> int:
    """The size of an event or an answer as Lambda counts it: its JSON."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode())


class _Server(ThreadingHTTPServer):
    # API Gateway takes many connections at once; the socket module's default backlog of 5
    # resets the sixth client that connects in the same instant.
    request_queue_size = 128


class ApiServer:
    def __init__(self, routes: list[Route], invoker: Invoker) -> None:
        self.routes = routes
        self._invoker = invoker
        self._server = _Server(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="sandbox-api", daemon=True
        )
        self.requests: list[tuple[str, str, int, float]] = []

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # One write per answer (headers and body buffered, flushed once) and no Nagle: a
            # reply in two small writes waits on the client's delayed ACK, 40 ms on loopback.
            wbufsize = 64 * 1024
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _serve(self, method: str) -> None:
                started = time.monotonic()
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, reply_headers, reply = api.handle(method, parts.path, parts.query, headers, body)
                self.send_response(status)
                for name, value in reply_headers.items():
                    if name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                if method != "HEAD":
                    self.wfile.write(reply)
                api.requests.append((method, parts.path, status, time.monotonic() - started))

            # Every method API Gateway routes; a route the template lacks answers 404, as there.
            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_PUT(self) -> None:
                self._serve("PUT")

            def do_PATCH(self) -> None:
                self._serve("PATCH")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

            def do_HEAD(self) -> None:
                self._serve("HEAD")

            def do_OPTIONS(self) -> None:
                self._serve("OPTIONS")

            def __getattr__(self, name: str) -> Any:
                # Any other method (TRACE, a made-up one) reaches no route: 404, as API Gateway
                # answers, not http.server's 501.
                if name.startswith("do_"):
                    return lambda: self._serve(name.removeprefix("do_"))
                raise AttributeError(name)

        return Handler

    def handle(
        self, method: str, path: str, query: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        for route in self.routes:
            params = route.match(method, path)
            if params is None:
                continue
            if route.iam and not headers.get("authorization", "").startswith("AWS4-HMAC-SHA256 "):
                # API Gateway's answer to an unsigned request on an IAM route.
                return 403, {"Content-Type": "application/json"}, b'{"message":"Forbidden"}'
            event = api_event(
                route, method=method, raw_path=path, query=query, headers=headers, body=body, params=params
            )
            if payload_bytes(event) > REQUEST_MAX_BYTES:
                return TOO_LARGE
            try:
                answer = self._invoker.invoke(route.function, event, source=f"api {route.key}")
            except Exception:
                # What Lambda would log for the failed invocation; API Gateway only says 500.
                traceback.print_exc(file=sys.stderr)
                return FAILED
            if payload_bytes(answer) > RESPONSE_MAX_BYTES:
                print(f"{route.function}: response payload over {RESPONSE_MAX_BYTES} bytes", file=sys.stderr)
                return FAILED
            reply = answer.get("body") or ""
            data = base64.b64decode(reply) if answer.get("isBase64Encoded") else str(reply).encode()
            return int(answer.get("statusCode", 200)), dict(answer.get("headers") or {}), data
        return 404, {"Content-Type": "application/json"}, json.dumps({"message": "Not Found"}).encode()
