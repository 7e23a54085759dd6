"""What the functions ask of AWS during a sandbox run, as AWS would bill and partition it.

Hooked on klingflow's botocore session (the one every handler's clients come from), the way
`sandbox/iam.py` holds each call to its function's role: the calling function is the sandbox's
`iam.CALLER`. Calls made by anything else (the driver reading a job, the sandbox building or
stepping) are not recorded.

DynamoDB: one call at a time (a lock held from `before-call` to `after-call`, as the sandbox's
moto answers DynamoDB one request at a time anyway), each item it writes read before and after
through the sandbox's own client, so the table's and each index's writes come from the items
themselves (`capacity.Schema`); a read is sized by the whole items it touches (a projection or a
filter does not make DynamoDB read less). Other services are counted per operation; a presigned
S3 link (built, never sent by the function: a provider fetches it) is counted apart.
Lambda: each invocation's wall time, less the time this recorder spent in it.
"""

from __future__ import annotations

import contextvars
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from klingflow_dev.sandbox.iam import CALLER
from klingflow_dev.sandbox.lambdas import Invoker

from .capacity import TABLE, Schema, item_size, partition_value, query_units, read_units, write_units

_PENDING = "klingflow_scale_pending"
_TIMING: contextvars.ContextVar[_Timing | None] = contextvars.ContextVar("scale_timing", default=None)
_WRITES = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheck",
}


@dataclass(frozen=True)
class Access:
    """One request's load on one partition key of the table or an index."""

    window: str
    function: str
    operation: str
    target: str  # capacity.TABLE or an index's name
    key: str  # the partition key's value
    write: bool
    units: float  # WCU or RCU
    size: int  # bytes
    ok: bool
    invocation: int = 0  # the Invocation.number that made it (0: none timed)


@dataclass(frozen=True)
class Invocation:
    window: str
    function: str
    source: str
    seconds: float
    records: int  # SQS messages in the batch (0 for other sources)
    number: int


@dataclass
class _Timing:
    """The invocation being timed, and the seconds this recorder spent inside it (its threads'
    included: they share this object through the context they copy)."""

    number: int
    overhead: float = 0.0


@dataclass(frozen=True)
class _Write:
    operation: str
    key: dict[str, Any]
    old: dict[str, Any] | None
    transactional: bool


@dataclass(frozen=True)
class _Read:
    operation: str
    target: str
    key: str
    size: int
    consistent: bool


