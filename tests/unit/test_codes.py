"""Every public code is written once, in core/codes.py: the package names the enum member, never a
copy of its string, and the OpenAPI document and event schemas list each enum."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from klingflow.core.codes import Actor, AttemptOutcome, JobErrorCode, ProviderErrorClass
from klingflow.core.states import JobStatus
from klingflow_dev import openapi, schemas
from tests.conftest import REPO

PACKAGE = REPO / "layers/klingflow/klingflow"
CODES = PACKAGE / "core/codes.py"
# Words that are also a job's status (`CANCELLED`): states.py defines them as statuses.
STATUS_WORDS = {str(status) for status in JobStatus}
# A provider's own status words (Kling's and apimaster's `submitted`), in its adapter.
PROVIDER_WORDS = {str(AttemptOutcome.SUBMITTED)}


def _modules() -> Iterator[Path]:
    yield from (path for path in sorted(PACKAGE.rglob("*.py")) if path != CODES)


def _strings(tree: ast.AST) -> Iterator[ast.Constant]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node


def _actor_strings(tree: ast.AST) -> Iterator[ast.Constant]:
    """Strings given as `by=` or as a `by` parameter's default: who moved a job."""
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "by" and isinstance(node.value, ast.Constant):
            yield node.value
        if isinstance(node, ast.arguments):
            named = [*node.posonlyargs, *node.args]
            pairs = [*zip(named[len(named) - len(node.defaults) :], node.defaults, strict=True)]
            pairs += [(arg, d) for arg, d in zip(node.kwonlyargs, node.kw_defaults, strict=True) if d]
            yield from (d for arg, d in pairs if arg.arg == "by" and isinstance(d, ast.Constant))


def _allowed(where: Path, value: str) -> bool:
    if where.parts[0] == "providers":
        return value in PROVIDER_WORDS
    return str(where) == "core/states.py" and value in STATUS_WORDS


def test_no_code_is_written_outside_codes_py() -> None:
    codes = {str(code) for code in JobErrorCode} | {str(outcome) for outcome in AttemptOutcome}
    copies = []
    for path in _modules():
        tree = ast.parse(path.read_text())
        where = path.relative_to(PACKAGE)
        for node in _strings(tree):
            if node.value in codes and not _allowed(where, node.value):
                copies.append(f"{where}:{node.lineno}: {node.value!r}")
        for node in _actor_strings(tree):
            copies.append(f"{where}:{node.lineno}: by={node.value!r} (use Actor)")
    assert copies == [], "use the member of klingflow.core.codes instead:\n" + "\n".join(copies)


def test_the_codes_keep_the_strings_stored_and_sent_before() -> None:
    # StrEnums: the wire and the table carry these exact strings, so they must never change.
    assert JobErrorCode.PROVIDER_FAILED == "PROVIDER_FAILED"
    assert JobErrorCode.OUTPUT_REFUSED == "OUTPUT_REFUSED"  # stored by older versions
    assert {str(actor) for actor in Actor} == {"api", "submit", "callback", "archive", "sweeper"}
    assert AttemptOutcome.failed(ProviderErrorClass.RATE_LIMITED) == "rate_limited"
    for error_class in ProviderErrorClass:
        assert AttemptOutcome.lookup_failed(error_class) == f"lookup_{error_class.value}"
    assert len({str(code) for code in JobErrorCode}) == len(JobErrorCode)


def test_the_openapi_document_and_the_event_schema_list_the_codes() -> None:
    components = openapi.document()["components"]["schemas"]
    assert components["JobErrorCode"]["enum"] == [str(code) for code in JobErrorCode]
    assert components["AttemptOutcome"]["enum"] == [str(outcome) for outcome in AttemptOutcome]
    assert components["Actor"]["enum"] == [str(actor) for actor in Actor]
    error = components["Error"]["properties"]["error"]["properties"]["code"]
    assert error == {"$ref": openapi.REF.format(model="JobErrorCode")}
    event = schemas.schemas()["job-event.schema.json"]
    assert event["$defs"]["JobErrorCode"]["enum"] == [str(code) for code in JobErrorCode]
