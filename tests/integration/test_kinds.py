"""Every job kind through the pipeline: API -> validation -> cheapest provider -> archive.

The tests price every kind at every provider (tests/fixtures/prices.py), so routing among all
four dialects can be seen for each kind.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from klingflow_dev import ASSETS
from tests.conftest import sample_event
from tests.fixtures.prices import amount, evolink_credits, flat_usd, units_amount
from tests.integration.conftest import Stack
from tests.unit.test_probe import png


def post(stack: Stack, kind: str, **changes: Any) -> Any:
    """POST the sample request of a kind, with the media it names uploaded first."""
    for key in ("incoming/character.png", "incoming/character-side.png"):
        stack.s3.put_object(Bucket=stack.bucket, Key=key, Body=(ASSETS / "character.png").read_bytes())
    stack.s3.put_object(
        Bucket=stack.bucket, Key="incoming/dance.mp4", Body=(ASSETS / "dance.mp4").read_bytes()
    )
    body = {**sample_event(f"requests/{kind}.json"), **changes}
    return stack.api.request("POST", "/jobs", {k: v for k, v in body.items() if v is not None})


def run(stack: Stack, kind: str, **changes: Any) -> dict[str, Any]:
    """Post, send, let the provider finish, deliver its callbacks, archive; the job as read back."""
    response = post(stack, kind, **changes)
    assert response.status_code == 202, response.text
    stack.sandbox.deliver_submissions()
    stack.finish_at_provider()
    stack.sandbox.sweep()  # for a dialect that never calls back
    stack.sandbox.drain_archive()
    return stack.job(response.json()["job_id"])


UNPINNED_OMNI = {"provider": None, "elements": None, "prompt": "<<<image_1>>> walks through Tokyo"}


@pytest.mark.parametrize(
    ("kind", "changes", "cheapest", "seconds", "amount"),
    [
        # 5 s at 720p with sound: gateway < evolink < kling; gateway's usage.seconds at its price
        ("text_to_video", {}, "gateway", 5, amount("gateway", "text_to_video", "std_sound", 5)),
        # 5 s at 1080p: evolink < kling < gateway; evolink settles on its own figure, its
        # credits at the credit's price
        (
            "image_to_video",
            {},
            "evolink",
            5,
            units_amount("evolink", evolink_credits("image_to_video", "pro", 5)),
        ),
        # 5 s at pro: gateway < kling
        ("omni_video", UNPINNED_OMNI, "gateway", 5, amount("gateway", "omni_video", "pro", 5)),
    ],
)
def test_each_video_kind_lands_on_its_cheapest_provider_and_is_archived(
    stack: Stack, *, kind: str, changes: dict[str, Any], cheapest: str, seconds: int, amount: float
) -> None:
    # Given the sample request of a kind (its clips reported a frame longer than asked),
    # when it runs through the pipeline
    stack.emulator.set_faults("gateway", output_seconds_over=0.041667)
    job = run(stack, kind, **changes)

    # Then it went to the cheapest provider for its tier and its video is ours, billed by the
    # provider's own figure (a clip a frame over the seconds asked for is not a second more)
    assert (job["kind"], job["status"], job["provider"]) == (kind, "ARCHIVED", cheapest)
    [output] = job["outputs"]
    assert output["bytes"] == len((ASSETS / "output-std.mp4").read_bytes())
    assert (job["cost"]["billed_seconds"], job["cost"]["provider_amount"]) == (seconds, amount)
    assert job["cost"]["billed_source"] == "provider"
    assert stack.events_for(job["job_id"]) == ["Job Submitted", "Job Completed"]
    [attempt] = job["attempts"]
    assert (attempt["provider"], attempt["outcome"]) == (cheapest, "submitted")


def test_a_custom_element_ends_with_its_element_id_in_the_job_the_result_and_the_event(stack: Stack) -> None:
    # Given an element request (evolink: 1 credit, the cheapest), when it runs
    job = run(stack, "custom_element")

    # Then the job holds the element id the provider made, with no video, at the flat price
    assert (job["status"], job["provider"]) == ("ARCHIVED", "evolink")
    element_id = job["element_id"]
    task = stack.emulator.tasks[job["provider_task_id"]]
    assert element_id == task.element_id and job["outputs"] == []
    assert job["cost"]["billed_usd"] == flat_usd("evolink", "custom_element")
    assert job["cost"].get("billed_seconds") is None
    result = json.loads(
        stack.s3.get_object(Bucket=stack.bucket, Key=f"outputs/{job['job_id']}/result.json")["Body"].read()
    )
    assert result["element_id"] == element_id
    [completed] = [e for e in stack.sandbox.collect_events() if e["detail-type"] == "Job Completed"]
    assert completed["detail"]["element_id"] == element_id
    # And evolink was sent the element body of evolink's Kling 3.0 pages, with the images as fetchable links
    [(_, _, _, sent)] = [r for r in stack.emulator.requests if r[0] == "evolink" and r[1] == "POST"]
    images = sent["model_params"]["element_image_list"]
    assert sent["model"] == "kling-custom-element"
    assert images["frontal_image"].startswith("http://127.0.0.1") and len(images["refer_images"]) == 1


def test_an_element_made_while_the_call_waits_is_archived_without_polling(stack: Stack) -> None:
    # Given an element pinned to gateway, which makes elements synchronously
    response = post(stack, "custom_element", provider="gateway")
    assert response.status_code == 202, response.text

    # When the submit queue sends it, and only the archive queue runs (no time passes, no sweep)
    stack.sandbox.deliver_submissions()
    stack.sandbox.drain_archive()

    # Then the job is archived with the element id gateway answered with
    job = stack.job(response.json()["job_id"])
    assert (job["status"], job["provider"]) == ("ARCHIVED", "gateway")
    assert job["element_id"] == job["provider_task_id"]
    assert [h["status"] for h in job["history"]] == ["QUEUED", "SUBMITTED", "SUCCEEDED", "ARCHIVED"]


def test_a_clip_length_only_one_dialect_makes_routes_there(stack: Stack) -> None:
    # Given a 7 s text-to-video: gateway and kling make 5 s or 10 s, evolink 3..15 s
    job = run(stack, "text_to_video", duration_s=7)

    # Then it lands on evolink, billed for 7 s at the 720p-with-sound tier (5.4 credits/s x 1.5)
    assert (job["status"], job["provider"]) == ("ARCHIVED", "evolink")
    assert (job["cost"]["billed_seconds"], job["cost"]["provider_amount"]) == (
        7,
        units_amount("evolink", evolink_credits("text_to_video", "std_sound", 7)),
    )


def test_options_no_provider_takes_are_refused_naming_each_providers_rule(stack: Stack) -> None:
    # Given 7 s with a camera move: evolink takes 7 s but no camera_control; the others not 7 s
    response = post(stack, "text_to_video", duration_s=7, camera_control={"type": "forward_up"})

    # Then nothing is stored or sent, and the answer says which provider refuses what
    assert response.status_code == 400
    errors = {(e["field"], e["rule"]) for e in response.json()["error"]["details"]}
    assert errors == {
        ("camera_control", "evolink_unsupported"),
        ("duration_s", "gateway_seconds"),
        ("duration_s", "kling_seconds"),
    }
    assert stack.api.get_json("/jobs")["jobs"] == []
    assert not [r for r in stack.emulator.requests if r[1] == "POST"]


@pytest.mark.parametrize(
    ("kind", "changes", "field", "rule"),
    [
        # the omni video must be 720..2160 px; dance.mp4 is 480x640
        ("omni_video", {"video": {"url": "incoming/dance.mp4"}}, "video.url.width", "video_side_px"),
        ("omni_video", {"prompt": "<<<image_2>>> dances"}, "prompt", "prompt_reference"),
        ("omni_video", {"last_frame": "incoming/character.png"}, "last_frame", "last_frame_needs_first"),
        (
            "image_to_video",
            {"image_tail": "incoming/character.png", "camera_control": {"type": "down_back"}},
            "camera_control",
            "exclusive_controls",
        ),
        (
            "image_to_video",
            {"static_mask": "incoming/mask.png"},
            "static_mask.aspect_ratio",
            "mask_aspect_ratio",
        ),
        ("custom_element", {"reference_type": "video_refer"}, "video", "video_required"),
        ("text_to_video", {"duration_s": 20}, "duration_s", "less_than_equal"),
    ],
)
def test_a_request_breaking_a_kinds_rule_is_refused_before_any_provider_call(
    stack: Stack, kind: str, changes: dict[str, Any], field: str, rule: str
) -> None:
    # Given a mask that is square while the frame (512x768) is not
    stack.s3.put_object(Bucket=stack.bucket, Key="incoming/mask.png", Body=png(512, 512))

    # When a request breaking one of its kind's rules arrives
    response = post(stack, kind, **changes)

    # Then it is refused with the field and rule, and no provider was called
    assert response.status_code == 400, response.text
    assert (field, rule) in {(e["field"], e["rule"]) for e in response.json()["error"]["details"]}
    assert not [r for r in stack.emulator.requests if r[1] == "POST"]


def test_a_provider_that_does_not_offer_the_kind_cannot_be_pinned(stack: Stack) -> None:
    response = post(stack, "text_to_video", provider="apimaster")
    assert response.status_code == 422
    assert "apimaster does not offer text_to_video" in response.json()["error"]["message"]


def test_an_omni_job_with_elements_goes_only_to_the_provider_that_holds_them(stack: Stack) -> None:
    # Given gateway failing: an omni job carrying gateway's element ids
    stack.emulator.set_faults("gateway", create_status=503)
    response = post(stack, "omni_video")
    assert response.status_code == 202, response.text
    stack.sandbox.deliver_submissions()

    # Then it is not failed over to kling, where those ids mean nothing: it waits for gateway
    job = stack.job(response.json()["job_id"])
    assert job["status"] == "QUEUED"
    assert [(a["provider"], a["outcome"]) for a in job["attempts"]] == [
        ("gateway", "provider_down"),
        ("gateway", "waiting"),
    ]
    assert not [r for r in stack.emulator.requests if r[0] == "kling" and r[1] == "POST"]


@pytest.mark.parametrize("kind", ["motion_control", "image_to_video"])
def test_an_element_made_here_is_used_where_it_is_held_without_a_pin(stack: Stack, kind: str) -> None:
    # Given an element made by evolink (the cheapest account for elements)
    made = run(stack, "custom_element")
    assert (made["status"], made["provider"]) == ("ARCHIVED", "evolink")
    element_id = made["element_id"]

    # When a job of a kind that takes elements names it, with no provider pinned
    job = run(stack, kind, provider=None, elements=[element_id], prompt="<<<element_1>>> dances")

    # Then it goes to the account holding the element and is archived there, the element sent
    # as evolink's element_list
    assert (job["status"], job["provider"]) == ("ARCHIVED", "evolink")
    [(_, _, _, sent)] = [
        r
        for r in stack.emulator.requests
        if r[0] == "evolink" and r[1] == "POST" and r[3]["model"] != "kling-custom-element"
    ]
    assert sent["model_params"]["element_list"] == [{"element_id": element_id}]


def test_an_element_is_recorded_with_its_reference_media_kept(stack: Stack) -> None:
    made = run(stack, "custom_element")

    [record] = stack.api.get_json("/elements")["elements"]
    assert (record["element_id"], record["provider"], record["name"], record["job_id"]) == (
        made["element_id"],
        "evolink",
        "Hero",
        made["job_id"],
    )
    # Kept under elements/, out of reach of incoming/'s expiry
    for key in record["media"].values():
        assert key.startswith(f"elements/{made['element_id']}/")
        assert stack.s3.head_object(Bucket=stack.bucket, Key=key)["ContentLength"] > 0


def test_a_pin_to_another_account_than_the_elements_holder_is_refused_naming_it(stack: Stack) -> None:
    element_id = run(stack, "custom_element")["element_id"]

    response = post(stack, "motion_control", provider="gateway", elements=[element_id])

    assert response.status_code == 400
    [error] = response.json()["error"]["details"]
    assert (error["field"], error["rule"]) == ("provider", "element_holder")
    assert "evolink" in error["message"]


def test_an_element_klingflow_did_not_make_needs_a_pin_and_then_goes_there(stack: Stack) -> None:
    # Given preset 146 (gateway's presets), unpinned: klingflow cannot know whose it is
    response = post(stack, "omni_video", provider=None)
    assert response.status_code == 400
    assert [(e["field"], e["rule"]) for e in response.json()["error"]["details"]] == [
        ("elements.0", "element_unknown")
    ]
    # And pinned to gateway it runs
    assert run(stack, "omni_video")["status"] == "ARCHIVED"


def test_elements_on_a_dialect_without_element_list_are_refused_naming_the_rule(stack: Stack) -> None:
    response = post(stack, "motion_control", provider="gateway", elements=["146"])

    assert response.status_code == 400
    assert {(e["field"], e["rule"]) for e in response.json()["error"]["details"]} == {
        ("elements", "gateway_no_elements")
    }


def test_a_watermark_choice_goes_where_watermark_info_is_documented(stack: Stack) -> None:
    # Given a motion-control job asking for the provider's watermark (apimaster and kling take
    # watermark_info; gateway, the cheapest, and evolink document none)
    job = run(stack, "motion_control", provider=None, watermark=True)

    # Then it is routed to the cheapest that takes it, and the body says so
    assert (job["status"], job["provider"]) == ("ARCHIVED", "kling")
    [(_, _, _, sent)] = [r for r in stack.emulator.requests if r[0] == "kling" and r[1] == "POST"]
    assert sent["watermark_info"] == {"enabled": True}


def test_cfg_scale_goes_to_a_model_that_takes_it_and_v2x_refuses_it(stack: Stack) -> None:
    # Given cfg_scale on text-to-video: gateway's Kling-V2.6 takes none (the gateway's manual: "V2.x 不支持"),
    # evolink documents none, Kling's kling-v3 does
    job = run(stack, "text_to_video", cfg_scale=0.3)
    assert (job["status"], job["provider"]) == ("ARCHIVED", "kling")
    [(_, _, _, sent)] = [r for r in stack.emulator.requests if r[0] == "kling" and r[1] == "POST"]
    assert sent["cfg_scale"] == 0.3

    # And pinned to gateway it is refused naming the rule; out of range it is refused outright
    refused = post(stack, "text_to_video", provider="gateway", cfg_scale=0.3)
    assert {(e["field"], e["rule"]) for e in refused.json()["error"]["details"]} == {
        ("cfg_scale", "gateway_no_cfg_scale")
    }
    assert [
        (e["field"], e["rule"]) for e in post(stack, "text_to_video", cfg_scale=2).json()["error"]["details"]
    ] == [("cfg_scale", "less_than_equal")]


def test_a_multi_shot_clip_is_sent_as_kling_3s_shot_sequence_and_billed_for_its_length(stack: Stack) -> None:
    # Given a 9 s text-to-video in three shots (evolink's Kling 3.0 pages' multi-shot; duration_s
    # left to the shots). gateway's Kling-V2.6 makes none, kling makes 5 or 10 s: evolink takes it
    shots = [
        {"prompt": "a city at dawn", "duration_s": 3},
        {"prompt": "a runner crosses a bridge", "duration_s": 4},
        {"prompt": "the sun over the river", "duration_s": 2},
    ]
    job = run(stack, "text_to_video", prompt=None, duration_s=None, shots=shots)

    # Then it is archived from evolink, billed 9 s, the shots sent in order with their lengths
    assert (job["status"], job["provider"], job["cost"]["billed_seconds"]) == ("ARCHIVED", "evolink", 9)
    [(_, _, _, sent)] = [r for r in stack.emulator.requests if r[0] == "evolink" and r[1] == "POST"]
    assert sent["duration"] == 9
    assert sent["model_params"]["multi_prompt"] == [
        {"index": 1, "prompt": "a city at dawn", "duration": "3"},
        {"index": 2, "prompt": "a runner crosses a bridge", "duration": "4"},
        {"index": 3, "prompt": "the sun over the river", "duration": "2"},
    ]


def test_multi_shot_rules_are_named_when_broken(stack: Stack) -> None:
    two = [{"prompt": "a", "duration_s": 3}, {"prompt": "b", "duration_s": 3}]
    cases: list[tuple[dict[str, Any], tuple[str, str]]] = [
        ({"shots": two, "duration_s": 5}, ("shots", "shots_sum")),  # 6 s of shots in a 5 s clip
        ({"shots": two[:1], "duration_s": 3}, ("shots", "shots_min")),
        # 20 s of shots: past the 15 s a clip may last
        ({"shots": [{"prompt": "a", "duration_s": 10}] * 2, "duration_s": None}, ("shots", "shots_total")),
        ({"shots": two, "duration_s": None, "provider": "gateway"}, ("shots", "gateway_no_multi_shot")),
    ]
    for changes, expected in cases:
        response = post(stack, "text_to_video", **changes)
        assert response.status_code == 400, (changes, response.text)
        assert expected in {(e["field"], e["rule"]) for e in response.json()["error"]["details"]}, changes
