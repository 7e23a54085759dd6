"""The sandbox holds AWS's payload limits that moto forgives: Lambda's 6 MB synchronous payload
(API Gateway's 413), 256 KB messages and events, 1,024-byte S3 keys, 400 KB items."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from klingflow_dev.sandbox.apiserver import REQUEST_MAX_BYTES
from klingflow_dev.sandbox.limits import EVENTS_MAX_BYTES, MESSAGE_MAX_BYTES, S3_KEY_MAX_BYTES
from tests.integration.conftest import Stack


def test_a_request_over_lambdas_6_mb_is_refused_with_413_without_invoking_the_function(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    invoker = stack.sandbox.invoker
    assert invoker is not None
    invoked: list[str] = []
    real_invoke = invoker.invoke

    def spy(logical_id: str, event: dict[str, Any], *, source: str) -> Any:
        invoked.append(logical_id)
        return real_invoke(logical_id, event, source=source)

    monkeypatch.setattr(invoker, "invoke", spy)
    # A body of 6 MB exactly: the event around it is larger still
    body = json.dumps({"image": "A" * (REQUEST_MAX_BYTES - len('{"image": ""}'))}).encode()
    assert len(body) == REQUEST_MAX_BYTES

    response = stack.api.request("POST", "/jobs", raw=body)

    assert response.status_code == 413
    assert response.json() == {"message": "Request Entity Too Large"}
    assert invoked == []
    # A body well within it reaches the function (and is refused by it, naming the field)
    response = stack.api.request("POST", "/jobs", {"image": "A" * 1000})
    assert response.status_code == 400
    assert invoked == ["SubmitFunction"]


def test_an_sqs_message_over_256_kb_is_refused(stack: Stack) -> None:
    sqs = stack.sandbox.client("sqs")
    queue = stack.sandbox.names["ArchiveQueue"]

    sqs.send_message(QueueUrl=queue, MessageBody="x" * MESSAGE_MAX_BYTES)
    with pytest.raises(ClientError) as refused:
        sqs.send_message(QueueUrl=queue, MessageBody="x" * (MESSAGE_MAX_BYTES + 1))
    assert refused.value.response["Error"]["Code"] == "InvalidParameterValue"
    assert "262144 bytes" in str(refused.value)

    # A batch counts all its messages
    entries = [{"Id": str(i), "MessageBody": "y" * (MESSAGE_MAX_BYTES // 2)} for i in range(3)]
    with pytest.raises(ClientError) as refused:
        sqs.send_message_batch(QueueUrl=queue, Entries=entries)
    assert refused.value.response["Error"]["Code"] == "BatchRequestTooLong"


def test_events_over_256_kb_are_refused(stack: Stack) -> None:
    events = stack.sandbox.client("events")

    def entry(characters: int) -> dict[str, Any]:
        detail = json.dumps({"p": "é" * characters}, ensure_ascii=False)
        return {"Source": "com.example.orders", "DetailType": "Job Requested", "Detail": detail}

    # Source, detail type and detail, in UTF-8 bytes: 18 + 13 + 9 + 2 a character
    fits = (EVENTS_MAX_BYTES - 18 - 13 - 9) // 2
    events.put_events(Entries=[entry(fits)])

    with pytest.raises(ClientError) as refused:
        events.put_events(Entries=[entry(fits + 1)])
    assert refused.value.response["Error"]["Code"] == "ValidationException"
    assert "over the limit" in str(refused.value)


def test_an_s3_key_over_1024_bytes_is_refused(stack: Stack) -> None:
    prefix = "incoming/"
    fits = prefix + "k" * (S3_KEY_MAX_BYTES - len(prefix))
    stack.s3.put_object(Bucket=stack.bucket, Key=fits, Body=b"x")

    # Counted in UTF-8 bytes: 1,024 characters, 1,025 bytes
    too_long = prefix + "k" * (S3_KEY_MAX_BYTES - len(prefix) - 1) + "ü"
    assert len(too_long.encode()) == S3_KEY_MAX_BYTES + 1
    with pytest.raises(ClientError) as refused:
        stack.s3.put_object(Bucket=stack.bucket, Key=too_long, Body=b"x")
    assert refused.value.response["Error"]["Code"] == "KeyTooLongError"


def test_an_item_over_400_kb_is_refused(stack: Stack) -> None:
    with pytest.raises(ClientError) as refused:
        stack.table.put_item(Item={"pk": "JOB#too-large", "blob": "z" * (401 * 1024)})
    assert refused.value.response["Error"]["Code"] == "ValidationException"
    assert "Item size has exceeded the maximum allowed size" in str(refused.value)
