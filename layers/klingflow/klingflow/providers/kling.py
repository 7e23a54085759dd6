"""`kling`: Kling's own API, authenticated with a short-lived JWT.

The token is HS256 over {"iss": access_key, "exp": now + 1800, "nbf": now - 5}, signed with the
secret key, and refreshed five minutes before it expires. Answers wrap results in
`{"code", "message", "request_id", "data"}`; `code` 0 is success, and the 1000-5002 table below
maps every documented code onto our taxonomy. Callbacks come on every status change.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote

import jwt

from klingflow.clock import Clock
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
    flat_motion_fields,
    with_optional,
)

MODEL_NAME = "kling-v3"
PATH = "/v1/videos/motion-control"
TOKEN_LIFETIME_S = 1800
TOKEN_REFRESH_MARGIN_S = 300

# Kling's business codes (PROVIDERS.md section 4), by range.
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
# 1303: "back off from >= 1 s" when no Retry-After says otherwise.
_MIN_BACKOFF_S = {ProviderErrorClass.CONCURRENCY_LIMIT: 1.0, ProviderErrorClass.RATE_LIMITED: 1.0}


def class_of_code(code: int) -> ProviderErrorClass | None:
    known = next((error_class for codes, error_class in _CODES if code in codes), None)
    if known is None and code >= 5000:
        return ProviderErrorClass.UNKNOWN_OUTCOME  # an undocumented server error may have landed
    return known


class KlingAdapter(Adapter):
    dialect = "kling"
    default_model = MODEL_NAME
    sends_callbacks = True
    supports_external_id = True
    status_words: ClassVar[dict[str, JobStatus]] = {
        "submitted": JobStatus.SUBMITTED,
        "processing": JobStatus.RUNNING,
        "succeed": JobStatus.SUCCEEDED,  # sic: Kling's spelling
        "failed": JobStatus.FAILED,
    }

    def __init__(self, base_url: str, *, model: str | None = None, clock: Clock | None = None) -> None:
        super().__init__(base_url, model=model, clock=clock)
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

    def create_motion_control(self, spec: MotionControlSpec) -> HttpCall:
        body = {
            "model_name": self.model,
            **flat_motion_fields(spec),
            "watermark_info": {"enabled": False},
            "external_task_id": spec.job_id,
        }
        return HttpCall("POST", PATH, with_optional(body, spec))

    def query(self, task_id: str) -> HttpCall:
        return HttpCall("GET", f"{PATH}/{quote(task_id, safe='')}")

    def _data(self, body: Any, *, on_missing: ProviderErrorClass) -> dict[str, Any]:
        if isinstance(body, dict) and body.get("code") not in (0, None):
            raise self.classify(200, body, {})
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict) or not data.get("task_id"):
            raise ProviderError(self.dialect, on_missing, f"answer without data.task_id: {body!r}")
        return data

    def parse_create(self, body: Any) -> Submission:
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
        return TaskReport(
            task_id=str(data["task_id"]),
            status=status,
            provider_status=word,
            outputs=tuple(TaskOutput(str(v["url"]), _seconds(v.get("duration"))) for v in videos),
            error_code="PROVIDER_FAILED" if status is JobStatus.FAILED else None,
            error_message=str(data.get("task_status_msg")) if status is JobStatus.FAILED else None,
            # The output's duration is not what is billed (the reference video is, whatever the
            # model extracted from it): billing falls back to the probed reference duration.
            billed_seconds=None,
            external_task_id=info.get("external_task_id"),
        )

    def error_class_for(self, status: int, body: Any) -> tuple[ProviderErrorClass, str | None]:
        code = body.get("code") if isinstance(body, dict) else None
        if isinstance(code, int) and (mapped := class_of_code(code)) is not None:
            return mapped, str(code)
        return super().error_class_for(status, body)

    def default_backoff_s(self, error_class: ProviderErrorClass) -> float | None:
        return _MIN_BACKOFF_S.get(error_class)


def _seconds(value: Any) -> float | None:
    # Kling reports durations as strings ("5.1").
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
