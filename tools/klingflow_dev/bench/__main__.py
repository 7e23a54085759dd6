"""`python -m klingflow_dev.bench`: measure every row, print the table, write docs/performance.md.

A benchmark, not a test: it asserts nothing, it reports (and exits 1 when a row misses its goal,
so a person running it sees that at once). `--quick` is the smoke that `make test` runs so the
benchmark cannot rot: every row, tiny sizes, one run, nothing written.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from .core import RowResult

REPO = Path(__file__).resolve().parents[3]
# In the order the table shows them; each module has run(*, runs, quick) -> list[RowResult].
ROWS = ("coldinit", "callback", "archive", "sweep", "serving", "size")
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout.strip()
    return (
        f"{cpu}, {os.cpu_count()} cores{memory}; "
        f"{platform.system()} {platform.release()} {platform.machine()}; "
        f"Python {platform.python_version()}; commit {commit or 'unknown'}"
    )


def _fmt(value: float) -> str:
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def table(rows: list[RowResult]) -> str:
    lines = [
        "| path | ours (median) | floor (median) | ratio, or the figure (median) | spread | goal | within |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        low, high = row.spread
        ours = f"{_fmt(statistics.median(row.ours))} {row.unit}"
        floor = (
            f"{_fmt(statistics.median(row.floors))} {row.unit}: {row.floor}"
            if row.floors
            else row.floor or "-"
        )
        notes = "; ".join(f"{k}: {v}" for k, v in row.notes.items())
        lines.append(
            f"| {row.path} | {ours} | {floor} | {_fmt(row.ratio)} | {_fmt(low)}-{_fmt(high)} "
            f"| {row.goal_op} {_fmt(row.goal)} | {'yes' if row.within_goal else '**no**'}"
            f"{' (' + notes + ')' if notes else ''} |"
        )
    return "\n".join(lines)


def write(path: Path, rows: list[RowResult], runs: int, took_s: float) -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    block = (
        f"{START}\nMeasured {stamp} by `make bench` ({runs} interleaved runs per row, {took_s:.0f} s) on\n"
        f"{machine()}.\n\n{table(rows)}\n{END}"
    )
    text = path.read_text() if path.exists() else f"# Performance\n\n{START}\n{END}\n"
    if START not in text:
        text += f"\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    path.write_text(head + block + rest.split(END, 1)[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m klingflow_dev.bench", description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="interleaved runs per row (default 5)")
    parser.add_argument(
        "--quick", action="store_true", help="the smoke: tiny sizes, one run, nothing written"
    )
    parser.add_argument("--only", default="", help="comma-separated rows: " + ",".join(ROWS))
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "performance.md")
    args = parser.parse_args(argv)
    chosen = [name for name in ROWS if not args.only or name in args.only.split(",")]
    started = time.monotonic()
    rows: list[RowResult] = []
    for name in chosen:
        began = time.monotonic()
        module = importlib.import_module(f"{__package__}.{name}")
        found = module.run(runs=args.runs, quick=args.quick)
        rows.extend(found)
        print(f"{name}: {time.monotonic() - began:.1f} s", file=sys.stderr, flush=True)
    took = time.monotonic() - started
    print(f"on {machine()}\n")
    print(table(rows))
    if not args.quick and not args.only:
        write(args.out, rows, args.runs, took)
        print(f"\nwritten to {args.out}")
    missed = [row.path for row in rows if not row.within_goal]
    if missed:
        print(f"\noutside the goal: {', '.join(missed)}", file=sys.stderr)
    return 1 if missed and not args.quick else 0


if __name__ == "__main__":
    sys.exit(main())
