"""HTTP shaping shared by the API handlers: one small router, one error mapping.

The routes are the template's own HTTP API routes, and API Gateway (payload 2.0) already names
the one it matched in `routeKey` and hands the path parameters over decoded, so dispatch is a
dictionary lookup. Powertools' event handler would do the same and more, but importing it (and
the event data classes it loads) costs a cold start ~100 ms for features these routes never use.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from aws_lambda_powertools import Logger

from klingflow.core.errors import FieldError, KlingflowError, RequestRejected, RequestTooLarge, to_http
from klingflow.core.payload import check_body

logger = Logger(child=True)
Route = TypeVar("Route", bound=Callable[..., Any])


def json_response(status: int, body: Any) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(body, default=str),
        "isBase64Encoded": False,
    }


@dataclass(frozen=True)
class HttpRequest:
    """What a route reads of an API Gateway HTTP API (payload 2.0) request."""

    body: str | None
    is_base64_encoded: bool
    headers: Mapping[str, str]  # names in lower case, as HTTP APIs deliver them
    query_string_parameters: Mapping[str, str] | None
    request_id: str

    @classmethod
    def of(cls, event: Mapping[str, Any]) -> HttpRequest:
        return cls(
            body=event.get("body"),
            is_base64_encoded=bool(event.get("isBase64Encoded")),
            headers={str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()},
            query_string_parameters=event.get("queryStringParameters"),
            request_id=str((event.get("requestContext") or {}).get("requestId", "")),
        )


class Router:
    """Routes by the `routeKey` API Gateway matched; every error becomes the same JSON shape."""

    def __init__(self) -> None:
        self._routes: dict[str, Callable[..., Any]] = {}
        self.current_event = HttpRequest(None, False, {}, None, "")

    def route(self, method: str, path: str) -> Callable[[Route], Route]:
        """Register a route under its template key, e.g. ("GET", "/jobs/{job_id}")."""

        def register(function: Route) -> Route:
            self._routes[f"{method} {path}"] = function
            return function

        return register

    def get(self, path: str) -> Callable[[Route], Route]:
        return self.route("GET", path)

    def post(self, path: str) -> Callable[[Route], Route]:
        return self.route("POST", path)

    def delete(self, path: str) -> Callable[[Route], Route]:
        return self.route("DELETE", path)

    @property
    def route_keys(self) -> frozenset[str]:
        return frozenset(self._routes)

    def resolve(self, event: Mapping[str, Any], context: object = None) -> dict[str, Any]:
        route = self._routes.get(str(event.get("routeKey", "")))
        if route is None:  # a route the template has and this function does not: a wiring bug
            logger.error("no such route", extra={"route_key": event.get("routeKey")})
            return json_response(404, {"message": "Not Found"})
        self.current_event = HttpRequest.of(event)
        try:
            return dict(route(**(event.get("pathParameters") or {})))
        except KlingflowError as error:
            answer = to_http(error)
            logger.info("request refused", extra={"code": error.code, "status": answer.status})
            return json_response(answer.status, answer.body)
        except Exception as error:
            logger.exception("unhandled error")
            answer = to_http(error)
            return json_response(answer.status, answer.body)


def resolver() -> Router:
    return Router()


def raw_body(event: HttpRequest) -> bytes:
    """The body as sent: API Gateway base64-encodes what is not text (bytes that are not UTF-8)."""
    body = event.body or ""
    if event.is_base64_encoded:
        try:
            return base64.b64decode(body, validate=False)
        except (binascii.Error, ValueError):
            return b""
    return body.encode("utf-8", errors="surrogateescape")


def json_body(event: HttpRequest) -> Any:
    """The body as JSON; anything else (empty, not UTF-8, not JSON, nested past what a parser
    can follow) is refused naming the body, and so (413) is a body too large for any request
    that passes validation to have reached the function whole (core/payload.py)."""
    if too_large := check_body(event.body or ""):
        raise RequestTooLarge(too_large)
    try:
        return json.loads(raw_body(event))
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise RequestRejected(
            [FieldError("(body)", "json", "the request body must be a JSON object in UTF-8")]
        ) from None
