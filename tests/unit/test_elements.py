"""Specification of the element registry: an element is used where it is held, a pin to another
account is refused naming the holder, an id klingflow did not make needs a pin."""

from __future__ import annotations

from typing import Any

import pytest

from klingflow.core.errors import ElementNotFound, RequestRejected
from klingflow.core.kinds import AnyRequest, parse_request
from klingflow.jobs.elements import DeletedElement, ElementDirectory, ElementRecord, ElementStore
from klingflow_dev.clock import ManualClock
from tests.conftest import sample_event


@pytest.fixture
def directory(table: Any, clock: ManualClock) -> ElementDirectory:
    elements = ElementStore(table)
    for element_id, provider, job_id in (
        ("el-1", "evolink", "01A"),
        ("el-2", "evolink", "01B"),
        ("g-1", "gateway", "01C"),
    ):
        elements.put(
            ElementRecord(
                element_id=element_id,
                provider=provider,
                name="Hero",
                description="a hero",
                reference_type="image_refer",
                job_id=job_id,
                created_at="2026-11-26T00:00:00Z",
            )
        )
    return ElementDirectory(elements, clock)


def motion(**changes: Any) -> AnyRequest:
    return parse_request({**sample_event("requests/motion_control.json"), **changes})


def rules_broken(directory: ElementDirectory, request: AnyRequest) -> set[tuple[str, str]]:
    with pytest.raises(RequestRejected) as caught:
        directory.place(request)
    return {(error.field, error.rule) for error in caught.value.errors}


def test_a_job_naming_elements_goes_to_the_account_that_holds_them(directory: ElementDirectory) -> None:
    placed = directory.place(motion(elements=["el-1", "el-2"]))
    assert placed.provider == "evolink"


def test_a_job_without_elements_is_left_alone(directory: ElementDirectory) -> None:
    request = motion()
    assert directory.place(request) is request


def test_a_pin_to_another_account_is_refused_naming_the_holder(directory: ElementDirectory) -> None:
    with pytest.raises(RequestRejected) as caught:
        directory.place(motion(elements=["el-1"], provider="gateway"))
    (error,) = caught.value.errors
    assert (error.field, error.rule) == ("provider", "element_holder")
    assert "evolink" in error.message


def test_an_element_klingflow_did_not_make_works_only_with_a_pin(directory: ElementDirectory) -> None:
    assert rules_broken(directory, motion(elements=["146"])) == {("elements.0", "element_unknown")}
    assert directory.place(motion(elements=["146"], provider="gateway")).provider == "gateway"


def test_elements_of_two_accounts_cannot_share_a_job(directory: ElementDirectory) -> None:
    assert rules_broken(directory, motion(elements=["el-1", "g-1"])) == {("elements", "elements_one_account")}


def test_a_deleted_element_is_refused(directory: ElementDirectory) -> None:
    directory.mark_deleted("el-1", at_provider=False)
    assert rules_broken(directory, motion(elements=["el-1"])) == {("elements.0", "element_deleted")}


def test_recording_twice_keeps_the_first_record(table: Any, directory: ElementDirectory) -> None:
    store = ElementStore(table)
    first = store.get("el-1")
    assert isinstance(first, ElementRecord)
    store.put(first.model_copy(update={"name": "Other"}))
    assert directory.get("el-1").name == "Hero"


def test_elements_page_newest_first_and_pages_end(directory: ElementDirectory) -> None:
    first = directory.page(limit=2)
    assert [e.element_id for e in first.elements] == ["g-1", "el-2"]
    assert first.next_token is not None
    second = directory.page(limit=2, next_token=first.next_token)
    assert [e.element_id for e in second.elements] == ["el-1"]


def test_a_page_token_from_elsewhere_is_refused(directory: ElementDirectory) -> None:
    with pytest.raises(RequestRejected) as caught:
        directory.page(limit=2, next_token="bm90LWEtdG9rZW4=")
    assert caught.value.errors[0].field == "next_token"


def test_an_unknown_element_is_not_found(directory: ElementDirectory) -> None:
    with pytest.raises(ElementNotFound):
        directory.get("nope")
    with pytest.raises(ElementNotFound):
        directory.mark_deleted("nope", at_provider=True)


def test_an_element_deleted_that_klingflow_did_not_make_is_refused_even_pinned(
    table: Any, directory: ElementDirectory
) -> None:
    # Given element 900, made in gateway's account without klingflow, deleted through klingflow
    directory.bury("900", "gateway", at_provider=True)

    # Then a job naming it is refused, pin or no pin, naming the field and what to do instead
    assert rules_broken(directory, motion(elements=["900"], provider="gateway")) == {
        ("elements.0", "element_deleted")
    }
    with pytest.raises(RequestRejected) as caught:
        directory.place(motion(elements=["900"]))
    (error,) = caught.value.errors
    assert "900 was deleted from gateway's account" in error.message and "another element" in error.message

    # And the tombstone is what a claim's check reads (deleted_at on ELEMENT#900), never listed
    assert table.get_item(Key={"pk": "ELEMENT#900"})["Item"]["deleted_at"] == "2026-11-21T12:00:00.000Z"
    assert "900" not in [e.element_id for e in directory.page(limit=10).elements]
    with pytest.raises(ElementNotFound):
        directory.get("900")


def test_a_tombstone_is_written_once_and_never_over_a_record(table: Any, directory: ElementDirectory) -> None:
    store = ElementStore(table)
    directory.bury("900", "gateway", at_provider=True)
    directory.bury("900", "kling", at_provider=False)  # a second DELETE, naming another account
    assert store.get("900") == DeletedElement(
        element_id="900", provider="gateway", deleted_at="2026-11-21T12:00:00.000Z", deleted_at_provider=True
    )

    directory.bury("el-1", "gateway", at_provider=True)
    kept = store.get("el-1")
    assert isinstance(kept, ElementRecord) and (kept.provider, kept.deleted_at) == ("evolink", None)
