"""Specification of the job kinds: the rules a request of each kind must follow (the gateway's manual, seed
002, docs/providers.md), each broken rule named by field and rule, all of them at once."""

from __future__ import annotations

from typing import Any

import pytest

from klingflow.core.errors import RequestRejected
from klingflow.core.kind_omni import OmniVideoRequest
from klingflow.core.kind_video import TextToVideoRequest
from klingflow.core.kinds import Billing, JobKind, load_request, parse_request, with_media
from klingflow.core.vocab import PriceTier
from tests.conftest import sample_event


def sample(kind: str, **changes: Any) -> dict[str, Any]:
    body = {**sample_event(f"requests/{kind}.json"), **changes}
    return {k: v for k, v in body.items() if v is not None}


def broken(data: dict[str, Any]) -> set[tuple[str, str]]:
    with pytest.raises(RequestRejected) as caught:
        parse_request(data)
    return {(error.field, error.rule) for error in caught.value.errors}


@pytest.mark.parametrize("kind", [kind.value for kind in JobKind])
def test_every_sample_request_is_valid_and_survives_storage(kind: str) -> None:
    """Given the sample of each kind, it parses, and what the store keeps loads back the same."""
    request = parse_request(sample(kind))
    assert request.kind == kind
    assert load_request(request.model_dump(mode="json", exclude_none=True)) == request


def test_image_to_video_needs_a_frame() -> None:
    assert broken(sample("image_to_video", image=None)) == {("image", "frame_required")}


def test_a_request_without_kind_is_motion_control() -> None:
    body = sample("motion_control")
    del body["kind"]
    assert parse_request(body).kind is JobKind.MOTION_CONTROL


def test_an_unknown_kind_is_named() -> None:
    assert broken({"kind": "lip_sync"}) == {("kind", "union_tag_invalid")}
    assert broken({"kind": None}) == {("kind", "union_tag_invalid")}


def test_an_unknown_field_named_like_a_kind_is_named() -> None:
    assert broken(sample("text_to_video", motion_control=1)) == {("motion_control", "extra_forbidden")}


# ---- text and image to video ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "rule"),
    [
        ({"zoom": 5, "pan": 1}, "camera_one_axis"),
        ({}, "camera_one_axis"),
        ({"zoom": 11}, "less_than_equal"),
    ],
)
def test_a_simple_camera_move_has_exactly_one_axis_within_ten(config: dict[str, float], rule: str) -> None:
    data = sample("text_to_video", camera_control={"type": "simple", "config": config})
    assert {r for _, r in broken(data)} == {rule}


def test_camera_config_is_required_for_simple_and_refused_for_the_presets() -> None:
    assert broken(sample("text_to_video", camera_control={"type": "simple"})) == {
        ("camera_control", "camera_config_required")
    }
    preset = {"type": "down_back", "config": {"zoom": 1}}
    assert broken(sample("text_to_video", camera_control=preset)) == {
        ("camera_control", "camera_config_forbidden")
    }


def test_clip_length_is_the_union_of_the_dialects_3_to_15_seconds() -> None:
    assert parse_request(sample("text_to_video", duration_s=3)).billing({}) == Billing(PriceTier.STD_SOUND, 3)
    assert broken(sample("text_to_video", duration_s=16)) == {("duration_s", "less_than_equal")}
    assert broken(sample("text_to_video", duration_s=2)) == {("duration_s", "greater_than_equal")}


def test_sound_and_quality_set_the_price_tier() -> None:
    assert parse_request(sample("text_to_video", sound="off", mode="pro")).billing({}).tier == "pro"
    assert parse_request(sample("image_to_video", sound="on")).billing({}).tier == "pro_sound"


def test_image_to_video_reports_every_broken_combination_at_once() -> None:
    data = sample(
        "image_to_video",
        image=None,
        image_tail="incoming/end.png",
        camera_control={"type": "forward_up"},
        static_mask="incoming/mask.png",
        voice_list=[{"voice_id": "v1"}],
        prompt="<<<voice_2>>> says hello",
    )
    assert broken(data) == {
        ("static_mask", "exclusive_controls"),
        ("image", "mask_needs_image"),
        ("sound", "voices_need_sound"),
        ("prompt", "voice_reference"),
    }


def test_voices_masks_and_trajectories_have_their_documented_limits() -> None:
    three_voices = [{"voice_id": f"v{n}"} for n in range(3)]
    assert ("voice_list", "too_long") in broken(sample("image_to_video", sound=True, voice_list=three_voices))
    one_point = [{"mask": "incoming/m.png", "trajectories": [{"x": 1, "y": 2}]}]
    assert broken(sample("image_to_video", dynamic_masks=one_point)) == {
        ("dynamic_masks.0.trajectories", "too_short")
    }
    seven = [{"mask": "incoming/m.png", "trajectories": [{"x": 0, "y": 0}, {"x": 1, "y": 1}]}] * 7
    assert broken(sample("image_to_video", dynamic_masks=seven)) == {("dynamic_masks", "too_long")}


