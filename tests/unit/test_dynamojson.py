"""The sandbox's moto answers DynamoDB's item operations as the JSON they already are: the same
requests, answered by moto's own serialiser and then by the sandbox's shortcut, decode to the
same JSON, and only answers the shortcut cannot send as they are (binary attributes) still go
through moto's serialiser."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from moto.dynamodb import responses

from klingflow.core.codes import Actor
from klingflow.core.models import Job, Source
from klingflow.core.states import JobStatus
from klingflow.infra.dynamo import Table
from klingflow.jobs.listing import DUE_INDEX
from klingflow.jobs.store import JobStore
from klingflow_dev.sandbox import dynamojson

PLAIN_ITEM: dict[str, Any] = {
    "pk": {"S": "PLAIN#1"},
    "text": {"S": "héllo"},
    "empty": {"S": ""},
    "number": {"N": "-12.5"},
    "huge": {"N": "123456789012345678901234567890"},
    "yes": {"BOOL": True},
    "nothing": {"NULL": True},
    "words": {"SS": ["a", "b"]},
    "numbers": {"NS": ["1", "2.5"]},
    "list": {"L": [{"S": "x"}, {"N": "1"}, {"M": {"deep": {"L": [{"NULL": True}]}}}]},
    "map": {"M": {"nested": {"M": {"n": {"N": "3"}}}, "empty": {"M": {}}}},
    "empty_list": {"L": []},
}
BINARY_ITEM: dict[str, Any] = {
    "pk": {"S": "BINARY#1"},
    "blob": {"B": b"\x00\xffbytes"},
    "blobs": {"BS": [b"a"]},
}


@pytest.fixture
def jobs(table: Table, store: JobStore) -> tuple[str, str]:
    """The jobs table with a job as the pipeline writes it (sent, history, due) and two items
    beside it: one with every plain attribute type, one with binary ones."""
    job = Job.model_validate(
        {
            "job_id": "01PLAIN",
            "kind": "motion_control",
            "status": JobStatus.QUEUED,
            "request": {"image": "a.png", "prompt": "a dancer", "duration": 5},
            "source": Source(type="api", ref="req-1"),
            "created_at": "2026-11-21T12:00:00Z",
            "updated_at": "2026-11-21T12:00:00Z",
            "deadline_at": 10**10,
            "metadata": {"team": "video"},
        }
    )
    store.create(job)
    store.transition("01PLAIN", JobStatus.SUBMITTED, by=Actor.ARCHIVE, due_in_s=0)
    client = boto3.client("dynamodb")
    for item in (PLAIN_ITEM, BINARY_ITEM):
        client.put_item(TableName=table.name, Item=item)
    return table.name, store.due_shard("01PLAIN")


@pytest.fixture
def bodies(jobs: tuple[str, str]) -> Iterator[Callable[[], list[tuple[str, Any]]]]:
    """Every request of `_answers` made once, with each answer's operation and decoded body;
    moto's own serialiser answers until a test installs the shortcut (a sandbox started earlier
    in this process installed it for good)."""
    dynamojson.uninstall()

    def answered() -> list[tuple[str, Any]]:
        client = boto3.client("dynamodb")
        seen: list[tuple[str, Any]] = []

        def keep(http_response: Any, model: Any, **_: Any) -> None:
            seen.append((model.name, json.loads(http_response.content)))

        client.meta.events.register("after-call.dynamodb", keep)
        _answers(client, *jobs)
        return seen

    yield answered
    dynamojson.uninstall()


def _answers(client: Any, name: str, shard: str) -> None:
    """The item operations, each leaving the table as it found it."""
    plain, binary = ({"pk": item["pk"]} for item in (PLAIN_ITEM, BINARY_ITEM))
    job = {"pk": {"S": "JOB#01PLAIN"}}
    for key in (plain, binary, job, {"pk": {"S": "NOBODY"}}):
        client.get_item(TableName=name, Key=key, ReturnConsumedCapacity="TOTAL")
    client.query(
        TableName=name,
        IndexName=DUE_INDEX,
        KeyConditionExpression="due_shard = :shard AND due_at <= :now",
        ExpressionAttributeValues={":shard": {"S": shard}, ":now": {"N": "9999999999"}},
    )
    client.scan(TableName=name, Limit=2)
    client.scan(TableName=name, ProjectionExpression="pk, #m.nested", ExpressionAttributeNames={"#m": "map"})
    client.batch_get_item(RequestItems={name: {"Keys": [plain, binary, job]}})
    client.transact_get_items(
        TransactItems=[{"Get": {"TableName": name, "Key": key}} for key in (plain, job)]
    )
    client.update_item(
        TableName=name,
        Key=plain,
        UpdateExpression="SET #t = :t",
        ExpressionAttributeNames={"#t": "text"},
        ExpressionAttributeValues={":t": PLAIN_ITEM["text"]},
        ReturnValues="ALL_NEW",
    )
    for item in (PLAIN_ITEM, BINARY_ITEM):
        client.delete_item(TableName=name, Key={"pk": item["pk"]}, ReturnValues="ALL_OLD")
        client.put_item(TableName=name, Item=item, ReturnValues="ALL_OLD")


def test_every_item_answer_decodes_to_the_same_json_as_motos_own(
    bodies: Callable[[], list[tuple[str, Any]]],
) -> None:
    # Given moto's own answers to the item operations
    generic = bodies()
    # When the same requests are answered with the sandbox's shortcut
    dynamojson.install()
    shortcut = bodies()
    # Then every answer decodes to the same JSON, items and all
    assert [operation for operation, _ in shortcut] == [operation for operation, _ in generic]
    assert shortcut == generic
    assert any("Items" in body and body["Items"] for _, body in generic)  # the answers had items


def test_only_answers_with_binary_attributes_go_through_motos_serialiser(
    bodies: Callable[[], list[tuple[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the shortcut, with moto's serialiser counted
    serialised: list[str] = []
    generic = dynamojson._GENERIC

    def counted(self: responses.DynamoResult, context: Any) -> Any:
        serialised.append(context.operation_model.name)
        return generic(self, context)

    monkeypatch.setattr(dynamojson, "_GENERIC", counted)
    dynamojson.install()
    # When the item operations are answered
    answered = bodies()
    # Then only those whose result holds a binary attribute were serialised by moto
    with_binary = [operation for operation, body in answered if '"blob' in json.dumps(body)]
    assert serialised == with_binary
    assert len(serialised) < len(answered)


def test_uninstalling_gives_every_answer_back_to_motos_serialiser() -> None:
    # Given the shortcut installed
    dynamojson.install()
    assert responses.DynamoResult.execute_result is not dynamojson._MOTOS
    # When it is uninstalled, then moto's own serialiser answers again
    dynamojson.uninstall()
    assert responses.DynamoResult.execute_result is dynamojson._MOTOS
