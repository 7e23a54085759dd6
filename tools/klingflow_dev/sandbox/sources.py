"""Event sources the sandbox plays: S3 notifications, SQS batches, the schedule, EventBridge rules.

Each one is a small loop on its own thread that turns what moto holds into the event Lambda
would have been given, with the same batching, filtering and failure handling.
"""

from __future__ import annotations

import itertools
import json
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus

from .aws import ACCOUNT, REGION
from .lambdas import Invoker


class Loop:
    """Runs `step` every `every_s` seconds until stopped; a failing step is logged, not fatal."""

    def __init__(self, name: str, every_s: float, step: Callable[[], None]) -> None:
        self.name = name
        self._stop = threading.Event()
        self._step = step
        self._every_s = every_s
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._run, name=f"sandbox-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def step(self) -> None:
        self._step()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception as error:
                self.errors.append(f"{type(error).__name__}: {error}")
            self._stop.wait(self._every_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)


class S3Notifications:
    """ObjectCreated events for new objects matching a function's prefix/suffix filter."""

    def __init__(
        self, s3: Any, bucket: str, *, prefix: str, suffix: str, function: str, invoker: Invoker
    ) -> None:
        self._s3 = s3
        self._bucket = bucket
        self._prefix = prefix
        self._suffix = suffix
        self._function = function
        self._invoker = invoker
        self._seen: dict[str, str] = {}
        self._sequence = itertools.count(1)
        self._primed = False

    def prime(self) -> None:
        """Objects present before the sandbox started were never 'created' in its lifetime."""
        self._seen.clear()
        self._scan(notify=False)
        self._primed = True

    def step(self) -> None:
        self._scan(notify=self._primed)

    def _scan(self, *, notify: bool) -> None:
        pages = self._s3.get_paginator("list_objects_v2").paginate(Bucket=self._bucket, Prefix=self._prefix)
        for page in pages:
            for item in page.get("Contents", []):
                key, etag = item["Key"], item["ETag"].strip('"')
                if not key.endswith(self._suffix) or self._seen.get(key) == etag:
                    continue
                self._seen[key] = etag
                if notify:
                    self._invoker.invoke_async(
                        self._function, self.event(key, item["Size"], etag), source=f"s3 {key}"
                    )

    def event(self, key: str, size: int, etag: str) -> dict[str, Any]:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        return {
            "Records": [
                {
                    "eventVersion": "2.1",
                    "eventSource": "aws:s3",
                    "awsRegion": REGION,
                    "eventTime": now,
                    "eventName": "ObjectCreated:Put",
                    "userIdentity": {"principalId": "sandbox"},
                    "requestParameters": {"sourceIPAddress": "127.0.0.1"},
                    "responseElements": {"x-amz-request-id": uuid.uuid4().hex[:16], "x-amz-id-2": "sandbox"},
                    "s3": {
                        "s3SchemaVersion": "1.0",
                        "configurationId": "sandbox",
                        "bucket": {
                            "name": self._bucket,
                            "ownerIdentity": {"principalId": "sandbox"},
                            "arn": f"arn:aws:s3:::{self._bucket}",
                        },
                        "object": {
                            "key": quote_plus(key, safe="/"),
                            "size": size,
                            "eTag": etag,
                            "sequencer": f"{next(self._sequence):016X}",
                        },
                    },
                }
            ]
        }


class SqsBatches:
    """Lambda's SQS poller: batches, partial batch failures, visibility, and so the DLQ."""

    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        batch_size: int,
        function: str,
        invoker: Invoker,
        *,
        retry_after_s: int | None = 2,
        wait_s: int = 1,
    ) -> None:
        self._wait_s = wait_s
        self._sqs = sqs
        self._url = queue_url
        self._batch = min(batch_size, 10)
        self._function = function
        self._invoker = invoker
        self._arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{queue_url.rsplit('/', 1)[-1]}"
        self._retry_after_s = retry_after_s

    def step(self) -> None:
        answer = self._sqs.receive_message(
            QueueUrl=self._url,
            MaxNumberOfMessages=self._batch,
            WaitTimeSeconds=self._wait_s,
            MessageSystemAttributeNames=["All"],
        )
        messages = answer.get("Messages", [])
        if not messages:
            return
        event = {"Records": [self._record(m) for m in messages]}
        try:
            result = self._invoker.invoke(self._function, event, source="sqs")
            failed = {item["itemIdentifier"] for item in (result or {}).get("batchItemFailures", [])}
        except Exception:
            failed = {m["MessageId"] for m in messages}
        for message in messages:
            if message["MessageId"] in failed and self._retry_after_s is None:
                continue  # the function set its own backoff (as Lambda does, left as it is)
            if message["MessageId"] in failed:
                # Real Lambda waits out the queue's visibility timeout; the sandbox shortens it.
                self._sqs.change_message_visibility(
                    QueueUrl=self._url,
                    ReceiptHandle=message["ReceiptHandle"],
                    VisibilityTimeout=self._retry_after_s,
                )
            else:
                self._sqs.delete_message(QueueUrl=self._url, ReceiptHandle=message["ReceiptHandle"])

    def _record(self, message: dict[str, Any]) -> dict[str, Any]:
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": message.get("Attributes", {}),
            "messageAttributes": {},
            "md5OfBody": message.get("MD5OfBody", ""),
            "eventSource": "aws:sqs",
            "eventSourceARN": self._arn,
            "awsRegion": REGION,
        }


class Schedule:
    """EventBridge Scheduler's invocation, every tick (faster than the template's rate)."""

    def __init__(self, function: str, invoker: Invoker, name: str) -> None:
        self._function = function
        self._invoker = invoker
        self._name = name

    def step(self) -> None:
        event = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.scheduler",
            "account": ACCOUNT,
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": REGION,
            "resources": [f"arn:aws:scheduler:{REGION}:{ACCOUNT}:schedule/default/{self._name}"],
            "detail": {},
        }
        try:
            self._invoker.invoke(self._function, event, source="schedule")
        except Exception:  # the template sets no retries: the next tick is the retry
            return


class RuleQueue:
    """An EventBridge rule from the template, created in moto with an SQS target the sandbox
    drains: moto matches the pattern, the sandbox invokes the function asynchronously."""

    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        function: str | None,
        invoker: Invoker,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        *,
        wait_s: int = 1,
    ) -> None:
        self._wait_s = wait_s
        self._sqs = sqs
        self._url = queue_url
        self._function = function
        self._invoker = invoker
        self._on_event = on_event

    def step(self) -> None:
        answer = self._sqs.receive_message(
            QueueUrl=self._url, MaxNumberOfMessages=10, WaitTimeSeconds=self._wait_s
        )
        for message in answer.get("Messages", []):
            event = json.loads(message["Body"])
            if self._on_event is not None:
                self._on_event(event)
            if self._function is not None:
                self._invoker.invoke_async(self._function, event, source=f"event {event.get('detail-type')}")
            self._sqs.delete_message(QueueUrl=self._url, ReceiptHandle=message["ReceiptHandle"])
