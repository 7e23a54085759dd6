"""The outcome bus's resource policy (template.yaml's AWS::Events::EventBusPolicy), enforced.

moto lets anyone put any event on any bus; EventBridge evaluates the bus's policy, and
klingflow's outcome bus denies PutEvents to every principal but the functions that publish.
Here a WSGI middleware in front of moto does the same for each PutEvents entry: the Deny
statements read from the template (Principal "*", `ArnNotEquals` / `StringNotEquals` on
`aws:PrincipalArn`), the caller's principal taken from a header that klingflow's botocore
session adds while a function runs (`lambdas.Invoker` names the function, `iam.CALLER`).
Any other caller (a test playing a partner, the CLI, a boto3 client of its own) is the
principal `OUTSIDER`. A denied call answers `AccessDeniedException`, as EventBridge would.

Same-account Allow statements change nothing (an IAM grant already allows), so only Deny
statements are evaluated; a policy shape the sandbox cannot evaluate stops it from starting.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .aws import ACCOUNT, REGION, function_role_arn
from .iam import CALLER

PRINCIPAL_HEADER = "X-Sandbox-Principal"
OUTSIDER = f"arn:aws:iam::{ACCOUNT}:user/sandbox-partner"
_NOT_EQUALS = ("ArnNotEquals", "StringNotEquals")


def role_arn(function: str) -> str:
    return function_role_arn(function)


def bus_arn(name_or_arn: str) -> str:
    if name_or_arn.startswith("arn:"):
        return name_or_arn
    return f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/{name_or_arn}"


@dataclass(frozen=True)
class Denial:
    """PutEvents on `bus` is denied to every principal not in `except_principals`."""

    bus: str
    except_principals: frozenset[str]

    def denies(self, bus: str, principal: str) -> bool:
        return bus == self.bus and principal not in self.except_principals


def denials(policy: Mapping[str, Any]) -> list[Denial]:
    """The Deny statements of one resolved AWS::Events::EventBusPolicy's properties."""
    statements = policy.get("Statement")
    found = []
    for statement in statements if isinstance(statements, list) else [statements]:
        if not isinstance(statement, Mapping) or statement.get("Effect") != "Deny":
            continue
        actions = _listed(statement.get("Action"))
        if not {"events:PutEvents", "events:*"} & set(actions):
            continue
        if statement.get("Principal") not in ("*", {"AWS": "*"}):
            raise ValueError("the sandbox evaluates bus policy Deny statements for Principal '*' only")
        condition = statement.get("Condition", {})
        operators = [op for op in _NOT_EQUALS if "aws:PrincipalArn" in condition.get(op, {})]
        if set(condition) - set(operators) or not operators:
            raise ValueError(f"the sandbox evaluates bus policy conditions {_NOT_EQUALS} on aws:PrincipalArn")
        listed = [arn for op in operators for arn in _listed(condition[op]["aws:PrincipalArn"])]
        allowed = frozenset(str(arn) for arn in listed)
        found.append(Denial(bus_arn(str(statement.get("Resource") or policy["EventBusName"])), allowed))
    return found


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [] if value is None else [value]


@dataclass
class BusPolicy:
    """The middleware's rules (set once the template's resources are built) and what it refused."""

    rules: list[Denial] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def wrap(self, app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
        def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            if not self.rules or environ.get("HTTP_X_AMZ_TARGET") != "AWSEvents.PutEvents":
                return app(environ, start_response)
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            environ["wsgi.input"] = io.BytesIO(body)
            principal = environ.get("HTTP_X_SANDBOX_PRINCIPAL") or OUTSIDER
            denied = self._denied(body, principal)
            if denied is None:
                return app(environ, start_response)
            self.refused.append(denied)
            start_response("400 Bad Request", [("Content-Type", "application/x-amz-json-1.1")])
            return [json.dumps({"__type": "AccessDeniedException", "message": denied}).encode()]

        return guarded

    def _denied(self, body: bytes, principal: str) -> str | None:
        try:
            entries = json.loads(body).get("Entries") or []
        except (ValueError, AttributeError):
            return None  # moto answers a malformed request itself
        for entry in entries:
            bus = bus_arn(str(entry.get("EventBusName") or "default"))
            if any(rule.denies(bus, principal) for rule in self.rules):
                return (
                    f"{principal} is not authorized to perform events:PutEvents on {bus} with an explicit"
                    " deny in a resource-based policy"
                )
        return None


def mark_principal(request: Any, **_: Any) -> None:
    """botocore `before-sign.events.PutEvents`: a call a function makes carries its role."""
    caller = CALLER.get()
    if caller is not None:
        request.headers[PRINCIPAL_HEADER] = role_arn(caller)


def install(session: Any) -> None:
    session.register("before-sign.events.PutEvents", mark_principal, unique_id="sandbox-bus-principal")
