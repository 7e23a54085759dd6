"""The pipeline end to end through the real handlers, one deterministic step at a time."""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor

from klingflow_dev import ASSETS
from tests.fixtures.prices import amount, job_usd
from tests.integration.conftest import Stack

GATEWAY_JOB_USD = job_usd("gateway", "motion_control", "std", 5)


def test_a_manifest_dropped_in_s3_ends_archived_with_its_checksum(stack: Stack) -> None:
    # Given media and a manifest that names them relative to itself
    stack.put_media("incoming/m1")
    manifest = {
        "image": "character.png",
        "video": "dance.mp4",
        "character_orientation": "image",
        "mode": "std",
    }
    stack.s3.put_object(Bucket=stack.bucket, Key="incoming/m1/job.json", Body=json.dumps(manifest).encode())

    # When S3 notifies submit, the job is stored and queued: no provider has been called yet
    stack.sandbox.deliver_s3()
    [summary] = stack.api.get_json("/jobs")["jobs"]
    job_id = summary["job_id"]
    assert summary["status"] == "QUEUED"
    assert stack.emulator.requests == []

    # When the submit queue sends it, the provider finishes and its callback arrives
    stack.sandbox.deliver_submissions()
    summary = stack.job(job_id)
    assert summary["status"] == "SUBMITTED"
    assert summary["provider"] == "gateway"  # the cheapest for motion control at std
    stack.finish_at_provider()
    stack.sandbox.drain_archive()

    # Then the job is archived, the copy is byte-for-byte the provider's output
    job = stack.job(job_id)
    assert job["status"] == "ARCHIVED"
    [output] = job["outputs"]
    stored = stack.s3.get_object(Bucket=stack.bucket, Key=output["key"])["Body"].read()
    expected = (ASSETS / "output-std.mp4").read_bytes()
    assert output["sha256"] == hashlib.sha256(expected).hexdigest() == hashlib.sha256(stored).hexdigest()
    assert output["bytes"] == len(expected)
    assert output["duration_s"] == 5.0
    result = json.loads(
        stack.s3.get_object(Bucket=stack.bucket, Key=f"outputs/{job_id}/result.json")["Body"].read()
    )
    assert result["outputs"][0]["sha256"] == output["sha256"]
    assert job["cost"]["billed_seconds"] == 5
    gateway_amount = amount("gateway", "motion_control", "std", 5)  # its yuan a second x 5 s
    assert (job["cost"]["provider_amount"], job["cost"]["currency"]) == (gateway_amount, "CNY")
    assert job["cost"]["billed_usd"] == GATEWAY_JOB_USD
    assert [h["status"] for h in job["history"]] == ["QUEUED", "SUBMITTED", "SUCCEEDED", "ARCHIVED"]
    # And exactly one event per outcome went to the bus
    assert stack.events_for(job_id) == ["Job Submitted", "Job Completed"]


def test_an_output_larger_than_a_part_is_streamed_in_parts_and_checksummed(stack: Stack) -> None:
    # Given a provider whose output is 11 MiB (archive uploads 8 MiB parts)
    stack.emulator.set_faults("gateway", output_bytes=11 * 1024 * 1024)
    job = stack.post_job("incoming/big")

    # When it finishes and is archived
    stack.finish_at_provider()
    stack.sandbox.drain_archive()

    # Then the stored object is the provider's bytes, uploaded as a two-part multipart upload
    [output] = stack.job(job["job_id"])["outputs"]
    expected = stack.emulator.output_bytes("gateway")
    assert output["bytes"] == len(expected) == 11 * 1024 * 1024
    assert output["sha256"] == hashlib.sha256(expected).hexdigest()
    assert output["duration_s"] == 5.0  # still a playable MP4: padding is a `free` box
    etag = stack.s3.head_object(Bucket=stack.bucket, Key=output["key"])["ETag"]
    assert etag.strip('"').endswith("-2")


