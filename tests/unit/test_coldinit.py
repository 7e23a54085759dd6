"""Each handler's cold start loads only what its function uses, and builds its service without
touching the network (each case is a fresh interpreter, as a new Lambda container is)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from klingflow.providers.dialects import ADAPTERS
from klingflow_dev.bench import coldinit

# The dialects, and the body pieces only they use.
ADAPTER_MODULES = {f"klingflow.providers.{dialect}" for dialect in ADAPTERS} | {"klingflow.providers.bodies"}
# The request models of each kind, and the probe's readers and formats (archive probes its outputs).
KIND_MODULES = {f"klingflow.core.kind_{name}" for name in ("fields", "motion", "video", "omni", "element")}
PROBE_MODULES = {f"klingflow.core.probe_{part}" for part in ("reader", "images", "mp4", "webm")}
# What no handler but submit needs at cold start: the request models, intake and the probe.
SUBMIT_ONLY = {
    "klingflow.core.kinds",
    "klingflow.flows.submit",
    "klingflow.flows.accept",
    "klingflow.flows.dispatch",
    "klingflow.flows.inputs",
    "klingflow.flows.manifests",
    "klingflow.core.probe",
    "klingflow.core.media_rules",
    *KIND_MODULES,
    *PROBE_MODULES,
}
HTTP = {"httpx", "klingflow.infra.safehttp", "klingflow.infra.urlrules", "klingflow.infra.watchdog"}
STORAGE = {"klingflow.infra.storage", "klingflow.infra.multipart"}
ARCHIVING = {"klingflow.flows.archive", "klingflow.flows.archive_outputs"}
SWEEPING = {"klingflow.flows.sweep", "klingflow.flows.salvage"}
# The providers' configuration, prices, dialects and HTTP client.
REGISTRY = {f"klingflow.providers.{name}" for name in ("registry", "prices", "dialects", "client")}
NOT_LOADED = {
    # Parses one provider's callback with that provider's adapter, on the first callback only.
    "callback": SUBMIT_ONLY | HTTP | ADAPTER_MODULES | {"jwt"} | STORAGE | ARCHIVING,
    # Builds the bucket's client on the first archived job it shows, not before.
    "jobs": SUBMIT_ONLY | HTTP | ADAPTER_MODULES | REGISTRY | STORAGE | {"klingflow.flows.callback"},
    "webhook": SUBMIT_ONLY | ADAPTER_MODULES | REGISTRY | STORAGE,
    "sweeper": SUBMIT_ONLY | HTTP | ADAPTER_MODULES | STORAGE | ARCHIVING,
    "archive": SUBMIT_ONLY - {"klingflow.core.probe"} - PROBE_MODULES
    | ADAPTER_MODULES
    | SWEEPING
    | {"klingflow.flows.callback"},
    "submit": ARCHIVING | SWEEPING | {"klingflow.flows.callback", "klingflow.flows.webhook"},
}


@pytest.fixture(scope="module")
def cold() -> dict[str, dict[str, Any]]:
    return {name: coldinit.measure_handler(name) for name in NOT_LOADED}


# Powertools' batch utility loads asyncio and every event data class Powertools has (and its
# parser's pydantic models of every AWS event when pydantic is loaded first): 150-200 ms that
# `queue.handle_batch` and plain dict access do not spend. boto3 brings s3transfer and its S3
# client injections (40-90 ms): the clients are botocore's, and its parameters utility (which
# imports boto3) is replaced by `klingflow.infra.parameters`.
EVERY_HANDLER = {
    "aws_lambda_powertools.utilities.batch",
    "aws_lambda_powertools.utilities.data_classes",
    "aws_lambda_powertools.utilities.parser",
    "aws_lambda_powertools.utilities.parameters",
    "asyncio",
    "boto3",
    "s3transfer",
}


@pytest.mark.parametrize("name", sorted(NOT_LOADED))
def test_a_handler_loads_only_what_its_function_uses(cold: dict[str, dict[str, Any]], name: str) -> None:
    loaded = set(cold[name]["modules"])
    assert "klingflow.runtime" in loaded and "klingflow.infra.dynamo" in loaded
    assert not (NOT_LOADED[name] | EVERY_HANDLER) & loaded


@pytest.mark.parametrize("name", sorted(NOT_LOADED))
def test_building_a_service_makes_no_network_call(cold: dict[str, dict[str, Any]], name: str) -> None:
    assert cold[name]["connects"] == []


@pytest.mark.parametrize("name", sorted(NOT_LOADED))
def test_the_collector_resumes_once_the_service_is_built_with_the_cold_start_frozen(
    cold: dict[str, dict[str, Any]], name: str
) -> None:
    # Given a handler imported and its service built (the collector paused meanwhile)
    # Then collection is on again, and what was loaded is out of its way
    assert cold[name]["gc"]["enabled"] is True
    assert cold[name]["gc"]["frozen"] > 10_000


def test_every_dialect_is_found_under_its_own_name() -> None:
    assert {dialect: ADAPTERS[dialect].dialect for dialect in ADAPTERS} == {d: d for d in ADAPTERS}
    assert "kling" in ADAPTERS and "nope" not in ADAPTERS
    with pytest.raises(KeyError):
        ADAPTERS["nope"]


def test_a_service_that_fails_to_build_still_resumes_the_collector() -> None:
    # Given a fresh interpreter whose handler paused the collector (klingflow.infra.coldstart first)
    child = """
import gc, sys
sys.path.insert(0, sys.argv[1])
import klingflow.infra.coldstart
from klingflow import runtime
paused = not gc.isenabled()
def broken():
    raise RuntimeError("missing configuration")
service = runtime.Lazy(broken)
# When its service's build fails on the first event
try:
    service.get()
except RuntimeError:
    pass
print(paused, gc.isenabled())
"""
    done = subprocess.run(
        [sys.executable, "-c", child, str(coldinit.LAYER)], capture_output=True, text=True, check=True
    )
    # Then the collector was paused until then, and collects again (a broken container still frees)
    assert done.stdout.split() == ["True", "True"]
