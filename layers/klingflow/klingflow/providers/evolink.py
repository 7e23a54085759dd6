"""`evolink` dialect (seeds 000, 001, 002): an aggregator with an OpenAI-style task API.

Facts marked (?) in PROVIDERS.md (the motion-control body, the query path) are confined to the
constants and the two request builders below, so a correction is a one-line change.
Callbacks come on completed, failed or cancelled; output links live about 24 hours.
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import quote

from klingflow.errors import ProviderError, ProviderErrorClass
from klingflow.states import JobStatus

from .base import (
    Adapter,
    HttpCall,
    MotionControlSpec,
    Submission,
    TaskOutput,
    TaskReport,
    as_dict,
    mode_quality,
    with_optional,
)

MODEL = "kling-v3-motion-control"
CREATE_PATH = "/videos/generations"
QUERY_PATH = "/tasks/{task_id}"  # (?) PROVIDERS.md


class EvolinkAdapter(Adapter):
    dialect = "evolink"
    default_model = MODEL
    sends_callbacks = True
    supports_external_id = False
    status_words: ClassVar[dict[str, JobStatus]] = {
        "pending": JobStatus.SUBMITTED,
        "queued": JobStatus.SUBMITTED,
        "processing": JobStatus.RUNNING,
        "completed": JobStatus.SUCCEEDED,
        "failed": JobStatus.FAILED,
        "cancelled": JobStatus.CANCELLED,
    }

    def create_motion_control(self, spec: MotionControlSpec) -> HttpCall:
        request = spec.request
        body: dict[str, Any] = {
            "model": self.model,
            "image_urls": [spec.image_url],
            "video_urls": [spec.video_url],
            "quality": mode_quality(request.mode),
            "model_params": {
                "character_orientation": request.character_orientation.value,
                "keep_original_sound": request.keep_original_sound,
            },
        }
        return HttpCall("POST", CREATE_PATH, with_optional(body, spec))

    def query(self, task_id: str) -> HttpCall:
        return HttpCall("GET", QUERY_PATH.format(task_id=quote(task_id, safe="")))

    def parse_create(self, body: Any) -> Submission:
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            raise ProviderError(
                self.dialect, ProviderErrorClass.UNKNOWN_OUTCOME, f"create answer without id: {body!r}"
            )
        return Submission(task_id=body["id"], raw=body)

    def parse_task(self, body: Any, *, task_id: str | None = None) -> TaskReport:
        # PROVIDERS.md's (?) query answer does not promise an `id`: fall back to what was asked.
        if not isinstance(body, dict) or not isinstance(body.get("id") or task_id, str):
            raise ProviderError(
                self.dialect, ProviderErrorClass.PROVIDER_DOWN, f"task answer without id: {body!r}"
            )
        body = {**body, "id": body.get("id") or task_id}
        word = str(body.get("status", ""))
        results = body["results"] if isinstance(body.get("results"), list) else []
        error = as_dict(body.get("error"))
        return TaskReport(
            task_id=body["id"],
            status=self.status_of(word),
            provider_status=word,
            outputs=tuple(TaskOutput(str(url)) for url in results if isinstance(url, str)),
            error_code=str(error["code"]) if error.get("code") is not None else None,
            error_message=str(error["message"]) if error.get("message") else None,
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
