"""Cold init per handler: importing a function's handler module and building its service once,
as a fresh Lambda container does before it answers its first event.

Each sample is a fresh interpreter (this venv's Python, without its site-packages), with what
Lambda puts on `sys.path`: the function's directory (/var/task), the layer (/opt/python) as its
Makefile builds it for `sam build` (bytecode included), and boto3 as the python3.13 runtime
ships it. Both are built once for this machine's platform under .bench/ (`lambda_site`). This
venv would not do: it also holds what the developer tools bring (awscrt and cryptography, which
botocore loads when they are there; rich, click and pygments, which make httpx load its command
line), which a Lambda container never has. The quick smoke uses this venv as it is, so
`make test` installs nothing.

The environment is the one the template gives the function (Globals and its own variables,
parameters at their defaults; the resources it names are stand-ins on a loopback port nobody
answers). Only import + first build is timed, inside the child with `time.perf_counter`, so
interpreter start-up counts on neither side.

The floor is the least any handler could do: `import boto3` and build one client, timed the
same way in a fresh interpreter of its own, with the same boto3.

Building a service must not touch the network (clients are created, never called): the child
records every socket connect through an audit hook, and a row whose build tried one says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from .core import RowResult, interleaved
from .size import build_layer

REPO = Path(__file__).resolve().parents[3]
LAYER = REPO / "layers" / "klingflow"
FUNCTIONS = REPO / "functions"
HANDLERS = ("submit", "jobs", "callback", "archive", "sweeper", "webhook")
QUICK_HANDLERS = ("callback", "jobs")
LOOPBACK = "http://127.0.0.1:9"  # the discard port: a client that sent anything would fail
ACCOUNT = "123456789012"

# Stand-ins for what the template's variables name by reference (resources, secrets), and
# credentials that can only ever reach the loopback endpoint.
STAND_INS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_ENDPOINT_URL": LOOPBACK,
    "AWS_EC2_METADATA_DISABLED": "true",
    "JOBS_TABLE": "klingflow-jobs",
    "BUCKET": "klingflow-bucket",
    "EVENT_BUS": "klingflow",
    "SUBMIT_QUEUE_URL": f"{LOOPBACK}/{ACCOUNT}/submit",
    "ARCHIVE_QUEUE_URL": f"{LOOPBACK}/{ACCOUNT}/archive",
    "WEBHOOK_QUEUE_URL": f"{LOOPBACK}/{ACCOUNT}/webhook",
    "CALLBACK_SECRET_ARN": f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:callback",
    "WEBHOOK_SECRET_ARN": f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:webhook",
    "PROVIDER_SECRET_ARN": f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:providers",
    "API_URL_PARAMETER": "/klingflow/api-url",
}

# What runs in the child. The audit hook first (it imports nothing), then the clock starts.
_CHILD = """
import sys, time, json
connects = []
def _audit(event, args):
    if event == "socket.connect":
        connects.append(repr(args[1]))