def test_masks_are_media_the_intake_probes() -> None:
    masks = [{"mask": "incoming/m.png", "trajectories": [{"x": 0, "y": 0}, {"x": 1, "y": 1}]}]
    request = parse_request(sample("image_to_video", static_mask="incoming/s.png", dynamic_masks=masks))
    assert [(m.name, m.role.value) for m in request.media()] == [
        ("image", "image"),
        ("static_mask", "mask"),
        ("dynamic_masks.0.mask", "mask"),
    ]


# ---- omni -------------------------------------------------------------------------------------


def test_omni_rules_of_gateway_manual_are_each_named() -> None:
    data = sample(
        "omni_video",
        first_frame=None,
        last_frame="incoming/end.png",
        reference_images=["incoming/a.png", "incoming/b.png"],
        elements=["1", "2", "3"],
        video={"url": "incoming/v.mp4", "refer_type": "base"},
        aspect_ratio="16:9",
        prompt="<<<video_2>>> and <<<element_4>>>",
    )
    assert broken(data) == {
        ("last_frame", "last_frame_needs_first"),
        ("last_frame", "last_frame_max_images"),
        ("elements", "omni_references"),
        ("last_frame", "edit_no_frames"),
        ("duration_s", "edit_duration"),
        ("aspect_ratio", "aspect_ratio_forbidden"),
        ("prompt", "prompt_reference"),
    }


def test_omni_text_and_first_frame_clips_come_in_5_or_10_seconds_others_3_to_10() -> None:
    assert broken(sample("omni_video", reference_images=[], elements=[], prompt="a cat", duration_s=7)) == {
        ("duration_s", "omni_plain_seconds")
    }
    assert parse_request(sample("omni_video", duration_s=7)).billing({}) == Billing(PriceTier.PRO, 7)


def test_an_omni_edit_is_billed_on_the_video_it_edits() -> None:
    request = parse_request(
        sample(
            "omni_video",
            aspect_ratio=None,
            duration_s=None,
            video={"url": "incoming/v.mp4", "refer_type": "base"},
        )
    )
    assert isinstance(request, OmniVideoRequest) and request.resolved_aspect_ratio is None
    assert request.billing({"video.url": 6.2}) == Billing(PriceTier.PRO, 7)
    assert request.billing({}) == Billing(PriceTier.PRO, 10, upper_bound=True)


# ---- custom elements --------------------------------------------------------------------------


def test_an_element_needs_the_inputs_of_its_reference_type_and_nothing_else() -> None:
    assert broken(sample("custom_element", frontal_image=None, voice_id="829")) == {
        ("frontal_image", "frontal_image_required"),
        ("voice_id", "video_refer_only"),
    }
    assert broken(sample("custom_element", reference_type="video_refer")) == {
        ("video", "video_required"),
        ("frontal_image", "image_refer_only"),
        ("refer_images", "image_refer_only"),
    }
    assert broken(sample("custom_element", name="x" * 21)) == {("name", "string_too_long")}


def test_an_element_is_billed_flat() -> None:
    assert parse_request(sample("custom_element")).billing({}) == Billing(PriceTier.FLAT, 0)


# ---- media ------------------------------------------------------------------------------------


def test_with_media_replaces_nested_media_and_keeps_everything_else() -> None:
    request = parse_request(sample("omni_video", video={"url": "incoming/v.mp4"}))
    assert isinstance(request, OmniVideoRequest)
    resolved = with_media(
        request, {"reference_images.0": "http://127.0.0.1:9/a", "video.url": "http://127.0.0.1:9/v"}
    )
    assert isinstance(resolved, OmniVideoRequest) and resolved.video is not None
    assert (resolved.reference_images, resolved.video.url) == (
        ["http://127.0.0.1:9/a"],
        "http://127.0.0.1:9/v",
    )
    assert resolved.prompt == request.prompt and resolved.elements == request.elements


def test_plain_http_media_from_a_user_is_refused_wherever_it_sits() -> None:
    assert broken(sample("omni_video", reference_images=["http://x/a.png"])) == {
        ("reference_images.0", "https_only")
    }


@pytest.mark.parametrize("kind", ["motion_control", "image_to_video", "omni_video"])
def test_elements_are_taken_by_the_kinds_the_seeds_name_and_the_prompt_may_refer_to_them(kind: str) -> None:
    # Given a request of a kind that takes elements (the Kling pages of every provider: motion control,
    # image-to-video, omni)
    body = sample(kind, elements=["146", "el_2"], prompt="<<<element_1>>> meets <<<element_2>>>")
    body.pop("reference_images", None)
    # Then it parses without a provider (the element registry finds the holder) ...
    assert parse_request({**body, "provider": None} if "provider" in body else body)
    # ... and a prompt naming an element the request lacks is refused, as are ids of odd shape
    assert {
        rule for field, rule in broken({**body, "prompt": "<<<element_3>>> dances"}) if field == "prompt"
    } & {
        "element_reference",
        "prompt_reference",  # omni names images, elements and videos under one rule
    }
    assert ("elements.0", "string_pattern_mismatch") in broken({**body, "elements": ["a b"]})
    assert ("elements", "too_long") in broken({**body, "elements": [str(n) for n in range(8)]})


