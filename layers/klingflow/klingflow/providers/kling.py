"""`kling`: Kling's own API, authenticated with a short-lived JWT.

The token is HS256 over {"iss": access_key, "exp": now + 1800, "nbf": now - 5}, signed with the
secret key, and refreshed five minutes before it expires. Answers wrap results in
`{"code", "message", "request_id", "data"}`; `code` 0 is success, and the 1000-5002 table maps
every documented code onto our taxonomy. Callbacks come on every status change. Each family has
its own path (motion-control, text2video, image2video, omni-video) for creating and querying.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote

import jwt

from klingflow.core.clock import Clock
from klingflow.core.codes import JobErrorCode, ProviderErrorClass
from klingflow.core.errors import FieldError, ProviderError
from klingflow.core.kind_motion import MotionControlRequest
from klingflow.core.kind_omni import OmniVideoRequest
from klingflow.core.kind_video import ImageToVideoRequest, TextToVideoRequest
from klingflow.core.kinds import AnyRequest, JobKind
from klingflow.core.states import JobStatus

from .base import Adapter, HttpCall, Submission, TaskOutput, TaskReport, TaskSpec, Usage, UsageUnit
from .bodies import (
    as_dict,
    camera,
    flat_motion_fields,
    multi_shot_fields,
    number,
    on_off,
    v2x_model,
    watermark_info,
    with_optional,
)
from .klingfamily import class_of_code, image_to_video_fields, omni_video_list, seconds_refusals

MODELS = {
    JobKind.MOTION_CONTROL: "kling-v3",
    JobKind.TEXT_TO_VIDEO: "kling-v3",
    JobKind.IMAGE_TO_VIDEO: "kling-v3",
    JobKind.OMNI_VIDEO: "kling-video-o1",
}
PATHS = {
    JobKind.MOTION_CONTROL: "/v1/videos/motion-control",
    JobKind.TEXT_TO_VIDEO: "/v1/videos/text2video",
    JobKind.IMAGE_TO_VIDEO: "/v1/videos/image2video",
    JobKind.OMNI_VIDEO: "/v1/videos/omni-video",
}
TOKEN_LIFETIME_S = 1800
TOKEN_REFRESH_MARGIN_S = 300
# 1303: "back off from >= 1 s" when no Retry-After says otherwise.
_MIN_BACKOFF_S = {ProviderErrorClass.CONCURRENCY_LIMIT: 1.0, ProviderErrorClass.RATE_LIMITED: 1.0}


class KlingAdapter(Adapter):
    dialect = "kling"
    default_models = MODELS
    sends_callbacks = True
    supports_external_id = True
    # the gateway's manual: element_list on the omni model; evolink's pages: Kling V3 motion control and
    # image-to-video take it too (?: their body on Kling's own API is not shown).
    element_kinds = frozenset({JobKind.OMNI_VIDEO, JobKind.MOTION_CONTROL, JobKind.IMAGE_TO_VIDEO})
    watermark_kinds = frozenset({JobKind.MOTION_CONTROL})  # docs/providers.md
    status_words: ClassVar[dict[str, JobStatus]] = {
        "submitted": JobStatus.SUBMITTED,
        "processing": JobStatus.RUNNING,
        "succeed": JobStatus.SUCCEEDED,  # sic: Kling's spelling
        "failed": JobStatus.FAILED,
    }

    def __init__(
        self, base_url: str, *, models: Mapping[JobKind, str] | None = None, clock: Clock | None = None
    ) -> None:
        super().__init__(base_url, models=models, clock=clock)
        self._lock = threading.Lock()
        self._token: tuple[str, str, int] | None = None  # (key fingerprint, token, expires at)

    def auth_headers(self, credentials: Mapping[str, str]) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(credentials)}"}

    def token(self, credentials: Mapping[str, str]) -> str:
        access_key = credentials.get("access_key", "")
        secret_key = credentials.get("secret_key", "")
        # A rotated secret key must not keep using a token signed with the old one.
        fingerprint = hashlib.sha256(f"{access_key}\0{secret_key}".encode()).hexdigest()
        now = int(self.clock.now().timestamp())
        with self._lock:
            cached = self._token
            if cached and cached[0] == fingerprint and now < cached[2] - TOKEN_REFRESH_MARGIN_S:
                return cached[1]
            expires = now + TOKEN_LIFETIME_S
            token = jwt.encode(
                {"iss": access_key, "exp": expires, "nbf": now - 5},
                secret_key,
                algorithm="HS256",
                headers={"alg": "HS256", "typ": "JWT"},
            )
            self._token = (fingerprint, token, expires)
            return token

    # ---- requests ------------------------------------------------------------------------------

    def create_motion_control(self, spec: TaskSpec) -> HttpCall:
        request = spec.of(MotionControlRequest)
        body = {
            "model_name": self.model_for(request.kind),
            **flat_motion_fields(request),
            "watermark_info": watermark_info(request),
            "external_task_id": spec.job_id,
        }
        elements = [{"element_id": element} for element in request.elements]
        return HttpCall("POST", PATHS[request.kind], with_optional(body, spec, element_list=elements))

    def create_text_to_video(self, spec: TaskSpec) -> HttpCall:
        request = spec.of(TextToVideoRequest)
        body = {**self._generated(request, spec), "aspect_ratio": request.aspect_ratio.value}
        optional = {
            "negative_prompt": request.negative_prompt,
            "camera_control": camera(request.camera_control),
        }
        return HttpCall("POST", PATHS[request.kind], with_optional(body, spec, **optional))

    def create_image_to_video(self, spec: TaskSpec) -> HttpCall:
        request = spec.of(ImageToVideoRequest)
        body = self._generated(request, spec)
        elements = [{"element_id": element} for element in request.elements]
        return HttpCall(
            "POST",
            PATHS[request.kind],
            with_optional(body, spec, element_list=elements, **image_to_video_fields(request)),
        )

    def _generated(self, request: TextToVideoRequest | ImageToVideoRequest, spec: TaskSpec) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model_name": self.model_for(request.kind),
            "mode": request.mode.value,
            "duration": str(request.duration_s),
            "sound": on_off(request.sound),
            "external_task_id": spec.job_id,
        }
        if request.cfg_scale is not None:
            body["cfg_scale"] = request.cfg_scale
        return body | multi_shot_fields(request.shots)

    def takes_shots(self, kind: JobKind) -> bool:
        generated = kind in (JobKind.TEXT_TO_VIDEO, JobKind.IMAGE_TO_VIDEO)
        return generated and not v2x_model(self.model_for(kind))

    def takes_cfg_scale(self, kind: JobKind) -> bool:
        generated = kind in (JobKind.TEXT_TO_VIDEO, JobKind.IMAGE_TO_VIDEO)
        return generated and not v2x_model(self.model_for(kind))

    def create_omni_video(self, spec: TaskSpec) -> HttpCall:
        request = spec.of(OmniVideoRequest)
        # Kling's native shape: every image in one image_list, frames marked by type.
        images = [
            {"image_url": url, "type": kind}
            for url, kind in ((request.first_frame, "first_frame"), (request.last_frame, "end_frame"))
            if url is not None
        ] + [{"image_url": url} for url in request.reference_images]
        seconds = request.generated_seconds
        aspect = request.resolved_aspect_ratio
        body = {
            "model_name": self.model_for(request.kind),
            "mode": request.mode.value,
            "external_task_id": spec.job_id,
        }
        return HttpCall(
            "POST",
            PATHS[request.kind],
            with_optional(
                body,
                spec,
                image_list=images,
                element_list=[{"element_id": element} for element in request.elements],
                video_list=omni_video_list(request),
                aspect_ratio=aspect.value if aspect else None,
                duration=str(seconds) if seconds is not None else None,
            ),
        )

    def refusals(self, request: AnyRequest) -> list[FieldError]:
        return seconds_refusals(self.dialect, request)

    def query(self, task_id: str, kind: JobKind = JobKind.MOTION_CONTROL) -> HttpCall:
        return HttpCall("GET", f"{PATHS[kind]}/{quote(task_id, safe='')}")

    # ---- answers -------------------------------------------------------------------------------

    def _data(self, body: Any, *, on_missing: ProviderErrorClass) -> dict[str, Any]:
        if isinstance(body, dict) and body.get("code") not in (0, None):
            raise self.classify(200, body, {})
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict) or not data.get("task_id"):
            raise ProviderError(self.dialect, on_missing, f"answer without data.task_id: {body!r}")
        return data

    def parse_create(self, body: Any, kind: JobKind = JobKind.MOTION_CONTROL) -> Submission:
        data = self._data(body, on_missing=ProviderErrorClass.UNKNOWN_OUTCOME)
        info = as_dict(data.get("task_info"))
        return Submission(
            task_id=str(data["task_id"]), external_task_id=info.get("external_task_id"), raw=body
        )

    def parse_task(self, body: Any, *, task_id: str | None = None) -> TaskReport:
        return self._report(self._data(body, on_missing=ProviderErrorClass.PROVIDER_DOWN))

    def parse_callback(self, body: Any) -> TaskReport:
        # The callback is the task object itself, not wrapped in {code, data}.
        if not isinstance(body, dict) or not body.get("task_id"):
            raise ValueError("callback without task_id")
        return self._report(body)

    def _report(self, data: dict[str, Any]) -> TaskReport:
        word = str(data.get("task_status", ""))
        result = as_dict(data.get("task_result"))
        videos = [v for v in (result.get("videos") or []) if isinstance(v, dict) and v.get("url")]
        info = as_dict(data.get("task_info"))
        status = self.status_of(word)
        units = number(data.get("final_unit_deduction")) if status is JobStatus.SUCCEEDED else None
        return TaskReport(
            task_id=str(data["task_id"]),
            status=status,
            provider_status=word,
            outputs=tuple(
                TaskOutput(
                    str(v["url"]),
                    number(v.get("duration")),
                    watermarked_url=str(v["watermark_url"]) if v.get("watermark_url") else None,
                )
                for v in videos
            ),
            error_code=JobErrorCode.PROVIDER_FAILED if status is JobStatus.FAILED else None,
            error_message=str(data.get("task_status_msg")) if status is JobStatus.FAILED else None,
            # What Kling deducted, in units of the account's resource pack (not the output's
            # duration: motion control bills the reference video whatever the model extracted).
            usage=Usage(units, UsageUnit.UNITS)
            if units is not None and status is JobStatus.SUCCEEDED
            else None,
            external_task_id=info.get("external_task_id"),
            message=str(data["task_status_msg"]) if data.get("task_status_msg") else None,
        )

    def error_class_for(self, status: int, body: Any) -> tuple[ProviderErrorClass, str | None]:
        code = body.get("code") if isinstance(body, dict) else None
        if isinstance(code, int) and (mapped := class_of_code(code)) is not None:
            return mapped, str(code)
        return super().error_class_for(status, body)

    def default_backoff_s(self, error_class: ProviderErrorClass) -> float | None:
        return _MIN_BACKOFF_S.get(error_class)
