"""The pieces of request bodies and answers that several dialects spell the same way."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from klingflow.core.vocab import Mode

from .base import TaskSpec

# The request models are loaded by the adapters that read them, not with these helpers.
if TYPE_CHECKING:
    from klingflow.core.kind_motion import MotionControlRequest
    from klingflow.core.kind_video import CameraControl


def watermark_info(request: MotionControlRequest) -> dict[str, bool]:
    """apimaster's and Kling's watermark switch; off unless the request asks for it."""
    return {"enabled": bool(request.watermark)}


def multi_shot_fields(shots: Sequence[Any]) -> dict[str, Any]:
    """Kling 3.0's custom shot sequence, the one place its body is built. evolink's Kling 3.0 pages names the
    feature (per-shot prompt and duration) but shows no body (?): these are the field names of
    Kling's own 3.0 API (multi_shot, shot_type "customize", multi_prompt [{index, prompt,
    duration}]), which evolink is assumed to pass through in model_params."""
    if not shots:
        return {}
    return {
        "multi_shot": True,
        "shot_type": "customize",
        "multi_prompt": [
            {"index": number, "prompt": shot.prompt, "duration": str(shot.duration_s)}
            for number, shot in enumerate(shots, start=1)
        ],
    }


def v2x_model(model: str) -> bool:
    """A Kling 2.x model name (Kling-V2.6, kling-v2-6): the gateway's manual says these take no cfg_scale."""
    return re.search(r"v2(?:[.-]|$)", model.lower()) is not None


def flat_motion_fields(request: MotionControlRequest) -> dict[str, Any]:
    """The motion-control fields three dialects name identically (docs/providers.md, common rules)."""
    return {
        "image_url": request.image,
        "video_url": request.video,
        "character_orientation": request.character_orientation.value,
        "mode": request.mode.value,
        "keep_original_sound": request.keep_original_sound,
    }


def with_optional(body: dict[str, Any], spec: TaskSpec, **optional: Any) -> dict[str, Any]:
    """Adds the optional prompt, callback URL and any other fields given, omitting unset ones
    (an absent field means the dialect's default; a null or empty value is not always accepted)."""
    prompt = getattr(spec.request, "prompt", None)
    for name, value in (("prompt", prompt), ("callback_url", spec.callback_url), *optional.items()):
        if value not in (None, [], ""):
            body[name] = value
    return body


def camera(control: CameraControl | None) -> dict[str, Any] | None:
    """camera_control as gateway and Kling spell it (config only for type simple)."""
    return None if control is None else control.model_dump(mode="json", exclude_none=True)


def on_off(flag: bool) -> str:
    return "on" if flag else "off"


def mode_quality(mode: Mode) -> str:
    return "1080p" if mode is Mode.PRO else "720p"


def number(value: Any) -> float | None:
    """A number from an answer that may spell it as a string ("5.1") or omit it."""
    if isinstance(value, bool):
        return None
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def as_dict(value: Any) -> dict[str, Any]:
    """A JSON object from an answer, or an empty one: providers omit what they have not got."""
    return value if isinstance(value, dict) else {}


def percent(value: Any) -> int | None:
    """A progress figure as a whole percent in 0..100, or None when it is not one."""
    found = number(value)
    return None if found is None else max(0, min(100, round(found)))