def test_the_read_api_gives_presigned_links_to_outputs(stack: Stack) -> None:
    job = stack.post_job("incoming/links")
    stack.finish_at_provider()
    stack.sandbox.drain_archive()
    done = stack.job(job["job_id"])
    [output] = done["outputs"]
    assert "X-Amz-Signature" in output["url"]
    assert output["url"].split("?")[0].endswith(output["key"])
    assert "X-Amz-Signature" in done["result_url"]


def test_a_job_on_apimaster_which_never_calls_back_is_finished_by_the_sweeper(stack: Stack) -> None:
    # Given a job pinned to the dialect without callbacks
    job = stack.post_job("incoming/a1", provider="apimaster")
    assert job["status"] == "SUBMITTED"

    # When the provider finishes, nothing calls back; the sweeper polls, archive copies
    stack.finish_at_provider()
    assert stack.emulator.callbacks_sent == []
    stack.sandbox.sweep()
    stack.sandbox.drain_archive()

    # Then the job is archived through the authenticated /content endpoint
    done = stack.job(job["job_id"])
    assert done["status"] == "ARCHIVED"
    assert stack.fetched_content(done["provider_task_id"])
    assert [h["by"] for h in done["history"]][-2:] == ["archive", "archive"]
    assert stack.events_for(job["job_id"]) == ["Job Submitted", "Job Completed"]


def test_duplicated_and_reordered_callbacks_change_nothing(stack: Stack) -> None:
    # Given a provider that sends every callback three times
    stack.emulator.set_faults("gateway", duplicate_callbacks=2)
    job = stack.post_job("incoming/d1")
    stack.finish_at_provider()
    stack.sandbox.drain_archive()
    assert stack.job(job["job_id"])["status"] == "ARCHIVED"
    delivered = [c for c in stack.emulator.callbacks_sent if c[1] == "completed"]
    assert len(delivered) == 3 and all(status == 200 for _, _, status in delivered)
    before = stack.item(job["job_id"])

    # When the completion and an older "processing" callback arrive again, late and out of order
    url = stack.callback_url(job["job_id"])
    task_id = job["provider_task_id"]
    for status in ("completed", "processing", "pending"):
        answer = stack.api.request(
            "POST", url.removeprefix(stack.api.base_url), {"id": task_id, "status": status}, signed=False
        )
        assert answer.status_code == 200
    stack.sandbox.drain_archive()

    # Then the stored job is exactly as it was, and no second outcome was announced
    assert stack.item(job["job_id"]) == before
    assert stack.events_for(job["job_id"]) == ["Job Submitted", "Job Completed"]


def test_a_processing_hint_after_completion_is_ignored_before_archive(stack: Stack) -> None:
    # Given a provider whose callbacks arrive newest first
    job = stack.post_job("incoming/r1")
    url = stack.callback_url(job["job_id"]).removeprefix(stack.api.base_url)
    task = {"id": job["provider_task_id"]}

    # When "completed" arrives, then the stale "processing"
    assert stack.api.request("POST", url, {**task, "status": "completed"}, signed=False).status_code == 200
    after_completed = stack.item(job["job_id"])
    assert stack.api.request("POST", url, {**task, "status": "processing"}, signed=False).status_code == 200

    # Then the stale hint wrote nothing and the job did not go back to RUNNING
    assert stack.item(job["job_id"]) == after_completed
    assert after_completed["hint_status"] == "SUCCEEDED"
    assert after_completed["status"] == "SUBMITTED"


def test_a_callback_with_a_wrong_token_gets_404_and_writes_nothing(stack: Stack) -> None:
    # Given a submitted job
    job = stack.post_job("incoming/t1")
    before = stack.item(job["job_id"])
    good = stack.callback_url(job["job_id"]).removeprefix(stack.api.base_url)
    forged = good.rsplit("/", 1)[0] + "/not-the-token"

    # When somebody posts a completion with a wrong token, or for a job that does not exist
    completed = {
        "id": job["provider_task_id"],
        "status": "completed",
        "video_url": "https://evil.example/x.mp4",
    }
    wrong_token = stack.api.request("POST", forged, completed, signed=False)
    unknown_job = stack.api.request(
        "POST", "/callbacks/01JD0000000000000000000000/x", completed, signed=False
    )

    # Then both get the same 404, nothing is written and nothing is queued for archive
    assert wrong_token.status_code == unknown_job.status_code == 404
    assert wrong_token.json() == unknown_job.json()
    assert stack.item(job["job_id"]) == before
    stack.sandbox.drain_archive()
    assert stack.item(job["job_id"]) == before


