"""the providers' documented own example bodies round-trip through each adapter."""

from __future__ import annotations

import jwt
import pytest

from klingflow.core.codes import ProviderErrorClass
from klingflow.core.errors import ProviderError
from klingflow.core.kinds import Billing, JobKind, parse_request
from klingflow.core.states import JobStatus
from klingflow.core.vocab import PriceTier
from klingflow.providers.apimaster import ApimasterAdapter
from klingflow.providers.base import TaskSpec, Usage, UsageUnit
from klingflow.providers.evolink import EvolinkAdapter
from klingflow.providers.gateway import GatewayAdapter
from klingflow.providers.kling import KlingAdapter
from klingflow_dev.clock import ManualClock


def _spec(**changes: object) -> TaskSpec:
    # The request as a provider gets it: media are the URLs it fetches.
    request = parse_request(
        {
            "image": "https://example.com/person.jpg",
            "video": "https://example.com/dance.mp4",
            "character_orientation": "video",
            "mode": "pro",
            "prompt": "在舞台上表演",
            "keep_original_sound": "yes",
            **changes,
        }
    )
    return TaskSpec(
        job_id="01JOB",
        request=request,
        callback_url="https://api.example/callbacks/01JOB/t",
        billing=Billing(PriceTier.PRO, 8),  # a 7.4 s reference video
    )


def test_gateway_motion_control_body_matches_gateway_manual() -> None:
    call = GatewayAdapter("https://gw.example").create(_spec())
    assert (call.method, call.path) == ("POST", "/v1/videos")
    # the gateway's manual, "带提示词的动作控制", plus the callback and our own task id
    assert call.json == {
        "model": "Kling-V2.6",
        "action_control": True,
        "image_url": "https://example.com/person.jpg",
        "video_url": "https://example.com/dance.mp4",
        "mode": "pro",
        "character_orientation": "video",
        "prompt": "在舞台上表演",
        "keep_original_sound": "yes",
        "callback_url": "https://api.example/callbacks/01JOB/t",
        "external_task_id": "01JOB",
    }


def test_gateway_parses_the_seed_responses() -> None:
    adapter = GatewayAdapter("https://gw.example")
    created = adapter.parse_create(
        {
            "id": "task_abc123",
            "status": "pending",
            "created_at": "2025-01-13T10:00:00.000000Z",
            "model": "Kling-V2.6",
        }
    )
    assert created.task_id == "task_abc123"
    done = adapter.parse_task(
        {
            "id": "task_abc123",
            "status": "completed",
            "created_at": "2025-01-13T10:00:00.000000Z",
            "completed_at": "2025-01-13T10:03:00.000000Z",
            "model": "Kling-V2.6",
            "video_url": "https://example.com/output.mp4",
            "usage": {"seconds": 5.0, "video_count": 1, "size": "1920*1080"},
            "raw_response": {},
        }
    )
    assert done.status is JobStatus.SUCCEEDED
    assert done.outputs[0].url == "https://example.com/output.mp4"
    # usage.seconds is gateway's own figure of what it billed
    assert done.usage == Usage(5.0, UsageUnit.SECONDS)
    failed = adapter.parse_task(
        {"id": "task_abc123", "status": "failed", "model": "Kling-V2.6", "error": "内容审核未通过"}
    )
    assert (failed.status, failed.error_message) == (JobStatus.FAILED, "内容审核未通过")
    assert adapter.parse_task({"id": "t", "status": "processing"}).status is JobStatus.RUNNING
    assert adapter.parse_task({"id": "t", "status": "pending"}).status is JobStatus.SUBMITTED


