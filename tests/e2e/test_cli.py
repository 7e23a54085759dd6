"""The `klingflow` command as a user runs it against `klingflow sandbox up`, found without flags."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from klingflow_dev import ASSETS
from klingflow_dev.cli import EXIT_OK, EXIT_REJECTED, main

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A running `klingflow sandbox up`, whose state file lives in this folder."""
    home = tmp_path_factory.mktemp("klingflow-home")
    process = subprocess.Popen(
        [sys.executable, "-m", "klingflow_dev.cli", "sandbox", "up"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "KLINGFLOW_HOME": str(home)},
    )
    assert process.stdout is not None
    json.loads(process.stdout.readline())  # up: its endpoints
    process.stdout.readline()  # and where the state file is
    yield home
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert not (home / "sandbox.json").exists()


def klingflow(home: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env={"KLINGFLOW_HOME": str(home)}, catch_exceptions=False)
    return result.exit_code, result.stdout


def test_submit_wait_downloads_the_video_and_verifies_it(home: Path, tmp_path: Path) -> None:
    # Given local files, when a user submits with --wait --out
    code, out = klingflow(
        home,
        "submit",
        "motion_control",
        "--image",
        str(ASSETS / "character.png"),
        "--video",
        str(ASSETS / "dance.mp4"),
        "--wait",
        "--out",
        str(tmp_path),
        "--timeout",
        "90",
        "--json",
    )

    # Then the job is archived and its video is in the folder, its sha256 checked
    assert code == EXIT_OK, out
    summary = json.loads(out)
    assert summary["job"]["status"] == "ARCHIVED"
    [saved] = summary["saved"]
    assert saved["verified"] and Path(saved["path"]).parent == tmp_path
    assert Path(saved["path"]).stat().st_size == summary["job"]["outputs"][0]["bytes"]


def test_quote_lists_prices_per_provider(home: Path) -> None:
    code, out = klingflow(
        home,
        "quote",
        "motion_control",
        "--image",
        str(ASSETS / "character.png"),
        "--video",
        str(ASSETS / "dance.mp4"),
    )
    assert code == EXIT_OK, out
    assert out.splitlines()[0] == "motion_control (std, 5 s):"
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["gateway", "kling", "apimaster", "evolink"]


def test_a_refused_request_exits_2_and_its_json_names_the_rule(home: Path) -> None:
    code, out = klingflow(
        home,
        "submit",
        "motion_control",
        "--image",
        str(ASSETS / "character.png"),
        "--video",
        str(ASSETS / "dance.mp4"),
        "--set",
        "duration_s=5",
        "--json",
    )
    assert code == EXIT_REJECTED
    details = json.loads(out)["error"]["error"]["details"]
    assert details[0]["field"] == "duration_s"


def test_jobs_list_and_spend_answer_json(home: Path) -> None:
    code, out = klingflow(home, "jobs", "list", "--json")
    assert code == EXIT_OK and "jobs" in json.loads(out)
    code, out = klingflow(home, "spend", "--json")
    assert code == EXIT_OK and "budget_usd" in json.loads(out)


def test_without_a_target_it_says_how_to_get_one(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["jobs", "list"], env={"KLINGFLOW_HOME": str(tmp_path), "KLINGFLOW_API_URL": ""}
    )
    assert result.exit_code == 1
    assert "klingflow sandbox up" in result.output
