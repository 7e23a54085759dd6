"""What each dialect says over the wire: routes, validation, bodies, errors, callbacks.

Field names and shapes follow shared/PROVIDERS.md and the seeds exactly; a dialect added later
(evolink, kling) is one more class here and one entry in DIALECTS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import urlsplit

from .core import Emulator, Task, iso_z

DAY = 24 * 3600.0


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


class Dialect:
    name: ClassVar[str]
    link_ttl_s: ClassVar[float]
    # Where the API's paths start on this server (apimaster's base URL ends in /v1).
    prefix: ClassVar[str] = ""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator

    def handle(self, method: str, path: str, headers: dict[str, str], body: Any, base: str) -> Reply:
        raise NotImplementedError

    def notify(self, task: Task, phase: str) -> dict[str, Any] | None:
        """The callback body for this phase change, or None when the dialect sends none."""
        return None

    # ---- shared helpers --------------------------------------------------------------------

    def authorised(self, headers: dict[str, str]) -> bool:
        expected = self.emulator.keys.get(self.name)
        if expected is None:
            return headers.get("authorization", "").startswith("Bearer ")
        return headers.get("authorization") == f"Bearer {expected}"

    def output_url(self, base: str, task: Task) -> str:
        ttl = self.emulator.faults_for(self.name).link_ttl_s or self.link_ttl_s
        expires = int((task.finished_at() + timedelta(seconds=ttl)).timestamp())
        host = self.emulator.faults_for(self.name).output_host
        if host:  # the same server under another name, e.g. one a download allowlist lacks
            base = base.replace("127.0.0.1", host, 1)
        return f"{base}/files/{task.task_id}/output.mp4?expires={expires}"

    def fault_reply(self) -> Reply | None:
        faults = self.emulator.faults_for(self.name)
        if faults.create_status is None:
            return None
        headers = {"Retry-After": str(faults.retry_after_s)} if faults.retry_after_s is not None else {}
        return Reply(faults.create_status, self.error_body(faults.create_status, "injected fault"), headers)

    def error_body(self, status: int, message: str) -> Any:
        return {"error": {"message": message, "code": status}}

    def billed_seconds(self, task: Task) -> int:
        return max(1, math.ceil((task.input_seconds or 5.0) - 1e-9))


def _motion_errors(body: dict[str, Any], *, image: str = "image_url", video: str = "video_url") -> list[str]:
    """The common motion-control rules a provider checks on the request itself."""
    problems = []
    for name in (image, video):
        if not isinstance(body.get(name), str) or not body[name]:
            problems.append(f"{name} is required")
    if body.get("character_orientation") not in ("image", "video"):
        problems.append("character_orientation must be image or video")
    if body.get("mode") not in ("std", "pro"):
        problems.append("mode must be std or pro")
    prompt = body.get("prompt")
    if prompt is not None and (not isinstance(prompt, str) or len(prompt) > 2500):
        problems.append("prompt must be a string of at most 2500 characters")
    if body.get("keep_original_sound", "yes") not in ("yes", "no"):
        problems.append("keep_original_sound must be yes or no")
    return problems


def _video_too_long(task: Task, orientation: str) -> str | None:
    limit = 10 if orientation == "image" else 30
    if task.input_seconds is not None and not 3 <= task.input_seconds <= limit:
        return (
            f"reference video is {task.input_seconds:.1f} s; "
            f"allowed 3..{limit} s for character_orientation={orientation}"
        )
    return None


class Gateway(Dialect):
    """Seed 003: POST /v1/videos routed by model and fields; callbacks on completion."""

    name = "gateway"
    link_ttl_s = 30 * DAY

    def handle(self, method: str, path: str, headers: dict[str, str], body: Any, base: str) -> Reply:
        if not self.authorised(headers):
            return Reply(401, {"error": "invalid api key"})
        if method == "POST" and path == "/v1/videos":
            return self._create(body, base)
        if method == "GET" and path.startswith("/v1/videos/"):
            task = self.emulator.find(self.name, path.removeprefix("/v1/videos/"))
            if task is None:
                return Reply(404, {"error": "task not found"})
            return Reply(200, self.view(task, self.emulator.clock.now(), base))
        return Reply(404, {"error": f"no route {method} {path}"})

    def _create(self, body: Any, base: str) -> Reply:
        if (fault := self.fault_reply()) is not None:
            return fault
        if not isinstance(body, dict):
            return Reply(400, {"error": "body must be a JSON object"})
        if body.get("model") != "Kling-V2.6" or body.get("action_control") is not True:
            return Reply(
                400, {"error": "this emulator routes Kling-V2.6 with action_control=true (motion control)"}
            )
        problems = _motion_errors(body)
        external = body.get("external_task_id")
        if isinstance(external, str) and self.emulator.external_id_taken(self.name, external):
            problems.append("external_task_id must be unique per user")
        if problems:
            return Reply(400, {"error": "; ".join(problems)})
        task = self.emulator.create(
            self.name,
            body,
            prefix="task_",
            input_url=body["video_url"],
            callback_url=body.get("callback_url"),
            external_task_id=external if isinstance(external, str) else None,
        )
        task.input_error = task.input_error or _video_too_long(task, body["character_orientation"])
        task.base = base
        return Reply(
            200,
            {
                "id": task.task_id,
                "status": "pending",
                "created_at": iso_z(task.created),
                "model": "Kling-V2.6",
            },
        )

    def view(self, task: Task, now: datetime, base: str) -> dict[str, Any]:
        phase = task.phase(now)
        status = {"queued": "pending"}.get(phase, phase)
        answer: dict[str, Any] = {
            "id": task.task_id,
            "status": status,
            "created_at": iso_z(task.created),
            "model": "Kling-V2.6",
        }
        if status == "completed":
            size = "1920*1080" if task.body.get("mode") == "pro" else "1280*720"
            answer |= {
                "completed_at": iso_z(task.finished_at()),
                "video_url": self.output_url(base, task),
                "usage": {"seconds": float(self.billed_seconds(task)), "video_count": 1, "size": size},
            }
        elif status == "failed":
            answer["error"] = task.input_error or "内容审核未通过"
        return answer

    def notify(self, task: Task, phase: str) -> dict[str, Any] | None:
        if phase not in ("completed", "failed"):
            return None
        return self.view(task, task.finished_at(), task.base)


class Apimaster(Dialect):
    """Seed 004: kling-v3-motion-control; no callbacks; a proxy URL and a /content endpoint."""

    name = "apimaster"
    link_ttl_s = 30 * DAY
    prefix = "/v1"

    def handle(self, method: str, path: str, headers: dict[str, str], body: Any, base: str) -> Reply:
        if not self.authorised(headers):
            return Reply(401, self.error_body(401, "API Key 无效"))
        if method == "POST" and path == "/v1/videos/generations":
            return self._create(body)
        if method == "GET" and path.startswith("/v1/videos/"):
            rest = path.removeprefix("/v1/videos/")
            task_id, _, tail = rest.partition("/")
            task = self.emulator.find(self.name, task_id)
            if task is None:
                return Reply(404, self.error_body(404, "task not found"))
            if tail == "content":
                return self._content(task)
            return Reply(200, self.view(task, self.emulator.clock.now(), base))
        return Reply(404, self.error_body(404, f"no route {method} {path}"))

    def error_body(self, status: int, message: str) -> Any:
        return {"code": status, "message": message}

    def _create(self, body: Any) -> Reply:
        if (fault := self.fault_reply()) is not None:
            return fault
        if not isinstance(body, dict):
            return Reply(400, self.error_body(400, "参数无效: body must be a JSON object"))
        problems = _motion_errors(body)
        if body.get("model") != "kling-v3-motion-control":
            problems.insert(0, "model must be kling-v3-motion-control")
        if problems:
            return Reply(400, self.error_body(400, "参数无效: " + "; ".join(problems)))
        task = self.emulator.create(self.name, body, prefix="task_", input_url=body["video_url"])
        task.input_error = task.input_error or _video_too_long(task, body["character_orientation"])
        return Reply(200, {"code": 200, "data": [{"status": "submitted", "task_id": task.task_id}]})

    def view(self, task: Task, now: datetime, base: str) -> dict[str, Any]:
        phase = task.phase(now)
        status = {"queued": "submitted"}.get(phase, phase)
        answer: dict[str, Any] = {"id": task.task_id, "status": status}
        if status == "completed":
            # A proxy address on our own host: clients fetch it through /content.
            answer["url"] = self.output_url(base, task)
        elif status == "failed":
            answer["error"] = {"message": task.input_error or "generation failed"}
        return answer

    def _content(self, task: Task) -> Reply:
        if task.phase(self.emulator.clock.now()) != "completed":
            return Reply(409, self.error_body(409, "task is not completed"))
        return Reply(200, self.emulator.output_bytes(self.name), {"Content-Type": "video/mp4"})


DIALECTS: dict[str, type[Dialect]] = {Gateway.name: Gateway, Apimaster.name: Apimaster}


def host_of(url: str) -> str:
    return urlsplit(url).hostname or ""
