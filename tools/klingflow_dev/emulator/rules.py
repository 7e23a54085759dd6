"""What each provider checks on a create request, written from the providers' documentation on their own
terms.

Deliberately independent of `klingflow.core.kinds`: the contract tests send our adapters' bodies here,
so a field our side names or shapes wrongly is refused the way the provider would refuse it.
"""

from __future__ import annotations

import re
from typing import Any

PROMPT_MAX = 2500
CAMERA_TYPES = ("simple", "down_back", "forward_up", "right_turn_forward", "left_turn_forward")
CAMERA_AXES = ("horizontal", "vertical", "pan", "tilt", "roll", "zoom")


def _text(body: dict[str, Any], name: str, *, required: bool, limit: int = PROMPT_MAX) -> list[str]:
    value = body.get(name)
    if value is None:
        return [f"{name} is required"] if required else []
    if not isinstance(value, str) or not value or len(value) > limit:
        return [f"{name} must be a string of 1..{limit} characters"]
    return []


def _one_of(body: dict[str, Any], name: str, allowed: tuple[Any, ...], *, default: Any = None) -> list[str]:
    value = body.get(name, default)
    if value is None or value in allowed:
        return []
    return [f"{name} must be one of {', '.join(map(str, allowed))}"]


def camera_errors(control: Any) -> list[str]:
    """the gateway's manual: a type; `config` only (and always) for simple, exactly one non-zero axis in
    [-10, 10]."""
    if control is None:
        return []
    if not isinstance(control, dict) or control.get("type") not in CAMERA_TYPES:
        return ["camera_control.type must be one of " + ", ".join(CAMERA_TYPES)]
    config = control.get("config")
    if control["type"] != "simple":
        return [] if config is None else ["camera_control.config is only for type simple"]
    if not isinstance(config, dict):
        return ["camera_control.config is required for type simple"]
    values = [config.get(axis, 0) for axis in CAMERA_AXES]
    if any(not isinstance(v, int | float) or not -10 <= v <= 10 for v in values):
        return ["camera_control.config values must be numbers in [-10, 10]"]
    if sum(1 for v in values if v != 0) != 1:
        return ["camera_control.config: exactly one of the six must be non-zero"]
    return []


def cfg_scale_errors(body: dict[str, Any], model: Any) -> list[str]:
    """the gateway's manual: cfg_scale is a float in [0, 1], and V2.x models do not take it."""
    if "cfg_scale" not in body:
        return []
    value = body["cfg_scale"]
    if re.search(r"v2(?:[.-]|$)", str(model).lower()):
        return [f"cfg_scale is not supported by {model} (V2.x)"]
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        return ["cfg_scale must be a number in [0, 1]"]
    return []


def multi_shot_errors(fields: dict[str, Any], duration: Any) -> list[str]:
    """Kling 3.0 multi-shot (?): multi_shot, shot_type "customize", multi_prompt entries
    {index 1.., prompt, duration} whose durations add up to the clip's."""
    if not fields.get("multi_shot") and "multi_prompt" not in fields:
        return []
    shots = fields.get("multi_prompt")
    if fields.get("multi_shot") is not True or fields.get("shot_type") != "customize":
        return ['multi-shot needs multi_shot true and shot_type "customize"']
    if not isinstance(shots, list) or not 2 <= len(shots) <= 6:
        return ["multi_prompt takes 2..6 shots"]
    problems = []
    total = 0
    for number, shot in enumerate(shots, start=1):
        if not isinstance(shot, dict) or shot.get("index") != number or not shot.get("prompt"):
            problems.append(f"multi_prompt.{number - 1} needs index {number} and a prompt")
            continue
        try:
            total += int(str(shot.get("duration")))
        except ValueError:
            problems.append(f"multi_prompt.{number - 1}.duration must be whole seconds")
    try:
        asked = int(str(duration))
    except ValueError:
        asked = -1
    if not problems and total != asked:
        problems.append(f"multi_prompt durations add up to {total} s, not the clip's {duration}")
    return problems


def watermark_errors(body: dict[str, Any]) -> list[str]:
    """watermark_info, where a dialect takes it, is {"enabled": true|false}."""
    info = body.get("watermark_info")
    if info is None or (isinstance(info, dict) and isinstance(info.get("enabled"), bool)):
        return []
    return ['watermark_info must be {"enabled": true|false}']


def generated_errors(
    body: dict[str, Any], *, seconds_field: str, seconds: tuple[str, ...], prompt_required: bool
) -> list[str]:
    """Kling-V2.6 text/image-to-video fields (the gateway's manual), as gateway and Kling take them."""
    problems = _text(body, "prompt", required=prompt_required)
    problems += _text(body, "negative_prompt", required=False)
    problems += _one_of(body, "sound", ("on", "off"))
    problems += _one_of(body, "mode", ("std", "pro"))
    problems += _one_of(body, "aspect_ratio", ("16:9", "9:16", "1:1"))
    problems += _one_of(body, seconds_field, seconds)
    return problems + camera_errors(body.get("camera_control"))


