"""Submission: the cheapest provider first, fail-over on outages, and never paying twice."""

from __future__ import annotations

import json

import pytest

from klingflow_dev.clock import ManualClock
from klingflow_dev.emulator import Emulator, EmulatorServer
from klingflow_dev.sandbox import Sandbox
from tests.fixtures.prices import amount, job_usd, sandbox_options
from tests.integration.conftest import SHARED, Stack


def _creates(stack: Stack, dialect: str) -> int:
    return sum(
        1
        for d, method, path, _ in stack.emulator.requests
        if d == dialect and method == "POST" and "video" in path
    )


@pytest.mark.parametrize(
    ("faults", "outcome"),
    [
        ({"create_status": 503}, "provider_down"),
        ({"create_status": 402}, "insufficient_balance"),
        ({"create_status": 429, "retry_after_s": 30}, "rate_limited"),
    ],
)
def test_when_the_cheapest_provider_cannot_take_the_job_the_next_one_gets_it(
    stack: Stack, faults: dict[str, int], outcome: str
) -> None:
    # Given the cheapest provider down, out of balance, or rate limiting
    stack.emulator.set_faults("gateway", **faults)

    # When a job is posted
    job = stack.post_job("incoming/f1")

    # Then it lands on the next cheapest, and its attempts say why
    assert job["status"] == "SUBMITTED"
    assert job["provider"] == "kling"
    assert [(a["provider"], a["outcome"]) for a in job["attempts"]] == [
        ("gateway", outcome),
        ("kling", "submitted"),
    ]


def test_when_every_provider_is_down_the_job_fails_naming_each_attempt(stack: Stack) -> None:
    # Given each provider failing in its own way
    stack.emulator.set_faults("gateway", create_status=503)
    stack.emulator.set_faults("kling", create_status=429, create_code=1303)
    stack.emulator.set_faults("apimaster", create_status=402)
    stack.emulator.set_faults("evolink", create_status=429, retry_after_s=30)

    job = stack.post_job("incoming/f2")

    # Then the job fails once, naming every attempt, and each was asked exactly once
    assert job["status"] == "FAILED"
    assert job["error"]["code"] == "ALL_PROVIDERS_FAILED"
    message = job["error"]["message"]
    for expected in (
        "gateway: provider_down",
        "kling: concurrency_limit",
        "apimaster: insufficient_balance",
        "evolink: rate_limited",
    ):
        assert expected in message
    assert [a["provider"] for a in job["attempts"]] == ["gateway", "kling", "apimaster", "evolink"]
    for dialect in ("gateway", "kling", "apimaster", "evolink"):
        assert _creates(stack, dialect) == 1
    assert stack.events_for(job["job_id"]) == ["Job Failed"]


def test_a_request_the_provider_calls_invalid_is_not_sent_anywhere_else(stack: Stack) -> None:
    stack.emulator.set_faults("gateway", create_status=400)

    job = stack.post_job("incoming/f3")

    assert job["status"] == "FAILED"
    assert job["error"]["code"] == "PROVIDER_REJECTED"
    assert _creates(stack, "apimaster") == 0


def test_a_submit_that_times_out_after_sending_is_looked_up_not_resent(stack: Stack) -> None:
    # Given a provider that takes the request and answers after the client has given up (1 s)
    stack.emulator.set_faults("gateway", hang_create_s=2.5)

    # When a job is posted
    job = stack.post_job("incoming/u1")

    # Then it was sent exactly once and found again by the id we gave it
    assert _creates(stack, "gateway") == 1
    assert job["status"] == "SUBMITTED"
    assert job["provider"] == "gateway"
    assert [a["outcome"] for a in job["attempts"]] == ["unknown_outcome", "found_by_lookup"]
    assert _creates(stack, "apimaster") == 0


