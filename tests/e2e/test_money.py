"""Money on the running sandbox, tried as a user would: real time, background event sources,
functions running side by side, the API over HTTP and the emulator's own fault knobs.

A deadline is at least 60 s, so a job outliving it is proven on an injected clock instead
(tests/integration/test_money.py: archived late, failed late, found by lookup or callback late)."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from klingflow_dev import ASSETS
from klingflow_dev.demo import TERMINAL, wait_for
from klingflow_dev.sandbox import Sandbox
from klingflow_dev.sandbox.client import ApiClient
from tests.fixtures.prices import job_usd, sandbox_options

pytestmark = pytest.mark.e2e

# The sample motion-control job (5 s at std) on gateway, the cheapest for it, at the tests' prices.
GATEWAY_JOB_USD = job_usd("gateway", "motion_control", "std", 5)


def _upload(sandbox: Sandbox, folder: str) -> dict[str, Any]:
    s3 = sandbox.client("s3")
    for name in ("character.png", "dance.mp4"):
        s3.put_object(Bucket=sandbox.bucket, Key=f"{folder}/{name}", Body=(ASSETS / name).read_bytes())
    return {
        "image": f"{folder}/character.png",
        "video": f"{folder}/dance.mp4",
        "character_orientation": "image",
        "mode": "std",
    }


def _settled(api: ApiClient, job_id: str) -> dict[str, Any] | None:
    job: dict[str, Any] = api.get_json(f"/jobs/{job_id}")
    return job if job["status"] in TERMINAL else None


def test_forty_jobs_sent_at_once_never_spend_past_a_five_dollar_day() -> None:
    with Sandbox(sandbox_options(parameters={"DailyBudgetUsd": "5"})) as sandbox:
        assert sandbox.api is not None
        request = _upload(sandbox, "incoming/forty")

        # When 40 motion-control jobs are posted at once, each by a client of its own
        def post(_: int) -> httpx.Response:
            client = ApiClient(sandbox.api.url)  # type: ignore[union-attr]
            try:
                return client.request("POST", "/jobs", request)
            finally:
                client.close()

        with ThreadPoolExecutor(max_workers=40) as pool:
            responses = list(pool.map(post, range(40)))

        # Then each is accepted or refused naming the budget
        api = ApiClient(sandbox.api.url)
        assert {r.status_code for r in responses} <= {202, 402}
        for response in responses:
            if response.status_code == 402:
                assert response.json()["error"]["code"] == "BUDGET_EXCEEDED"
        accepted = [r.json()["job_id"] for r in responses if r.status_code == 202]
        jobs = [wait_for(functools.partial(_settled, api, job_id), timeout_s=90) for job_id in accepted]
        assert all(jobs), "every accepted job ends"

        # And the archived ones settle within $5; every other one names BUDGET_EXCEEDED
        archived = [job for job in jobs if job["status"] == "ARCHIVED"]
        for job in jobs:
            if job["status"] != "ARCHIVED":
                assert (job["status"], job["error"]["code"]) == ("FAILED", "BUDGET_EXCEEDED")
        billed = sum(job["cost"]["billed_usd"] for job in archived)
        assert 0 < billed <= 5
        assert len(archived) == int(5 // GATEWAY_JOB_USD)  # all on gateway
        spend = api.get_json("/spend")
        assert spend["settled_usd"] == pytest.approx(billed)
        assert spend["reserved_usd"] == 0.0
        # And no job was paid for twice: one task created per archived job
        creates = [r for r in sandbox.emulator.requests if r[1] == "POST" and "video" in r[2]]
        assert len(creates) == len(archived)
        api.close()


def test_cancel_costs_nothing_before_sending_and_is_refused_after() -> None:
    with Sandbox(sandbox_options()) as sandbox:
        assert sandbox.api is not None
        api = ApiClient(sandbox.api.url)
        request = _upload(sandbox, "incoming/cancel")
        # Given kling refusing for now (429, code 1303), a job pinned to it waits, unsent
        sandbox.emulator.set_faults("kling", create_status=429, create_code=1303)
        waiting = api.request("POST", "/jobs", {**request, "provider": "kling"}).json()["job_id"]
        assert wait_for(
            lambda: any(a["outcome"] == "waiting" for a in api.get_json(f"/jobs/{waiting}")["attempts"]),
            timeout_s=30,
        )
        # And a job already at gateway
        sent = api.request("POST", "/jobs", request).json()["job_id"]
        assert wait_for(lambda: api.get_json(f"/jobs/{sent}")["status"] == "SUBMITTED", timeout_s=30)

        # (While a send attempt to kling is in flight the job may be at kling, so a cancel then
        # answers 409; between attempts it is cancelled. A user retries as this does.)
        before = wait_for(
            lambda: (r := api.request("POST", f"/jobs/{waiting}/cancel")).status_code == 200 and r,
            timeout_s=30,
            every_s=0.1,
        )
        assert before, "the waiting job was never between send attempts"
        after = api.request("POST", f"/jobs/{sent}/cancel")

        assert (before.status_code, before.json()["status"]) == (200, "CANCELLED")
        assert api.get_json("/spend")["committed_usd"] == pytest.approx(GATEWAY_JOB_USD)  # only the sent job
        assert after.status_code == 409
        assert after.json()["error"]["code"] == "ALREADY_AT_PROVIDER"
        done = wait_for(lambda: _settled(api, sent), timeout_s=60)
        assert done and done["status"] == "ARCHIVED"
        assert api.get_json(f"/jobs/{waiting}")["cost"].get("billed_usd") == 0.0
        api.close()


def test_sandbox_up_takes_stack_parameters_and_prints_its_endpoints_first(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "klingflow_dev.cli", "sandbox", "up", "--parameter-overrides"]
    # Then a value the template refuses is refused before anything starts
    refused = subprocess.run(
        [*command, "DailyBudgetUsd=lots"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "KLINGFLOW_HOME": str(tmp_path)},
    )
    assert refused.returncode == 2
    assert "DailyBudgetUsd='lots': must be a number" in refused.stderr

    # When it is started as a deployment would be, with sam deploy's two spellings
    process = subprocess.Popen(
        [*command, "DailyBudgetUsd=5", "ParameterKey=MaxJobCostUsd,ParameterValue=2"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "KLINGFLOW_HOME": str(tmp_path)},
    )
    try:
        assert process.stdout is not None
        endpoints = json.loads(process.stdout.readline())
        api = ApiClient(endpoints["api"])
        spend = api.get_json("/spend")
        api.close()
    finally:
        process.send_signal(signal.SIGTERM)
        stopped = process.wait(timeout=30)

    # Then its first line is its endpoints as JSON, and the functions run with those parameters
    assert endpoints["parameters"]["DailyBudgetUsd"] == "5"
    assert (spend["budget_usd"], spend["max_job_cost_usd"]) == (5, 2)
    assert stopped == 0  # SIGTERM stops it cleanly
