"""The AWS operations klingflow calls, and botocore's models trimmed down to them.

Creating a botocore client reads its service's whole API model, and the first client in a
container also reads the endpoints of every AWS service (1.2 MB of JSON). Four clients cost
submit's cold start 130-210 ms here, mostly to parse operations klingflow never calls. The
layer's build (its Makefile) writes these models next to this module (`MODELS`), trimmed to the
operations below, from the botocore the layer bundles. runtime.py's session reads them before
botocore's own; the rest (endpoint rule sets, retry rules) still comes from botocore.

So a klingflow client has only the operations listed here. Calling another one fails with
AttributeError, in tests too (`make test` writes the models from the venv's botocore first).
A new call needs its operation added here.

Only the standard library here: the layer's Makefile runs this file as a script. What only
the build uses is imported where it is used, so that runtime.py loads no more than it reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Service -> the operations klingflow calls (API names, as in botocore's service-2.json).
OPERATIONS: dict[str, tuple[str, ...]] = {
    "dynamodb": ("GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "TransactWriteItems"),
    "s3": (
        "HeadObject",
        "GetObject",  # also presigned, for providers to fetch inputs
        "PutObject",
        "CopyObject",
        "CreateMultipartUpload",
        "UploadPart",
        "CompleteMultipartUpload",
        "AbortMultipartUpload",
    ),
    "sqs": ("SendMessage", "ChangeMessageVisibility"),
    "events": ("PutEvents",),
    "secretsmanager": ("GetSecretValue",),
    "ssm": ("GetParameter",),
}
# Kept whole in the layer's botocore, though klingflow makes no client of it: botocore's
# credential providers may (assume-role, web identity).
KEPT_WHOLE = ("sts",)
MODELS = Path(__file__).with_name("aws_models")
_STAMP = "SOURCE"
# What botocore reads only to write documentation.
_DOCUMENTATION = frozenset({"documentation", "documentationUrl"})


def _read(path: Path) -> Any:
    """A botocore data file, stored as .json or .json.gz."""
    import gzip

    if path.exists():
        return json.loads(path.read_bytes())
    return json.loads(gzip.decompress(path.with_name(path.name + ".gz").read_bytes()))


def _exists(path: Path) -> bool:
    return path.exists() or path.with_name(path.name + ".gz").exists()


def _latest_version(service_dir: Path) -> str:
    """The API version botocore picks (the latest that has a service model)."""
    versions = [d.name for d in service_dir.iterdir() if _exists(d / "service-2.json")]
    if not versions:
        raise FileNotFoundError(f"no service model under {service_dir}")
    return max(versions)


def _without_documentation(value: Any) -> Any:
    # Emptied rather than removed: botocore reads some of them with model["documentation"].
    if isinstance(value, dict):
        return {k: "" if k in _DOCUMENTATION else _without_documentation(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_documentation(v) for v in value]
    return value


def trim_service(model: dict[str, Any], operations: tuple[str, ...]) -> dict[str, Any]:
    """The service model with only `operations` and the shapes they reach (input, output,
    errors, and every member of those, transitively); documentation emptied."""
    missing = [name for name in operations if name not in model["operations"]]
    if missing:
        raise KeyError(f"{model['metadata'].get('serviceId')}: no operation {', '.join(missing)}")
    shapes = model["shapes"]
    todo = []
    for name in operations:
        operation = model["operations"][name]
        todo += [operation[part]["shape"] for part in ("input", "output") if part in operation]
        todo += [error["shape"] for error in operation.get("errors", [])]
    kept: set[str] = set()
    while todo:
        name = todo.pop()
        if name in kept:
            continue
        kept.add(name)
        shape = shapes[name]
        todo += [member["shape"] for member in shape.get("members", {}).values()]
        todo += [shape[part]["shape"] for part in ("member", "key", "value") if part in shape]
    trimmed = dict(model)
    trimmed["operations"] = {name: model["operations"][name] for name in operations}
    trimmed["shapes"] = {name: shape for name, shape in shapes.items() if name in kept}
    return dict(_without_documentation(trimmed))


def trim_endpoints(endpoints: dict[str, Any], services: set[str]) -> dict[str, Any]:
    """Every partition and region, with the endpoint data of `services` only."""
    trimmed = dict(endpoints)
    trimmed["partitions"] = [
        {**partition, "services": {k: v for k, v in partition["services"].items() if k in services}}
        for partition in endpoints["partitions"]
    ]
    return trimmed


def _inputs(botocore_data: Path) -> list[Path]:
    found = [botocore_data / "endpoints.json"]
    for service in OPERATIONS:
        version = _latest_version(botocore_data / service)
        model = botocore_data / service / version / "service-2.json"
        found.append(model if model.exists() else model.with_name("service-2.json.gz"))
    return found


def fingerprint(botocore_data: Path) -> str:
    """Of what `write` reads and what it keeps: the models are current while this is unchanged."""
    import hashlib

    digest = hashlib.sha256(json.dumps(OPERATIONS, sort_keys=True).encode())
    digest.update(Path(__file__).read_bytes())
    for path in _inputs(botocore_data):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def write(botocore_data: Path, into: Path = MODELS) -> None:
    """The trimmed models of botocore's `data/` directory, as a botocore data path at `into`
    (<service>/<version>/service-2.json and endpoints.json); replaces what was there."""
    import shutil
    import tempfile

    scratch = Path(tempfile.mkdtemp(prefix=".aws_models-", dir=into.parent))
    try:
        for service, operations in OPERATIONS.items():
            version = _latest_version(botocore_data / service)
            model = _read(botocore_data / service / version / "service-2.json")
            (scratch / service / version).mkdir(parents=True)
            (scratch / service / version / "service-2.json").write_text(
                json.dumps(trim_service(model, operations), separators=(",", ":"))
            )
        endpoints = trim_endpoints(_read(botocore_data / "endpoints.json"), {*OPERATIONS, *KEPT_WHOLE})
        (scratch / "endpoints.json").write_text(json.dumps(endpoints, separators=(",", ":")))
        (scratch / _STAMP).write_text(fingerprint(botocore_data) + "\n")
        shutil.rmtree(into, ignore_errors=True)
        scratch.rename(into)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def current(botocore_data: Path, into: Path = MODELS) -> bool:
    stamp = into / _STAMP
    return stamp.exists() and stamp.read_text().strip() == fingerprint(botocore_data)


def ensure(botocore_data: Path, into: Path = MODELS) -> bool:
    """Write the models unless they are current; True when they were written."""
    if current(botocore_data, into):
        return False
    write(botocore_data, into)
    return True


def prune(botocore_data: Path) -> None:
    """Delete the data of every service klingflow makes no client of (the layer's own copy of
    botocore: ~20 MB unzipped that no function reads)."""
    import shutil

    keep = {*OPERATIONS, *KEPT_WHOLE}
    for entry in botocore_data.iterdir():
        if entry.is_dir() and entry.name not in keep:
            shutil.rmtree(entry)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("botocore_data", type=Path, help="botocore's data/ directory")
    parser.add_argument("--into", type=Path, default=MODELS)
    parser.add_argument("--prune", action="store_true", help="then delete the other services' data")
    given = parser.parse_args()
    write(given.botocore_data, given.into)
    if given.prune:
        prune(given.botocore_data)


if __name__ == "__main__":
    main()