def test_apimaster_body_and_responses_match_apimaster_page() -> None:
    adapter = ApimasterAdapter("https://apimaster.ai/v1")
    call = adapter.create(_spec(prompt=None, keep_original_sound="no"))
    assert (call.method, call.path) == ("POST", "/videos/generations")
    assert call.json == {
        "model": "kling-v3-motion-control",
        "image_url": "https://example.com/person.jpg",
        "video_url": "https://example.com/dance.mp4",
        "character_orientation": "video",
        "mode": "pro",
        "keep_original_sound": "no",
        "watermark_info": {"enabled": False},
        "duration": 8,  # 7.4 s rounded up: only the pre-charge estimate
    }
    assert adapter.parse_create(
        {"code": 200, "data": [{"status": "submitted", "task_id": "task_xxxxxxxx"}]}
    ).task_id == ("task_xxxxxxxx")
    done = adapter.parse_task(
        {"id": "task_xxxxxxxx", "status": "completed", "url": "https://cdn.example/v.mp4"}
    )
    assert done.status is JobStatus.SUCCEEDED
    assert adapter.download("task_xxxxxxxx", done.outputs[0]).url == "https://cdn.example/v.mp4"


def test_an_apimaster_proxy_url_is_fetched_through_the_content_endpoint_with_the_key() -> None:
    adapter = ApimasterAdapter("https://apimaster.ai/v1")
    done = adapter.parse_task(
        {"id": "task_1", "status": "completed", "url": "https://apimaster.ai/proxy/abc"}
    )
    download = adapter.download("task_1", done.outputs[0])
    assert download.url == "https://apimaster.ai/v1/videos/task_1/content"
    assert download.authenticated


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, ProviderErrorClass.INVALID_REQUEST),
        (401, ProviderErrorClass.AUTH),
        (402, ProviderErrorClass.INSUFFICIENT_BALANCE),
        (429, ProviderErrorClass.RATE_LIMITED),
        (503, ProviderErrorClass.PROVIDER_DOWN),
        (504, ProviderErrorClass.UNKNOWN_OUTCOME),
    ],
)
def test_apimaster_error_codes_map_onto_the_taxonomy(status: int, expected: ProviderErrorClass) -> None:
    error = ApimasterAdapter("https://apimaster.ai/v1").classify(
        status, {"code": status, "message": "m"}, {"Retry-After": "7"}
    )
    assert error.error_class is expected
    assert error.retry_after_s == 7.0


def test_an_unknown_status_word_moves_nothing() -> None:
    assert GatewayAdapter("https://gw").parse_task({"id": "t", "status": "weird"}).status is None


def test_evolink_motion_control_body_follows_providers_md() -> None:
    call = EvolinkAdapter("https://api.evolink.ai/v1").create(_spec())
    assert (call.method, call.path) == ("POST", "/videos/generations")
    assert call.json == {
        "model": "kling-v3-motion-control",
        "prompt": "在舞台上表演",
        "image_urls": ["https://example.com/person.jpg"],
        "video_urls": ["https://example.com/dance.mp4"],
        "quality": "1080p",
        "model_params": {"character_orientation": "video", "keep_original_sound": "yes"},
        "callback_url": "https://api.example/callbacks/01JOB/t",
    }


def test_evolink_parses_the_seed_create_response_and_a_finished_task() -> None:
    adapter = EvolinkAdapter("https://api.evolink.ai/v1")
    created = adapter.parse_create(
        {
            "created": 1739500000,
            "id": "task-video-xxxxxxxx",
            "model": "kling-custom-element",
            "object": "video.generation.task",
            "progress": 0,
            "status": "pending",
            "task_info": {"estimated_time": 600, "can_cancel": True},
            "usage": {"credits_reserved": 1, "billing_rule": "per_call"},
        }
    )
    assert created.task_id == "task-video-xxxxxxxx"
    # What evolink set aside for the task, the most it will charge: the reservation follows it
    assert created.reserved == Usage(1.0, UsageUnit.UNITS)
    assert adapter.parse_create({"id": "task-2", "usage": {"billing_rule": "per_call"}}).reserved is None
    assert adapter.query("task-video-xxxxxxxx").path == "/tasks/task-video-xxxxxxxx"
    done = adapter.parse_task(
        {"id": "task-video-1", "status": "completed", "progress": 100, "results": ["https://cdn/x.mp4"]}
    )
    assert (done.status, done.outputs[0].url) == (JobStatus.SUCCEEDED, "https://cdn/x.mp4")
    failed = adapter.parse_task(
        {"id": "t", "status": "failed", "error": {"code": "content_moderation", "message": "no"}}
    )
    assert (failed.status, failed.error_code, failed.error_message) == (
        JobStatus.FAILED,
        "content_moderation",
        "no",
    )
    assert adapter.parse_task({"id": "t", "status": "cancelled"}).status is JobStatus.CANCELLED
    moderation = adapter.classify(400, {"error": {"code": "content_policy_violation", "message": "m"}}, {})
    assert moderation.error_class is ProviderErrorClass.CONTENT_POLICY


