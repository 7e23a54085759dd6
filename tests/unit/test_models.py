"""Request validation: every broken rule names its field and its rule."""

from __future__ import annotations

import pytest

from klingflow.core.errors import RequestRejected
from klingflow.core.kind_motion import MotionControlRequest
from klingflow.core.kinds import parse_request

VALID = {
    "image": "incoming/a/character.png",
    "video": "incoming/a/dance.mp4",
    "character_orientation": "image",
    "mode": "std",
}


def motion(data: object) -> MotionControlRequest:
    request = parse_request(data)
    assert isinstance(request, MotionControlRequest)
    return request


def _rules(data: object) -> set[tuple[str, str]]:
    with pytest.raises(RequestRejected) as caught:
        parse_request(data)
    return {(e.field, e.rule) for e in caught.value.errors}


def test_a_minimal_request_takes_the_documented_defaults() -> None:
    request = parse_request(VALID)
    assert isinstance(request, MotionControlRequest)
    assert request.keep_original_sound == "yes"
    assert request.prompt is None


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"character_orientation": "sideways"}, ("character_orientation", "enum")),
        ({"mode": "1080p"}, ("mode", "enum")),
        ({"prompt": "x" * 2501}, ("prompt", "string_too_long")),
        ({"keep_original_sound": "maybe"}, ("keep_original_sound", "literal_error")),
        ({"video": "http://example.com/v.mp4"}, ("video", "https_only")),
        ({"image": ""}, ("image", "string_too_short")),
        ({"metadata": {"k": "v" * 3000}}, ("metadata", "metadata_size")),
        ({"colour": "red"}, ("colour", "extra_forbidden")),
    ],
)
def test_each_broken_rule_is_named(change: dict[str, object], expected: tuple[str, str]) -> None:
    assert _rules({**VALID, **change}) == {expected}


def test_a_prompt_of_exactly_2500_characters_is_fine() -> None:
    assert motion({**VALID, "prompt": "x" * 2500}).prompt == "x" * 2500


def test_missing_required_fields_are_all_reported_at_once() -> None:
    assert _rules({"image": "a.png"}) == {
        ("video", "missing"),
        ("character_orientation", "missing"),
        ("mode", "missing"),
    }


def test_a_boolean_for_keep_original_sound_becomes_the_dialects_string() -> None:
    assert motion({**VALID, "keep_original_sound": False}).keep_original_sound == "no"


def test_a_request_that_is_not_an_object_is_refused() -> None:
    assert _rules(["not", "an", "object"]) == {("(request)", "object_type")}


@pytest.mark.parametrize(
    "ref", ["incoming/my run/character.png", "s3://bucket/incoming/a.png", "https://cdn.example/a.png"]
)
def test_object_keys_with_spaces_and_urls_are_references(ref: str) -> None:
    assert motion({**VALID, "image": ref}).image == ref


def test_a_reference_with_another_scheme_is_refused() -> None:
    assert _rules({**VALID, "video": "ftp://host/v.mp4"}) == {("video", "media_reference")}
