"""Per-job webhooks: each outcome the job asked for is POSTed to its URL, signed per Standard
Webhooks; a receiver that does not take it gets it again later."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from klingflow.webhooks import WebhookVerificationError, verify_webhook
from tests.integration.conftest import Stack


class Receiver:
    """A webhook receiver on loopback that answers each POST with the next status given."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.answers: list[int] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(outer.answers.pop(0) if outer.answers else 204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/klingflow"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


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