def test_an_unknown_outcome_on_a_dialect_without_lookup_fails_visibly_and_is_not_resent(stack: Stack) -> None:
    stack.emulator.set_faults("apimaster", hang_create_s=2.5)

    job = stack.post_job("incoming/u2", provider="apimaster")

    assert _creates(stack, "apimaster") == 1
    assert job["status"] == "FAILED"
    assert job["error"]["code"] == "SUBMIT_OUTCOME_UNKNOWN"
    assert _creates(stack, "gateway") == 0


def test_the_same_idempotency_key_returns_the_first_job_and_submits_once(stack: Stack) -> None:
    stack.put_media("incoming/i1")
    request = stack.request("incoming/i1")
    first = stack.api.request("POST", "/jobs", request, headers={"Idempotency-Key": "order-42"})
    second = stack.api.request("POST", "/jobs", request, headers={"Idempotency-Key": "order-42"})
    assert first.json()["job_id"] == second.json()["job_id"]
    stack.sandbox.deliver_submissions()
    stack.sandbox.deliver_submissions()
    assert _creates(stack, "gateway") == 1
    assert stack.job(first.json()["job_id"])["status"] == "SUBMITTED"


def test_an_idempotency_key_reused_with_another_request_is_refused_naming_the_conflict(stack: Stack) -> None:
    # Given a job made under a key
    stack.put_media("incoming/i2")
    request = stack.request("incoming/i2")
    first = stack.api.request("POST", "/jobs", request, headers={"Idempotency-Key": "order-43"})
    assert first.status_code == 202

    # When the same key comes with a different request (the same one, keys reordered, is a retry)
    retry = stack.api.request(
        "POST", "/jobs", dict(reversed(request.items())), headers={"Idempotency-Key": "order-43"}
    )
    other = stack.api.request(
        "POST", "/jobs", {**request, "mode": "pro"}, headers={"Idempotency-Key": "order-43"}
    )

    # Then the retry gets the first job and the other request a 409 naming the job it clashes with
    assert retry.status_code == 202 and retry.json()["job_id"] == first.json()["job_id"]
    assert other.status_code == 409
    error = other.json()["error"]
    assert (error["code"], error["job_id"]) == ("IDEMPOTENCY_KEY_REUSED", first.json()["job_id"])
    assert "order-43" in error["message"]


def test_a_task_the_provider_fails_ends_failed_with_its_reason(stack: Stack) -> None:
    stack.emulator.set_faults("gateway", fail_tasks=True)
    job = stack.post_job("incoming/x1")
    stack.finish_at_provider()
    stack.sandbox.drain_archive()
    done = stack.job(job["job_id"])
    assert done["status"] == "FAILED"
    assert done["error"] == {"code": "PROVIDER_FAILED", "message": "内容审核未通过"}
    assert stack.events_for(job["job_id"]) == ["Job Submitted", "Job Failed"]


def test_a_job_past_its_deadline_is_timed_out_by_the_sweeper(stack: Stack) -> None:
    # Given a provider that never finishes and never calls back
    stack.emulator.set_faults("gateway", latency_s=10**7)
    job = stack.post_job("incoming/dl")

    # When the deadline (3 h by default) passes and the sweeper runs
    stack.clock.advance(3 * 3600 + 1)
    stack.sandbox.sweep()

    # Then the job is TIMED_OUT and announced; its task may still be charged, so it stays
    # reserved and watched until the salvage window (24 h) closes
    done = stack.job(job["job_id"])
    assert done["status"] == "TIMED_OUT"
    assert done["error"]["code"] == "DEADLINE_EXCEEDED"
    assert done["cost"]["possibly_billed"] is True
    assert done["salvage_until"] == done["deadline_at"] + 24 * 3600
    assert stack.events_for(job["job_id"]) == ["Job Submitted", "Job Timed Out"]

    # When the window closes without an answer, the job leaves the due index, still reserved
    stack.clock.advance(24 * 3600)
    stack.sandbox.sweep()
    item = stack.item(job["job_id"])
    assert "due_shard" not in item and "salvage_until" not in item
    assert item["reservation"]["state"] == "reserved"
    assert stack.events_for(job["job_id"]) == ["Job Submitted", "Job Timed Out"]


