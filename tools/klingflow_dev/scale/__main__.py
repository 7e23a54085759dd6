"""`python -m klingflow_dev.scale`: run every kind through the sandbox, write docs/scale.md.

A measurement, not a test: it reports. `--quick` runs one scenario with two jobs and writes
nothing (tests/integration/test_scale.py runs it in-process so the tool cannot rot).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from . import drive, render, report

REPO = Path(__file__).resolve().parents[3]
JOBS = 32
QUICK_JOBS = 2
# A generation as providers take it (a few minutes); callbacks and polls fall around it.
PROVIDER_LATENCY_S = 150.0


def measure(
    scenarios: Sequence[drive.Scenario],
    *,
    jobs: int,
    provider_latency_s: float = PROVIDER_LATENCY_S,
    say: Callable[[str], None] = print,
) -> report.Report:
    runs = [drive.run(s, jobs=jobs, provider_latency_s=provider_latency_s, say=say) for s in scenarios]
    return report.build(runs)


def _commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m klingflow_dev.scale", description=__doc__)
    parser.add_argument("--jobs", type=int, default=JOBS, help=f"jobs per scenario (default {JOBS})")
    parser.add_argument("--quick", action="store_true", help="one scenario, two jobs, nothing written")
    names = [s.name for s in drive.SCENARIOS]
    parser.add_argument("--only", default="", help="comma-separated scenarios: " + ",".join(names))
    parser.add_argument(
        "--latency", type=float, default=PROVIDER_LATENCY_S, help="seconds a provider task takes"
    )
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "scale.md")
    args = parser.parse_args(argv)
    wanted = args.only.split(",") if args.only else names[:1] if args.quick else names
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        parser.error(f"--only names unknown scenarios {unknown}; choose from {names}")
    jobs = QUICK_JOBS if args.quick else args.jobs
    if jobs < 2:
        parser.error("--jobs must be at least 2: a key is shared when two jobs use it")
    started = time.monotonic()
    found = measure(
        [s for s in drive.SCENARIOS if s.name in wanted],
        jobs=jobs,
        provider_latency_s=args.latency,
        say=lambda line: print(line, file=sys.stderr, flush=True),
    )
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    how = f"`python -m klingflow_dev.scale`, {time.monotonic() - started:.0f} s, commit {_commit()}"
    text = render.markdown(found, how=how, when=when, jobs=jobs, provider_latency_s=args.latency)
    print(text)
    if not args.quick and not args.only:
        args.out.write_text(text)
        print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
