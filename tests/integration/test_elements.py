"""Elements from creation to use to deletion: the registry, the provider's own lists (the gateway's manual's
paging), and DELETE at the provider that holds them."""

from __future__ import annotations

from tests.integration.conftest import Stack
from tests.integration.test_kinds import post, run
from tests.unit.test_probe import webm


def test_an_element_made_listed_used_and_deleted(stack: Stack) -> None:
    # Given an element made on gateway (synchronously, the gateway's manual's /v1/elements/custom)
    made = run(stack, "custom_element", provider="gateway", name="Hero")
    element_id = made["element_id"]

    # Then it is in our registry and in the account's own list at the provider
    [ours] = stack.api.get_json("/elements")["elements"]
    assert (ours["element_id"], ours["provider"], ours["deleted_at"]) == (element_id, "gateway", None)
    custom = stack.api.get_json("/elements/custom?provider=gateway")
    assert [e["element_id"] for e in custom["elements"]] == [element_id]

    # And an omni job naming it, unpinned, goes to gateway and is archived
    job = run(stack, "omni_video", provider=None, elements=[element_id])
    assert (job["status"], job["provider"]) == ("ARCHIVED", "gateway")

    # When it is deleted
    response = stack.api.request("DELETE", f"/elements/{element_id}")
    assert response.status_code == 200, response.text
    assert response.json()["deleted_at_provider"] is True

    # And a retried DELETE answers the same, without asking the provider again
    calls = len(stack.emulator.requests)
    again = stack.api.request("DELETE", f"/elements/{element_id}")
    assert (again.status_code, again.json()["deleted_at_provider"]) == (200, True)
    assert len(stack.emulator.requests) == calls

    # Then the provider no longer lists it, our record says so, and a job naming it is refused
    assert stack.api.get_json("/elements/custom?provider=gateway")["elements"] == []
    assert stack.api.get_json("/elements")["elements"][0]["deleted_at"] is not None
    refused = post(stack, "omni_video", provider=None, elements=[element_id])
    assert refused.status_code == 400
    assert [(e["field"], e["rule"]) for e in refused.json()["error"]["details"]] == [
        ("elements.0", "element_deleted")
    ]


def test_presets_are_listed_as_the_provider_pages_them(stack: Stack) -> None:
    first = stack.api.get_json("/elements/presets?provider=gateway&page_num=1&page_size=2")
    second = stack.api.get_json("/elements/presets?provider=gateway&page_num=2&page_size=2")

    assert (first["page_num"], first["page_size"]) == (1, 2)
    assert [e["element_id"] for e in first["elements"]] == ["145", "146"]
    assert [e["element_id"] for e in second["elements"]] == ["147"]


def test_element_lists_refuse_bad_paging_and_providers_that_list_none(stack: Stack) -> None:
    for query, field in (
        ("provider=gateway&page_size=501", "page_size"),
        ("provider=gateway&page_num=0", "page_num"),
        ("provider=gateway&page_num=two", "page_num"),
        ("provider=evolink", "provider"),
        ("provider=nobody", "provider"),
    ):
        response = stack.api.request("GET", f"/elements/presets?{query}")
        assert response.status_code == 400, (query, response.text)
        assert response.json()["error"]["details"][0]["field"] == field


def test_an_element_on_a_dialect_without_a_delete_is_marked_and_says_it_stays(stack: Stack) -> None:
    element_id = run(stack, "custom_element")["element_id"]  # evolink documents no delete

    answer = stack.api.request("DELETE", f"/elements/{element_id}").json()

    assert (answer["provider"], answer["deleted_at_provider"]) == ("evolink", False)
    assert "stays" in answer["note"]
    assert answer["element"]["deleted_at"] is not None


def test_deleting_an_element_klingflow_does_not_know_needs_its_provider(stack: Stack) -> None:
    assert stack.api.request("DELETE", "/elements/999").status_code == 404
    # A preset cannot be deleted: the provider refuses, and the answer says so
    refused = stack.api.request("DELETE", "/elements/146?provider=gateway")
    assert refused.status_code == 502
    assert "gateway" in refused.json()["error"]["message"]


def test_a_webm_element_video_is_probed_and_accepted_and_a_long_one_refused(stack: Stack) -> None:
    # Given WebM element videos (evolink's motion-control page take MP4, MOV or WebM), 6 s and 9 s at 1280x720
    for name, seconds in (("short", 6000.0), ("long", 9000.0)):
        stack.s3.put_object(Bucket=stack.bucket, Key=f"incoming/{name}.webm", Body=webm(1280, 720, seconds))
    request = {
        "kind": "custom_element",
        "name": "Dancer",
        "description": "a dancer in a red dress",
        "reference_type": "video_refer",
    }

    # Then the 6 s one becomes an element
    made = stack.api.request("POST", "/jobs", {**request, "video": "incoming/short.webm"})
    assert made.status_code == 202, made.text
    stack.sandbox.deliver_submissions()
    stack.finish_at_provider()
    stack.sandbox.drain_archive()
    job = stack.job(made.json()["job_id"])
    assert (job["status"], job["inputs"]["video"]["format"]) == ("ARCHIVED", "webm")
    assert job["element_id"]

    # And the 9 s one is refused before any spend, naming the field and the rule
    refused = stack.api.request("POST", "/jobs", {**request, "video": "incoming/long.webm"})
    assert refused.status_code == 400
    assert [(e["field"], e["rule"]) for e in refused.json()["error"]["details"]] == [
        ("video.duration_s", "video_max_duration")
    ]


