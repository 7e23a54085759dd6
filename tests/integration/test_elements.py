"""Elements from creation to use to deletion: the registry, the provider's own lists (seed 003's
paging), and DELETE at the provider that holds them."""

from __future__ import annotations

from tests.integration.conftest import Stack
from tests.integration.test_kinds import post, run


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
