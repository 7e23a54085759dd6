"""HTTP shaping shared by the API handlers: one resolver factory, one error mapping."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response

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


def json_body(raw: str | None) -> Any:
    try:
        return json.loads(raw or "")
    except ValueError:
        raise RequestRejected(
            [FieldError("(body)", "json", "the request body must be a JSON object")]
        ) from None