def test_kling_motion_control_body_and_answers_follow_providers_md() -> None:
    adapter = KlingAdapter("https://api-singapore.klingai.com")
    call = adapter.create(_spec())
    assert (call.method, call.path) == ("POST", "/v1/videos/motion-control")
    assert call.json is not None
    assert call.json["model_name"] == "kling-v3"
    assert call.json["external_task_id"] == "01JOB"
    assert {
        "image_url",
        "video_url",
        "character_orientation",
        "mode",
        "keep_original_sound",
        "watermark_info",
        "callback_url",
        "prompt",
    } <= set(call.json)
    created = adapter.parse_create(
        {
            "code": 0,
            "message": "SUCCEED",
            "request_id": "r",
            "data": {
                "task_id": "8612",
                "task_status": "submitted",
                "task_info": {"external_task_id": "01JOB"},
                "created_at": 1722769557708,
                "updated_at": 1722769557708,
            },
        }
    )
    assert (created.task_id, created.external_task_id) == ("8612", "01JOB")
    assert adapter.query("01JOB").path == "/v1/videos/motion-control/01JOB"
    done = adapter.parse_task(
        {
            "code": 0,
            "message": "SUCCEED",
            "request_id": "r",
            "data": {
                "task_id": "8612",
                "task_status": "succeed",
                "task_status_msg": "",
                "task_result": {
                    "videos": [
                        {
                            "id": "v",
                            "url": "https://cdn.klingai.com/v.mp4",
                            "watermark_url": "w",
                            "duration": "5.1",
                        }
                    ]
                },
            },
        }
    )
    assert done.status is JobStatus.SUCCEEDED
    # The output's length is not what is billed: billing follows the reference video, and this
    # answer carries no final_unit_deduction, so no figure of the provider's own either.
    assert (done.outputs[0].url, done.outputs[0].duration_s, done.usage) == (
        "https://cdn.klingai.com/v.mp4",
        5.1,
        None,
    )
    callback = adapter.parse_callback(
        {
            "task_id": "8612",
            "task_status": "failed",
            "task_status_msg": "risk control",
            "created_at": 1,
            "updated_at": 2,
            "final_unit_deduction": "0",
            "task_info": {"external_task_id": "01JOB"},
            "task_result": {},
        }
    )
    assert (callback.status, callback.error_message) == (JobStatus.FAILED, "risk control")


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (1000, ProviderErrorClass.AUTH),
        (1004, ProviderErrorClass.AUTH),
        (1101, ProviderErrorClass.INSUFFICIENT_BALANCE),
        (1103, ProviderErrorClass.AUTH),
        (1201, ProviderErrorClass.INVALID_REQUEST),
        (1203, ProviderErrorClass.NOT_FOUND),
        (1300, ProviderErrorClass.CONTENT_POLICY),
        (1302, ProviderErrorClass.RATE_LIMITED),
        (1303, ProviderErrorClass.CONCURRENCY_LIMIT),
        (5000, ProviderErrorClass.UNKNOWN_OUTCOME),
        (5001, ProviderErrorClass.PROVIDER_DOWN),
        (5002, ProviderErrorClass.UNKNOWN_OUTCOME),
    ],
)
def test_kling_codes_map_onto_the_taxonomy(code: int, expected: ProviderErrorClass) -> None:
    error = KlingAdapter("https://k").classify(400, {"code": code, "message": "m"}, {})
    assert (error.error_class, error.provider_code) == (expected, str(code))


