"""The AWS operations klingflow calls, and botocore's models trimmed down to them.

Creating a botocore client reads its service's whole API model, and the first client in a
container also reads the endpoints of every AWS service (1.2 MB of JSON). Four clients cost
submit's cold start 130-210 ms here, mostly to parse operations klingflow never calls. The
layer's build (its Makefile) writes these models next to this module (`MODELS`), trimmed to the
operations below, from the botocore the layer bundles; runtime.py's session reads them before
botocore's own. The endpoint rule sets and retry rules still come from botocore.

The endpoints are trimmed in place, in the layer's own botocore (`prune`): botocore takes an
endpoints file found anywhere else for a customised one and sends every request to its legacy
endpoint URL (no FIPS or dual-stack hosts from the rule sets, no region redirects).

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
        "DeleteObject",  # an output that is not what it claims leaves outputs/ for quarantine/
        "CreateMultipartUpload",
        "UploadPart",
        "CompleteMultipartUpload",
        "AbortMultipartUpload",
        "HeadBucket",  # botocore's own: where a redirect does not say the bucket's region
    ),
    "sqs": ("SendMessage", "ChangeMessageVisibility"),
    "events": ("PutEvents",),
    "secretsmanager": ("GetSecretValue",),
    "ssm": ("GetParameter",),
}
# Kept whole in the layer's botocore, though klingflow makes no client of it: botocore's
# credential providers may (assume-role, web identity). Pruned though botocore could load them:
# SSO's (profile credentials; Lambda's are the environment's) and S3 Express sessions (directory
# buckets; the stack's bucket is a general-purpose one).
KEPT_WHOLE = ("sts",)
# Beside the package, not this folder: the layer's Makefile writes them there.
MODELS = Path(__file__).parents[1] / "aws_models"
_STAMP = "SOURCE"
# What botocore reads only to write documentation.
_DOCUMENTATION = frozenset({"documentation", "documentationUrl"})
# Maps whose keys are names, not fields (a member or shape could be called "documentation").
_NAMES = frozenset({"operations", "shapes", "members"})


def _stored(path: Path) -> Path:
    """Where botocore keeps a data file: as named (.json), or compressed beside it (.json.gz)."""
    return path if path.exists() else path.with_name(path.name + ".gz")


def _read(path: Path) -> Any:
    import gzip

    stored = _stored(path)
    data = stored.read_bytes()
    return json.loads(gzip.decompress(data) if stored.suffix == ".gz" else data)


def _latest_version(service_dir: Path) -> str:
    """The API version botocore picks (the latest that has a service model)."""
    versions = [d.name for d in service_dir.iterdir() if _stored(d / "service-2.json").exists()]
    if not versions:
        raise FileNotFoundError(f"no service model under {service_dir}")
    return max(versions)


def _without_documentation(value: Any, *, names: bool = False) -> Any:
    """Documentation emptied rather than removed (botocore reads some of it as
    model["documentation"]); `names`: the keys are names (a structure's members), not fields."""
    if isinstance(value, dict):
        return {
            k: "" if k in _DOCUMENTATION and not names else _without_documentation(v, names=k in _NAMES)
            for k, v in value.items()
        }
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


def trim_endpoints(endpoints: dict[str, Any], prefixes: set[str]) -> dict[str, Any]:
    """Every partition and region, with the endpoint data of the services whose endpoint
    prefixes (their model's `metadata.endpointPrefix`) are given only."""
    trimmed = dict(endpoints)
    trimmed["partitions"] = [
        {**partition, "services": {k: v for k, v in partition["services"].items() if k in prefixes}}
        for partition in endpoints["partitions"]
    ]
    return trimmed


def _model_path(botocore_data: Path, service: str) -> Path:
    """The service model botocore reads (named as .json; `_stored` says where it is)."""
    return botocore_data / service / _latest_version(botocore_data / service) / "service-2.json"


def endpoint_prefixes(botocore_data: Path) -> set[str]:
    """How endpoints.json names klingflow's services (and STS)."""
    models = [_read(_model_path(botocore_data, service)) for service in (*OPERATIONS, *KEPT_WHOLE)]
    return {str(model["metadata"]["endpointPrefix"]) for model in models}


def fingerprint(botocore_data: Path) -> str:
    """Of what `write` reads and what it keeps: the models are current while this is unchanged."""
    import hashlib

    digest = hashlib.sha256(json.dumps(OPERATIONS, sort_keys=True).encode())
    digest.update(Path(__file__).read_bytes())
    for service in OPERATIONS:
        digest.update(_stored(_model_path(botocore_data, service)).read_bytes())
    return digest.hexdigest()


def write(botocore_data: Path, into: Path = MODELS) -> None:
    """The trimmed models of botocore's `data/` directory, as a botocore data path at `into`
    (<service>/<version>/service-2.json); replaces what was there."""
    import shutil
    import tempfile

    # Beside `into`, so the rename below is one step; named so git and the Makefile skip it.
    scratch = Path(tempfile.mkdtemp(prefix=".aws_models-", dir=into.parent))
    try:
        for service, operations in OPERATIONS.items():
            source = _model_path(botocore_data, service)
            target = scratch / source.relative_to(botocore_data)
            target.parent.mkdir(parents=True)
            target.write_text(json.dumps(trim_service(_read(source), operations), separators=(",", ":")))
        (scratch / _STAMP).write_text(fingerprint(botocore_data) + "\n")
        shutil.rmtree(into, ignore_errors=True)
        try:
            scratch.rename(into)
        except OSError:  # another process wrote them first (the sandbox and pytest at once)
            if not current(botocore_data, into):
                raise
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
    """The layer's own botocore, cut to what klingflow's functions read: the data of the
    services they make clients of (and STS), the others' (~20 MB unzipped) deleted, and the
    endpoints of those services only, in place (botocore's own file, so still its built-in
    endpoint data; see the module's docstring)."""
    import shutil

    endpoints = trim_endpoints(_read(botocore_data / "endpoints.json"), endpoint_prefixes(botocore_data))
    keep = {*OPERATIONS, *KEPT_WHOLE}
    for entry in botocore_data.iterdir():
        if entry.is_dir() and entry.name not in keep:
            shutil.rmtree(entry)
    (botocore_data / "endpoints.json").write_text(json.dumps(endpoints, separators=(",", ":")))


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("botocore_data", type=Path, help="botocore's data/ directory")
    parser.add_argument("--into", type=Path, default=MODELS)
    parser.add_argument(
        "--prune", action="store_true", help="then cut that botocore's data to klingflow's services"
    )
    given = parser.parse_args()
    write(given.botocore_data, given.into)
    if given.prune:
        prune(given.botocore_data)


if __name__ == "__main__":
    main()
