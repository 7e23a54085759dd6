"""AWS's payload limits that moto does not hold, enforced in front of it (a WSGI middleware).

- SQS: a message (its body and attributes) of at most 256 KB (262,144 bytes), a batch of at most
  as much in all. AWS raised SQS's own ceiling to 1 MiB in 2025, but klingflow's payloads also
  cross EventBridge, whose entries stay within 256 KB, and a queue's `MaximumMessageSize` may be
  set lower: the sandbox holds the stricter figure. moto holds 1 MiB.
- EventBridge `PutEvents`: the entries of one call at most 256 KB, sized as EventBridge sizes
  them (the time 14 bytes, source, detail type, detail and each resource in UTF-8 bytes).
- S3: an object key of at most 1,024 bytes (UTF-8) on every write (`PUT`, `POST`).

DynamoDB's 400 KB item is moto's own check (`ItemSizeTooLarge`, just under AWS's measured
409-410 KB), so it is not repeated here. Each refusal is the error AWS answers, so botocore raises
the `ClientError` a deployment would see.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

MESSAGE_MAX_BYTES = 256 * 1024
EVENTS_MAX_BYTES = 256 * 1024
S3_KEY_MAX_BYTES = 1024


def message_bytes(entry: Mapping[str, Any]) -> int:
    """SQS's size of one message: its body and each attribute's name, type and value."""
    size = len(str(entry.get("MessageBody", "")).encode())
    for name, attribute in (entry.get("MessageAttributes") or {}).items():
        value = attribute.get("StringValue") or attribute.get("BinaryValue") or ""
        size += (
            len(name.encode()) + len(str(attribute.get("DataType", "")).encode()) + len(str(value).encode())
        )
    return size


def event_bytes(entry: Mapping[str, Any]) -> int:
    """EventBridge's size of one PutEvents entry (its "Calculating PutEvents event entry size")."""
    size = 14 if entry.get("Time") is not None else 0
    for part in ("Source", "DetailType", "Detail"):
        size += len(str(entry.get(part) or "").encode())
    return size + sum(len(str(resource).encode()) for resource in entry.get("Resources") or [])


@dataclass
class Limits:
    """The middleware, and what it refused (by what it answered)."""

    refused: list[str] = field(default_factory=list)

    def wrap(self, app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
        def limited(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            refusal = self._refusal(environ)
            if refusal is None:
                return app(environ, start_response)
            status, content_type, body = refusal
            self.refused.append(body.decode()[:200])
            start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
            return [body]

        return limited

    def _refusal(self, environ: dict[str, Any]) -> tuple[str, str, bytes] | None:
        target = str(environ.get("HTTP_X_AMZ_TARGET", ""))
        if target in ("AmazonSQS.SendMessage", "AmazonSQS.SendMessageBatch", "AWSEvents.PutEvents"):
            request = _json_body(environ)
            if target == "AWSEvents.PutEvents":
                return _events(request)
            return _sqs(request, batch=target.endswith("Batch"))
        if environ.get("REQUEST_METHOD") in ("PUT", "POST") and _is_s3(environ):
            return _s3_key(environ)
        return None


def _json_body(environ: dict[str, Any]) -> Mapping[str, Any]:
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    environ["wsgi.input"] = io.BytesIO(body)
    try:
        request = json.loads(body)
    except ValueError:
        return {}  # moto answers a malformed request itself
    return request if isinstance(request, Mapping) else {}


def _sqs(request: Mapping[str, Any], *, batch: bool) -> tuple[str, str, bytes] | None:
    entries = list(request.get("Entries") or []) if batch else [request]
    sizes = [message_bytes(entry) for entry in entries if isinstance(entry, Mapping)]
    if not batch and sizes and sizes[0] > MESSAGE_MAX_BYTES:
        reason = f"Message must be shorter than {MESSAGE_MAX_BYTES} bytes."
        return _json_error(
            "AmazonSQS", "InvalidParameterValue", f"One or more parameters are invalid. Reason: {reason}"
        )
    if batch and sum(sizes) > MESSAGE_MAX_BYTES:
        message = f"Batch requests cannot be longer than {MESSAGE_MAX_BYTES} bytes. "
        message += f"You have sent {sum(sizes)} bytes."
        return _json_error("AmazonSQS", "BatchRequestTooLong", message)
    return None


def _events(request: Mapping[str, Any]) -> tuple[str, str, bytes] | None:
    entries = [entry for entry in request.get("Entries") or [] if isinstance(entry, Mapping)]
    if sum(event_bytes(entry) for entry in entries) > EVENTS_MAX_BYTES:
        return _json_error(
            "AWSEvents", "ValidationException", "Total size of the entries in the request is over the limit."
        )
    return None


def _is_s3(environ: dict[str, Any]) -> bool:
    credential = str(environ.get("HTTP_AUTHORIZATION", "")) + unquote(str(environ.get("QUERY_STRING", "")))
    return "/s3/aws4_request" in credential


def _s3_key(environ: dict[str, Any]) -> tuple[str, str, bytes] | None:
    # Path-style (the sandbox's endpoint is an address): /<bucket>/<key>; WSGI's PATH_INFO is
    # decoded into latin-1 characters, one per byte of the UTF-8 key.
    path = str(environ.get("PATH_INFO", "")).encode("latin-1", "replace")
    key = path.lstrip(b"/").partition(b"/")[2]
    if len(key) <= S3_KEY_MAX_BYTES:
        return None
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>KeyTooLongError</Code>'
        f"<Message>Your key is too long</Message><Size>{len(key)}</Size>"
        f"<MaxSizeAllowed>{S3_KEY_MAX_BYTES}</MaxSizeAllowed></Error>"
    )
    return "400 Bad Request", "application/xml", body.encode()


def _json_error(service: str, code: str, message: str) -> tuple[str, str, bytes]:
    prefix = "com.amazonaws.sqs#" if service == "AmazonSQS" else ""
    body = json.dumps({"__type": f"{prefix}{code}", "message": message}).encode()
    return "400 Bad Request", "application/x-amz-json-1.0" if prefix else "application/x-amz-json-1.1", body
