"""Test tiers: each test gets one marker saying what it needs, so `make test-fast` can pick the cheap ones.

pure: nothing outside the process (a loopback server the test starts itself is allowed).
moto: AWS mocked in-process by moto.
sandbox: the sandbox or the provider emulator on loopback.
e2e, reliability: their folders.

A test may declare its tier; otherwise it is derived from its folder, its fixtures and what its body
calls, so a new test is tiered without anyone remembering. A pure or moto test that reaches further
than its tier fails at the point it does (see `guard`).
"""

from __future__ import annotations

import functools
import inspect
import ipaddress
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from moto.core.models import MockAWS

from klingflow_dev.emulator.server import EmulatorServer
from klingflow_dev.sandbox.sandbox import Sandbox

TIERS = ("pure", "moto", "sandbox", "e2e", "reliability")


# The fixtures that start a sandbox or the emulator, and those that start moto.
SANDBOX_FIXTURES = {"stack", "module_stack", "shared_stack", "providers"}
MOTO_FIXTURES = {"table", "aws_env", "ledger", "store"}
# What a test body calls to start one itself.
SANDBOX_CALLS = ("deterministic_stack(", "Sandbox(", "EmulatorServer(")
MOTO_CALLS = ("mock_aws",)


@functools.cache
def _source(function: Callable[..., Any]) -> str:
    try:
        return inspect.getsource(function)
    except (OSError, TypeError):
        return ""


def derived_tier(item: pytest.Item) -> str:
    folder = item.path.parent.name
    if folder in ("e2e", "reliability"):
        return folder
    fixtures = set(getattr(item, "fixturenames", ()))
    source = ""
    if isinstance(item, pytest.Function):
        # The test's body and those of the fixtures it uses (a fixture may start a sandbox itself).
        definitions = item._fixtureinfo.name2fixturedefs.values()
        fixtures_used = (d.func for defs in definitions for d in defs if d.func.__module__ != __name__)
        functions = [item.function, *fixtures_used]
        source = "".join(_source(function) for function in functions)
    if fixtures & SANDBOX_FIXTURES or any(call in source for call in SANDBOX_CALLS):
        return "sandbox"
    if fixtures & MOTO_FIXTURES or any(call in source for call in MOTO_CALLS):
        return "moto"
    return "pure"


def assign(items: list[pytest.Item]) -> None:
    """Give each test its tier; a test marked with two is an error."""
    for item in items:
        declared = [name for name in TIERS if item.get_closest_marker(name) is not None]
        if len(declared) > 1:
            raise pytest.UsageError(f"{item.nodeid} is marked with more than one tier: {declared}")
        if not declared:
            item.add_marker(getattr(pytest.mark, derived_tier(item)))


def _refuse(tier: str, what: str) -> Callable[..., Any]:
    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError(f"a {tier} test {what}: mark it with the tier it needs")

    return refuse


def _is_loopback(address: Any) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    if not isinstance(host, str):
        return True  # a unix socket path (bytes) or the like
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def guard(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A pure test may not start moto; neither a pure nor a moto test may start the sandbox or the
    emulator, or connect beyond loopback."""
    node = request.node
    tier = next((name for name in ("pure", "moto") if node.get_closest_marker(name)), None)
    if tier is None:
        yield
        return
    if tier == "pure":
        monkeypatch.setattr(MockAWS, "start", _refuse(tier, "started moto"))
    monkeypatch.setattr(Sandbox, "start", _refuse(tier, "started the sandbox"))
    monkeypatch.setattr(EmulatorServer, "start", _refuse(tier, "started the emulator"))
    connect = socket.socket.connect

    def loopback_only(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
            raise AssertionError(f"a {tier} test connected to {address}: tests stay on loopback")
        connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", loopback_only)
    yield
