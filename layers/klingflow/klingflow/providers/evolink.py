"""`evolink` dialect (evolink's motion-control page): an aggregator with an OpenAI-style task API.

One endpoint for everything; the model name picks the job. Facts marked (?) in docs/providers.md
(the motion-control and Kling 3.0 text/image-to-video bodies, the query path) are confined to the
constants and builders below, so a correction is a one-line change. Custom elements follow seed
002's documented body. Callbacks come on completed, failed or cancelled; output links live about
24 hours.
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import quote

from klingflow.core.codes import ProviderErrorClass
from klingflow.core.errors import FieldError, ProviderError
from klingflow.core.kind_element import CustomElementRequest
from klingflow.core.kind_motion import MotionControlRequest
from klingflow.core.kind_video import ImageToVideoRequest, TextToVideoRequest
from klingflow.core.kinds import AnyRequest, JobKind
from klingflow.core.states import JobStatus

from .base import Adapter, HttpCall, Submission, TaskOutput, TaskReport, TaskSpec, Usage, UsageUnit
from .bodies import as_dict, mode_quality, multi_shot_fields, number, on_off, percent, with_optional

MODELS = {
    JobKind.MOTION_CONTROL: "kling-v3-motion-control",
    JobKind.TEXT_TO_VIDEO: "kling-v3-text-to-video",  # (?) "only the model parameter differs"
    JobKind.IMAGE_TO_VIDEO: "kling-v3-image-to-video",  # (?)
    JobKind.CUSTOM_ELEMENT: "kling-custom-element",  # evolink's Kling 3.0 pages
}
CREATE_PATH = "/videos/generations"
QUERY_PATH = "/tasks/{task_id}"  # (?) docs/providers.md
# A finished task's `usage` (?): evolink's Kling 3.0 pages shows only the create answer's
# `credits_reserved`; a final figure under another name is preferred where the answer carries one.
CREDIT_FIELDS = ("credits_used", "credits_charged", "credits", "credits_reserved")
# Kling 3.0 on evolink takes none of Kling-V2.6's extra controls (evolink's Kling 3.0 pages lists prompt,
# image, 3..15 s, quality and sound); a request that needs them is routed to a dialect that has them.
_UNSUPPORTED_CONTROLS = ("camera_control", "image_tail", "voice_list", "static_mask", "dynamic_masks")
# evolink's pages: elements are used "in Kling V3 Motion Control, the O3 series and V3
# Image-to-Video via element_list"; where it sits in the body is not shown (?): beside the other
# Kling parameters, in model_params, as [{"element_id": ...}] like the gateway's manual's.
ELEMENT_LIST = "element_list"
ELEMENT_ETA_S = 600.0


class EvolinkAdapter(Adapter):
    dialect = "evolink"
    default_models = MODELS
    sends_callbacks = True
    supports_external_id = False
    element_kinds = frozenset({JobKind.MOTION_CONTROL, JobKind.IMAGE_TO_VIDEO})
    status_words: ClassVar[dict[str, JobStatus]] = {
        "pending": JobStatus.SUBMITTED,
        "queued": JobStatus.SUBMITTED,
        "processing": JobStatus.RUNNING,
        "completed": JobStatus.SUCCEEDED,
        "failed": JobStatus.FAILED,
        "cancelled": JobStatus.CANCELLED,
    }

    # ---- requests ------------------------------------------------------------------------------

    def create_motion_control(self, spec: TaskSpec) -> HttpCall:
        request = spec.of(MotionControlRequest)
        body: dict[str, Any] = {
            "model": self.model_for(request.kind),
            "image_urls": [request.image],
            "video_urls": [request.video],
            "quality": mode_quality(request.mode),
            "model_params": {
                "character_orientation": request.character_orientation.value,
                "keep_original_sound": request.keep_original_sound,
                **_element_list(request.elements),
            },
        }
        return HttpCall("POST", CREATE_PATH, with_optional(body, spec))

    def create_text_to_video(self, spec: TaskSpec) -> HttpCall:
        request = spec.of(TextToVideoRequest)
        body = self._generated(request, spec)
        body["aspect_ratio"] = request.aspect_ratio.value
        return HttpCall("POST", CREATE_PATH, body)

    def create_image_to_video(self, spec: TaskSpec) -> HttpCall:
        request = spec.of(ImageToVideoRequest)
        body = self._generated(request, spec)
        body["image_urls"] = [request.image]
        body["model_params"].update(_element_list(request.elements))
        return HttpCall("POST", CREATE_PATH, body)

    def _generated(self, request: TextToVideoRequest | ImageToVideoRequest, spec: TaskSpec) -> dict[str, Any]:
        params: dict[str, Any] = {"sound": on_off(request.sound), **multi_shot_fields(request.shots)}
        if request.negative_prompt:
            params["negative_prompt"] = request.negative_prompt
        body = {
            "model": self.model_for(request.kind),
            "duration": request.duration_s,
            "quality": mode_quality(request.mode),
            "model_params": params,
        }
        return with_optional(body, spec)

    def create_custom_element(self, spec: TaskSpec) -> HttpCall:
        request = spec.of(CustomElementRequest)
        params: dict[str, Any] = {
            "element_name": request.name,
            "element_description": request.description,
            "reference_type": request.reference_type,
        }
        if request.reference_type == "image_refer":
            images: dict[str, Any] = {"frontal_image": request.frontal_image}
            if request.refer_images:
                images["refer_images"] = [{"image_url": url} for url in request.refer_images]
            params["element_image_list"] = images
        else:
            params["element_video_list"] = {"video_url": request.video}
            if request.voice_id:
                params["element_voice_id"] = request.voice_id
        body = {"model": self.model_for(request.kind), "model_params": params}
        return HttpCall("POST", CREATE_PATH, with_optional(body, spec))

    def refusals(self, request: AnyRequest) -> list[FieldError]:
        if isinstance(request, TextToVideoRequest | ImageToVideoRequest):
            errors = [
                FieldError(name, "evolink_unsupported", f"evolink's Kling 3.0 does not take {name}")
                for name in _UNSUPPORTED_CONTROLS
                if getattr(request, name, None)
            ]
            if isinstance(request, ImageToVideoRequest) and request.image is None:
                errors.append(
                    FieldError("image", "evolink_first_frame", "evolink animates from image (a first frame)")
                )
            return errors
        # An element's tags are klingflow's own record on evolink (its body takes none).
        return []

    def takes_shots(self, kind: JobKind) -> bool:
        return kind in (
            JobKind.TEXT_TO_VIDEO,
            JobKind.IMAGE_TO_VIDEO,
        )  # Kling 3.0 (evolink's Kling 3.0 pages)

    def typical_eta_s(self, kind: JobKind) -> float | None:
        # evolink's pages: "Estimated processing time: approximately 10 minutes" for elements.
        return ELEMENT_ETA_S if kind is JobKind.CUSTOM_ELEMENT else None

    def query(self, task_id: str, kind: JobKind = JobKind.MOTION_CONTROL) -> HttpCall:
        return HttpCall("GET", QUERY_PATH.format(task_id=quote(task_id, safe="")))

    # ---- answers -------------------------------------------------------------------------------

    def parse_create(self, body: Any, kind: JobKind = JobKind.MOTION_CONTROL) -> Submission:
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            raise ProviderError(
                self.dialect, ProviderErrorClass.UNKNOWN_OUTCOME, f"create answer without id: {body!r}"
            )
        reserved = number(as_dict(body.get("usage")).get("credits_reserved"))
        return Submission(
            task_id=body["id"],
            raw=body,
            eta_s=number(as_dict(body.get("task_info")).get("estimated_time")),
            reserved=Usage(reserved, UsageUnit.UNITS) if reserved is not None else None,
        )

    def parse_task(self, body: Any, *, task_id: str | None = None) -> TaskReport:
        # docs/providers.md's (?) query answer does not promise an `id`: fall back to what was asked.
        if not isinstance(body, dict) or not isinstance(body.get("id") or task_id, str):
            raise ProviderError(
                self.dialect, ProviderErrorClass.PROVIDER_DOWN, f"task answer without id: {body!r}"
            )
        body = {**body, "id": body.get("id") or task_id}
        word = str(body.get("status", ""))
        results = body["results"] if isinstance(body.get("results"), list) else []
        error = as_dict(body.get("error"))
        element = as_dict(body.get("result_data")).get("element_id")
        status = self.status_of(word)
        credits = _credits(as_dict(body.get("usage"))) if status is JobStatus.SUCCEEDED else None
        return TaskReport(
            # The estimate is taken from the create answer only (evolink's Kling 3.0 pages shows it there,
            # as the
            # whole task's length): a later answer repeating it must not restart the countdown.
            progress=percent(body.get("progress")),
            task_id=body["id"],
            status=status,
            provider_status=word,
            outputs=tuple(TaskOutput(str(url)) for url in results if isinstance(url, str)),
            usage=Usage(credits, UsageUnit.UNITS) if credits is not None else None,
            error_code=str(error["code"]) if error.get("code") is not None else None,
            error_message=str(error["message"]) if error.get("message") else None,
            element_id=str(element) if element not in (None, "") else None,
        )

    def error_class_for(self, status: int, body: Any) -> tuple[ProviderErrorClass, str | None]:
        error_class, _ = super().error_class_for(status, body)
        detail = body.get("error") if isinstance(body, dict) else None
        code = str(detail.get("code", "")) if isinstance(detail, dict) else ""
        # OpenAI-style codes carry what the HTTP status does not (?): content moderation. Only on
        # a refusal of the request: a 5xx or 429 must keep its meaning (fail over, look up).
        if status in (400, 403, 422) and any(word in code for word in ("content", "moderation", "sensitive")):
            error_class = ProviderErrorClass.CONTENT_POLICY
        return error_class, code or None


def _credits(usage: dict[str, Any]) -> float | None:
    return next((found for name in CREDIT_FIELDS if (found := number(usage.get(name))) is not None), None)


def _element_list(elements: list[str]) -> dict[str, Any]:
    return {ELEMENT_LIST: [{"element_id": element} for element in elements]} if elements else {}