def test_a_job_requested_event_on_the_bus_becomes_a_job(stack: Stack) -> None:
    stack.put_media("incoming/e1")
    events = stack.sandbox.client("events")

    events.put_events(
        Entries=[
            {
                "Source": "com.example.orders",
                "DetailType": "Job Requested",
                "Detail": json.dumps(stack.request("incoming/e1")),
                "EventBusName": stack.sandbox.names["EventBus"],
            }
        ]
    )
    stack.sandbox.step("rule")
    assert stack.sandbox.invoker is not None
    stack.sandbox.invoker.wait_idle()

    # Then it is stored and queued, and no provider is called until the submit queue sends it
    [job] = stack.api.get_json("/jobs")["jobs"]
    assert job["status"] == "QUEUED"
    assert job["source"]["type"] == "event"
    assert _creates(stack, "gateway") == 0
    stack.sandbox.deliver_submissions()
    assert stack.job(job["job_id"])["status"] == "SUBMITTED"
    assert _creates(stack, "gateway") == 1


def test_a_task_not_yet_visible_after_a_timeout_is_looked_up_again_by_the_sweeper(stack: Stack) -> None:
    # Given a provider that answers too late and cannot find the task right away
    stack.emulator.set_faults("gateway", hang_create_s=2.5, query_status=404)
    job = stack.post_job("incoming/u3")
    assert job["status"] == "QUEUED"
    assert [a["outcome"] for a in job["attempts"]] == [
        "unknown_outcome",
        "lookup_not_found",
        "lookup_deferred",
    ]

    # When the task becomes visible and the sweeper runs after the grace period
    stack.emulator.set_faults("gateway", hang_create_s=0, query_status=None)
    stack.clock.advance(301)
    stack.sandbox.sweep()

    # Then the job found its task, and the provider was still asked to create it only once
    found = stack.job(job["job_id"])
    assert found["status"] == "SUBMITTED"
    assert found["attempts"][-1]["outcome"] == "found_by_lookup"
    assert _creates(stack, "gateway") == 1


def test_a_500_on_create_is_looked_up_and_fails_over_only_when_no_task_exists(stack: Stack) -> None:
    # A 500 may come after the provider created the task: it is looked up by our own task id,
    # and only when the provider says no such task exists does the job go elsewhere.
    stack.emulator.set_faults("gateway", create_status=500)

    job = stack.post_job("incoming/u500")

    assert [(a["provider"], a["outcome"]) for a in job["attempts"]] == [
        ("gateway", "unknown_outcome"),
        ("gateway", "lookup_not_found"),
        ("kling", "submitted"),
    ]
    assert (job["status"], job["provider"]) == ("SUBMITTED", "kling")
    assert _creates(stack, "gateway") == 1 and _creates(stack, "kling") == 1


def test_a_500_on_create_whose_task_exists_is_adopted_not_sent_elsewhere(stack: Stack) -> None:
    # Given a gateway that creates the task and then answers 504 (its own gateway timed out)
    stack.emulator.set_faults("gateway", create_status=504, create_after_fault=True)

    job = stack.post_job("incoming/u504")

    # Then the lookup finds the task: the job is on gateway, and no one else was asked
    assert [a["outcome"] for a in job["attempts"]] == ["unknown_outcome", "found_by_lookup"]
    assert (job["status"], job["provider"]) == ("SUBMITTED", "gateway")
    assert _creates(stack, "gateway") == 1 and _creates(stack, "kling") == 0


