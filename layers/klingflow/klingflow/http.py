"""HTTP shaping shared by the API handlers: one resolver factory, one error mapping."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.utilities.data_classes.common import BaseProxyEvent

from .errors import FieldError, KlingflowError, RequestRejected, to_http

logger = Logger(child=True)


def json_response(status: int, body: Any) -> Response[str]:
    return Response(status_code=status, content_type="application/json", body=json.dumps(body, default=str))


def resolver() -> APIGatewayHttpResolver:
    """A resolver whose every error, expected or not, becomes the same JSON error shape."""
    app = APIGatewayHttpResolver()

    @app.exception_handler(KlingflowError)  # type: ignore[untyped-decorator]
    def _expected(error: KlingflowError) -> Response[str]:
        answer = to_http(error)
        logger.info("request refused", extra={"code": error.code, "status": answer.status})
        return json_response(answer.status, answer.body)

    @app.exception_handler(Exception)  # type: ignore[untyped-decorator]
    def _unexpected(error: Exception) -> Response[str]:
        logger.exception("unhandled error")
        answer = to_http(error)
        return json_response(answer.status, answer.body)

    return app


def raw_body(event: BaseProxyEvent) -> bytes:
    """The body as sent: API Gateway base64-encodes what is not text (bytes that are not UTF-8)."""
    body = event.body or ""
    if event.is_base64_encoded:
        try:
            return base64.b64decode(body, validate=False)
        except (binascii.Error, ValueError):
            return b""
    return body.encode("utf-8", errors="surrogateescape")


def json_body(event: BaseProxyEvent) -> Any:
    """The body as JSON; anything else (empty, not UTF-8, not JSON, nested past what a parser
    can follow) is refused naming the body."""
    try:
        return json.loads(raw_body(event))
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise RequestRejected(
            [FieldError("(body)", "json", "the request body must be a JSON object in UTF-8")]
        ) from None
