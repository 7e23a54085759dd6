"""`apimaster` dialect (apimaster's page): `kling-v3-motion-control` behind an OpenAI-style path.

No callback is documented: the sweeper alone finishes these tasks. A completed task's `url` may
be APIMaster's own proxy, in which case `GET /videos/{task_id}/content` streams the MP4 with the
same bearer key.
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

from klingflow.core.codes import JobErrorCode, ProviderErrorClass
from klingflow.core.errors import ProviderError
from klingflow.core.kind_motion import MotionControlRequest
from klingflow.core.kinds import JobKind
from klingflow.core.states import JobStatus

from .base import Adapter, Download, HttpCall, Submission, TaskOutput, TaskReport, TaskSpec
from .bodies import flat_motion_fields, watermark_info

MODELS = {JobKind.MOTION_CONTROL: "kling-v3-motion-control"}


class ApimasterAdapter(Adapter):
    dialect = "apimaster"
    default_models = MODELS
    sends_callbacks = False
    supports_external_id = False
    watermark_kinds = frozenset({JobKind.MOTION_CONTROL})  # apimaster's page
    status_words: ClassVar[dict[str, JobStatus]] = {
        "submitted": JobStatus.SUBMITTED,
        "pending": JobStatus.SUBMITTED,
        "queued": JobStatus.SUBMITTED,
        "processing": JobStatus.RUNNING,
        "running": JobStatus.RUNNING,
        "in_progress": JobStatus.RUNNING,
        "completed": JobStatus.SUCCEEDED,
        "succeeded": JobStatus.SUCCEEDED,
        "failed": JobStatus.FAILED,
        "cancelled": JobStatus.CANCELLED,
    }

    def create_motion_control(self, spec: TaskSpec) -> HttpCall:
        request = spec.of(MotionControlRequest)
        body: dict[str, Any] = {
            "model": self.model_for(request.kind),
            **flat_motion_fields(request),
            "watermark_info": watermark_info(request),
        }
        if spec.billing is not None and not spec.billing.upper_bound:
            # Only used for the pre-charge estimate; billing follows the server's own probe.
            body["duration"] = spec.billing.seconds
        if request.prompt:
            body["prompt"] = request.prompt
        # No callback_url: apimaster documents none (its tasks are finished by the sweeper).
        return HttpCall("POST", "/videos/generations", body)

    def query(self, task_id: str, kind: JobKind = JobKind.MOTION_CONTROL) -> HttpCall:
        return HttpCall("GET", f"/videos/{quote(task_id, safe='')}")

    def parse_create(self, body: Any, kind: JobKind = JobKind.MOTION_CONTROL) -> Submission:
        data = body.get("data") if isinstance(body, dict) else None
        if isinstance(body, dict) and body.get("code") not in (None, 200):
            raise self.classify(int(body["code"]), body, {})
        if not (isinstance(data, list) and data and isinstance(data[0], dict) and data[0].get("task_id")):
            raise ProviderError(
                self.dialect, ProviderErrorClass.UNKNOWN_OUTCOME, f"create answer without task_id: {body!r}"
            )
        return Submission(task_id=str(data[0]["task_id"]), raw=body)

    def parse_task(self, body: Any, *, task_id: str | None = None) -> TaskReport:
        if not isinstance(body, dict) or not body.get("id"):
            raise ProviderError(
                self.dialect, ProviderErrorClass.PROVIDER_DOWN, f"task answer without id: {body!r}"
            )
        word = str(body.get("status", ""))
        outputs = (TaskOutput(str(body["url"])),) if body.get("url") else ()
        error = body.get("error")
        message = error.get("message") if isinstance(error, dict) else error
        return TaskReport(
            task_id=str(body["id"]),
            status=self.status_of(word),
            provider_status=word,
            outputs=outputs,
            error_code=JobErrorCode.PROVIDER_FAILED if word == "failed" else None,
            error_message=str(message) if message else None,
        )

    def download(self, task_id: str, output: TaskOutput) -> Download:
        if (urlsplit(output.url).hostname or "").lower() == self.host.lower():
            # A proxy address: fetch through the documented content endpoint, authenticated.
            return self.content_endpoint(task_id)
        return Download(output.url)

    def content_endpoint(self, task_id: str) -> Download:
        return Download(f"{self.base_url}/videos/{quote(task_id, safe='')}/content", authenticated=True)
