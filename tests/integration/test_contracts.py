"""Contract tests: each adapter against the emulator over real HTTP on loopback.

The emulator follows docs/providers.md; if an adapter and the emulator disagree on a field name, a
status word or an error body, one of these fails.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from klingflow.core.codes import ProviderErrorClass
from klingflow.core.errors import ProviderError
from klingflow.core.kinds import parse_request
from klingflow.core.states import JobStatus
from klingflow.providers.base import TaskReport, TaskSpec
from klingflow.providers.client import ProviderClient

from .emulated import KEYS, Providers


def _query(client: ProviderClient, task_id: str) -> TaskReport:
    """The task's report: every dialect here has a task to ask about."""
    report = client.query(task_id)
    assert report is not None
    return report


DIALECTS = ["apimaster", "evolink", "gateway", "kling"]
CALLING_BACK = ["evolink", "gateway", "kling"]


class Receiver:
    """A callback endpoint that records what providers post to it."""

    def __init__(self) -> None:
        self.bodies: list[Any] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/callbacks/job-1/token"
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _spec(job_id: str = "job-1", callback_url: str | None = None) -> TaskSpec:
    # Non-loopback inputs are taken on trust by the emulator (it never leaves the machine).
    request = parse_request(
        {
            "image": "https://media.example/character.png",
            "video": "https://media.example/dance.mp4",
            "character_orientation": "image",
            "mode": "std",
        }
    )
    return TaskSpec(job_id=job_id, request=request, callback_url=callback_url)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_task_goes_from_created_to_finished_with_a_fetchable_output(
    providers: Providers, dialect: str
) -> None:
    registry = providers.registry()
    client = registry.client(dialect)

    submission, _ = client.create(_spec())
    assert _query(client, submission.task_id).status is JobStatus.SUBMITTED
    providers.clock.advance(5)
    assert _query(client, submission.task_id).status is JobStatus.RUNNING
    providers.clock.advance(10)
    report = _query(client, submission.task_id)

    assert report.status is JobStatus.SUCCEEDED
    [output] = report.outputs
    download = client.adapter.download(submission.task_id, output)
    headers = client.adapter.auth_headers(KEYS[dialect]) if download.authenticated else {}
    body = httpx.get(download.url, headers=headers).content
    assert body == providers.emulator.output_bytes(dialect)


@pytest.mark.parametrize("dialect", CALLING_BACK)
def test_callbacks_parse_to_the_task_and_end_in_the_same_state_as_the_query(
    providers: Providers, dialect: str
) -> None:
    receiver = Receiver()
    try:
        client = providers.registry().client(dialect)
        submission, _ = client.create(_spec(callback_url=receiver.url))
        for step in (0, 5, 10):
            providers.clock.advance(step)
            providers.server.tick()
            providers.emulator.wait_idle()
    finally:
        receiver.stop()

    reports = [client.adapter.parse_callback(body) for body in receiver.bodies]
    assert {r.task_id for r in reports} == {submission.task_id}
    assert reports[-1].status is JobStatus.SUCCEEDED
    assert reports[-1].outputs
    if dialect == "kling":  # every status change
        assert [r.provider_status for r in reports] == ["submitted", "processing", "succeed"]
    else:  # on completion only
        assert len(reports) == 1


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_wrong_key_is_an_auth_error(providers: Providers, dialect: str) -> None:
    wrong = {
        name: dict.fromkeys(fields, "wrong-but-long-enough-for-hmac-sha256!") for name, fields in KEYS.items()
    }
    with pytest.raises(ProviderError) as caught:
        providers.registry(keys=wrong).client(dialect).create(_spec())
    assert caught.value.error_class is ProviderErrorClass.AUTH


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_rate_limit_carries_its_retry_after(providers: Providers, dialect: str) -> None:
    providers.emulator.set_faults(dialect, create_status=429, retry_after_s=7)
    with pytest.raises(ProviderError) as caught:
        providers.registry().client(dialect).create(_spec())
    assert caught.value.error_class is ProviderErrorClass.RATE_LIMITED
    assert caught.value.retry_after_s == 7.0


