"""Reading jobs in bulk: the sparse due index the sweeper drains shard by shard, and the pages
of jobs (newest first) behind GET /jobs, merged across the list index's shards (pages.py)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from klingflow.core.clock import epoch
from klingflow.core.models import Job
from klingflow.core.states import JobStatus

from .items import JobItems
from .pages import JOB_PARTITIONS, merged_page

if TYPE_CHECKING:
    from klingflow.infra.dynamo import Table

DUE_INDEX = "due-index"
# Due-index shards read at once (each query is one shard's page).
_SHARD_READERS = 16

_DuePage = tuple[list[dict[str, Any]], dict[str, Any] | None]


@dataclass(frozen=True)
class Page:
    jobs: list[Job]
    next_token: str | None


def due_jobs(items: JobItems, *, limit: int) -> Iterator[Job]:
    """See `JobStore.due_jobs`."""
    now = epoch(items.clock.now())
    shards = [str(shard) for shard in range(items.due_shards)]
    # Whoever gets a round's odd remainder changes every minute, the sweeper's schedule.
    first = (now // 60) % len(shards)
    shards = shards[first:] + shards[:first]
    cursors: dict[str, dict[str, Any] | None] = dict.fromkeys(shards)
    left = limit
    given: set[str] = set()
    readers = min(len(shards), _SHARD_READERS)
    with ThreadPoolExecutor(max_workers=readers, thread_name_prefix="due-index") as pool:
        while left > 0 and cursors:
            quotas = _shares(left, list(cursors))
            reading = {
                pool.submit(_due_page, items.table, shard, now, quota, cursors[shard]): shard
                for shard, quota in quotas.items()
            }
            while reading:
                done, _ = wait(reading, return_when=FIRST_COMPLETED)
                for page in done:
                    shard = reading.pop(page)
                    found, cursor = page.result()
                    left -= len(found)
                    quotas[shard] -= len(found)
                    _read_on(
                        pool,
                        items.table,
                        reading,
                        cursors,
                        shard=shard,
                        now=now,
                        quota=quotas[shard],
                        cursor=cursor,
                    )
                    for item in found:
                        if item["pk"] not in given:
                            given.add(item["pk"])
                            yield items.job(item)


def _read_on(
    pool: ThreadPoolExecutor,
    table: Table,
    reading: dict[Future[_DuePage], str],
    cursors: dict[str, dict[str, Any] | None],
    *,
    shard: str,
    now: int,
    quota: int,
    cursor: dict[str, Any] | None,
) -> None:
    """After one of `shard`'s pages: forget a shard whose due jobs are all read, and read on
    one whose page was cut short at 1 MB before its share."""
    if cursor is None:
        del cursors[shard]  # nothing more is due there
        return
    cursors[shard] = cursor
    if quota > 0:
        reading[pool.submit(_due_page, table, shard, now, quota, cursor)] = shard


def _due_page(table: Table, shard: str, now: int, most: int, cursor: dict[str, Any] | None) -> _DuePage:
    """One page of a shard's due jobs (at most `most`) from `cursor` on, and where the shard
    goes on (None: its due jobs are all read)."""
    request: dict[str, Any] = {
        "IndexName": DUE_INDEX,
        "KeyConditionExpression": "due_shard = :shard AND due_at <= :now",
        "ExpressionAttributeValues": {":shard": shard, ":now": now},
        # DynamoDB stops a page at 1 MB by itself; Limit keeps the read to the share.
        "Limit": most,
    }
    if cursor is not None:
        request["ExclusiveStartKey"] = cursor
    page = table.query(**request)
    return list(page.get("Items", [])), page.get("LastEvaluatedKey")


def _shares(total: int, shards: list[str]) -> dict[str, int]:
    """`total` split as evenly as possible over `shards`, the odd remainder to the first ones;
    a shard whose share is nothing this round is left out of it."""
    each, extra = divmod(total, len(shards))
    shares = {shard: each + (1 if index < extra else 0) for index, shard in enumerate(shards)}
    return {shard: share for shard, share in shares.items() if share > 0}


def list_jobs(items: JobItems, *, limit: int, next_token: str | None, status: JobStatus | None) -> Page:
    """See `JobStore.list_jobs`."""
    extra: dict[str, Any] = {}
    if status is not None:
        extra = {
            "FilterExpression": "#status = :status",
            "ExpressionAttributeNames": {"#status": "status"},
            "ExpressionAttributeValues": {":status": status.value},
        }
    found, token = merged_page(items.table, JOB_PARTITIONS, limit=limit, next_token=next_token, **extra)
    return Page([items.job(item) for item in found], token)
