"""Pages of the list index (newest first), one partition or several merged, behind GET /jobs
and GET /elements, and the opaque tokens that carry a page's position.

Every write to a job writes the list index too (it projects the whole item), so at 200 jobs a
second one partition for all jobs would take ~9,000 WCU/s against DynamoDB's 1,000 per
partition. Jobs are spread over `LIST_SHARDS` partitions by their id (`JOB#<n>`; about 560
WCU/s each at that rate) and a page merges them. Jobs written before the shards existed stay in
the partition `JOB`, which is read as one more shard and written no more.

A merged page is exact, newest first across shards: it gives only jobs newer than every item a
shard still has unread (the highest `LastEvaluatedKey` among the shards that have more), so no
job appears on a later page than an older one. A page may therefore hold fewer jobs than asked
(none, when a status filter skips a whole read), with a token whenever there is more.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Final

from klingflow.core.errors import FieldError, QueryRejected

from .writes import from_dynamo

if TYPE_CHECKING:
    from klingflow.infra.dynamo import Table

LIST_INDEX: Final = "list-index"
LIST_SHARDS: Final = 16
_LEGACY_JOBS: Final = "JOB"
JOB_PARTITIONS: Final = (*(f"JOB#{n}" for n in range(LIST_SHARDS)), _LEGACY_JOBS)
_KEY_FIELDS: Final = frozenset({"pk", "list_pk", "job_id"})
# What a token this API issues can hold: a position per partition, each a short key.
_MAX_ID_CHARS: Final = 64
_MAX_ELEMENT_ID_CHARS: Final = 256
_MAX_TOKEN_CHARS: Final = 8192

Item = dict[str, Any]
Cursor = dict[str, Any] | None


def job_partition(job_id: str) -> str:
    """The list-index partition a job is written to: fixed by its id, so every write of the job
    lands where the first one did."""
    return f"JOB#{zlib.crc32(job_id.encode()) % LIST_SHARDS}"


def list_page(
    table: Table, list_pk: str, *, limit: int, next_token: str | None, **extra: Any
) -> tuple[list[Item], str | None]:
    """One page of the list-index partition `list_pk` (elements), newest first, and the opaque
    token of the next page."""
    cursor = _key(_decode(next_token), list_pk) if next_token else None
    found, last = _read(table, list_pk, limit, cursor, extra)
    return found, _encode(from_dynamo(last)) if last else None


def merged_page(
    table: Table, partitions: tuple[str, ...], *, limit: int, next_token: str | None, **extra: Any
) -> tuple[list[Item], str | None]:
    """One page across `partitions` (each sorted by `job_id`), newest first, and the token of
    the next page: each partition's position, those read to their end left out."""
    cursors: dict[str, Cursor] = (
        _cursors(_decode(next_token), partitions) if next_token else dict.fromkeys(partitions)
    )
    if not cursors:
        return [], None
    with ThreadPoolExecutor(max_workers=min(8, len(cursors)), thread_name_prefix="list-index") as pool:
        reads = {p: pool.submit(_read, table, p, limit, cursor, extra) for p, cursor in cursors.items()}
        pages = {p: read.result() for p, read in reads.items()}
    more = [str(last["job_id"]) for _, last in pages.values() if last]
    # What a shard has not read yet is older than its LastEvaluatedKey: only what is at least
    # as new as the newest of those is sure of its place.
    floor = max(more, default="")
    fresh = sorted(
        ((item, p) for p, (found, _) in pages.items() for item in found if str(item["job_id"]) >= floor),
        key=lambda pair: str(pair[0]["job_id"]),
        reverse=True,
    )[:limit]
    given = {p: [item for item, source in fresh if source == p] for p in pages}
    following: dict[str, Cursor] = {}
    for p, (found, last) in pages.items():
        if len(given[p]) < len(found):
            following[p] = _position(given[p][-1]) if given[p] else cursors[p]
        elif last:
            following[p] = from_dynamo(last)
    token = _encode({"v": 2, "after": following}) if following else None
    return [item for item, _ in fresh], token


def _read(
    table: Table, list_pk: str, limit: int, cursor: Cursor, extra: dict[str, Any]
) -> tuple[list[Item], Any]:
    request: dict[str, Any] = {
        "IndexName": LIST_INDEX,
        "KeyConditionExpression": "list_pk = :pk",
        "ScanIndexForward": False,
        "Limit": limit,
        **extra,
        "ExpressionAttributeValues": {":pk": list_pk, **extra.get("ExpressionAttributeValues", {})},
    }
    if cursor:
        request["ExclusiveStartKey"] = cursor
    page = table.query(**request)
    return [dict(item) for item in page.get("Items", [])], page.get("LastEvaluatedKey")


def _position(item: Item) -> dict[str, str]:
    return {name: str(item[name]) for name in _KEY_FIELDS}


def _encode(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value, separators=(",", ":")).encode()).decode()


def _decode(token: str) -> Any:
    if len(token) > _MAX_TOKEN_CHARS:
        raise _rejected()
    try:
        return json.loads(base64.urlsafe_b64decode(token.encode()))
    except (binascii.Error, ValueError, RecursionError):
        raise _rejected() from None


def _cursors(value: Any, partitions: tuple[str, ...]) -> dict[str, Cursor]:
    if isinstance(value, dict) and value.get("list_pk") == _LEGACY_JOBS:
        # A page token from before the shards: every shard goes on past the job it stopped at.
        last = _key(value, _LEGACY_JOBS)
        return {p: {**last, "list_pk": p} for p in partitions}
    after = value.get("after") if isinstance(value, dict) and value.get("v") == 2 else None
    if not isinstance(after, dict) or not set(after) <= set(partitions):
        raise _rejected()
    return {p: None if cursor is None else _key(cursor, p) for p, cursor in after.items()}


def _key(key: Any, list_pk: str) -> dict[str, str]:
    """A position in partition `list_pk`, as this API wrote it: a key DynamoDB accepts (its
    parts the right shape and size), never a free-form one."""
    if (
        not isinstance(key, dict)
        or set(key) != _KEY_FIELDS
        or not all(isinstance(value, str) for value in key.values())
        or key["list_pk"] != list_pk
        or not 0 < len(key["job_id"]) <= _MAX_ID_CHARS
        or not (key["pk"] == f"JOB#{key['job_id']}" or _is_element(key["pk"]))
    ):
        raise _rejected()
    return key


def _is_element(pk: str) -> bool:
    # An element's item is keyed by its own id; the list index sorts it by its making job's.
    return pk.startswith("ELEMENT#") and 0 < len(pk) - len("ELEMENT#") <= _MAX_ELEMENT_ID_CHARS


def _rejected() -> QueryRejected:
    return QueryRejected(
        [
            FieldError(
                "next_token",
                "page_token",
                "next_token is not one this API issued: pass the previous page's next_token as it "
                "came, or leave it out for the first page",
            )
        ]
    )
