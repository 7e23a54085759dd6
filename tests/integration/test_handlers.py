"""Every handler takes its sample event from events/ (the ones `sam local invoke -e` uses)."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import sample_event
from tests.integration.conftest import Stack


def _invoke(stack: Stack, function: str, event: dict[str, Any]) -> dict[str, Any]:
    assert stack.sandbox.invoker is not None
    return dict(stack.sandbox.invoker.invoke(function, event, source="test"))


def test_submit_takes_the_sample_api_event(stack: Stack) -> None:
    stack.put_media("incoming/example")
    answer = _invoke(stack, "SubmitFunction", sample_event("api_post_job.json"))
    assert answer["statusCode"] == 202
    job = json.loads(answer["body"])["job"]
    assert job["status"] == "QUEUED"  # validated, priced, stored: sent from the submit queue
    assert job["cost"]["estimated_usd"] > 0
    assert job["metadata"] == {"customer": "example"}
    stack.sandbox.deliver_submissions()
    assert stack.job(job["job_id"])["status"] == "SUBMITTED"


def test_submit_takes_the_sample_s3_event(stack: Stack) -> None:
    stack.put_media("incoming/example")
    manifest = {
        "image": "character.png",
        "video": "dance.mp4",
        "character_orientation": "video",
        "mode": "pro",
    }
    stack.s3.put_object(
        Bucket=stack.bucket, Key="incoming/example/job.json", Body=json.dumps(manifest).encode()
    )
    answer = _invoke(stack, "SubmitFunction", sample_event("s3_manifest_created.json"))
    [accepted] = answer["manifests"]
    assert accepted["key"] == "incoming/example/job.json"
    assert stack.job(accepted["job_id"])["request"]["mode"] == "pro"


def test_submit_takes_the_sample_eventbridge_event_once_per_event_id(stack: Stack) -> None:
    stack.put_media("incoming/example")
    first = _invoke(stack, "SubmitFunction", sample_event("eventbridge_job_requested.json"))
    again = _invoke(stack, "SubmitFunction", sample_event("eventbridge_job_requested.json"))
    assert first["job_id"] == again["job_id"]
    assert len(stack.api.get_json("/jobs")["jobs"]) == 1


def test_jobs_takes_the_sample_get_and_list_events(stack: Stack) -> None:
    missing = _invoke(stack, "JobsFunction", sample_event("api_get_job.json"))
    assert missing["statusCode"] == 404
    listed = _invoke(stack, "JobsFunction", sample_event("api_list_jobs.json"))
    assert listed["statusCode"] == 200
    assert json.loads(listed["body"]) == {"jobs": [], "next_token": None}


def test_callback_answers_the_sample_event_with_404_for_an_unknown_job(stack: Stack) -> None:
    answer = _invoke(stack, "CallbackFunction", sample_event("api_callback.json"))
    assert answer["statusCode"] == 404


def test_archive_reports_no_failure_for_a_job_it_does_not_know(stack: Stack) -> None:
    answer = _invoke(stack, "ArchiveFunction", sample_event("sqs_archive.json"))
    assert answer == {"batchItemFailures": []}


def test_sweeper_takes_the_sample_schedule_event(stack: Stack) -> None:
    answer = _invoke(stack, "SweeperFunction", sample_event("scheduler_sweep.json"))
    assert answer == {"outcomes": {}}


def test_archive_reports_only_a_record_that_really_failed_so_sqs_retries_only_that_one(
    stack: Stack,
) -> None:
    # Given a job whose stored item is damaged (archive cannot even read it), beside one that
    # needs nothing
    job = stack.post_job("incoming/b1")
    stack.table.update_item(
        Key={"pk": f"JOB#{job['job_id']}"},
        UpdateExpression="SET deadline_at = :bad",
        ExpressionAttributeValues={":bad": "not a number"},
    )
    good = sample_event("sqs_archive.json")["Records"][0]
    bad = {**good, "messageId": "m-bad", "body": json.dumps({"job_id": job["job_id"], "reason": "test"})}
    ok = {**good, "messageId": "m-ok"}

    # When archive gets both in one batch
    answer = _invoke(stack, "ArchiveFunction", {"Records": [ok, bad]})

    # Then only the failed one goes back to the queue (and, failing again, to its DLQ)
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m-bad"}]}


def test_archive_leaves_a_provider_that_cannot_answer_to_the_sweeper_not_the_dead_letter_queue(
    stack: Stack,
) -> None:
    # Given a job whose provider answers 503 when archive confirms
    job = stack.post_job("incoming/b2")
    stack.emulator.set_faults("gateway", query_status=503)
    record = sample_event("sqs_archive.json")["Records"][0]
    record = {**record, "body": json.dumps({"job_id": job["job_id"], "reason": "test"})}

    # When archive gets it
    answer = _invoke(stack, "ArchiveFunction", {"Records": [record]})

    # Then it is not a failure to redeliver: the job is untouched and still due for the sweeper
    assert answer == {"batchItemFailures": []}
    assert stack.job(job["job_id"])["status"] == "SUBMITTED"
    assert "due_at" in stack.item(job["job_id"])


def test_an_invalid_job_requested_event_is_rejected_once_and_not_retried(stack: Stack) -> None:
    event = sample_event("eventbridge_job_requested.json")
    event["detail"]["mode"] = "ultra"

    answer = _invoke(stack, "SubmitFunction", event)  # returns: Lambda will not retry it

    assert answer["rejected"]["error"]["details"][0]["field"] == "mode"
    rejected = [e for e in stack.sandbox.collect_events() if e["detail-type"] == "Job Rejected"]
    assert len(rejected) == 1


def test_submit_takes_the_sample_cancel_event(stack: Stack) -> None:
    missing = _invoke(stack, "SubmitFunction", sample_event("api_cancel_job.json"))
    assert missing["statusCode"] == 404
    assert json.loads(missing["body"])["error"]["code"] == "NOT_FOUND"


def test_jobs_takes_the_sample_spend_event(stack: Stack) -> None:
    answer = _invoke(stack, "JobsFunction", sample_event("api_get_spend.json"))
    assert answer["statusCode"] == 200
    spend = json.loads(answer["body"])
    assert (spend["day"], spend["budget_usd"], spend["reserved_usd"]) == ("2026-11-21", 100.0, 0.0)
