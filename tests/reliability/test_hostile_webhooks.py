"""Hostile webhooks: forged outcomes put on either bus by a partner, forged outcomes that reach
the webhook queue anyway (a misused klingflow role), and receivers that trickle their answer.

No receiver may hear of anything the jobs table does not back, the outcome bus may take nothing
from a partner, and a trickling receiver may hold only its own delivery, only to the deadline.
The short form runs one job per case; `make chaos` runs several.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.integration.conftest import Stack
from tests.receivers import Receiver, TricklingReceiver
from tests.reliability.conftest import CHAOS

JOBS = 4 if CHAOS else 1
TRICKLERS = 3 if CHAOS else 1
NO_SUCH_JOB = "01KZZZZZZZZZZZZZZZZZZZZZZZ"
FOREIGN = [{"role": "video", "s3_uri": "s3://attacker-bucket/evil.mp4", "bytes": 1, "sha256": "0" * 64}]
FORGERIES: dict[str, dict[str, Any]] = {
    "Job Completed": {"status": "ARCHIVED", "outputs": FOREIGN, "cost": {"billed": 0.0}},
    "Job Failed": {
        "status": "FAILED",
        "error": {"code": "PROVIDER_FAILED", "message": "made up: pay us at evil"},
    },
}
ALL = ["Job Submitted", "Job Completed", "Job Failed", "Job Timed Out", "Job Cancelled"]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.server.shutdown()


def _work_webhooks(stack: Stack) -> None:
    """Route what the buses hold, then work the webhook queue until nothing is visible in it."""
    stack.sandbox.collect_events()
    sqs = stack.sandbox.client("sqs")
    for _ in range(50):
        depth = sqs.get_queue_attributes(
            QueueUrl=stack.sandbox.names["WebhookQueue"], AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]["ApproximateNumberOfMessages"]
        if depth == "0":
            return
        stack.sandbox.step("sqs-JobOutcomes")


def _forged_heard(receiver: Receiver, stack: Stack) -> int:
    """POSTs whose content the table does not back: foreign outputs, a made-up error, an
    outcome for a job that is not in that state."""
    heard = 0
    for _, body in receiver.received:
        text = body.decode()
        payload = json.loads(body)
        job = stack.job(payload["data"]["job_id"])
        claimed = {"Job Completed": "ARCHIVED", "Job Failed": "FAILED"}.get(payload["type"])
        heard += "attacker" in text or "made up" in text or (claimed is not None and job["status"] != claimed)
    return heard


def test_forged_outcomes_never_reach_a_receiver(module_stack: Stack, receiver: Receiver) -> None:
    stack = module_stack
    stack.reset()
    jobs = [
        stack.post_job(f"incoming/forged{n}", webhook={"url": receiver.url, "events": ALL})["job_id"]
        for n in range(JOBS)
    ]
    _work_webhooks(stack)  # the real `Job Submitted`s
    real = len(receiver.received)
    partner = stack.sandbox.client("events")
    counts: Counter[str] = Counter()
    for bus in ("OutcomeBus", "EventBus"):
        for kind, detail in FORGERIES.items():
            case = f"{kind} put by a partner on the {'outcome' if bus == 'OutcomeBus' else 'request'} bus"
            counts[case] += 0
            for job_id in [*jobs, NO_SUCH_JOB]:
                entry = {
                    "Source": "klingflow",
                    "DetailType": kind,
                    "Detail": json.dumps({"job_id": job_id, "kind": "motion_control", **detail}),
                    "EventBusName": stack.sandbox.names[bus],
                }
                try:
                    taken = partner.put_events(Entries=[entry])["FailedEntryCount"] == 0
                except ClientError:
                    taken = False
                counts[case] += bus == "OutcomeBus" and taken  # the outcome bus takes nothing from a partner
            before = len(receiver.received)
            _work_webhooks(stack)
            counts[case] += len(receiver.received) - before
    counts["forged in the webhook queue (a misused role)"] = _queue_forgeries(stack, receiver, jobs)
    counts["forged content heard by the receiver"] = _forged_heard(receiver, stack)
    counts["real outcomes not heard"] = abs(real - JOBS)
    for case, failures in counts.items():
        print(f"\n{case} ({JOBS} jobs and one that does not exist): {failures} failures")
    assert set(counts.values()) == {0}


def _queue_forgeries(stack: Stack, receiver: Receiver, jobs: list[str]) -> int:
    sqs = stack.sandbox.client("sqs")
    for job_id in [*jobs, NO_SUCH_JOB]:
        for kind, detail in FORGERIES.items():
            event = {
                "id": "forged",
                "source": "klingflow",
                "detail-type": kind,
                "detail": {"job_id": job_id, **detail},
            }
            sqs.send_message(QueueUrl=stack.sandbox.names["WebhookQueue"], MessageBody=json.dumps(event))
    before = len(receiver.received)
    _work_webhooks(stack)
    retried = sqs.get_queue_attributes(
        QueueUrl=stack.sandbox.names["WebhookQueue"], AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]["ApproximateNumberOfMessagesNotVisible"]
    return len(receiver.received) - before + int(retried)


def test_a_trickling_receiver_holds_only_its_own_delivery(module_stack: Stack, receiver: Receiver) -> None:
    stack = module_stack
    stack.reset()
    with TricklingReceiver(every_s=0.1) as slow:
        held = [
            stack.post_job(f"incoming/slow{n}", webhook={"url": slow.url(), "events": ["Job Submitted"]})[
                "job_id"
            ]
            for n in range(TRICKLERS)
        ]
        prompt = [
            stack.post_job(f"incoming/prompt{n}", webhook={"url": receiver.url, "events": ["Job Submitted"]})[
                "job_id"
            ]
            for n in range(JOBS)
        ]
        _work_webhooks(stack)
        for _ in held:
            slow.finished.wait(10)
    heard = Counter(json.loads(body)["data"]["job_id"] for _, body in receiver.received)
    counts = {
        "trickled answers not cut at the deadline": sum(sent >= slow.whole_answer for sent in slow.sent)
        + abs(len(slow.sent) - TRICKLERS),
        "trickled deliveries not recorded as failed": sum(
            (stack.job(job_id)["webhook"]["last"] or {}).get("outcome") != "failed" for job_id in held
        ),
        "other jobs' webhooks not delivered exactly once": sum(heard[job_id] != 1 for job_id in prompt)
        + sum(n for job_id, n in heard.items() if job_id not in prompt),
    }
    for case, failures in counts.items():
        print(f"\n{case} ({TRICKLERS} trickling, {JOBS} prompt): {failures} failures")
    assert set(counts.values()) == {0}


# URLs read one way by urllib (or Python's IDNA 2003 codec) and another way by the delivery path.
MISREAD_URLS = [
    "https://example.com\t/",
    "https://exa\nmple.com/",
    "https://exa\rmple.com/",
    "https://hooks.example.com/\x00",
    "https://☃.net/",
    "https://ab\u200dc.com/",
    "https://[2001:4860::8888%251]/",
    "https://hooks.example.com:+8443/",
    "https://@hooks.example.com/",
]


def test_a_webhook_url_delivery_would_read_differently_is_refused(module_stack: Stack) -> None:
    stack = module_stack
    stack.reset()
    answers = [stack.post("incoming/misread", webhook={"url": url}) for url in MISREAD_URLS]
    counts = {
        "misread webhook URLs not refused with a 400 naming webhook.url": sum(
            answer.status_code != 400
            or [e["field"] for e in answer.json()["error"]["details"]] != ["webhook.url"]
            for answer in answers
        ),
        "jobs stored for them": len(stack.all_jobs()),
    }
    for case, failures in counts.items():
        print(f"\n{case} ({len(MISREAD_URLS)} URLs): {failures} failures")
    assert set(counts.values()) == {0}