def test_text_to_video_takes_no_elements() -> None:
    assert broken(sample("text_to_video", elements=["146"])) == {("elements", "extra_forbidden")}


def test_text_to_video_needs_a_prompt_unless_its_shots_carry_them() -> None:
    assert broken(sample("text_to_video", prompt=None)) == {("prompt", "missing")}
    shots = [{"prompt": "a", "duration_s": 2}, {"prompt": "b", "duration_s": 3}]
    request = parse_request(sample("text_to_video", prompt=None, duration_s=None, shots=shots))
    assert isinstance(request, TextToVideoRequest)
    assert request.duration_s == 5  # the shots' sum


# ---- numbers: every one bounded where it enters -----------------------------------------------

FORTY_ONE_DIGITS = 10**40 + 7


def _mask(*points: tuple[Any, Any]) -> dict[str, Any]:
    return {"mask": "incoming/m/mask.png", "trajectories": [{"x": x, "y": y} for x, y in points]}


def _brush(*points: tuple[Any, Any]) -> dict[str, Any]:
    return sample("image_to_video", image_tail=None, camera_control=None, dynamic_masks=[_mask(*points)])


def _refusal(data: dict[str, Any]) -> dict[str, tuple[str, str]]:
    with pytest.raises(RequestRejected) as caught:
        parse_request(data)
    return {error.field: (error.rule, error.message) for error in caught.value.errors}


def test_a_trajectory_point_is_a_pixel_of_an_image_at_most_65536_px_a_side() -> None:
    assert parse_request(_brush((0, 0), (65536, 65536)))
    refused = _refusal(_brush((FORTY_ONE_DIGITS, 1), (1, -1), (float("nan"), 2)))
    assert refused["dynamic_masks.0.trajectories.0.x"] == (
        "less_than_equal",
        "must be from 0 to 65536 px (found a number of about 41 digits)",
    )
    assert refused["dynamic_masks.0.trajectories.1.y"] == (
        "greater_than_equal",
        "must be from 0 to 65536 px (found -1)",
    )
    assert refused["dynamic_masks.0.trajectories.2.x"][0] == "finite_number"


@pytest.mark.parametrize(
    ("kind", "field", "value", "message"),
    [
        ("text_to_video", "duration_s", 16, "must be from 3 to 15 s (found 16)"),
        ("text_to_video", "cfg_scale", -0.5, "must be from 0 to 1 (found -0.5)"),
        (
            "text_to_video",
            "deadline_s",
            FORTY_ONE_DIGITS,
            "must be from 60 to 86400 s (found a number of about 41 digits)",
        ),
        ("omni_video", "duration_s", 11, "must be from 3 to 10 s (found 11)"),
        ("motion_control", "deadline_s", 59, "must be from 60 to 86400 s (found 59)"),
    ],
)
def test_a_number_out_of_its_range_is_refused_naming_the_whole_range(
    kind: str, field: str, value: Any, message: str
) -> None:
    assert _refusal(sample(kind, **{field: value}))[field][1] == message


def test_camera_axes_and_shots_name_their_range_and_nothing_is_infinite() -> None:
    camera = {"type": "simple", "config": {"zoom": FORTY_ONE_DIGITS}}
    assert _refusal(sample("text_to_video", camera_control=camera))["camera_control.config.zoom"] == (
        "less_than_equal",
        "must be from -10 to 10 (found a number of about 41 digits)",
    )
    shots = [{"prompt": "a", "duration_s": 0}, {"prompt": "b", "duration_s": 5}]
    assert _refusal(sample("text_to_video", shots=shots))["shots.0.duration_s"][1] == (
        "must be from 1 to 15 s (found 0)"
    )
    for value in (float("nan"), float("inf"), float("-inf")):
        assert _refusal(sample("text_to_video", cfg_scale=value))["cfg_scale"][0] == "finite_number"


def test_lists_and_texts_a_job_stores_are_bounded_too() -> None:
    assert ("tags", "too_long") in broken(sample("custom_element", tags=["t"] * 21))
    omni = sample("omni_video")
    assert ("reference_images", "too_long") in broken({**omni, "reference_images": ["incoming/a.png"] * 8})
    assert _refusal(sample("text_to_video", metadata={"": "x"}))["metadata"] == (
        "string_too_short",
        "key '': String should have at least 1 character",
    )
    long_url = "https://example.com/" + "a" * 2100
    assert _refusal(sample("motion_control", video=long_url))["video"][0] == "media_reference_length"