def test_a_kling_answer_with_code_0_but_a_business_error_code_raises() -> None:
    with pytest.raises(ProviderError) as caught:
        KlingAdapter("https://k").parse_create(
            {"code": 1303, "message": "parallel task over resource pack limit"}
        )
    assert caught.value.error_class is ProviderErrorClass.CONCURRENCY_LIMIT


def test_the_kling_token_is_hs256_with_the_documented_claims_and_is_refreshed_before_expiry() -> None:
    clock = ManualClock()
    adapter = KlingAdapter("https://k", clock=clock)
    keys = {"access_key": "ak", "secret_key": "a-secret-key-that-is-32-bytes-long"}
    token = adapter.token(keys)
    claims = jwt.decode(
        token, keys["secret_key"], algorithms=["HS256"], options={"verify_exp": False, "verify_nbf": False}
    )
    now = int(clock.now().timestamp())
    assert claims == {"iss": "ak", "exp": now + 1800, "nbf": now - 5}
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    clock.advance(1400)
    assert adapter.token(keys) == token  # still well within its life
    clock.advance(150)
    assert adapter.token(keys) != token  # under five minutes left: a new one


# ---- the other kinds: the gateway's manual (gateway), evolink's Kling 3.0 pages (evolink elements)
# ----------------------------


def _spec_of(data: dict[str, object], job_id: str = "01JOB") -> TaskSpec:
    return TaskSpec(job_id=job_id, request=parse_request(data), callback_url=None)


def test_gateway_text_to_video_with_a_camera_move_is_gateway_manuals_example() -> None:
    # the gateway's manual, "带运镜控制的文生视频"
    spec = _spec_of(
        {
            "kind": "text_to_video",
            "prompt": "城市夜景,霓虹灯闪烁",
            "mode": "pro",
            "aspect_ratio": "16:9",
            "duration_s": 5,
            "camera_control": {"type": "simple", "config": {"zoom": 5}},
        }
    )
    call = GatewayAdapter("https://gw.example").create(spec)
    assert (call.method, call.path) == ("POST", "/v1/videos")
    assert call.json == {
        "model": "Kling-V2.6",
        "prompt": "城市夜景,霓虹灯闪烁",
        "sound": "off",
        "mode": "pro",
        "aspect_ratio": "16:9",
        "seconds": "5",
        "camera_control": {
            "type": "simple",
            "config": {"zoom": 5, "horizontal": 0, "vertical": 0, "pan": 0, "tilt": 0, "roll": 0},
        },
        "external_task_id": "01JOB",
    }


def test_gateway_image_to_video_examples_of_gateway_manual() -> None:
    adapter = GatewayAdapter("https://gw.example")
    # "首尾帧控制"
    frames = adapter.create(
        _spec_of(
            {
                "kind": "image_to_video",
                "image": "https://example.com/start.jpg",
                "image_tail": "https://example.com/end.jpg",
                "prompt": "人物从站立变为坐下",
                "mode": "pro",
            }
        )
    )
    assert frames.json == {
        "model": "Kling-V2.6",
        "image": "https://example.com/start.jpg",
        "image_tail": "https://example.com/end.jpg",
        "prompt": "人物从站立变为坐下",
        "sound": "off",
        "mode": "pro",
        "seconds": "5",
        "external_task_id": "01JOB",
    }
    # "带声音和音色的图生视频" and "带运动笔刷的图生视频"
    voiced = adapter.create(
        _spec_of(
            {
                "kind": "image_to_video",
                "image": "https://example.com/person.jpg",
                "prompt": "男人<<<voice_1>>>说:'你好,世界'",
                "sound": "on",
                "voice_list": [{"voice_id": "voice_123"}],
                "mode": "pro",
            }
        )
    )
    assert voiced.json is not None
    assert (voiced.json["sound"], voiced.json["voice_list"]) == ("on", [{"voice_id": "voice_123"}])
    brushed = adapter.create(
        _spec_of(
            {
                "kind": "image_to_video",
                "image": "https://example.com/scene.jpg",
                "static_mask": "https://example.com/static_mask.png",
                "dynamic_masks": [
                    {
                        "mask": "https://example.com/dynamic_mask.png",
                        "trajectories": [{"x": 100, "y": 200}, {"x": 300, "y": 400}],
                    }
                ],
                "mode": "pro",
            }
        )
    )
    assert brushed.json is not None
    assert brushed.json["static_mask"] == "https://example.com/static_mask.png"
    assert brushed.json["dynamic_masks"] == [
        {
            "mask": "https://example.com/dynamic_mask.png",
            "trajectories": [{"x": 100, "y": 200}, {"x": 300, "y": 400}],
        }
    ]


