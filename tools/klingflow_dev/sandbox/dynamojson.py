"""moto's DynamoDB item answers sent as the JSON they already are.

Since 5.2, moto turns every answer into its body by walking the operation's output shape
member by member, trying several spellings of each member's name (its generic
ResponseSerializer). DynamoDB's items are already in their wire form when they get there
(`{"S": ...}`, `{"M": {...}}`), and the walk costs a fraction of a millisecond per attribute
value: on this machine a GetItem took 9 ms of the server's CPU against 4 ms for the same item
sent as JSON, and a Query returning 500 small jobs 3.8 s against 0.45 s. A write answers with
next to nothing, so in the sandbox reading a job cost more than writing it, the reverse of
DynamoDB, and a sweep's read of its due jobs alone held moto's one DynamoDB lock for seconds.

An answer to one of the item operations below whose content is JSON's own types (strings,
numbers, booleans, lists, maps: every item without a binary attribute) is sent as `json.dumps`
of the same result, less what the operation's output shape does not name. Anything else
(binary attributes, which moto's serialiser base64-encodes; timestamps; a None it would leave
out) still goes through moto's serialiser, as do errors and every other operation.
tests/unit/test_dynamojson.py holds the two side by side: the same requests answered both ways
decode to the same JSON.
"""

from __future__ import annotations

import json
from typing import Any

from moto.core.responses import ActionContext
from moto.dynamodb import responses

# The operations that answer with items; their results are the wire-form dicts moto built.
ITEM_OPERATIONS = frozenset(
    {
        "GetItem",
        "BatchGetItem",
        "Query",
        "Scan",
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "TransactGetItems",
    }
)
_CONTENT_TYPE = "application/x-amz-json-1.0"
# moto's own, restored by `uninstall`; `_GENERIC` is what the shortcut hands everything else to.
_MOTOS = responses.DynamoResult.execute_result
_GENERIC = _MOTOS
_PLAIN = (str, int, float, bool)


def _plain(value: Any) -> bool:
    """Only JSON's own types, with no None (moto's serialiser leaves those out)."""
    if isinstance(value, dict):
        return all(isinstance(key, str) and _plain(member) for key, member in value.items())
    if isinstance(value, list):
        return all(_plain(member) for member in value)
    return isinstance(value, _PLAIN)


def _execute_result(self: Any, context: ActionContext) -> Any:
    operation = context.operation_model
    result = self.result
    if operation.name in ITEM_OPERATIONS and isinstance(result, dict) and _plain(result):
        # What the output shape does not name, moto's serialiser leaves out (e.g. DeleteItem's
        # old `ConsumedCapacityUnits`).
        members = operation.output_shape.members if operation.output_shape is not None else {}
        answer = {key: value for key, value in result.items() if key in members}
        return 200, {"Content-Type": _CONTENT_TYPE}, json.dumps(answer)
    return _GENERIC(self, context)


def install() -> None:
    """Answer item operations as JSON in this process (moto's server threads included)."""
    responses.DynamoResult.execute_result = _execute_result  # type: ignore[method-assign]


def uninstall() -> None:
    """moto's own serialiser for every answer again."""
    responses.DynamoResult.execute_result = _MOTOS  # type: ignore[method-assign]