@pytest.mark.parametrize(
    ("dialect", "status", "code", "expected"),
    [
        ("apimaster", 402, None, ProviderErrorClass.INSUFFICIENT_BALANCE),
        ("evolink", 402, None, ProviderErrorClass.INSUFFICIENT_BALANCE),
        ("gateway", 503, None, ProviderErrorClass.PROVIDER_DOWN),
        ("kling", 429, 1102, ProviderErrorClass.INSUFFICIENT_BALANCE),
        ("kling", 429, 1303, ProviderErrorClass.CONCURRENCY_LIMIT),
        ("kling", 400, 1301, ProviderErrorClass.CONTENT_POLICY),
        ("kling", 503, 5001, ProviderErrorClass.PROVIDER_DOWN),
        ("kling", 500, 5000, ProviderErrorClass.UNKNOWN_OUTCOME),
    ],
)
def test_error_answers_map_onto_the_taxonomy(
    providers: Providers, dialect: str, status: int, code: int | None, expected: ProviderErrorClass
) -> None:
    providers.emulator.set_faults(dialect, create_status=status, create_code=code)
    with pytest.raises(ProviderError) as caught:
        providers.registry().client(dialect).create(_spec())
    assert caught.value.error_class is expected
    if expected is ProviderErrorClass.CONCURRENCY_LIMIT:
        assert caught.value.retry_after_s is not None and caught.value.retry_after_s >= 1


@pytest.mark.parametrize("dialect", ["gateway", "kling"])
def test_a_create_answered_too_late_is_an_unknown_outcome_and_the_task_is_found_by_our_id(
    providers: Providers, dialect: str
) -> None:
    providers.emulator.set_faults(dialect, hang_create_s=1.5)
    client = providers.registry(timeout_s=0.5).client(dialect)
    with pytest.raises(ProviderError) as caught:
        client.create(_spec(job_id="job-late"))
    assert caught.value.error_class is ProviderErrorClass.UNKNOWN_OUTCOME
    providers.emulator.set_faults(dialect, hang_create_s=0)
    assert _query(client, "job-late").status is JobStatus.SUBMITTED


def test_a_kling_answer_200_with_a_business_code_is_an_error(providers: Providers) -> None:
    providers.emulator.set_faults("kling", create_status=200, create_code=1303)
    with pytest.raises(ProviderError) as caught:
        providers.registry().client("kling").create(_spec())
    assert caught.value.error_class is ProviderErrorClass.CONCURRENCY_LIMIT


def test_a_failed_evolink_task_reports_its_error(providers: Providers) -> None:
    providers.emulator.set_faults("evolink", fail_tasks=True)
    client = providers.registry().client("evolink")
    submission, _ = client.create(_spec())
    providers.clock.advance(15)
    report = _query(client, submission.task_id)
    assert report.status is JobStatus.FAILED
    assert report.error_code == "generation_failed"


def test_the_kling_token_is_refreshed_before_the_provider_would_refuse_it(providers: Providers) -> None:
    client = providers.registry().client("kling")
    submission, _ = client.create(_spec())
    for _ in range(4):  # two hours of polls: the 30-minute token must be renewed along the way
        providers.clock.advance(1700)
        assert _query(client, submission.task_id).task_id == submission.task_id


def test_a_rotated_kling_secret_is_used_without_a_new_container(providers: Providers) -> None:
    keys = {name: dict(fields) for name, fields in KEYS.items()}
    client = providers.registry(keys=keys).client("kling")
    client.create(_spec(job_id="before"))
    rotated = "k-rotated-secret-that-is-32-bytes!!"
    providers.emulator.keys["kling"] = f"k-ak:{rotated}"
    keys["kling"]["secret_key"] = rotated
    submission, _ = client.create(_spec(job_id="after"))
    assert submission.task_id