def test_the_read_api_refuses_unsigned_requests(stack: Stack) -> None:
    assert stack.api.request("GET", "/jobs", signed=False).status_code == 403
    assert stack.api.request("POST", "/jobs", {}, signed=False).status_code == 403


def test_outputs_that_failed_to_copy_are_re_enqueued_by_the_sweeper_until_archived(stack: Stack) -> None:
    # Given a provider whose download breaks off halfway
    stack.emulator.set_faults("gateway", truncate_downloads=True)
    job = stack.post_job("incoming/tr")
    stack.finish_at_provider()

    # When archive tries: the copy fails, the message goes back, the job waits as SUCCEEDED
    stack.sandbox.drain_archive()
    assert stack.job(job["job_id"])["status"] == "SUCCEEDED"
    assert stack.s3.list_multipart_uploads(Bucket=stack.bucket).get("Uploads", []) == []

    # And once downloads work again, the sweeper re-enqueues the stalled job
    stack.emulator.set_faults("gateway", truncate_downloads=False)
    # (the failed message is still invisible on the queue: the sweeper's copy is what arrives)
    stack.clock.advance(31)
    stack.sandbox.sweep()
    stack.sandbox.drain_archive()

    # Then it is archived, whole
    done = stack.job(job["job_id"])
    assert done["status"] == "ARCHIVED"
    assert done["outputs"][0]["sha256"] == hashlib.sha256(stack.emulator.output_bytes("gateway")).hexdigest()
    assert stack.events_for(job["job_id"]) == ["Job Submitted", "Job Completed"]


def test_a_provider_that_fails_to_answer_a_poll_is_asked_again_later_not_at_once(stack: Stack) -> None:
    # Given an apimaster job whose provider answers polls with 503
    job = stack.post_job("incoming/bo", provider="apimaster")
    stack.emulator.set_faults("apimaster", query_status=503)
    stack.clock.advance(5)

    # When the sweeper polls
    stack.sandbox.sweep()

    # Then the job is still active, its poll counted and its next poll pushed into the future
    item = stack.item(job["job_id"])
    now = int(stack.clock.now().timestamp())
    assert item["status"] == "SUBMITTED"
    assert item["polls"] == 1
    assert item["due_at"] > now
    queries = [r for r in stack.emulator.requests if r[0] == "apimaster" and r[1] == "GET"]
    stack.sandbox.sweep()  # not due yet: no second poll
    assert [r for r in stack.emulator.requests if r[0] == "apimaster" and r[1] == "GET"] == queries


def test_a_manifest_whose_key_needs_url_encoding_is_found(stack: Stack) -> None:
    # Given a folder and manifest name with spaces (S3 events carry them as "+")
    stack.put_media("incoming/my run")
    manifest = {
        "image": "character.png",
        "video": "dance.mp4",
        "character_orientation": "image",
        "mode": "std",
    }
    stack.s3.put_object(
        Bucket=stack.bucket, Key="incoming/my run/the job.json", Body=json.dumps(manifest).encode()
    )

    stack.deliver_manifests()

    [job] = stack.api.get_json("/jobs")["jobs"]
    assert job["status"] == "SUBMITTED"
    assert job["source"]["ref"] == f"s3://{stack.bucket}/incoming/my run/the job.json"


