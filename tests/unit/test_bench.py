"""The benchmark's smoke: every row runs at tiny sizes, so `make bench` cannot rot.

It asserts that each row measured something on both sides, not how fast: timing belongs to
`make bench`, on a quiet machine.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from klingflow_dev.bench import __main__ as bench
from tests.conftest import REPO

# Its subprocess starts a sandbox, which the tier hook cannot see.
pytestmark = pytest.mark.sandbox

# One or more table lines start with each of these: the rows.
EXPECTED = (
    "cold init",
    "callback ack",
    "archive throughput",
    "items read per sweep",
    "one sweep of",
    "sandbox request",
)


def test_every_row_runs_and_reports_both_sides() -> None:
    # when the smoke runs (in its own process: the callback row starts a sandbox of its own)
    done = subprocess.run(
        [sys.executable, "-m", "klingflow_dev.bench", "--quick"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )

    # then it exits cleanly and prints one table line per path, each with a ratio
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    paths = [line.split(" | ")[0].removeprefix("| ") for line in lines[1:]]
    for expected in EXPECTED:
        assert any(path.startswith(expected) for path in paths), (expected, paths)
    for line in lines[1:]:
        ratio = line.split(" | ")[3]
        assert float(ratio) > 0, line
    assert bench.ROWS  # every row module named is importable (checked by running them above)
