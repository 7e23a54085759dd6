"""Elements from creation to use to deletion: the registry, the provider's own lists (seed 003's
paging), and DELETE at the provider that holds them."""

from __future__ import annotations

from tests.integration.conftest import Stack
from tests.integration.test_kinds import post, run
from tests.unit.test_probe import webm


def test_an_element_made_listed_used_and_deleted(stack: Stack) -> None:
    # Given an element made on gateway (synchronously, seed 003's /v1/elements/custom)
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
    # Given WebM element videos (seeds 000/001 take MP4, MOV or WebM), 6 s and 9 s at 1280x720
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