def test_a_job_that_finishes_just_before_its_deadline_is_archived_not_timed_out(stack: Stack) -> None:
    # Given an apimaster job whose provider finishes 100 s before the 3 h deadline
    stack.emulator.set_faults("apimaster", latency_s=3 * 3600 - 100)
    job = stack.post_job("incoming/late", provider="apimaster")

    # When the sweeper first looks after the deadline has passed
    stack.clock.advance(3 * 3600 + 5)
    stack.sandbox.sweep()
    stack.sandbox.drain_archive()

    # Then the finished, paid-for output is archived
    assert stack.job(job["job_id"])["status"] == "ARCHIVED"


def test_an_output_link_on_a_host_not_allowed_is_not_fetched_and_the_job_keeps_its_place(
    stack: Stack,
) -> None:
    # Given a gateway whose output links point at a host outside its download allowlist
    stack.emulator.set_faults("gateway", output_host="localhost")
    job = stack.post_job("incoming/host")
    stack.finish_at_provider()

    # When archive gets the job
    stack.sandbox.drain_archive()

    # Then nothing was downloaded, and the paid job waits (SUCCEEDED) for a retry, saying why
    assert not any(path.startswith("/files/") for _, _, path, _ in stack.emulator.requests)
    waiting = stack.job(job["job_id"])
    assert waiting["status"] == "SUCCEEDED"
    assert waiting["archive_error"]["code"] == "OUTPUT_HOST_NOT_ALLOWED"
    assert "'localhost' is not in the allowlist" in waiting["archive_error"]["message"]
    assert "download_hosts" in waiting["archive_error"]["message"]

    # When nobody allows the host by the job's deadline (3 h)
    stack.clock.advance(3 * 3600)
    stack.sandbox.sweep()
    stack.sandbox.drain_archive()
    stack.sandbox.sweep()

    # Then it fails then, naming the host (not a day later), settled as paid, nothing dead-lettered
    done = stack.job(job["job_id"])
    assert (done["status"], done["error"]["code"]) == ("FAILED", "OUTPUT_HOST_NOT_ALLOWED")
    assert done["cost"]["billed_usd"] == GATEWAY_JOB_USD
    dlq = stack.sandbox.client("sqs").get_queue_attributes(
        QueueUrl=stack.sandbox.names["ArchiveDLQ"], AttributeNames=["ApproximateNumberOfMessages"]
    )
    assert dlq["Attributes"]["ApproximateNumberOfMessages"] == "0"


def test_two_deliveries_of_one_job_at_once_download_its_output_once(stack: Stack) -> None:
    # Given a finished job whose output is slow to download, and its archive message twice
    stack.emulator.set_faults("gateway", download_delay_s=1.5)
    job = stack.post_job("incoming/twice")
    stack.finish_at_provider()
    record = {
        "messageId": "m",
        "receiptHandle": "r",
        "body": json.dumps({"job_id": job["job_id"], "reason": "test"}),
        "attributes": {},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:archive",
        "awsRegion": "us-east-1",
    }
    invoker = stack.sandbox.invoker
    assert invoker is not None

    # When two archive containers get them at the same moment
    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = list(
            pool.map(
                lambda _: invoker.invoke("ArchiveFunction", {"Records": [record]}, source="test"), range(2)
            )
        )

    # Then one copied it and the other stood aside: one download, one archived job
    assert answers == [{"batchItemFailures": []}] * 2
    downloads = [path for _, method, path, _ in stack.emulator.requests if path.startswith("/files/")]
    assert len(downloads) == 1
    assert stack.job(job["job_id"])["status"] == "ARCHIVED"


def test_an_apimaster_link_on_another_host_falls_back_to_its_content_endpoint(stack: Stack) -> None:
    stack.emulator.set_faults("apimaster", output_host="localhost")
    job = stack.post_job("incoming/host2", provider="apimaster")
    stack.finish_at_provider()
    stack.sandbox.sweep()
    stack.sandbox.drain_archive()
    done = stack.job(job["job_id"])
    assert done["status"] == "ARCHIVED"
    assert stack.fetched_content(done["provider_task_id"])