def image_to_video_errors(body: dict[str, Any]) -> list[str]:
    problems = []
    if not body.get("image") and not body.get("image_tail"):
        problems.append("image or image_tail is required")
    groups = [
        bool(body.get("image_tail")),
        bool(body.get("static_mask") or body.get("dynamic_masks")),
        body.get("camera_control") is not None,
    ]
    if sum(groups) > 1:
        problems.append(
            "image+image_tail, static_mask/dynamic_masks and camera_control are mutually exclusive"
        )
    voices = body.get("voice_list") or []
    if len(voices) > 2 or any(not isinstance(v, dict) or not v.get("voice_id") for v in voices):
        problems.append("voice_list takes at most 2 {voice_id} entries")
    if voices and body.get("sound") != "on":
        problems.append("voice_list needs sound=on")
    masks = body.get("dynamic_masks") or []
    if len(masks) > 6:
        problems.append("dynamic_masks takes at most 6 groups")
    for group in masks:
        points = group.get("trajectories") if isinstance(group, dict) else None
        if not isinstance(group, dict) or not group.get("mask") or not isinstance(points, list):
            problems.append("each dynamic_masks group needs mask and trajectories")
        elif not 2 <= len(points) <= 77:
            problems.append("trajectories take 2..77 points")
    return problems


def omni_errors(body: dict[str, Any], *, first: int, last: int, images: int, seconds_field: str) -> list[str]:
    """Kling-Video-O1's rules (the gateway's manual), given how many frames and images the body carries."""
    problems = _text(body, "prompt", required=True)
    problems += _one_of(body, "mode", ("std", "pro"))
    problems += _one_of(body, "aspect_ratio", ("16:9", "9:16", "1:1"))
    videos = body.get("video_list") or []
    elements = body.get("element_list") or []
    if last and not first:
        problems.append("a last frame needs a first frame")
    if last and images > 2:
        problems.append("no last frame with more than 2 images")
    if images + len(elements) > (4 if videos else 7):
        problems.append("too many images + elements")
    if len(videos) > 1:
        problems.append("at most one video")
    editing = any(isinstance(v, dict) and v.get("refer_type") == "base" for v in videos)
    if any(not isinstance(v, dict) or not v.get("video_url") for v in videos):
        problems.append("video_list entries need video_url")
    if editing and (first or last):
        problems.append("refer_type=base forbids first/last frames")
    if body.get("aspect_ratio") and (editing or first):
        problems.append("aspect_ratio is not supported for editing or image-to-video")
    seconds = body.get(seconds_field)
    if seconds is not None and str(seconds) not in tuple(str(n) for n in range(3, 11)):
        problems.append(f"{seconds_field} must be 3..10")
    plain = not (videos or elements or last or images - first)
    if plain and seconds is not None and str(seconds) not in ("5", "10"):
        problems.append("text-to-video and first-frame-to-video take 5 or 10 seconds")
    return problems


def kling_element_errors(body: dict[str, Any]) -> list[str]:
    """POST /v1/elements/custom (the gateway's manual)."""
    problems = _text(body, "element_name", required=True, limit=10)
    problems += _text(body, "element_description", required=True, limit=100)
    if not body.get("element_frontal_image"):
        problems.append("element_frontal_image is required")
    refer = body.get("element_refer_list")
    if not isinstance(refer, list) or not 1 <= len(refer) <= 3 or any(not r.get("image_url") for r in refer):
        problems.append("element_refer_list takes 1..3 {image_url} entries")
    return problems


def evolink_element_errors(params: dict[str, Any]) -> list[str]:
    """kling-custom-element's model_params (evolink's Kling 3.0 pages)."""
    problems = _text(params, "element_name", required=True, limit=20)
    problems += _text(params, "element_description", required=True, limit=100)
    kind = params.get("reference_type")
    if kind == "image_refer":
        images = params.get("element_image_list")
        if not isinstance(images, dict) or not images.get("frontal_image"):
            problems.append("element_image_list.frontal_image is required for image_refer")
        if params.get("element_voice_id"):
            problems.append("element_voice_id is only supported for video_refer")
    elif kind == "video_refer":
        video = params.get("element_video_list")
        if not isinstance(video, dict) or not video.get("video_url"):
            problems.append("element_video_list.video_url is required for video_refer")
    else:
        problems.append("reference_type must be image_refer or video_refer")
    return problems


def evolink_generated_errors(body: dict[str, Any], params: dict[str, Any], *, image: bool) -> list[str]:
    """Kling 3.0 on evolink (evolink's Kling 3.0 pages): 3..15 s, 720p or 1080p, sound on or off."""
    problems = multi_shot_errors(params, body.get("duration"))
    if not image and not body.get("prompt") and not params.get("multi_shot"):
        problems.append("prompt is required")
    if image and len(body.get("image_urls") or []) != 1:
        problems.append("image_urls takes exactly one URL")
    duration = body.get("duration")
    if not isinstance(duration, int) or not 3 <= duration <= 15:
        problems.append("duration must be an integer number of seconds in 3..15")
    if body.get("quality") not in ("720p", "1080p"):
        problems.append("quality must be 720p or 1080p")
    if params.get("sound", "off") not in ("on", "off"):
        problems.append("model_params.sound must be on or off")
    return problems
