"""DynamoDB's passing refusals, which moto never makes: transaction conflicts and throttling.

`klingflow sandbox up --aws-faults transaction_conflict=0.2,throttling=0.1` (or
`SandboxOptions(aws_faults={...})`) puts a WSGI middleware in front of moto that answers a share
of the functions' DynamoDB calls as DynamoDB does when it is busy:

- `transaction_conflict=P`: that share of `TransactWriteItems` is cancelled,
  `TransactionCanceledException` with `CancellationReasons` `[{"Code": "None"}, {"Code":
  "TransactionConflict", ...}]`; that share of single writes (`PutItem`, `UpdateItem`,
  `DeleteItem`) to an item some transaction has written answers `TransactionConflictException`
  (a single write meets a conflict only on an item a transaction may hold). Naming it (even at 0)
  also makes overlapping transactions conflict as DynamoDB's do: a transaction that arrives while
  another one in flight holds one of its items is cancelled, and a single write to such an item
  refused (moto serialises every call, `aws.SerialisedDynamoDB`, so without this they never meet).
- `throttling=P`: that share of reads and writes answers `ProvisionedThroughputExceededException`
  (a transaction: cancelled with the reason `ThrottlingError`). botocore retries these itself.

Only the functions' calls are refused (they carry `CALLER_HEADER`, added while a function runs):
a test's own reads and the sandbox's housekeeping are observers, not the system under test.
Which call is refused is decided by a hash of the seed, the operation and how many calls of it
came before (not the call's body, which holds random job ids), so a run that makes its calls in
the same order (the deterministic sandbox's) is refused at the same calls, and a retried call
draws again.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .iam import CALLER

FAULTS = ("transaction_conflict", "throttling", "seed")
CALLER_HEADER = "X-Sandbox-Caller"
_WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem"})
_READS = frozenset({"GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems"})
_ERROR_PREFIX = "com.amazonaws.dynamodb.v20120810#"
_CONFLICT = "Transaction is ongoing for the item"
_THROTTLED = (
    "Throughput exceeds the current capacity of your table or index. DynamoDB is automatically "
    "scaling your table or index so please try again shortly."
)
# The key attributes of klingflow's table (template.yaml's KeySchema): a Put names its item's.
_KEY_ATTRIBUTES = ("pk", "sk")


def parse(text: str) -> dict[str, float]:
    """`transaction_conflict=0.2,throttling=0.1[,seed=7]` as a mapping, every name and value
    checked (`check`)."""
    found: dict[str, float] = {}
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        name, equals, value = part.partition("=")
        if not equals:
            raise ValueError(f"--aws-faults: {part!r} is not name=value (e.g. transaction_conflict=0.2)")
        try:
            found[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--aws-faults: {name.strip()}={value!r} is not a number") from None
    check(found)
    return found


def check(faults: Mapping[str, float]) -> None:
    """Each fault known, each share within 0..1, a seed a whole number; else a ValueError
    naming the field, the rule and the accepted form."""
    for name, value in faults.items():
        if name not in FAULTS:
            raise ValueError(f"aws_faults: unknown fault {name!r}: use {', '.join(FAULTS)}")
        if name == "seed":
            if value != int(value):
                raise ValueError(f"aws_faults: seed must be a whole number (got {value})")
        elif not 0 <= value <= 1:
            raise ValueError(f"aws_faults: {name} is a share of calls from 0 to 1 (got {value})")


def mark_caller(request: Any, **_: Any) -> None:
    """botocore `before-sign.dynamodb`: a call a function makes says so."""
    caller = CALLER.get()
    if caller is not None:
        request.headers[CALLER_HEADER] = caller


def install(session: Any) -> None:
    session.register("before-sign.dynamodb", mark_caller, unique_id="sandbox-dynamodb-caller")


@dataclass
class DynamoFaults:
    """The middleware's settings and what it did (`injected`, by what it answered)."""

    conflict: float = 0.0
    throttling: float = 0.0
    seed: int = 0
    overlaps: bool = False
    injected: Counter[str] = field(default_factory=Counter)
    _seen: Counter[str] = field(default_factory=Counter)  # calls so far, by operation
    _transacted: set[str] = field(default_factory=set)
    _in_flight: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def of(cls, faults: Mapping[str, float]) -> DynamoFaults:
        check(faults)
        return cls(
            conflict=faults.get("transaction_conflict", 0.0),
            throttling=faults.get("throttling", 0.0),
            seed=int(faults.get("seed", 0)),
            overlaps="transaction_conflict" in faults,
        )

    def reset(self) -> None:
        """A clean count (a reset sandbox): nothing injected, no calls seen, no item transacted."""
        with self._lock:
            self.injected.clear()
            self._seen.clear()
            self._transacted.clear()

    @property
    def active(self) -> bool:
        return bool(self.conflict or self.throttling or self.overlaps)

    def wrap(self, app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
        def faulty(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            target = str(environ.get("HTTP_X_AMZ_TARGET", ""))
            if not (self.active and target.startswith("DynamoDB_") and environ.get("HTTP_X_SANDBOX_CALLER")):
                return app(environ, start_response)
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            environ["wsgi.input"] = io.BytesIO(body)
            return self._serve(target.partition(".")[2], body, app, environ, start_response)

        return faulty

    def _serve(
        self,
        operation: str,
        body: bytes,
        app: Callable[..., Iterable[bytes]],
        environ: dict[str, Any],
        start_response: Callable[..., Any],
    ) -> Iterable[bytes]:
        try:
            request = json.loads(body)
        except ValueError:
            return app(environ, start_response)  # moto answers a malformed request itself
        keys = _keys(operation, request)
        refusal, held = self._decide(operation, keys)
        if refusal is not None:
            return _refuse(start_response, *refusal)
        try:
            return app(environ, start_response)
        finally:
            if held:
                with self._lock:
                    self._in_flight.subtract(held)
                    self._in_flight += Counter()  # drop the zeros

    def _decide(self, operation: str, keys: list[str]) -> tuple[tuple[str, dict[str, Any]] | None, list[str]]:
        """The refusal to answer (its code and body), or none and the keys this call holds."""
        with self._lock:
            refusal, held = self._draw(operation, keys)
            if refusal is not None:
                self.injected[refusal[0]] += 1
            return refusal, held

    def _draw(self, operation: str, keys: list[str]) -> tuple[tuple[str, dict[str, Any]] | None, list[str]]:
        # Called under the lock.
        self._seen[operation] += 1
        draw = f"{self.seed}:{operation}:{self._seen[operation]}".encode()
        busy = {key for key in keys if self._in_flight[key]} if self.overlaps else set()
        if operation == "TransactWriteItems" and keys:
            pick = keys[_share(draw, b"pick") % len(keys)]
            if busy or _chance(draw, b"conflict", self.conflict):
                return _cancelled(keys, busy or {pick}, "TransactionConflict"), []
            if _chance(draw, b"throttle", self.throttling):
                return _cancelled(keys, {pick}, "ThrottlingError"), []
            self._transacted.update(keys)
            self._in_flight.update(keys)
            return None, keys
        single = operation in _WRITES and operation != "BatchWriteItem"
        if single and (busy or (set(keys) & self._transacted and _chance(draw, b"conflict", self.conflict))):
            return _error("TransactionConflictException", _CONFLICT), []
        if operation in _WRITES | _READS and _chance(draw, b"throttle", self.throttling):
            return _error("ProvisionedThroughputExceededException", _THROTTLED), []
        return None, []


def _keys(operation: str, request: Mapping[str, Any]) -> list[str]:
    """The items a write names, as `table key-json`."""
    if operation == "TransactWriteItems":
        entries = request.get("TransactItems") or []
        return [key for entry in entries for body in entry.values() for key in _keys("", body)]
    table = str(request.get("TableName", ""))
    key = request.get("Key")
    if key is None and isinstance(request.get("Item"), Mapping):
        key = {name: request["Item"][name] for name in _KEY_ATTRIBUTES if name in request["Item"]}
    return [f"{table} {json.dumps(key, sort_keys=True)}"] if isinstance(key, Mapping) else []


def _chance(draw: bytes, salt: bytes, share: float) -> bool:
    return share > 0 and _share(draw, salt) / 2**64 < share


def _share(draw: bytes, salt: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(draw, digest_size=8, key=salt).digest(), "big")


def _cancelled(keys: list[str], refused: set[str], reason: str) -> tuple[str, dict[str, Any]]:
    message = _CONFLICT if reason == "TransactionConflict" else _THROTTLED
    reasons = [{"Code": reason, "Message": message} if key in refused else {"Code": "None"} for key in keys]
    text = ", ".join(each["Code"] for each in reasons)
    return f"TransactionCanceledException/{reason}", {
        "__type": f"{_ERROR_PREFIX}TransactionCanceledException",
        "Message": f"Transaction cancelled, please refer cancellation reasons for specific reasons [{text}]",
        "CancellationReasons": reasons,
    }


def _error(code: str, message: str) -> tuple[str, dict[str, Any]]:
    return code, {"__type": f"{_ERROR_PREFIX}{code}", "message": message}


def _refuse(start_response: Callable[..., Any], _: str, body: dict[str, Any]) -> list[bytes]:
    start_response(
        "400 Bad Request",
        [("Content-Type", "application/x-amz-json-1.0"), ("x-amzn-RequestId", uuid.uuid4().hex)],
    )
    return [json.dumps(body).encode()]