def test_gateway_omni_reference_example_of_gateway_manual() -> None:
    # the gateway's manual, "图片/主体参考(混合格式)"
    spec = _spec_of(
        {
            "kind": "omni_video",
            "provider": "gateway",  # elements live in one account
            "prompt": "<<<image_1>>>在东京街头漫步,偶遇<<<element_1>>>和<<<element_2>>>",
            "reference_images": ["https://p4-kling.klingai.com/bs2/a.jpg"],
            "elements": ["146", "145"],
            "mode": "pro",
            "aspect_ratio": "1:1",
            "duration_s": 5,
        }
    )
    call = GatewayAdapter("https://gw.example").create(spec)
    assert call.json == {
        "model": "Kling-Video-O1",
        "prompt": "<<<image_1>>>在东京街头漫步,偶遇<<<element_1>>>和<<<element_2>>>",
        "reference_images": ["https://p4-kling.klingai.com/bs2/a.jpg"],
        "element_list": [{"element_id": "146"}, {"element_id": "145"}],
        "mode": "pro",
        "aspect_ratio": "1:1",
        "seconds": "5",
        "external_task_id": "01JOB",
    }


def test_gateway_omni_edit_has_no_length_or_aspect_ratio() -> None:
    # the gateway's manual, "视频编辑(指令变换)": the edit keeps the input's length and shape
    spec = _spec_of(
        {
            "kind": "omni_video",
            "prompt": "给<<<video_1>>>中的女孩,拿上<<<image_1>>>中的花",
            "reference_images": ["https://example.com/flower.jpeg"],
            "video": {
                "url": "https://example.com/vace.mp4",
                "refer_type": "base",
                "keep_original_sound": "yes",
            },
        }
    )
    call = GatewayAdapter("https://gw.example").create(spec)
    assert call.json is not None
    assert call.json["video_list"] == [
        {"video_url": "https://example.com/vace.mp4", "refer_type": "base", "keep_original_sound": "yes"}
    ]
    assert "seconds" not in call.json and "aspect_ratio" not in call.json


def test_gateway_makes_elements_at_once_from_gateway_manuals_body_and_answer() -> None:
    adapter = GatewayAdapter("https://gw.example")
    spec = _spec_of(
        {
            "kind": "custom_element",
            "name": "测试主体",
            "description": "这是一个测试主体描述",
            "frontal_image": "https://example.com/image.jpg",
            "refer_images": ["https://example.com/image1.jpg", "https://example.com/image2.jpg"],
            "tags": ["o_102"],
        }
    )
    call = adapter.create(spec)
    assert (call.method, call.path) == ("POST", "/v1/elements/custom")
    assert call.json == {
        "element_name": "测试主体",
        "element_description": "这是一个测试主体描述",
        "element_frontal_image": "https://example.com/image.jpg",
        "element_refer_list": [
            {"image_url": "https://example.com/image1.jpg"},
            {"image_url": "https://example.com/image2.jpg"},
        ],
        "tag_list": [{"tag_id": "o_102"}],
    }
    answer = {
        "code": 0,
        "message": "string",
        "request_id": "string",
        "data": {"element_id": 842130978230767622},
    }
    made = adapter.parse_create(answer, JobKind.CUSTOM_ELEMENT)
    # The 64-bit id stays exact as text; there is no task to query afterwards
    assert (made.task_id, made.element_id) == ("842130978230767622", "842130978230767622")
    assert adapter.query(made.task_id, JobKind.CUSTOM_ELEMENT) is None
    assert not adapter.calls_back(JobKind.CUSTOM_ELEMENT) and not adapter.looks_up(JobKind.CUSTOM_ELEMENT)


