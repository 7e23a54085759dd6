"""The job items of the jobs table: their keys, reading one, and making one `JobWrite` (alone,
or in one transaction with the day's budget and the elements the job names)."""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from klingflow.core.clock import Clock
from klingflow.core.models import Job
from klingflow.infra.dynamo import key_fits

from .writes import KEY_FIELDS, JobWrite, from_dynamo, is_conditional_failure, render

if TYPE_CHECKING:
    from klingflow.infra.dynamo import Table
    from klingflow.money.ledger import Ledger

# Where the element registry keeps each element (elements.py): a claim checks it in its write.
ELEMENT_PREFIX = "ELEMENT#"


class NoRoom(Exception):
    """The day's budget cannot hold what a reservation asked for."""


class ElementDeleted(Exception):
    """An element the job names was deleted while it waited: it must not be sent."""

    def __init__(self, element_id: str) -> None:
        super().__init__(f"element {element_id} was deleted")
        self.element_id = element_id


class JobItems:
    """Reads and conditional writes of `JOB#` items, shared by the store's parts."""

    def __init__(
        self, table: Table, clock: Clock, *, due_shards: int, retention: timedelta, ledger: Ledger | None
    ) -> None:
        self.table = table
        self.clock = clock
        self.ledger = ledger
        self.due_shards = due_shards
        self.retention = retention

    @staticmethod
    def key(job_id: str) -> dict[str, str]:
        return {"pk": f"JOB#{job_id}"}

    def due_shard(self, job_id: str) -> str:
        return str(zlib.crc32(job_id.encode()) % self.due_shards)

    @staticmethod
    def job(item: Mapping[str, Any]) -> Job:
        return Job.model_validate(from_dynamo({k: v for k, v in item.items() if k not in KEY_FIELDS}))

    def get(self, job_id: str) -> Job | None:
        if not key_fits(job_id):
            return None  # no job has such an id, and DynamoDB would refuse the key outright
        item = self.table.get_item(Key=self.key(job_id), ConsistentRead=True).get("Item")
        return self.job(item) if item else None

    def request(self, job_id: str, write: JobWrite) -> dict[str, Any]:
        return render(self.key(job_id), write)

    def update(self, job_id: str, write: JobWrite) -> Job | None:
        """One conditional UpdateItem; None when the job is not in `status_in` or a guard fails
        (a no-op).

        With `spend` (the day's item's side, from `Ledger.update` or `Ledger.under_budget`) both
        happen in one transaction: either both or neither. A refused spend condition raises
        `NoRoom`. With `elements`, the same transaction checks that none of them is deleted
        (`ElementDeleted`).
        """
        assert write.money is None, "the store resolves money into spend before writing"
        request = self.request(job_id, write)
        if write.spend is not None or write.elements:
            return self._transact(job_id, request, write.spend, write.elements)
        try:
            item = self.table.update_item(**request, ReturnValues="ALL_NEW")["Attributes"]
        except ClientError as error:
            if is_conditional_failure(error):
                return None
            raise
        return self.job(item)

    def update_quietly(self, job_id: str, write: JobWrite) -> bool:
        """`update` that reads nothing back; False when the condition failed."""
        try:
            self.table.update_item(**self.request(job_id, write), ReturnValues="NONE")
        except ClientError as error:
            if is_conditional_failure(error):
                return False
            raise
        return True

    def _transact(
        self,
        job_id: str,
        request: Mapping[str, Any],
        spend: Mapping[str, Any] | None,
        elements: tuple[str, ...],
    ) -> Job | None:
        checked = list(dict.fromkeys(elements))  # one operation per item in a transaction
        items: list[Any] = [{"Update": {"TableName": self.table.name, **request}}]
        items += [spend] if spend is not None else []
        # A ConditionCheck on an item that does not exist (an element klingflow did not make)
        # holds: only a recorded deletion refuses.
        items += [
            {
                "ConditionCheck": {
                    "TableName": self.table.name,
                    "Key": {"pk": f"{ELEMENT_PREFIX}{element_id}"},
                    "ConditionExpression": "attribute_not_exists(deleted_at)",
                }
            }
            for element_id in checked
        ]
        try:
            self.table.transact_write_items(TransactItems=items)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "TransactionCanceledException":
                raise
            failed = [
                r.get("Code") == "ConditionalCheckFailed"
                for r in error.response.get("CancellationReasons", [])
            ]
            if failed[:1] == [True]:
                return None  # the job moved on: a no-op, like any late signal
            first_check = len(items) - len(checked)
            for element_id, refused in zip(checked, failed[first_check:], strict=False):
                if refused:
                    raise ElementDeleted(element_id) from None
            if spend is not None and failed[1:2] == [True]:
                raise NoRoom from None
            raise
        return self.get(job_id)