def test_a_lookup_that_cannot_be_made_does_not_fail_the_job(stack: Stack) -> None:
    # Given a submission whose outcome is unknown, and a provider whose lookups answer 503
    stack.emulator.set_faults("gateway", hang_create_s=2.5, query_status=503)
    job = stack.post_job("incoming/u503")
    assert job["status"] == "QUEUED"

    # When the sweeper tries to resolve it while the provider still cannot answer
    stack.clock.advance(301)
    stack.sandbox.sweep()

    # Then the job is still waiting to be resolved, not failed while its task may be running
    assert stack.job(job["job_id"])["status"] == "QUEUED"

    # And once lookups work, it is found
    stack.emulator.set_faults("gateway", hang_create_s=0, query_status=None)
    stack.clock.advance(600)
    stack.sandbox.sweep()
    assert stack.job(job["job_id"])["status"] == "SUBMITTED"
    assert _creates(stack, "gateway") == 1


def test_a_provider_that_keeps_failing_is_skipped_until_its_cool_down_then_probed(stack: Stack) -> None:
    # Given the cheapest provider down for three jobs in a row (the breaker's threshold)
    stack.emulator.set_faults("gateway", create_status=503)
    for index in range(3):
        assert stack.post_job(f"incoming/cb{index}")["provider"] == "kling"
    assert _creates(stack, "gateway") == 3

    # When the next job comes, the open breaker sends it straight to the next provider
    job = stack.post_job("incoming/cb3")
    assert job["provider"] == "kling"
    assert _creates(stack, "gateway") == 3
    assert (job["attempts"][0]["provider"], job["attempts"][0]["outcome"]) == ("gateway", "skipped_unhealthy")

    # And after the cool-down one job probes it; once it works again it takes jobs again
    stack.emulator.set_faults("gateway", create_status=None)
    stack.clock.advance(61)
    assert stack.post_job("incoming/cb4")["provider"] == "gateway"
    assert stack.post_job("incoming/cb5")["provider"] == "gateway"


def test_when_every_breaker_is_open_the_job_fails_without_calling_anyone(stack: Stack) -> None:
    for dialect in ("gateway", "kling", "apimaster", "evolink"):
        stack.emulator.set_faults(dialect, create_status=503)
    for index in range(3):
        assert stack.post_job(f"incoming/all{index}")["status"] == "FAILED"
    calls = len(stack.emulator.requests)

    job = stack.post_job("incoming/all3")

    assert job["status"] == "FAILED"
    assert job["error"]["code"] == "NO_HEALTHY_PROVIDER"
    assert len(stack.emulator.requests) == calls


def test_a_dialect_pointed_at_another_server_works_with_no_code_change(aws_env: None) -> None:
    # Given a second, independent server that speaks kling as docs/providers.md describes
    clock = ManualClock()
    keys = {"kling": "sandbox-kling-ak:sandbox-kling-secret-key-of-32-bytes!"}
    other = EmulatorServer(Emulator(keys=keys, clock=clock), dialects=("kling",))
    other_urls = other.start(drive=False)
    # When the deployment's ProviderOverrides points kling there (configuration only)
    options = sandbox_options(clock=clock, provider_overrides={"kling": {"base_url": other_urls["kling"]}})
    SHARED.stop()  # one sandbox per process
    sandbox = Sandbox(options).start()
    try:
        stack = Stack(sandbox, clock)
        job = stack.post_job("incoming/elsewhere", provider="kling")
        # Then the job was created on that server, and it is followed and archived from there
        assert [r for r in other.emulator.requests if r[1] == "POST"]
        assert not [r for r in sandbox.emulator.requests if r[0] == "kling"]
        clock.advance(60)
        other.tick()
        other.emulator.wait_idle()
        sandbox.drain_archive()
        assert stack.job(job["job_id"])["status"] == "ARCHIVED"
    finally:
        sandbox.stop()
        other.stop()


def test_a_missing_model_or_route_at_one_provider_falls_over_to_the_next(stack: Stack) -> None:
    stack.emulator.set_faults("gateway", create_status=404)
    job = stack.post_job("incoming/nf")
    assert job["provider"] == "kling"
    assert job["attempts"][0]["outcome"] == "not_found"


