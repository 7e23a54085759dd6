"""Shapes Kling's own API and gateway (which forwards to Kling) share.

Kling's business-code table, image-to-video's optional fields, omni's video list and the rules
of Kling-style element creation (images only, a short name).
"""

from __future__ import annotations

from typing import Any

from klingflow.core.codes import ProviderErrorClass
from klingflow.core.errors import FieldError
from klingflow.core.kind_element import CustomElementRequest
from klingflow.core.kind_omni import OmniVideoRequest
from klingflow.core.kind_video import ImageToVideoRequest, TextToVideoRequest
from klingflow.core.kinds import AnyRequest

from .bodies import camera

ELEMENT_NAME_MAX = 10
# Kling-V2.6 text- and image-to-video come in these lengths only (the gateway's manual).
GENERATED_SECONDS = (5, 10)
ELEMENT_REFER_IMAGES = (1, 3)

# Kling's business codes (Kling's API reference, docs/providers.md), by range.
_CODES: tuple[tuple[range, ProviderErrorClass], ...] = (
    (range(1000, 1005), ProviderErrorClass.AUTH),
    (range(1100, 1103), ProviderErrorClass.INSUFFICIENT_BALANCE),
    (range(1103, 1104), ProviderErrorClass.AUTH),
    (range(1200, 1202), ProviderErrorClass.INVALID_REQUEST),
    (range(1202, 1204), ProviderErrorClass.NOT_FOUND),
    (range(1300, 1302), ProviderErrorClass.CONTENT_POLICY),
    (range(1302, 1303), ProviderErrorClass.RATE_LIMITED),
    (range(1303, 1304), ProviderErrorClass.CONCURRENCY_LIMIT),
    (range(5000, 5001), ProviderErrorClass.UNKNOWN_OUTCOME),  # internal error: may have landed
    (range(5001, 5002), ProviderErrorClass.PROVIDER_DOWN),
    (range(5002, 5003), ProviderErrorClass.UNKNOWN_OUTCOME),  # gateway timeout
)


def class_of_code(code: int) -> ProviderErrorClass | None:
    known = next((error_class for codes, error_class in _CODES if code in codes), None)
    if known is None and code >= 5000:
        return ProviderErrorClass.UNKNOWN_OUTCOME  # an undocumented server error may have landed
    return known


def image_to_video_fields(request: ImageToVideoRequest) -> dict[str, Any]:
    """Image-to-video's optional fields, named alike by gateway and Kling (the gateway's manual)."""
    return {
        "image": request.image,
        "image_tail": request.image_tail,
        "negative_prompt": request.negative_prompt,
        "voice_list": [voice.model_dump() for voice in request.voice_list],
        "static_mask": request.static_mask,
        "dynamic_masks": [group.model_dump(mode="json") for group in request.dynamic_masks],
        "camera_control": camera(request.camera_control),
    }


def omni_video_list(request: OmniVideoRequest) -> list[dict[str, str]]:
    if request.video is None:
        return []
    return [
        {
            "video_url": request.video.url,
            "refer_type": request.video.refer_type,
            "keep_original_sound": request.video.keep_original_sound,
        }
    ]


def element_refusals(dialect: str, request: CustomElementRequest) -> list[FieldError]:
    """Kling-style element creation (gateway's /v1/elements/custom): images only, a short name."""
    errors = []
    if request.reference_type != "image_refer":
        errors.append(
            FieldError(
                "reference_type", f"{dialect}_image_refer", f"{dialect} makes elements from images only"
            )
        )
    if len(request.name) > ELEMENT_NAME_MAX:
        errors.append(
            FieldError(
                "name",
                f"{dialect}_name_max",
                f"{dialect} takes element names of at most {ELEMENT_NAME_MAX} characters",
            )
        )
    low, high = ELEMENT_REFER_IMAGES
    if request.reference_type == "image_refer" and not low <= len(request.refer_images) <= high:
        errors.append(
            FieldError(
                "refer_images",
                f"{dialect}_refer_images",
                f"{dialect} needs {low} to {high} other-angle images",
            )
        )
    return errors


def seconds_refusals(dialect: str, request: AnyRequest) -> list[FieldError]:
    """Text- and image-to-video lengths other than 5 or 10 s, which this family does not make."""
    if not isinstance(request, TextToVideoRequest | ImageToVideoRequest):
        return []
    if request.duration_s in GENERATED_SECONDS:
        return []
    message = f"{dialect} makes 5 s or 10 s clips, not {request.duration_s} s"
    return [FieldError("duration_s", f"{dialect}_seconds", message)]