sys.addaudithook(_audit)
sys.path[:0] = {paths!r}
start, cpu = time.perf_counter(), time.process_time()
{body}
elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
import gc
found = {{"s": elapsed, "cpu_s": cpu, "connects": connects, "modules": sorted(sys.modules)}}
found["gc"] = {{"enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}}
print(json.dumps(found))
"""
_HANDLER_BODY = "import app\napp.service.get()"
_FLOOR_BODY = "import boto3\nboto3.client('dynamodb')"
# What a row's notes name when the handler loaded it: the heavy parts a function that does not
# use them should not load.
WATCHED = {
    "klingflow.core.kinds": "request models",
    "klingflow.flows.submit": "intake",
    "klingflow.core.probe": "probe",
    "klingflow.flows.archive": "archiving",
    "klingflow.infra.safehttp": "safehttp",
    "httpx": "httpx",
    "jwt": "jwt",
    "aws_lambda_powertools.event_handler": "event handler",
    "aws_lambda_powertools.utilities.batch": "batch",
}


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    """`!Ref X` as {"Ref": "X"}, any other short-form function as {"Fn::<name>": ...}: only
    references to parameters are resolved here, everything else stays a stand-in."""
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        return {name: loader.construct_scalar(node)}
    if isinstance(node, yaml.SequenceNode):
        return {name: loader.construct_sequence(node, deep=True)}
    return {name: loader.construct_mapping(node, deep=True)}  # type: ignore[arg-type]


@cache
def _template() -> dict[str, Any]:
    """template.yaml, far enough for its functions' variables (the sandbox's reader imports
    the whole sandbox, seconds more than a quick run of this row)."""
    base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    loader: Any = type("_TemplateLoader", (base,), {})
    loader.add_multi_constructor("!", _intrinsic)
    document = yaml.load((REPO / "template.yaml").read_text(), Loader=loader)  # noqa: S506 (safe)
    assert isinstance(document, dict)
    return document


def function_environment(name: str) -> dict[str, str]:
    """The variables the template gives `functions/<name>/`: literals as written, parameters at
    their defaults, references to resources as the stand-ins above."""
    document = _template()
    parameters = {key: spec.get("Default") for key, spec in document.get("Parameters", {}).items()}
    variables = dict(document["Globals"]["Function"]["Environment"]["Variables"])
    for resource in document["Resources"].values():
        props = resource.get("Properties", {})
        if str(props.get("CodeUri", "")).rstrip("/") == f"functions/{name}":
            variables.update(props.get("Environment", {}).get("Variables", {}))
    found = {}
    for key, given in variables.items():
        value = given
        if isinstance(given, dict) and set(given) == {"Ref"} and parameters.get(given["Ref"]) is not None:
            value = parameters[given["Ref"]]
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            found[key] = str(value)
    return found


def _environment(name: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_", "PYDANTIC_"))}
    # Nothing on the path but what Lambda would put there; bytecode cached as a built layer's is.
    env.pop("PYTHONPATH", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(STAND_INS)
    if name is not None:
        env.update(function_environment(name))
    return env


@dataclass(frozen=True)
class Site:
    """Where a child finds its packages: this venv (None) or Lambda's layout (`lambda_site`)."""

    layer: Path  # the layer as its Makefile builds it (klingflow included, bytecode compiled)
    runtime: Path  # boto3 and its dependencies, as the python3.13 runtime has them
    compiled: bool = True

    def without_bytecode(self) -> Site:
        """The same layer as the python3.13 build method ships it: no __pycache__ at all."""
        bare = self.layer.parent.parent / "without-bytecode" / "python"
        if not bare.exists():
            shutil.copytree(self.layer, bare, ignore=shutil.ignore_patterns("__pycache__"))
        return Site(layer=bare, runtime=self.runtime, compiled=False)


def lambda_site() -> Site:
    """The layer built by its own Makefile for this machine's platform, and the runtime's boto3
    (this venv's version), kept under .bench/ until the layer's sources or boto3 change."""
    boto3_version = metadata.version("boto3")
    sources = hashlib.sha256(f"{boto3_version}|{sys.version}".encode())
    for path in sorted(LAYER.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            sources.update(str(path.relative_to(LAYER)).encode() + b"\0" + path.read_bytes())
    root = REPO / ".bench" / f"lambda-site-{sources.hexdigest()[:12]}"
    site = Site(layer=root / "layer" / "python", runtime=root / "runtime")
    if (root / "ready").exists():
        return site
    shutil.rmtree(REPO / ".bench", ignore_errors=True)  # older builds
    build_layer(LAYER, root / "layer", platform=f"manylinux2014_{platform.machine()}")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--target", str(site.runtime), f"boto3=={boto3_version}"],
        check=True,
        timeout=600,
    )  # fmt: skip
    (root / "ready").write_text(f"boto3 {boto3_version}\n")
    return site


def _child(body: str, paths: list[str], cwd: Path, env: dict[str, str], site: Site | None) -> dict[str, Any]:
    # -I -S: neither this venv's site-packages nor PYTHON* variables; Lambda's paths only.
    # -B for a layer without bytecode: /opt is read-only, nothing compiled is ever kept.
    flags = ["-I", "-S"] if site is not None else []
    if site is not None and not site.compiled:
        flags.append("-B")
    done = subprocess.run(
        [sys.executable, *flags, "-c", _CHILD.format(paths=paths, body=body)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"cold init child failed ({done.returncode}): {done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def measure_handler(name: str, site: Site | None = None) -> dict[str, Any]:
    """One cold init of `functions/<name>/app.py`: import it and build its service."""
    directory = FUNCTIONS / name
    # /var/task, /opt/python and the runtime's packages; or this venv, klingflow from its source.
    packages = [LAYER] if site is None else [site.layer, site.runtime]
    paths = [str(directory), *map(str, packages)]
    return _child(_HANDLER_BODY, paths, directory, _environment(name), site)


def measure_floor(site: Site | None = None) -> dict[str, Any]:
    paths = [str(site.runtime)] if site is not None else []
    return _child(_FLOOR_BODY, paths, REPO, _environment(None), site)


def _row(name: str, runs: int, *, warm_up: bool, site: Site | None) -> RowResult:
    seen: dict[str, Any] = {"connects": set(), "cpu": [], "floor_cpu": []}

    def ours() -> float:
        sample = measure_handler(name, site)
        seen["modules"] = sample["modules"]
        seen["connects"].update(sample["connects"])
        seen["cpu"].append(float(sample["cpu_s"]))
        return float(sample["s"]) * 1000

    def floor() -> float:
        sample = measure_floor(site)
        seen["floor_cpu"].append(float(sample["cpu_s"]))
        return float(sample["s"]) * 1000

    if warm_up:  # one unmeasured round: bytecode compiled and files cached on both sides
        ours()
        floor()
        seen["cpu"].clear()
        seen["floor_cpu"].clear()
    mine, floors = interleaved(runs, ours, floor)
    # The same ratio in CPU time: what a busy machine's neighbours do not move.
    cpu_ratio = statistics.median(o / f for o, f in zip(seen["cpu"], seen["floor_cpu"], strict=True) if f > 0)
    modules = set(seen["modules"])
    own = sorted(m for m in modules if m.startswith("klingflow."))
    adapters = [m for m in own if m.startswith("klingflow.providers.") and m.count(".") == 2]
    # base and registry as they were before their split, so the count compares across runs
    shared = ("base", "bodies", "client", "dialects", "prices", "registry")
    adapters = [m for m in adapters if m.rsplit(".", 1)[1] not in shared]
    loads = [label for module, label in WATCHED.items() if module in modules]
    notes = {
        "packages": "Lambda's layout" if site is not None else "this venv",
        "CPU-time ratio": f"{cpu_ratio:.2f}",
        "klingflow modules": str(len(own)),
        "adapters": str(len(adapters)),
        "loads": ", ".join(loads) or "none of the heavy parts",
    }
    if seen["connects"]:
        notes["network during build"] = ", ".join(sorted(seen["connects"]))
    return RowResult(
        path=f"cold init: {name}",
        floor="import boto3 + one client",
        unit="ms",
        ours=mine,
        floors=floors,
        goal_op="<=",
        goal=1.5,
        notes=notes,
    )


def run(*, runs: int, quick: bool) -> list[RowResult]:
    if quick:
        return [_row(name, 1, warm_up=False, site=None) for name in QUICK_HANDLERS]
    site = lambda_site()
    # A cold start is short and moves with every neighbour on the machine: twice the samples.
    runs = 2 * runs + 1
    rows = [_row(name, runs, warm_up=True, site=site) for name in HANDLERS]
    # The same rows in this venv, for anyone timing them without Lambda's layout.
    for name, row in zip(HANDLERS, rows, strict=True):
        row.notes["in this venv"] = f"{_row(name, runs, warm_up=False, site=None).ratio:.2f}x"
    # Why the layer ships its bytecode: the first handler again, with none in the layer.
    bare = site.without_bytecode()
    samples = [measure_handler(HANDLERS[0], bare)["s"] * 1000 for _ in range(3)]
    rows[0].notes["without the layer's bytecode"] = f"{statistics.median(samples):.0f} ms"
    return rows


if __name__ == "__main__":  # python -m klingflow_dev.bench.coldinit [runs] [handler ...]
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    where = lambda_site()
    for handler in sys.argv[2:] or HANDLERS:
        row = _row(handler, count, warm_up=True, site=where)
        low, high = row.spread
        ours_ms = sorted(row.ours)[len(row.ours) // 2]
        floor_ms = sorted(row.floors)[len(row.floors) // 2]
        print(
            f"{row.path:<22} {row.ratio:5.2f}x ({low:.2f}-{high:.2f})  "
            f"ours {ours_ms:.0f} ms, floor {floor_ms:.0f} ms  {row.notes}"
        )