def test_a_lost_create_answer_on_evolink_is_adopted_from_the_tasks_own_callback(stack: Stack) -> None:
    # Given evolink (no lookup by our id) answering after the client has given up
    stack.emulator.set_faults("evolink", hang_create_s=2.5)
    job = stack.post_job("incoming/adopt", provider="evolink")
    assert job["status"] == "QUEUED"
    assert job["attempts"][-1]["outcome"] == "awaiting_callback"

    # When the sweeper comes by, it waits rather than fail a task that may exist
    stack.clock.advance(301)
    stack.sandbox.sweep()
    assert stack.job(job["job_id"])["status"] == "QUEUED"

    # And when the task finishes, its callback to this job's URL adopts it and it is archived
    stack.emulator.set_faults("evolink", hang_create_s=0)
    stack.finish_at_provider()
    stack.sandbox.drain_archive()
    done = stack.job(job["job_id"])
    assert done["status"] == "ARCHIVED"
    assert done["provider"] == "evolink"
    assert _creates(stack, "evolink") == 1
    assert stack.events_for(job["job_id"]) == ["Job Submitted", "Job Completed"]


def test_post_jobs_answers_before_any_provider_is_called(stack: Stack) -> None:
    # Given a provider that hangs (fail-over could outlast API Gateway's 30 s)
    stack.emulator.set_faults("gateway", hang_create_s=2.5)
    stack.put_media("incoming/fast")

    # When a job is posted
    answer = stack.api.request("POST", "/jobs", stack.request("incoming/fast"))

    # Then it is accepted, priced and queued, and no provider has been called yet
    assert answer.status_code == 202
    assert answer.json()["status"] == "QUEUED"
    assert answer.json()["job"]["cost"]["estimated_usd"] == job_usd("gateway", "motion_control", "std", 5)
    assert sum(1 for r in stack.emulator.requests if r[1] == "POST") == 0
    stack.sandbox.deliver_submissions()
    assert _creates(stack, "gateway") == 1


def test_a_quote_prices_the_job_at_every_provider_and_creates_nothing(stack: Stack) -> None:
    # Given media in the bucket and a motion-control request
    stack.put_media("incoming/q1")
    request = {k: v for k, v in stack.request("incoming/q1").items() if k != "provider"}

    # When it is quoted
    response = stack.api.request("POST", "/jobs/quote", request)

    # Then every provider's price for the probed 5 s is listed, cheapest first, in USD and its
    # own currency, and nothing is stored, sent or reserved
    assert response.status_code == 200, response.text
    quote = response.json()
    assert quote["billing"] == {"tier": "std", "seconds": 5, "upper_bound": False}
    assert [q["provider"] for q in quote["quotes"]] == ["gateway", "kling", "apimaster", "evolink"]
    gateway_amount = amount("gateway", "motion_control", "std", 5)
    assert quote["quotes"][0]["currency"] == "CNY" and quote["quotes"][0]["amount"] == gateway_amount
    assert quote["refusing"] == []
    assert quote["inputs"]["video"]["duration_s"] == 5.0
    assert stack.api.get_json("/jobs")["jobs"] == []
    assert stack.emulator.requests == []
    assert stack.spend()["reserved_usd"] == 0


def test_a_quote_names_each_refusing_provider_and_refuses_a_bad_request_like_post_jobs(stack: Stack) -> None:
    stack.put_media("incoming/q2")
    request = {**stack.request("incoming/q2"), "watermark": True}
    quote = stack.api.request("POST", "/jobs/quote", request).json()
    assert [q["provider"] for q in quote["quotes"]] == ["kling", "apimaster"]
    refusing = {r["provider"]: r["details"][0]["rule"] for r in quote["refusing"]}
    assert refusing == {"gateway": "gateway_no_watermark", "evolink": "evolink_no_watermark"}

    bad = stack.api.request("POST", "/jobs/quote", {**request, "mode": "ultra"})
    assert bad.status_code == 400
    assert bad.json()["error"]["details"][0]["field"] == "mode"