def test_evolink_element_bodies_are_evolink_kling3_pages_examples() -> None:
    adapter = EvolinkAdapter("https://api.evolink.ai/v1")
    images = adapter.create(
        _spec_of(
            {
                "kind": "custom_element",
                "name": "MyCharacter",
                "description": "A young male character with short hair, wearing a white T-shirt",
                "frontal_image": "https://example.com/front.jpg",
                "refer_images": ["https://example.com/side.jpg", "https://example.com/back.jpg"],
            }
        )
    )
    assert images.json == {
        "model": "kling-custom-element",
        "model_params": {
            "element_name": "MyCharacter",
            "element_description": "A young male character with short hair, wearing a white T-shirt",
            "reference_type": "image_refer",
            "element_image_list": {
                "frontal_image": "https://example.com/front.jpg",
                "refer_images": [
                    {"image_url": "https://example.com/side.jpg"},
                    {"image_url": "https://example.com/back.jpg"},
                ],
            },
        },
    }
    video = adapter.create(
        _spec_of(
            {
                "kind": "custom_element",
                "name": "CharacterA",
                "description": "Middle-aged female with long hair, wearing a red dress",
                "reference_type": "video_refer",
                "video": "https://example.com/reference.mp4",
                "voice_id": "829826751244537879",
            }
        )
    )
    assert video.json == {
        "model": "kling-custom-element",
        "model_params": {
            "element_name": "CharacterA",
            "element_description": "Middle-aged female with long hair, wearing a red dress",
            "reference_type": "video_refer",
            "element_video_list": {"video_url": "https://example.com/reference.mp4"},
            "element_voice_id": "829826751244537879",
        },
    }
    # evolink's Kling 3.0 pages' create answer, then a finished task carrying result_data.element_id
    created = {
        "created": 1739500000,
        "id": "task-video-xxxxxxxx",
        "model": "kling-custom-element",
        "object": "video.generation.task",
        "progress": 0,
        "status": "pending",
        "task_info": {"estimated_time": 600, "can_cancel": True},
        "usage": {"credits_reserved": 1, "billing_rule": "per_call"},
    }
    assert adapter.parse_create(created, JobKind.CUSTOM_ELEMENT).task_id == "task-video-xxxxxxxx"
    done = adapter.parse_task(
        {**created, "status": "completed", "progress": 100, "result_data": {"element_id": "e-1"}}
    )
    assert (done.status, done.element_id, done.outputs) == (JobStatus.SUCCEEDED, "e-1", ())


def test_kling_uses_each_familys_path_and_native_omni_images() -> None:
    adapter = KlingAdapter("https://api-singapore.klingai.com")
    text = adapter.create(
        _spec_of({"kind": "text_to_video", "prompt": "a cat", "duration_s": 10, "sound": True})
    )
    assert text.path == "/v1/videos/text2video"
    assert text.json == {
        "model_name": "kling-v3",
        "prompt": "a cat",
        "mode": "std",
        "aspect_ratio": "16:9",
        "duration": "10",
        "sound": "on",
        "external_task_id": "01JOB",
    }
    omni = adapter.create(
        _spec_of(
            {
                "kind": "omni_video",
                "prompt": "让花被风吹动",
                "first_frame": "https://example.com/first.jpeg",
                "last_frame": "https://example.com/last.jpeg",
            }
        )
    )
    assert omni.path == "/v1/videos/omni-video"
    assert omni.json is not None
    assert omni.json["image_list"] == [
        {"image_url": "https://example.com/first.jpeg", "type": "first_frame"},
        {"image_url": "https://example.com/last.jpeg", "type": "end_frame"},
    ]
    assert (omni.json["model_name"], omni.json["duration"]) == ("kling-video-o1", "5")
    assert "aspect_ratio" not in omni.json  # a first frame sets the shape
    assert adapter.query("01JOB", JobKind.IMAGE_TO_VIDEO).path == "/v1/videos/image2video/01JOB"


