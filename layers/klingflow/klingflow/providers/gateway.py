"""`gateway` dialect (the gateway's manual): one `/v1/videos` endpoint, routed by model and fields.

`model="Kling-V2.6"` routes by priority: `action_control: true` is motion control, `image` or
`image_tail` is image-to-video, otherwise text-to-video; `model="Kling-Video-O1"` is omni. Tasks
answer `{id, status, created_at, model}`; completed adds `video_url` and `usage`, failed adds
`error`. Callbacks arrive on completion; `external_task_id` (unique per user) also finds a task.
Elements are made synchronously by `POST /v1/elements/custom`: its answer is the outcome.
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import quote

from klingflow.core.codes import JobErrorCode, ProviderErrorClass
from klingflow.core.errors import FieldError, ProviderError
from klingflow.core.kind_element import CustomElementRequest
from klingflow.core.kind_motion import MotionControlRequest
from klingflow.core.kind_omni import OmniVideoRequest
from klingflow.core.kind_video import ImageToVideoRequest, TextToVideoRequest
from klingflow.core.kinds import AnyRequest, JobKind
from klingflow.core.states import JobStatus

from .base import Adapter, HttpCall, Submission, TaskOutput, TaskReport, TaskSpec, Usage, UsageUnit
from .bodies import as_dict, camera, flat_motion_fields, number, on_off, v2x_model, with_optional
from .klingfamily import (
    class_of_code,
    element_refusals,
    image_to_video_fields,
    omni_video_list,
    seconds_refusals,
)

MODELS = {
    JobKind.MOTION_CONTROL: "Kling-V2.6",
    JobKind.TEXT_TO_VIDEO: "Kling-V2.6",
    JobKind.IMAGE_TO_VIDEO: "Kling-V2.6",
    JobKind.OMNI_VIDEO: "Kling-Video-O1",
    JobKind.CUSTOM_ELEMENT: "custom",  # the elements endpoint takes no model
}
VIDEOS = "/v1/videos"
ELEMENTS = "/v1/elements/custom"
ELEMENT_PRESETS = "/v1/elements/presets"
ELEMENT_DELETE = "/v1/elements/delete"


class GatewayAdapter(Adapter):
    dialect = "gateway"
    default_models = MODELS
    sends_callbacks = True
    supports_external_id = True
    element_kinds = frozenset({JobKind.OMNI_VIDEO})  # the gateway's manual: element_list on the omni model
    status_words: ClassVar[dict[str, JobStatus]] = {
        "pending": JobStatus.SUBMITTED,
        "processing": JobStatus.RUNNING,
        "completed": JobStatus.SUCCEEDED,
        "failed": JobStatus.FAILED,
    }

    # ---- requests ------------------------------------------------------------------------------

    def create_motion_control(self, spec: TaskSpec) -> HttpCall:
        request = spec.of(MotionControlRequest)
        body = {
            "model": self.model_for(request.kind),
            "action_control": True,
            **flat_motion_fields(request),
            "external_task_id": spec.job_id,
        }
        return HttpCall("POST", VIDEOS, with_optional(body, spec))

    def create_text_to_video(self, spec: TaskSpec) -> HttpCall:
        request = spec.of(TextToVideoRequest)
        body = {**self._generated(request, spec), "aspect_ratio": request.aspect_ratio.value}
        optional = {
            "negative_prompt": request.negative_prompt,
            "camera_control": camera(request.camera_control),
        }
        return HttpCall("POST", VIDEOS, with_optional(body, spec, **optional))

    def create_image_to_video(self, spec: TaskSpec) -> HttpCall:
        request = spec.of(ImageToVideoRequest)
        body = self._generated(request, spec)
        return HttpCall(
            "POST",
            VIDEOS,
            with_optional(body, spec, cfg_scale=request.cfg_scale, **image_to_video_fields(request)),
        )

    def takes_cfg_scale(self, kind: JobKind) -> bool:
        # the gateway's manual documents cfg_scale on image-to-video only, and "V2.x 不支持" (Kling-V2.6 is).
        return kind is JobKind.IMAGE_TO_VIDEO and not v2x_model(self.model_for(kind))

    def _generated(self, request: TextToVideoRequest | ImageToVideoRequest, spec: TaskSpec) -> dict[str, Any]:
        return {
            "model": self.model_for(request.kind),
            "sound": on_off(request.sound),
            "mode": request.mode.value,
            "seconds": str(request.duration_s),
            "external_task_id": spec.job_id,
        }

    def create_omni_video(self, spec: TaskSpec) -> HttpCall:
        request = spec.of(OmniVideoRequest)
        body: dict[str, Any] = {"model": self.model_for(request.kind), "mode": request.mode.value}
        seconds = request.generated_seconds
        aspect = request.resolved_aspect_ratio
        return HttpCall(
            "POST",
            VIDEOS,
            with_optional(
                body,
                spec,
                first_frame_url=request.first_frame,
                last_frame_url=request.last_frame,
                reference_images=list(request.reference_images),
                element_list=[{"element_id": element} for element in request.elements],
                video_list=omni_video_list(request),
                aspect_ratio=aspect.value if aspect else None,
                seconds=str(seconds) if seconds is not None else None,
                external_task_id=spec.job_id,
            ),
        )

    def create_custom_element(self, spec: TaskSpec) -> HttpCall:
        request = spec.of(CustomElementRequest)
        body: dict[str, Any] = {
            "element_name": request.name,
            "element_description": request.description,
            "element_frontal_image": request.frontal_image,
            "element_refer_list": [{"image_url": url} for url in request.refer_images],
        }
        if request.tags:
            body["tag_list"] = [{"tag_id": tag} for tag in request.tags]
        return HttpCall("POST", ELEMENTS, body)

    def calls_back(self, kind: JobKind) -> bool:
        return kind is not JobKind.CUSTOM_ELEMENT  # answered at once: nothing to call back about

    def refusals(self, request: AnyRequest) -> list[FieldError]:
        if isinstance(request, CustomElementRequest):
            return element_refusals(self.dialect, request)
        return seconds_refusals(self.dialect, request)

    def list_elements(self, *, presets: bool, page_num: int, page_size: int) -> HttpCall:
        path = ELEMENT_PRESETS if presets else ELEMENTS
        return HttpCall("GET", f"{path}?page_num={page_num}&page_size={page_size}")

    def delete_element(self, element_id: str) -> HttpCall:
        return HttpCall("POST", ELEMENT_DELETE, {"element_id": element_id})

    def parse_elements(self, body: Any) -> list[dict[str, Any]]:
        """the gateway's manual's element list."""
        self.parse_deleted(body)
        data = as_dict(body).get("data")
        # Element ids are 64-bit integers in JSON: kept as text so nothing rounds them.
        return [
            {**entry, "element_id": str(entry.get("element_id"))}
            for entry in (data if isinstance(data, list) else [])
            if isinstance(entry, dict)
        ]

    def parse_deleted(self, body: Any) -> None:
        # The elements endpoints answer in Kling's {code, message, data} shape: non-zero refuses.
        if isinstance(body, dict) and body.get("code") not in (0, None):
            raise self.classify(200, body, {})

    def query(self, task_id: str, kind: JobKind = JobKind.MOTION_CONTROL) -> HttpCall | None:
        if kind is JobKind.CUSTOM_ELEMENT:
            return None  # made synchronously: the create answer was the outcome
        return HttpCall("GET", f"{VIDEOS}/{quote(task_id, safe='')}")

    # ---- answers -------------------------------------------------------------------------------

    def parse_create(self, body: Any, kind: JobKind = JobKind.MOTION_CONTROL) -> Submission:
        if kind is JobKind.CUSTOM_ELEMENT:
            return self._parse_element(body)
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            raise ProviderError(
                self.dialect, ProviderErrorClass.UNKNOWN_OUTCOME, f"create answer without id: {body!r}"
            )
        return Submission(task_id=body["id"], raw=body)

    def _parse_element(self, body: Any) -> Submission:
        if isinstance(body, dict) and body.get("code") not in (0, None):
            raise self.classify(200, body, {})
        element = as_dict(as_dict(body).get("data")).get("element_id")
        if element is None or element == "":
            raise ProviderError(
                self.dialect,
                ProviderErrorClass.UNKNOWN_OUTCOME,
                f"element answer without element_id: {body!r}",
            )
        # Element ids are 64-bit integers in JSON: kept as text so nothing rounds them.
        return Submission(task_id=str(element), raw=body, element_id=str(element))

    def naming_upstream(self, call: HttpCall, upstream: str) -> HttpCall:
        # the gateway's manual: "provider" speeds up the query of a task no longer in the gateway's cache.
        return HttpCall(call.method, f"{call.path}?provider={quote(upstream, safe='')}", call.json)

    def parse_task(self, body: Any, *, task_id: str | None = None) -> TaskReport:
        if isinstance(body, dict) and isinstance(body.get("data"), list):
            # the gateway's manual's unified format, whatever else the answer carries beside data[].
            return self._parse_unified(body, task_id)
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            raise ProviderError(
                self.dialect, ProviderErrorClass.PROVIDER_DOWN, f"task answer without id: {body!r}"
            )
        word = str(body.get("status", ""))
        usage = as_dict(body.get("usage"))
        # the gateway's manual names it `seconds`; its unified answer format says `duration_seconds`.
        seconds = number(usage.get("seconds", usage.get("duration_seconds")))
        outputs: tuple[TaskOutput, ...] = ()
        if isinstance(body.get("video_url"), str):
            outputs = (TaskOutput(body["video_url"], seconds),)
        error = body.get("error")
        return TaskReport(
            task_id=body["id"],
            status=self.status_of(word),
            provider_status=word,
            outputs=outputs,
            error_code=JobErrorCode.PROVIDER_FAILED if error else None,
            error_message=str(error) if error else None,
            usage=Usage(seconds, UsageUnit.SECONDS) if seconds is not None and word == "completed" else None,
        )

    def _parse_unified(self, body: dict[str, Any], task_id: str | None) -> TaskReport:
        """the gateway's manual's unified completed answer: `data[] {url, duration, width, height,
        cover_url}`, `usage.duration_seconds`, `provider`, `origin_data`. It carries no id or
        status: it only ever describes a finished task, the one that was asked about. As a
        callback it names no task of the gateway's (`origin_data` is the upstream's own answer,
        with the upstream's ids): it is unreadable as a hint, and the receiver then has archive
        ask the gateway about the job the callback URL names."""
        found_id = body.get("id") if isinstance(body.get("id"), str) else task_id
        if found_id is None:
            raise ValueError("a unified answer names no gateway task id")
        entries = [e for e in body["data"] if isinstance(e, dict) and isinstance(e.get("url"), str)]
        usage = as_dict(body.get("usage"))
        seconds = number(usage.get("duration_seconds", usage.get("seconds")))
        outputs = tuple(
            TaskOutput(
                e["url"],
                number(e.get("duration")),
                cover_url=e["cover_url"] if isinstance(e.get("cover_url"), str) else None,
            )
            for e in entries
        )
        if not outputs and isinstance(body.get("video_url"), str):  # both formats in one answer
            outputs = (TaskOutput(body["video_url"], seconds),)
        word = str(body["status"]) if body.get("status") else ("completed" if outputs else "")
        error = body.get("error")
        return TaskReport(
            task_id=str(found_id),
            status=self.status_of(word) if word else None,
            provider_status=word or "unified without data",
            outputs=outputs,
            error_code=JobErrorCode.PROVIDER_FAILED if error else None,
            error_message=str(error) if error else None,
            usage=Usage(seconds, UsageUnit.SECONDS) if seconds is not None and entries else None,
            upstream=str(body["provider"]) if body.get("provider") else None,
        )

    def error_class_for(self, status: int, body: Any) -> tuple[ProviderErrorClass, str | None]:
        # The elements endpoint answers in Kling's {code, message} shape.
        code = body.get("code") if isinstance(body, dict) else None
        if isinstance(code, int) and code and (mapped := class_of_code(code)) is not None:
            return mapped, str(code)
        return super().error_class_for(status, body)
