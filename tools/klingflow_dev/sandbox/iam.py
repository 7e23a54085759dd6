"""Each function's DynamoDB rights, as template.yaml grants them, enforced on its calls.

moto allows every call; AWS allows what the function's role says. Here each call a handler
makes through klingflow's botocore session is checked against its function's policy
statements: the action (a transaction is checked operation by operation, as IAM does), the
table or index ARN, and the `dynamodb:LeadingKeys` condition (`ForAllValues:StringLike`)
that limits a function to the key prefixes it uses. A call the role would not allow answers
`AccessDeniedException`, as DynamoDB would, so a grant missing from the template fails a
sandbox test instead of a deployment.

Which function is calling is a context variable set for each invocation (lambdas.Invoker);
threads a handler starts inherit it (`propagate_to_threads`). Calls outside an invocation
(the sandbox building resources, a test reading the table) are not checked.
"""

from __future__ import annotations

import contextvars
import fnmatch
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from .aws import ACCOUNT, REGION

CALLER: contextvars.ContextVar[str | None] = contextvars.ContextVar("sandbox_caller", default=None)
LEADING_KEYS = "dynamodb:LeadingKeys"
# The operation inside TransactWriteItems and the IAM action it needs.
_TRANSACT_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}


@dataclass(frozen=True)
class Statement:
    actions: frozenset[str]
    resources: frozenset[str]
    leading_keys: tuple[str, ...] | None  # None: no condition on the key


@dataclass(frozen=True)
class Access:
    action: str
    resource: str
    key: str | None


def statements(policies: Any, resolve: Callable[[Any], Any]) -> list[Statement]:
    """A function's Allow statements on DynamoDB, resolved (SAM's inline policy documents)."""
    found = []
    for policy in policies if isinstance(policies, list) else [policies]:
        if not isinstance(policy, dict):
            continue  # a SAM policy template by name: klingflow uses none for DynamoDB
        for statement in policy.get("Statement", []):
            actions = _listed(statement.get("Action"))
            if statement.get("Effect") != "Allow" or not any(a.startswith("dynamodb:") for a in actions):
                continue
            condition = statement.get("Condition", {}).get("ForAllValues:StringLike", {})
            keys = _listed(condition.get(LEADING_KEYS)) if LEADING_KEYS in condition else None
            resources = frozenset(str(resolve(r)) for r in _listed(statement.get("Resource")))
            found.append(Statement(frozenset(actions), resources, tuple(keys) if keys is not None else None))
    return found


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [] if value is None else [value]


def accesses(operation: str, params: Mapping[str, Any]) -> Iterator[Access]:
    """What one DynamoDB call asks IAM for: an action on a resource, with its partition key."""
    if operation == "TransactWriteItems":
        for entry in params.get("TransactItems", []):
            ((name, request),) = entry.items()
            yield _access(_TRANSACT_ACTIONS[name], request)
    elif operation == "TransactGetItems":
        for entry in params.get("TransactItems", []):
            yield _access("GetItem", entry["Get"])
    else:
        yield _access(operation, params)


def _access(action: str, request: Mapping[str, Any]) -> Access:
    table = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{request.get('TableName')}"
    if request.get("IndexName"):
        # A query's leading key is the index's partition key: klingflow conditions none of them.
        return Access(f"dynamodb:{action}", f"{table}/index/{request['IndexName']}", None)
    typed = (request.get("Key") or request.get("Item") or {}).get("pk", {})
    return Access(f"dynamodb:{action}", table, typed.get("S") if isinstance(typed, dict) else None)


def allowed(granted: list[Statement], access: Access) -> bool:
    for statement in granted:
        if access.action not in statement.actions or access.resource not in statement.resources:
            continue
        if statement.leading_keys is None:
            return True
        if access.key is not None and any(fnmatch.fnmatchcase(access.key, p) for p in statement.leading_keys):
            return True
    return False


class Guard:
    """The botocore hook: refuses what a calling function's role does not allow."""

    def __init__(self, grants: Mapping[str, list[Statement]]) -> None:
        self._grants = grants
        self.denied: list[str] = []
        self.checked: Counter[str] = Counter()  # calls checked, per function

    def __call__(self, params: Mapping[str, Any], model: Any, **_: Any) -> None:
        caller = CALLER.get()
        if caller is None or caller not in self._grants:
            return
        self.checked[caller] += 1
        for access in accesses(model.name, params):
            if not allowed(self._grants[caller], access):
                message = (
                    f"{caller} is not authorized to perform {access.action} on {access.resource}"
                    + (f" for the key {access.key!r}" if access.key else "")
                    + ": grant it in template.yaml (the function's Policies; dynamodb:LeadingKeys"
                    " lists the key prefixes it may touch)"
                )
                self.denied.append(message)
                raise ClientError(
                    {"Error": {"Code": "AccessDeniedException", "Message": message}}, model.name
                )

    def install(self, session: Any) -> None:
        session.register("before-parameter-build.dynamodb", self)


def propagate_to_threads() -> None:
    """Threads a handler starts (the sweeper's polls, the due index's readers) act for the
    function that started them, as in Lambda, where they share its role."""
    if getattr(ThreadPoolExecutor.submit, "_sandbox_context", False):
        return
    plain = ThreadPoolExecutor.submit

    def submit(self: ThreadPoolExecutor, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        return plain(self, contextvars.copy_context().run, fn, *args, **kwargs)

    submit._sandbox_context = True  # type: ignore[attr-defined]
    ThreadPoolExecutor.submit = submit  # type: ignore[method-assign,assignment]
