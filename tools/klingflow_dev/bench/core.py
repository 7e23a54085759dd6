"""What every benchmark row shares: samples of our path and of its floor, taken interleaved in
one run, reduced to a median ratio with its spread.

A row measures two things on the same machine in the same minute (our path and the least work
that path could possibly do) and reports their ratio, so a slow machine or a noisy neighbour
moves both sides alike. Runs alternate ours/floor/ours/floor so drift is shared too.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RowResult:
    """One row of the table: medians of both sides, the ratio of each interleaved pair."""

    path: str
    floor: str
    unit: str
    ours: list[float]
    floors: list[float]
    # "<=": ours/floor must not exceed goal (times); ">=": ours/floor must reach it (throughput).
    goal_op: str
    goal: float
    notes: dict[str, str] = field(default_factory=dict)
    # A row whose ratio is computed differently (e.g. items read per due job) passes its own.
    ratios_override: list[float] | None = None

    @property
    def ratios(self) -> list[float]:
        if self.ratios_override is not None:
            return self.ratios_override
        return [o / f for o, f in zip(self.ours, self.floors, strict=True) if f > 0]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    @property
    def spread(self) -> tuple[float, float]:
        return min(self.ratios), max(self.ratios)

    @property
    def within_goal(self) -> bool:
        return self.ratio <= self.goal if self.goal_op == "<=" else self.ratio >= self.goal


def interleaved(
    runs: int, ours: Callable[[], float], floor: Callable[[], float]
) -> tuple[list[float], list[float]]:
    """Alternate the two measurements `runs` times (starting with the other side every run, so
    neither always goes first into a warm or cold cache)."""
    mine: list[float] = []
    floors: list[float] = []
    for run in range(runs):
        if run % 2:
            floors.append(floor())
            mine.append(ours())
        else:
            mine.append(ours())
            floors.append(floor())
    return mine, floors


def median_ms(call: Callable[[], object], count: int) -> Callable[[], float]:
    """A measurement for `interleaved`: `call` made `count` times, its median in milliseconds."""

    def measure() -> float:
        times = []
        for _ in range(count):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
        return statistics.median(times) * 1000

    return measure