def test_a_webm_is_still_refused_where_the_seeds_want_mp4_or_mov(stack: Stack) -> None:
    stack.s3.put_object(Bucket=stack.bucket, Key="incoming/dance.webm", Body=webm(1280, 720, 5000.0))
    refused = post(stack, "motion_control", video="incoming/dance.webm")
    assert refused.status_code == 400
    assert ("video.format", "video_format") in {
        (e["field"], e["rule"]) for e in refused.json()["error"]["details"]
    }


def _creates(stack: Stack, dialect: str) -> int:
    return sum(
        1 for name, method, path, _ in stack.emulator.requests if name == dialect and path == "/v1/videos"
    )


def test_a_job_whose_element_is_deleted_while_it_is_queued_fails_unsent(stack: Stack) -> None:
    # Given an element made on gateway and an omni job naming it, accepted but not yet sent
    element_id = run(stack, "custom_element", provider="gateway", name="Hero")["element_id"]
    accepted = post(stack, "omni_video", provider=None, elements=[element_id])
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]

    # When the element is deleted before the submit queue gets to the job
    assert stack.api.request("DELETE", f"/elements/{element_id}").status_code == 200
    sent_before = _creates(stack, "gateway")
    stack.sandbox.deliver_submissions()

    # Then the job fails naming the element, nothing was sent, nothing reserved, and it says so
    job = stack.job(job_id)
    assert (job["status"], job["error"]["code"]) == ("FAILED", "ELEMENT_DELETED")
    assert element_id in job["error"]["message"]
    assert _creates(stack, "gateway") == sent_before
    assert job.get("reservation") is None
    assert stack.spend()["reserved_usd"] == 0.0
    assert stack.events_for(job_id) == ["Job Failed"]
    [failed] = [e for e in stack.sandbox.collect_events() if e["detail"].get("job_id") == job_id]
    assert failed["detail"]["error"]["code"] == "ELEMENT_DELETED"


def test_a_job_waiting_for_its_provider_whose_element_is_deleted_fails_released(stack: Stack) -> None:
    # Given a job naming a gateway element, reserved and waiting because gateway said "not now"
    element_id = run(stack, "custom_element", provider="gateway", name="Hero")["element_id"]
    stack.emulator.set_faults("gateway", create_status=429, retry_after_s=30)
    accepted = post(stack, "omni_video", provider=None, elements=[element_id])
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    stack.sandbox.deliver_submissions()
    waiting = stack.job(job_id)
    assert (waiting["status"], waiting["reservation"]["state"]) == ("QUEUED", "reserved")
    reserved = stack.spend()["reserved_usd"]
    assert reserved > 0

    # When gateway is back but the element was deleted meanwhile, and the job comes due again
    stack.emulator.set_faults("gateway", create_status=None, retry_after_s=None)
    assert stack.api.request("DELETE", f"/elements/{element_id}").status_code == 200
    sent_before = _creates(stack, "gateway")
    stack.clock.advance(31)
    stack.sandbox.sweep()
    stack.sandbox.deliver_submissions()

    # Then it fails ELEMENT_DELETED with its reservation given back, and gateway got nothing new
    job = stack.job(job_id)
    assert (job["status"], job["error"]["code"]) == ("FAILED", "ELEMENT_DELETED")
    assert (job["reservation"]["state"], job["cost"]["billed_usd"]) == ("released", 0.0)
    assert _creates(stack, "gateway") == sent_before
    assert stack.spend()["reserved_usd"] == 0.0


def test_a_job_naming_an_element_klingflow_did_not_make_fails_unsent_once_it_is_deleted(
    stack: Stack,
) -> None:
    # Given a job pinned to evolink naming element 900, made in that account without klingflow
    accepted = post(stack, "motion_control", provider="evolink", elements=["900"])
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]

    # When it is deleted through klingflow before the submit queue gets to the job
    deleted = stack.api.request("DELETE", "/elements/900?provider=evolink")
    assert deleted.status_code == 200, deleted.text
    assert (deleted.json()["provider"], deleted.json()["deleted_at_provider"]) == ("evolink", False)
    sent_before = len(stack.emulator.requests)
    stack.sandbox.deliver_submissions()

    # Then the job fails naming the element, and evolink was sent (and billed) nothing
    job = stack.job(job_id)
    assert (job["status"], job["error"]["code"]) == ("FAILED", "ELEMENT_DELETED")
    assert "900" in job["error"]["message"]
    assert len(stack.emulator.requests) == sent_before
    assert job.get("reservation") is None

    # And a new job naming it is refused, naming the field; it is not listed as one of ours
    refused = post(stack, "motion_control", provider="evolink", elements=["900"])
    assert refused.status_code == 400
    assert [(e["field"], e["rule"]) for e in refused.json()["error"]["details"]] == [
        ("elements.0", "element_deleted")
    ]
    assert stack.api.get_json("/elements")["elements"] == []

    # And a retried DELETE answers the same
    again = stack.api.request("DELETE", "/elements/900?provider=evolink")
    assert (again.status_code, again.json()["provider"]) == (200, "evolink")
