"""Per-job webhooks: each outcome the job asked for is POSTed to its URL, signed per Standard
Webhooks; a receiver that does not take it gets it again later."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from klingflow.flows.webhook import WebhookVerificationError, verify_webhook
from tests.integration.conftest import Stack
from tests.receivers import Receiver, TricklingReceiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.server.shutdown()


def _secret(stack: Stack) -> str:
    secrets = stack.sandbox.client("secretsmanager")
    return str(secrets.get_secret_value(SecretId=stack.sandbox.names["WebhookSigningSecret"])["SecretString"])


def _deliver(stack: Stack) -> None:
    stack.sandbox.collect_events()  # the bus has routed every event by now
    for _ in range(5):
        stack.sandbox.step("sqs-JobOutcomes")


def test_a_jobs_outcome_is_posted_signed_to_its_webhook(stack: Stack, receiver: Receiver) -> None:
    # Given a job asking for its completion and its submission at a loopback receiver
    job = stack.post_job(
        "incoming/wh1", webhook={"url": receiver.url, "events": ["Job Submitted", "Job Completed"]}
    )

    # When it runs to the end and the webhook queue is worked
    stack.finish_at_provider()
    stack.sandbox.drain_archive()
    _deliver(stack)

    # Then both outcomes arrived, each signed so that verify_webhook accepts it
    assert [json.loads(body)["type"] for _, body in receiver.received] == ["Job Submitted", "Job Completed"]
    headers, body = receiver.received[-1]
    payload = verify_webhook(body, headers, _secret(stack), now=stack.clock.now().timestamp())
    assert payload["data"]["job_id"] == job["job_id"] and payload["data"]["status"] == "ARCHIVED"
    assert headers["webhook-signature"].startswith("v1,")
    # And a forged or altered body does not verify
    with pytest.raises(WebhookVerificationError):
        verify_webhook(
            body.replace(b"ARCHIVED", b"FAILED"), headers, _secret(stack), now=stack.clock.now().timestamp()
        )


def test_a_receiver_that_fails_gets_the_webhook_again_later(stack: Stack, receiver: Receiver) -> None:
    # Given a receiver that answers 500 the first time
    receiver.answers = [500]
    stack.post_job("incoming/wh2", webhook={"url": receiver.url, "events": ["Job Submitted"]})

    # When the queue is worked
    _deliver(stack)

    # Then it was tried once and the message waits, hidden, for its backoff (not deleted)
    assert len(receiver.received) == 1
    sqs = stack.sandbox.client("sqs")
    attributes = sqs.get_queue_attributes(
        QueueUrl=stack.sandbox.names["WebhookQueue"], AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "1"


def test_a_job_without_a_webhook_sends_nothing_and_a_bad_webhook_url_is_refused(
    stack: Stack, receiver: Receiver
) -> None:
    stack.post_job("incoming/wh3")
    _deliver(stack)
    assert receiver.received == []

    response = stack.post("incoming/wh4", webhook={"url": "http://example.com/hook"})
    assert response.status_code == 400
    assert [(e["field"], e["rule"]) for e in response.json()["error"]["details"]] == [
        ("webhook.url", "webhook_https")
    ]


FORGED_OUTPUTS = [
    {"role": "video", "s3_uri": "s3://attacker-bucket/evil.mp4", "bytes": 1, "sha256": "0" * 64}
]


def _forged(stack: Stack, bus: str, kind: str, job_id: str) -> dict[str, Any]:
    detail = {"job_id": job_id, "kind": "motion_control", "status": "ARCHIVED", "outputs": FORGED_OUTPUTS}
    return {
        "Source": "klingflow",
        "DetailType": kind,
        "Detail": json.dumps(detail),
        "EventBusName": stack.sandbox.names[bus],
    }


def test_a_partner_cannot_put_an_outcome_on_the_outcome_bus_nor_reach_a_webhook_from_the_request_bus(
    stack: Stack, receiver: Receiver
) -> None:
    # Given a job that asked for its completion, still running, and a partner allowed to put
    # events (the sandbox's callers outside klingflow's functions)
    job = stack.post_job("incoming/wh5", webhook={"url": receiver.url, "events": ["Job Completed"]})
    partner = stack.sandbox.client("events")

    # When the partner puts a forged Job Completed (and a Job Requested) on the outcome bus,
    # then the bus's policy refuses both
    for kind in ("Job Completed", "Job Requested"):
        with pytest.raises(ClientError, match="AccessDeniedException"):
            partner.put_events(Entries=[_forged(stack, "OutcomeBus", kind, job["job_id"])])

    # And when it puts the same Job Completed on the request bus, which takes it
    answer = partner.put_events(Entries=[_forged(stack, "EventBus", "Job Completed", job["job_id"])])
    assert answer["FailedEntryCount"] == 0
    _deliver(stack)
    stack.sandbox.step("rule")

    # Then no receiver heard of it, and the job is as it was
    assert receiver.received == []
    assert stack.job(job["job_id"])["status"] == "SUBMITTED"
    assert stack.sandbox.bus_policy.refused and all(
        "sandbox-partner" in refusal for refusal in stack.sandbox.bus_policy.refused
    )


def test_a_forged_outcome_that_reaches_the_webhook_queue_anyway_is_not_sent(
    stack: Stack, receiver: Receiver
) -> None:
    # Given a running job, and a forged Job Completed that got into the webhook queue (as one
    # put on the outcome bus by a misused klingflow role would)
    job = stack.post_job(
        "incoming/wh6", webhook={"url": receiver.url, "events": ["Job Completed", "Job Failed"]}
    )
    sqs = stack.sandbox.client("sqs")
    for kind, job_id in (("Job Completed", job["job_id"]), ("Job Failed", "01NOSUCHJOB0000000000000000")):
        event = {
            "id": "forged",
            "source": "klingflow",
            "detail-type": kind,
            "detail": {
                "job_id": job_id,
                "outputs": FORGED_OUTPUTS,
                "error": {"code": "X", "message": "made up"},
            },
        }
        sqs.send_message(QueueUrl=stack.sandbox.names["WebhookQueue"], MessageBody=json.dumps(event))

    # When the queue is worked
    _deliver(stack)

    # Then nothing was sent, nothing is retried, and the job shows no try
    assert receiver.received == []
    depth = sqs.get_queue_attributes(
        QueueUrl=stack.sandbox.names["WebhookQueue"],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert depth == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}
    assert stack.job(job["job_id"])["webhook"]["attempts"] == 0


def test_the_job_shows_how_its_webhook_deliveries_went(stack: Stack, receiver: Receiver) -> None:
    # Given a receiver that refuses the first try
    receiver.answers = [503]
    job = stack.post_job("incoming/wh7", webhook={"url": receiver.url, "events": ["Job Submitted"]})
    assert stack.job(job["job_id"])["webhook"] == {
        "url": receiver.url,
        "attempts": 0,
        "delivered": [],
        "last": None,
        "next_try_at": None,
    }

    # When it is tried
    _deliver(stack)

    # Then GET /jobs/{id} says so: one try, failed with 503, and when the next one is due
    shown = stack.job(job["job_id"])["webhook"]
    assert (shown["attempts"], shown["delivered"], shown["last"]["outcome"]) == (1, [], "failed")
    assert shown["last"]["status_code"] == 503 and shown["next_try_at"] > shown["last"]["at"]


def test_a_webhook_url_klingflow_would_never_deliver_to_is_refused_when_the_job_is_posted(
    stack: Stack,
) -> None:
    for url, rule in (
        ("https://169.254.169.254/latest/meta-data/", "webhook_public_host"),
        ("https://hooks.internal/x", "webhook_public_host"),
        ("https://user:pw@hooks.example.com/x", "webhook_userinfo"),
        # urllib reads it as exa-mple.com; the delivery path could never send it
        ("https://exa\nmple.com/x", "webhook_url_characters"),
    ):
        response = stack.post("incoming/wh8", webhook={"url": url})
        assert response.status_code == 400
        assert [(e["field"], e["rule"]) for e in response.json()["error"]["details"]] == [
            ("webhook.url", rule)
        ]


def test_a_trickling_receiver_holds_only_its_own_delivery_and_only_to_the_deadline(
    stack: Stack, receiver: Receiver
) -> None:
    # Given two jobs: one whose receiver answers a byte every 100 ms (its answer would take 7 s,
    # each byte well inside any per-read timeout), one whose receiver answers at once
    with TricklingReceiver(every_s=0.1) as slow:
        held = stack.post_job("incoming/wh9", webhook={"url": slow.url(), "events": ["Job Submitted"]})
        prompt = stack.post_job("incoming/wh10", webhook={"url": receiver.url, "events": ["Job Submitted"]})

        # When the webhook queue is worked (one message per invocation)
        _deliver(stack)
        assert slow.finished.wait(10)

    # Then the trickling receiver was cut off at the sandbox's 2 s deadline, mid-answer, its
    # webhook waiting for a later try; the other job's webhook was delivered, once
    assert slow.requests == 1 and slow.sent[0] < slow.whole_answer
    shown = stack.job(held["job_id"])["webhook"]
    assert shown["last"]["outcome"] == "failed" and "did not answer within 2 s" in shown["last"]["detail"]
    assert [json.loads(body)["data"]["job_id"] for _, body in receiver.received] == [prompt["job_id"]]
    assert stack.job(prompt["job_id"])["webhook"]["delivered"] == ["Job Submitted"]