def test_evolink_progress_and_estimates_are_read_from_its_answers() -> None:
    adapter = EvolinkAdapter("https://api.evolink.ai/v1")
    # evolink's motion-control page's create answer carries task_info.estimated_time
    created = adapter.parse_create(
        {
            "id": "task-1",
            "status": "pending",
            "progress": 0,
            "task_info": {"estimated_time": 600, "can_cancel": True},
        }
    )
    assert created.eta_s == 600
    report = adapter.parse_task({"id": "task-1", "status": "processing", "progress": 140.4})
    assert (report.status, report.progress, report.eta_s) == (JobStatus.RUNNING, 100, None)
    # Elements take about 10 minutes (evolink's pages) when the answer gives no estimate
    assert adapter.typical_eta_s(JobKind.CUSTOM_ELEMENT) == 600
    assert adapter.typical_eta_s(JobKind.MOTION_CONTROL) is None


def test_kling_keeps_its_own_words_on_the_task() -> None:
    adapter = KlingAdapter("https://api-singapore.klingai.com")
    report = adapter.parse_callback(
        {"task_id": "t1", "task_status": "processing", "task_status_msg": "rendering"}
    )
    assert (report.status, report.message) == (JobStatus.RUNNING, "rendering")


def test_gateway_reads_gateway_manuals_unified_completed_answer() -> None:
    adapter = GatewayAdapter("https://gw.example")
    unified = {
        "created": 1736758800,
        "data": [
            {
                "url": "https://example.com/v.mp4",
                "duration": 5.0,
                "width": 1920,
                "height": 1080,
                "cover_url": "https://example.com/cover.jpg",
            }
        ],
        "usage": {"total_tokens": 0, "video_count": 1, "duration_seconds": 5.0},
        "provider": "可灵AI",
        "model": "Kling-Video-O1",
        "origin_data": {"task_id": "upstream-1"},
    }
    # As a query answer: it is about the task asked for
    report = adapter.parse_task(unified, task_id="task_abc123")
    assert (report.task_id, report.status, report.upstream) == ("task_abc123", JobStatus.SUCCEEDED, "可灵AI")
    [output] = report.outputs
    assert (output.url, output.duration_s, output.cover_url) == (
        "https://example.com/v.mp4",
        5.0,
        "https://example.com/cover.jpg",
    )
    assert report.usage == Usage(5.0, UsageUnit.SECONDS)
    # As a callback it names no gateway task (origin_data is the upstream's): unreadable as a
    # hint, so the receiver has archive ask the gateway
    with pytest.raises(ValueError, match="names no gateway task id"):
        adapter.parse_callback(unified)
    # And a known upstream is named in later queries (the gateway's manual's optional `provider`)
    call = adapter.query("task_abc123")
    assert call is not None
    assert (
        adapter.naming_upstream(call, "可灵AI").path == "/v1/videos/task_abc123?provider=%E5%8F%AF%E7%81%B5AI"
    )


@pytest.mark.parametrize(
    "extra",
    [{"status": "completed"}, {"id": "task_abc123", "status": "completed"}, {"id": "task_abc123"}],
)
def test_a_unified_answer_is_read_whatever_else_it_carries(extra: dict[str, str]) -> None:
    body = {
        "data": [{"url": "https://example.com/v.mp4", "duration": 5.0}],
        "usage": {"duration_seconds": 5.0},
        **extra,
    }
    report = GatewayAdapter("https://gw.example").parse_task(body, task_id="task_abc123")
    assert (report.task_id, report.status) == ("task_abc123", JobStatus.SUCCEEDED)
    assert [o.url for o in report.outputs] == ["https://example.com/v.mp4"]
