"""The emulator's per-request latency, and a provider client that keeps a connection for each
of the sweeper's polls in flight, over real HTTP on loopback."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from klingflow.core.kinds import JobKind
from klingflow.core.states import JobStatus
from klingflow.providers.registry import Registry, load_configs

from .emulated import KEYS, Providers

# Only a broken test waits this long: a barrier that never fills.
BARRIER_TIMEOUT_S = 20.0


def _registry(providers: Providers, *, connections: int | None = None) -> Registry:
    overrides = {name: {"base_url": url} for name, url in providers.server.base_urls.items()}
    return Registry(
        load_configs(overrides),
        lambda name: KEYS[name],
        timeout_s=30,
        clock=providers.clock,
        connections=connections,
    )


def test_every_api_request_waits_the_request_latency_and_the_knobs_do_not(providers: Providers) -> None:
    # Given a request latency set the way every knob is set, over HTTP
    waited: list[float] = []
    providers.emulator.sleep = waited.append
    base = providers.server.base_urls["apimaster"]
    answer = httpx.post(f"{base}/_emulator/faults", json={"request_latency_s": 0.2})
    assert answer.status_code == 200
    assert answer.json()["request_latency_s"] == 0.2
    task = providers.emulator.create("apimaster", {}, prefix="task_", input_url=None)

    # When a client asks about a task twice and reads the knobs once more
    registry = _registry(providers)
    reports = [registry.task_report("apimaster", task.task_id, JobKind.MOTION_CONTROL) for _ in range(2)]
    assert httpx.get(f"{base}/_emulator/faults").json()["request_latency_s"] == 0.2

    # Then each API answer came after the latency, and nothing else waited
    assert [report.status for report in reports] == [JobStatus.SUBMITTED] * 2
    assert waited == [0.2, 0.2]
    assert providers.emulator.faults_for("evolink").request_latency_s == 0.0  # per dialect


@pytest.mark.parametrize(("connections", "opened"), [(30, 30), (None, 40)])
def test_a_second_wave_of_polls_reuses_the_first_waves_connections(
    providers: Providers, connections: int | None, opened: int
) -> None:
    # Given 30 tasks, a provider that answers only when 30 queries wait on it together, and a
    # client sized for 30 calls at once (or httpx's default pool, which keeps 20 open)
    waves = threading.Barrier(30, timeout=BARRIER_TIMEOUT_S)
    connections_seen: set[str] = set()

    def answer_with_the_wave(_: float) -> None:
        connections_seen.add(threading.current_thread().name)  # the server has one per connection
        waves.wait()

    providers.emulator.sleep = answer_with_the_wave
    providers.emulator.set_faults("apimaster", request_latency_s=1.0)
    tasks = [providers.emulator.create("apimaster", {}, prefix="task_", input_url=None) for _ in range(30)]
    registry = _registry(providers, connections=connections)

    def poll(task_id: str) -> JobStatus | None:
        return registry.task_report("apimaster", task_id, JobKind.MOTION_CONTROL).status

    # When two waves of 30 polls run, 30 at once
    with ThreadPoolExecutor(max_workers=30) as pool:
        for _ in range(2):
            assert list(pool.map(poll, [task.task_id for task in tasks])) == [JobStatus.SUBMITTED] * 30

    # Then the emulator saw 30 connections in all when the client keeps them, and 10 more
    # when a default pool dropped the ones past 20 after the first wave
    assert len(connections_seen) == opened