class Recorder:
    def __init__(self, reader: Any, schema: Schema) -> None:
        self._reader = reader  # a DynamoDB client outside klingflow's session: never recorded
        self.schema = schema
        self.window = "setup"
        self.accesses: list[Access] = []
        self.invocations: list[Invocation] = []
        # (window, function, service, operation) -> requests sent; built counts presigned links too
        self.sent: Counter[tuple[str, str, str, str]] = Counter()
        self.built: Counter[tuple[str, str, str, str]] = Counter()
        self.entries: Counter[tuple[str, str, str, str]] = Counter()  # PutEvents entries
        self._call = threading.Lock()
        self._records = threading.Lock()
        self._started = 0

    # ---- hooks ---------------------------------------------------------------------------------

    def install(self, session: Any) -> None:
        """On a botocore session, before it makes any client (clients copy its handlers)."""
        session.get_component("event_emitter").register_last("before-call.dynamodb", self._before)
        session.register("after-call.dynamodb", self._after)
        session.register("after-call-error.dynamodb", self._failed)
        session.register("before-parameter-build", self._built)
        session.register("before-call", self._sent)

    def time(self, invoker: Invoker) -> None:
        """Time every invocation the sandbox makes of a function."""
        plain = invoker.invoke

        def invoke(logical_id: str, event: dict[str, Any], *, source: str) -> Any:
            window = self.window
            with self._records:
                self._started += 1
                timing = _Timing(self._started)
            token = _TIMING.set(timing)
            started = time.perf_counter()
            try:
                return plain(logical_id, event, source=source)
            finally:
                seconds = max(0.0, time.perf_counter() - started - timing.overhead)
                _TIMING.reset(token)
                records = len(event.get("Records", [])) if source == "sqs" else 0
                with self._records:
                    self.invocations.append(
                        Invocation(window, logical_id, source, seconds, records, timing.number)
                    )

        invoker.invoke = invoke  # type: ignore[method-assign]

    def _built(self, params: Mapping[str, Any], model: Any, **_: Any) -> None:
        caller = CALLER.get()
        if caller is not None:
            key = (self.window, caller, model.service_model.service_name, model.name)
            with self._records:
                self.built[key] += 1
                if model.name == "PutEvents":
                    self.entries[key] += len(params.get("Entries", []))

    def _sent(self, model: Any, **_: Any) -> None:
        caller = CALLER.get()
        if caller is not None:
            with self._records:
                self.sent[(self.window, caller, model.service_model.service_name, model.name)] += 1

    def _before(self, model: Any, params: Mapping[str, Any], context: dict[str, Any], **_: Any) -> None:
        caller = CALLER.get()
        if caller is None:
            return
        request = json.loads(params.get("body") or b"{}")
        # Waiting here is not counted against the invocation: the calls it waits for are
        # serialised by the sandbox's DynamoDB too, and this recorder's reads in them are counted
        # where they are made.
        self._call.acquire()
        try:
            with self._overhead():
                planned = list(self._plan(model.name, request))
        except BaseException:
            self._call.release()
            raise
        timing = _TIMING.get()
        context[_PENDING] = (caller, self.window, timing.number if timing else 0, model.name, planned)

    def _after(self, http_response: Any, context: dict[str, Any], **_: Any) -> None:
        pending = context.pop(_PENDING, None)
        if pending is None:
            return
        try:
            with self._overhead():
                self._settle(*pending, ok=http_response.status_code < 300)
        finally:
            self._call.release()

    def _failed(self, context: dict[str, Any], **_: Any) -> None:
        # The request never reached DynamoDB (a connection error): nothing was consumed.
        if context.pop(_PENDING, None) is not None:
            self._call.release()

    @contextmanager
    def _overhead(self) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            timing = _TIMING.get()
            if timing is not None:
                timing.overhead += time.perf_counter() - started

    # ---- DynamoDB ------------------------------------------------------------------------------

    def _plan(self, operation: str, request: Mapping[str, Any]) -> Iterator[_Write | _Read]:
        if operation == "TransactWriteItems":
            for entry in request.get("TransactItems", []):
                ((name, part),) = entry.items()
                yield self._write(_WRITES[name], part, transactional=True)
        elif operation in ("PutItem", "UpdateItem", "DeleteItem"):
            yield self._write(operation, request, transactional=False)
        elif operation == "GetItem":
            found = self._image(request["TableName"], request["Key"])
            yield _Read(
                operation,
                TABLE,
                partition_value(request["Key"][self.schema.hash_key]),
                item_size(found) if found else 0,
                bool(request.get("ConsistentRead")),
            )
        elif operation == "Query":
            yield self._query(request)
        else:
            raise ValueError(f"the scale recorder does not size {operation}: teach it (capacity.py)")

    def _write(self, operation: str, request: Mapping[str, Any], *, transactional: bool) -> _Write:
        if "Item" in request:
            key = {name: request["Item"][name] for name in self.schema.table_keys}
        else:
            key = dict(request["Key"])
        return _Write(operation, key, self._image(request["TableName"], key), transactional)

    def _query(self, request: Mapping[str, Any]) -> _Read:
        """The same query, items whole: a projection or filter does not lower what it reads."""
        condition = str(request["KeyConditionExpression"])
        used = set(re.findall(r"[#:][A-Za-z0-9_]+", condition))
        names = {k: v for k, v in request.get("ExpressionAttributeNames", {}).items() if k in used}
        values = {k: v for k, v in request.get("ExpressionAttributeValues", {}).items() if k in used}
        whole: dict[str, Any] = {
            k: request[k]
            for k in (
                "TableName",
                "IndexName",
                "ExclusiveStartKey",
                "Limit",
                "ScanIndexForward",
                "ConsistentRead",
            )
            if k in request
        }
        whole["KeyConditionExpression"] = condition
        if names:
            whole["ExpressionAttributeNames"] = names
        if values:
            whole["ExpressionAttributeValues"] = values
        found = self._reader.query(**whole).get("Items", [])
        target = str(request.get("IndexName") or TABLE)
        hash_key = self.schema.hash_key if target == TABLE else self.schema.index(target).hash_key
        return _Read(
            "Query",
            target,
            _equal_to(condition, hash_key, names, values),
            sum(item_size(item) for item in found),
            bool(request.get("ConsistentRead")),
        )

    def _image(self, table: str, key: Mapping[str, Any]) -> dict[str, Any] | None:
        found = self._reader.get_item(TableName=table, Key=key, ConsistentRead=True).get("Item")
        return dict(found) if found else None

    def _settle(
        self, caller: str, window: str, number: int, operation: str, planned: list[Any], *, ok: bool
    ) -> None:
        found: list[Access] = []
        for step in planned:
            if isinstance(step, _Read):
                if step.operation == "Query":
                    units = query_units(step.size, consistent=step.consistent)
                else:
                    units = read_units(step.size, consistent=step.consistent)
                found.append(
                    Access(window, caller, operation, step.target, step.key, False, units, step.size, ok)
                )
                continue
            found.extend(self._written(caller, window, operation, step, ok=ok))
        with self._records:
            self.accesses.extend(replace(access, invocation=number) for access in found)

    def _written(
        self, caller: str, window: str, operation: str, step: _Write, *, ok: bool
    ) -> Iterator[Access]:
        key = partition_value(step.key[self.schema.hash_key])
        old_size = item_size(step.old) if step.old else 0
        if not ok or step.operation == "ConditionCheck":
            # A write whose condition fails still consumes the units of the item as it stands.
            units = write_units(old_size, transactional=step.transactional)
            yield Access(window, caller, operation, TABLE, key, True, units, old_size, ok)
            return
        new = self._image(self.schema.table, step.key)
        size = max(old_size, item_size(new) if new else 0)
        units = write_units(size, transactional=step.transactional)
        yield Access(window, caller, operation, TABLE, key, True, units, size, ok)
        for index in self.schema.indexes:
            for index_key, index_size in self.schema.index_writes(index, step.old, new):
                yield Access(
                    window,
                    caller,
                    operation,
                    index.name,
                    index_key,
                    True,
                    write_units(index_size),
                    index_size,
                    ok,
                )


def _equal_to(condition: str, attribute: str, names: Mapping[str, str], values: Mapping[str, Any]) -> str:
    """The value a key condition sets `attribute` equal to (`#n = :v` or `name = :v`)."""
    for name, placeholder in re.findall(r"([#A-Za-z0-9_]+)\s*=\s*(:[A-Za-z0-9_]+)", condition):
        if names.get(name, name) == attribute and placeholder in values:
            return partition_value(values[placeholder])
    raise ValueError(f"no equality on {attribute} in the key condition {condition!r}")
