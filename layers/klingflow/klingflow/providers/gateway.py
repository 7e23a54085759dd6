"""`gateway` dialect (seed 003): one `/v1/videos` endpoint, routed by model and fields.

`model="Kling-V2.6"` with `action_control: true` is motion control. Tasks answer
`{id, status, created_at, model}`; completed adds `video_url` and `usage`, failed adds `error`.
Callbacks arrive on completion; `external_task_id` (unique per user) also finds a task.
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
    flat_motion_fields,
    with_optional,
)

MODEL = "Kling-V2.6"


class GatewayAdapter(Adapter):
    dialect = "gateway"
    default_model = MODEL
    sends_callbacks = True
    supports_external_id = True
    status_words: ClassVar[dict[str, JobStatus]] = {
        "pending": JobStatus.SUBMITTED,
        "processing": JobStatus.RUNNING,
        "completed": JobStatus.SUCCEEDED,
        "failed": JobStatus.FAILED,
    }

    def create_motion_control(self, spec: MotionControlSpec) -> HttpCall:
        body = {
            "model": self.model,
            "action_control": True,
            **flat_motion_fields(spec),
            "external_task_id": spec.job_id,
        }
        return HttpCall("POST", "/v1/videos", with_optional(body, spec))

    def query(self, task_id: str) -> HttpCall:
        return HttpCall("GET", f"/v1/videos/{quote(task_id, safe='')}")

    def parse_create(self, body: Any) -> Submission:
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            raise ProviderError(
                self.dialect, ProviderErrorClass.UNKNOWN_OUTCOME, f"create answer without id: {body!r}"
            )
        return Submission(task_id=body["id"], raw=body)

    def parse_task(self, body: Any, *, task_id: str | None = None) -> TaskReport:
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            raise ProviderError(
                self.dialect, ProviderErrorClass.PROVIDER_DOWN, f"task answer without id: {body!r}"
            )
        word = str(body.get("status", ""))
        usage = body.get("usage")
        seconds = usage.get("seconds") if isinstance(usage, dict) else None
        outputs: tuple[TaskOutput, ...] = ()
        if isinstance(body.get("video_url"), str):
            outputs = (TaskOutput(body["video_url"], float(seconds) if seconds is not None else None),)
        error = body.get("error")
        return TaskReport(
            task_id=body["id"],
            status=self.status_of(word),
            provider_status=word,
            outputs=outputs,
            error_code="PROVIDER_FAILED" if error else None,
            error_message=str(error) if error else None,
            billed_seconds=float(seconds) if seconds is not None else None,
        )
