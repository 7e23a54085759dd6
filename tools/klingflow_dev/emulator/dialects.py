"""What each dialect says over the wire: routes, validation, bodies, errors, callbacks.

Field names and shapes follow docs/providers.md and the providers' documentation exactly; a dialect
added later is one more class here and one entry in DIALECTS.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import urlsplit

import jwt

from . import rules
from .core import ENDS, Emulator, Task, iso_z

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

    def reset(self) -> None:
        """Forget what this dialect keeps of its own (gateway's elements)."""

    # The phases a dialect calls back on (docs/providers.md); none by default.
    callback_phases: ClassVar[frozenset[str]] = frozenset()

    def view(self, task: Task, now: datetime, base: str) -> dict[str, Any]:
        raise NotImplementedError

    def notify(self, task: Task, phase: str) -> dict[str, Any] | None:
        """The callback body for this phase change, or None when the dialect sends none: the
        task as its query would show it at the moment it entered the phase."""
        if phase not in self.callback_phases:
            return None
        return self.view(task, task.entered(phase), task.base)

    # ---- shared helpers --------------------------------------------------------------------

    # The presets (official elements) an account may use without making them.
    presets: ClassVar[tuple[dict[str, Any], ...]] = ()

    def element_problems(self, entries: Any) -> list[str]:
        """An element_list must name elements this account holds: its own or a preset."""
        if entries in (None, []):
            return []
        if not isinstance(entries, list) or not all(
            isinstance(entry, dict) and entry.get("element_id") not in (None, "") for entry in entries
        ):
            return ["element_list takes [{element_id}] entries"]
        held = self.emulator.elements_made(self.name) | {str(p["element_id"]) for p in self.presets}
        return [
            f"element_list.{index}: element {entry['element_id']} not found in this account"
            for index, entry in enumerate(entries)
            if str(entry["element_id"]) not in held
        ]

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

    def extra_url(self, base: str, task: Task, name: str) -> str:
        """A file made beside the clip (a cover, a watermarked copy), served like the clip."""
        url = self.output_url(base, task).replace("/output.mp4?", f"/{name}?", 1)
        host = self.emulator.faults_for(self.name).extra_host
        return url.replace("127.0.0.1", host, 1) if host else url

    def fault_reply(self, *, after_create: bool = False) -> Reply | None:
        faults = self.emulator.faults_for(self.name)
        if faults.create_status is None or faults.create_after_fault is not after_create:
            return None
        headers = {"Retry-After": str(faults.retry_after_s)} if faults.retry_after_s is not None else {}
        body = self.error_body(faults.create_status, "injected fault", code=faults.create_code)
        return Reply(faults.create_status, body, headers)

    def error_body(self, status: int, message: str, *, code: int | None = None) -> Any:
        return {"error": {"message": message, "code": code or status}}

    def start(
        self,
        body: dict[str, Any],
        base: str,
        *,
        prefix: str,
        kind: str,
        input_url: str | None,
        seconds: float | None,
        orientation: str | None = None,
        external: str | None = None,
    ) -> Task:
        """Create the task a valid body asks for; motion control also checks what it measured."""
        task = self.emulator.create(
            self.name,
            body,
            prefix=prefix,
            input_url=input_url,
            callback_url=body.get("callback_url"),
            external_task_id=external,
            kind=kind,
            seconds=seconds,
        )
        task.base = base
        if orientation is not None:
            task.input_error = task.input_error or _video_too_long(task, orientation)
        return task

    def billed_seconds(self, task: Task) -> int:
        """Generated clips bill the length asked for; everything else the input video measured."""
        return max(1, math.ceil((task.seconds or task.input_seconds or 5.0) - 1e-9))

    def charged(self, amount: float) -> float:
        """What a finished task reports it charged: its price, more under `Faults.overcharge`."""
        return round(amount * (1 + self.emulator.faults_for(self.name).overcharge), 4)


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


def _omni(body: dict[str, Any], *, flat: bool) -> tuple[list[str], str | None, float | None]:
    """(problems, the video to measure when editing, the clip length asked for) of an omni body.

    gateway takes the gateway's manual's flat form (first_frame_url, last_frame_url, reference_images);
    Kling its native image_list with frames marked by type.
    """
    if flat:
        first, last = int(bool(body.get("first_frame_url"))), int(bool(body.get("last_frame_url")))
        images = first + last + len(body.get("reference_images") or [])
        seconds_field = "seconds"
    else:
        listed = [i for i in body.get("image_list") or [] if isinstance(i, dict)]
        first = sum(1 for i in listed if i.get("type") == "first_frame")
        last = sum(1 for i in listed if i.get("type") == "end_frame")
        images = len(listed)
        seconds_field = "duration"
    problems = rules.omni_errors(body, first=first, last=last, images=images, seconds_field=seconds_field)
    videos = [v for v in body.get("video_list") or [] if isinstance(v, dict)]
    editing = next((str(v.get("video_url")) for v in videos if v.get("refer_type") == "base"), None)
    seconds = None if editing else float(body.get(seconds_field) or 5)
    return problems, editing, seconds


def _no_element_list(body: dict[str, Any], where: str) -> list[str]:
    return [f"element_list is not taken by {where}"] if "element_list" in body else []


def _video_too_long(task: Task, orientation: str) -> str | None:
    limit = 10 if orientation == "image" else 30
    if task.input_seconds is not None and not 3 <= task.input_seconds <= limit:
        return (
            f"reference video is {task.input_seconds:.1f} s; "
            f"allowed 3..{limit} s for character_orientation={orientation}"
        )
    return None


# Official elements every Kling-family account may use (the gateway's manual's example names 145 and 146).
KLING_PRESETS: tuple[dict[str, Any], ...] = tuple(
    {
        "element_id": number,
        "element_name": name,
        "element_description": f"preset {name}",
        "element_frontal_image": f"https://p4-kling.klingai.com/element/{number}.jpg",
        "element_refer_list": [{"image_url": f"https://p4-kling.klingai.com/element/{number}-1.jpg"}],
        "tag_list": [{"id": "o_101", "name": "character", "description": "a person"}],
        "owned_by": "kling",
    }
    for number, name in ((145, "assassin"), (146, "traveller"), (147, "chef"))
)


# The upstream the gateway's manual's unified answers name ("可灵AI", Kling AI).
UPSTREAM = "可灵AI"


class Gateway(Dialect):
    """the gateway's manual: POST /v1/videos routed by model and fields; callbacks on completion."""

    name = "gateway"
    presets = KLING_PRESETS
    callback_phases = frozenset({"completed", "failed"})  # on completion
    link_ttl_s = 30 * DAY

    def __init__(self, emulator: Emulator) -> None:
        super().__init__(emulator)
        self.elements: list[dict[str, Any]] = []

    def reset(self) -> None:
        self.elements.clear()

    def handle(self, method: str, path: str, headers: dict[str, str], body: Any, base: str) -> Reply:
        if not self.authorised(headers):
            return Reply(401, {"error": "invalid api key"})
        if method == "POST" and path == "/v1/videos":
            return self._create(body, base)
        if method == "GET" and path.startswith("/v1/videos/"):
            task = self.emulator.find(self.name, path.removeprefix("/v1/videos/"))
            if task is None or task.kind == "custom_element":
                return Reply(404, {"error": "task not found"})
            return Reply(200, self.view(task, self.emulator.clock.now(), base))
        if method == "POST" and path == "/v1/elements/custom":
            return self._create_element(body)
        if method == "GET" and path == "/v1/elements/custom":
            return self._page(self.elements, body)
        if method == "GET" and path == "/v1/elements/presets":
            return self._page(list(self.presets), body)
        if method == "POST" and path == "/v1/elements/delete":
            return self._delete_element(body)
        return Reply(404, {"error": f"no route {method} {path}"})

    def _create(self, body: Any, base: str) -> Reply:
        if (fault := self.fault_reply()) is not None:
            return fault
        if not isinstance(body, dict):
            return Reply(400, {"error": "body must be a JSON object"})
        # the gateway's manual's routing: the omni model, then action_control, then any image, then text.
        model = body.get("model")
        input_url: str | None = None
        seconds: float | None = None
        if model == "Kling-Video-O1":
            kind = "omni_video"
            problems, input_url, seconds = _omni(body, flat=True)
            problems += self.element_problems(body.get("element_list"))
        elif model != "Kling-V2.6":
            return Reply(400, {"error": "model must be Kling-V2.6 or Kling-Video-O1"})
        elif body.get("action_control") is True:
            kind, problems, input_url = "motion_control", _motion_errors(body), body.get("video_url")
            problems += _no_element_list(body, "Kling-V2.6")
        else:
            kind = "image_to_video" if body.get("image") or body.get("image_tail") else "text_to_video"
            problems = rules.generated_errors(
                body, seconds_field="seconds", seconds=("5", "10"), prompt_required=kind == "text_to_video"
            )
            if kind == "image_to_video":
                problems += rules.image_to_video_errors(body) + rules.cfg_scale_errors(body, model)
            elif "cfg_scale" in body:
                problems.append("cfg_scale is documented for image-to-video only")
            problems += _no_element_list(body, "Kling-V2.6")
            seconds = float(body.get("seconds") or 5)
        external = body.get("external_task_id")
        if isinstance(external, str) and self.emulator.external_id_taken(self.name, external):
            problems.append("external_task_id must be unique per user")
        if problems:
            return Reply(400, {"error": "; ".join(problems)})
        task = self.start(
            body,
            base,
            prefix="task_",
            kind=kind,
            input_url=input_url,
            seconds=seconds,
            orientation=body["character_orientation"] if kind == "motion_control" else None,
            external=external if isinstance(external, str) else None,
        )
        return Reply(
            200,
            {
                "id": task.task_id,
                "status": "pending",
                "created_at": iso_z(task.created),
                "model": model,
            },
        )

    def _create_element(self, body: Any) -> Reply:
        """POST /v1/elements/custom: made while the caller waits; the answer is the element."""
        if (fault := self.fault_reply()) is not None:
            return fault
        if not isinstance(body, dict):
            return Reply(400, {"code": 1201, "message": "body must be a JSON object"})
        problems = rules.kling_element_errors(body)
        if problems:
            return Reply(400, {"code": 1201, "message": "; ".join(problems), "request_id": uuid.uuid4().hex})
        task = self.emulator.create(self.name, body, prefix="element_", input_url=None, kind="custom_element")
        task.latency_s = 0  # made while the caller waits
        element = {
            "element_id": int(task.element_id or 0),
            "element_name": body["element_name"],
            "element_description": body["element_description"],
            "element_frontal_image": body["element_frontal_image"],
            "element_refer_list": body["element_refer_list"],
            "tag_list": [{"id": t.get("tag_id"), "name": "tag"} for t in body.get("tag_list") or []],
            "owned_by": "user",
        }
        self.elements.append(element)
        return Reply(200, {"code": 0, "message": "SUCCEED", "request_id": uuid.uuid4().hex, "data": element})

    @staticmethod
    def _page(items: list[dict[str, Any]], query: Any) -> Reply:
        """the gateway's manual's paging: page_num 1..1000 (default 1), page_size 1..500 (default 30)."""
        query = query if isinstance(query, dict) else {}
        try:
            number, size = int(query.get("page_num", 1)), int(query.get("page_size", 30))
        except ValueError:
            number, size = 0, 0
        if not (1 <= number <= 1000 and 1 <= size <= 500):
            return Reply(400, {"code": 1201, "message": "page_num must be 1..1000 and page_size 1..500"})
        page = items[(number - 1) * size : number * size]
        return Reply(200, {"code": 0, "message": "SUCCEED", "request_id": uuid.uuid4().hex, "data": page})

    def _delete_element(self, body: Any) -> Reply:
        """POST /v1/elements/delete: custom elements only (presets cannot be deleted)."""
        element_id = str(body.get("element_id") or "") if isinstance(body, dict) else ""
        found = next((e for e in self.elements if str(e["element_id"]) == element_id), None)
        if any(str(p["element_id"]) == element_id for p in self.presets):
            return Reply(400, {"code": 1201, "message": "only custom elements can be deleted"})
        if found is None:
            return Reply(404, {"code": 1203, "message": f"no custom element {element_id!r}"})
        self.elements.remove(found)
        with self.emulator._lock:
            self.emulator.deleted_elements.add((self.name, element_id))
        task = {"task_id": uuid.uuid4().hex, "task_status": "succeed"}
        return Reply(200, {"code": 0, "message": "SUCCEED", "request_id": uuid.uuid4().hex, "data": task})

    def view(self, task: Task, now: datetime, base: str) -> dict[str, Any]:
        phase = task.phase(now)
        status = {"queued": "pending"}.get(phase, phase)
        answer: dict[str, Any] = {
            "id": task.task_id,
            "status": status,
            "created_at": iso_z(task.created),
            "model": task.body.get("model"),
        }
        if status == "completed" and self.emulator.faults_for(self.name).unified_answers:
            return self._unified(task, base)
        if status == "completed":
            size = "1920*1080" if task.body.get("mode") == "pro" else "1280*720"
            answer |= {
                "completed_at": iso_z(task.finished_at()),
                "video_url": self.output_url(base, task),
                "usage": {
                    "seconds": self.charged(self.billed_seconds(task))
                    + self.emulator.faults_for(self.name).output_seconds_over,
                    "video_count": 1,
                    "size": size,
                },
            }
        elif status == "failed":
            answer["error"] = task.input_error or "内容审核未通过"
        return answer

    def _unified(self, task: Task, base: str) -> dict[str, Any]:
        """the gateway's manual's unified completed answer: no id, no status; data[], usage, provider."""
        seconds = (
            self.charged(self.billed_seconds(task)) + self.emulator.faults_for(self.name).output_seconds_over
        )
        pro = task.body.get("mode") == "pro"
        return {
            "created": int(task.finished_at().timestamp()),
            "data": [
                {
                    "url": self.output_url(base, task),
                    "duration": seconds,
                    "width": 1920 if pro else 1280,
                    "height": 1080 if pro else 720,
                    "cover_url": self.extra_url(base, task, "cover.png"),
                }
            ],
            "usage": {"total_tokens": 0, "video_count": 1, "duration_seconds": seconds},
            "provider": UPSTREAM,
            "model": task.body.get("model"),
            "origin_data": {"task_id": task.task_id, "task_status": "succeed"},
        }


class Apimaster(Dialect):
    """apimaster's page: kling-v3-motion-control; no callbacks; a proxy URL and a /content endpoint."""

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

    def error_body(self, status: int, message: str, *, code: int | None = None) -> Any:
        return {"code": code or status, "message": message}

    def _create(self, body: Any) -> Reply:
        if (fault := self.fault_reply()) is not None:
            return fault
        if not isinstance(body, dict):
            return Reply(400, self.error_body(400, "参数无效: body must be a JSON object"))
        problems = _motion_errors(body) + rules.watermark_errors(body)
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
        body, content_type = self.emulator.clip_file(self.name)
        return Reply(200, body, {"Content-Type": content_type})


def _callback_url_problem(url: Any, *, https_only: bool) -> str | None:
    """evolink's documented rules for callback_url: HTTPS, not internal, at most 2048 characters."""
    if url is None:
        return None
    if not isinstance(url, str) or len(url) > 2048:
        return "callback_url must be a URL of at most 2048 characters"
    host = host_of(url)
    loopback = host in ("127.0.0.1", "localhost", "::1")
    if https_only and not (url.startswith("https://") and not loopback):
        return "callback_url must be HTTPS and not an internal address"
    if not url.startswith(("https://", "http://127.0.0.1", "http://localhost")):
        return "callback_url must be HTTPS"
    return None


ELEMENT_ESTIMATE_S = 600.0


class Evolink(Dialect):
    """evolink's pages (+ docs/providers.md's (?) facts): OpenAI-style tasks, callbacks on the end."""

    name = "evolink"
    callback_phases = frozenset({"completed", "failed", "cancelled"})
    link_ttl_s = DAY  # output links live about 24 hours
    prefix = "/v1"
    # The real service refuses non-HTTPS callback URLs; the sandbox's API is plain http on
    # loopback, so the emulator accepts those unless told to be strict.
    strict_callbacks = False

    def handle(self, method: str, path: str, headers: dict[str, str], body: Any, base: str) -> Reply:
        if not self.authorised(headers):
            return Reply(401, self.error_body(401, "invalid api key", code="invalid_api_key"))
        if method == "POST" and path == "/v1/videos/generations":
            return self._create(body, base)
        if method == "GET" and path.startswith("/v1/tasks/"):
            task = self.emulator.find(self.name, path.removeprefix("/v1/tasks/"))
            if task is None:
                return Reply(404, self.error_body(404, "task not found", code="task_not_found"))
            return Reply(200, self.view(task, self.emulator.clock.now(), base))
        return Reply(404, self.error_body(404, f"no route {method} {path}"))

    def error_body(self, status: int, message: str, *, code: Any = None) -> Any:
        return {"error": {"code": code or str(status), "message": message, "type": "invalid_request_error"}}

    def _create(self, body: Any, base: str) -> Reply:
        if (fault := self.fault_reply()) is not None:
            return fault
        if not isinstance(body, dict):
            return Reply(400, self.error_body(400, "body must be a JSON object"))
        params: dict[str, Any] = body["model_params"] if isinstance(body.get("model_params"), dict) else {}
        model = body.get("model")
        input_url: str | None = None
        seconds: float | None = None
        orientation: str | None = None
        if model == "kling-v3-motion-control":
            kind = "motion_control"
            flat = {
                "image_url": (body.get("image_urls") or [None])[0],
                "video_url": (body.get("video_urls") or [None])[0],
                "character_orientation": params.get("character_orientation"),
                "mode": {"720p": "std", "1080p": "pro"}.get(str(body.get("quality"))),
                "prompt": body.get("prompt"),
                "keep_original_sound": params.get("keep_original_sound", "yes"),
            }
            problems = _motion_errors(flat)
            if len(body.get("image_urls") or []) != 1 or len(body.get("video_urls") or []) != 1:
                problems.append("image_urls and video_urls take exactly one URL each")
            problems += self.element_problems(params.get("element_list"))
            input_url, orientation = flat["video_url"], str(flat["character_orientation"])
        elif model in ("kling-v3-text-to-video", "kling-v3-image-to-video"):
            kind = "text_to_video" if model == "kling-v3-text-to-video" else "image_to_video"
            problems = rules.evolink_generated_errors(body, params, image=kind == "image_to_video")
            if kind == "image_to_video":
                problems += self.element_problems(params.get("element_list"))
            else:
                problems += _no_element_list(params, model)
            duration = body.get("duration")
            seconds = float(duration) if isinstance(duration, int) else None
        elif model == "kling-custom-element":
            kind, problems = "custom_element", rules.evolink_element_errors(params)
        else:
            kind, problems = "", [f"unknown model {model!r}"]
        if (
            problem := _callback_url_problem(body.get("callback_url"), https_only=self.strict_callbacks)
        ) is not None:
            problems.append(problem)
        if problems:
            return Reply(400, self.error_body(400, "; ".join(problems), code="invalid_parameters"))
        task = self.start(
            body,
            base,
            prefix="task-video-",
            kind=kind,
            input_url=input_url,
            seconds=seconds,
            orientation=orientation,
        )
        return Reply(
            200,
            {
                "created": int(task.created.timestamp()),
                "id": task.task_id,
                "model": body["model"],
                "object": "video.generation.task",
                "progress": 0,
                "status": "pending",
                "task_info": {"estimated_time": int(self.estimate(task)), "can_cancel": True},
                "usage": {"credits_reserved": self.credits(task), "billing_rule": self._billing_rule(task)},
            },
        )

    @staticmethod
    def estimate(task: Task) -> float:
        """The provider's estimate of a task's length: evolink's Kling 3.0 pages' 600 s for an element (its
        documented ~10 minutes, however fast the emulator is), the emulated latency otherwise."""
        return ELEMENT_ESTIMATE_S if task.kind == "custom_element" else task.latency_s

    def credits(self, task: Task) -> float:
        """What a task costs in credits ($0.0139 each, evolink's motion-control page): 1 per element; per
        second,
        5.4 for Kling 3.0 (evolink's Kling 3.0 pages) and 8.16 for motion control ($0.1134/s), times
        evolink's Kling 3.0 pages'
        quality and sound factors."""
        if task.kind == "custom_element":
            return 1.0
        body = task.body
        params = body.get("model_params") or {}
        base = 8.16 if task.kind == "motion_control" else 5.4
        factor = {
            ("720p", False): 1.0,
            ("720p", True): 1.5,
            ("1080p", False): 1.333,
            ("1080p", True): 2.0,
        }[(str(body.get("quality", "720p")), params.get("sound") == "on")]
        return round(base * factor * self.billed_seconds(task), 4)

    @staticmethod
    def _billing_rule(task: Task) -> str:
        return "per_call" if task.kind == "custom_element" else "per_second"

    def view(self, task: Task, now: datetime, base: str) -> dict[str, Any]:
        phase = task.phase(now)
        status = {"queued": "pending"}.get(phase, phase)
        elapsed = (now - task.created).total_seconds()
        answer: dict[str, Any] = {
            "id": task.task_id,
            "object": "video.generation.task",
            "model": task.body.get("model"),
            "created": int(task.created.timestamp()),
            "status": status,
            "progress": 100 if status in ENDS else min(99, int(100 * elapsed / task.latency_s)),
        }
        if status not in ENDS:
            answer["task_info"] = {
                "estimated_time": max(0, round(self.estimate(task) - elapsed)),
                "can_cancel": True,
            }
        if status == "completed":
            # What was charged, in credits (?): evolink's Kling 3.0 pages shows `usage` on the create
            # answer only.
            answer["usage"] = {
                "billing_rule": self._billing_rule(task),
                "credits_reserved": self.credits(task),
            }
            if self.emulator.faults_for(self.name).overcharge:
                # Charged beyond what the create answer reserved (an adapter prefers this name).
                answer["usage"]["credits_used"] = self.charged(self.credits(task))
        if status == "completed" and task.kind == "custom_element":
            answer["result_data"] = {"element_id": task.element_id}
        elif status == "completed":
            answer["results"] = [self.output_url(base, task)]
        elif status == "failed":
            answer["error"] = {
                "code": "generation_failed",
                "message": task.input_error or "content moderation failed",
            }
        return answer


class Kling(Dialect):
    """Kling's own API: JWT auth, {code, message, request_id, data} answers, 1000-5002 codes,
    callbacks on every status change, `succeed` spelt as Kling spells it."""

    name = "kling"
    presets = KLING_PRESETS
    callback_phases = frozenset({"queued", "processing", "completed", "failed"})  # every change
    link_ttl_s = 30 * DAY
    paths = {
        "/v1/videos/motion-control": "motion_control",
        "/v1/videos/text2video": "text_to_video",
        "/v1/videos/image2video": "image_to_video",
        "/v1/videos/omni-video": "omni_video",
    }

    def authorised(self, headers: dict[str, str]) -> bool:
        token = headers.get("authorization", "").removeprefix("Bearer ")
        expected = self.emulator.keys.get(self.name)
        if expected is None:
            return bool(token)
        access_key, _, secret_key = expected.partition(":")
        try:
            # Times are checked against the emulator's clock (which tests move), not the machine's.
            claims = jwt.decode(
                token,
                secret_key,
                algorithms=["HS256"],
                options={"require": ["exp", "nbf", "iss"], "verify_exp": False, "verify_nbf": False},
            )
        except jwt.PyJWTError:
            return False
        now = self.emulator.clock.now().timestamp()
        # The documented token: exp = now + 1800, nbf = now - 5; longer-lived ones are refused.
        lifetime_ok = claims["exp"] - claims["nbf"] <= 1805
        return bool(claims.get("iss") == access_key and claims["nbf"] <= now < claims["exp"] and lifetime_ok)

    def units(self, task: Task) -> float:
        """Resource-pack units a task deducts (?): 0.6 per second at std, 0.8 at pro, 1.5x with
        sound; at $0.14 a unit that is the $0.084/s the official API is quoted at (evolink's Kling 3.0
        pages)."""
        per_second = 0.8 if task.body.get("mode") == "pro" else 0.6
        if task.body.get("sound") == "on":
            per_second *= 1.5
        return round(per_second * self.billed_seconds(task), 4)

    def error_body(self, status: int, message: str, *, code: int | None = None) -> Any:
        # Kling answers balance problems with 429 / 1100-1102, never 402.
        default = {400: 1201, 401: 1002, 404: 1203, 429: 1302, 500: 5000, 503: 5001, 504: 5002}
        return {"code": code or default.get(status, 5000), "message": message, "request_id": uuid.uuid4().hex}

    def handle(self, method: str, path: str, headers: dict[str, str], body: Any, base: str) -> Reply:
        if not self.authorised(headers):
            return Reply(401, self.error_body(401, "authorization failed", code=1002))
        if method == "POST" and path in self.paths:
            return self._create(body, base, self.paths[path])
        family, _, task_id = path.rpartition("/")
        if method == "GET" and family in self.paths:
            task = self.emulator.find(self.name, task_id)
            # Each family answers for its own tasks only.
            if task is None or task.kind != self.paths[family]:
                return Reply(404, self.error_body(404, "task not found", code=1203))
            return Reply(200, self._wrap(self.view(task, self.emulator.clock.now(), base)))
        return Reply(404, self.error_body(404, f"no route {method} {path}", code=1202))

    def _wrap(self, data: dict[str, Any]) -> dict[str, Any]:
        return {"code": 0, "message": "SUCCEED", "request_id": uuid.uuid4().hex, "data": data}

    def _create(self, body: Any, base: str, kind: str) -> Reply:
        if (fault := self.fault_reply()) is not None:
            return fault
        if not isinstance(body, dict):
            return Reply(400, self.error_body(400, "body must be a JSON object"))
        input_url: str | None = None
        seconds: float | None = None
        if kind == "motion_control":
            problems, input_url = _motion_errors(body) + rules.watermark_errors(body), body.get("video_url")
        elif kind == "omni_video":
            problems, input_url, seconds = _omni(body, flat=False)
            problems += self.element_problems(body.get("element_list"))
        else:
            problems = rules.generated_errors(
                body,
                seconds_field="duration",
                seconds=("5", "10"),
                prompt_required=kind == "text_to_video" and not body.get("multi_shot"),
            )
            if kind == "image_to_video":
                problems += rules.image_to_video_errors(body)
            problems += rules.cfg_scale_errors(body, body.get("model_name"))
            problems += rules.multi_shot_errors(body, body.get("duration"))
            seconds = float(body.get("duration") or 5)
        if kind in ("motion_control", "image_to_video"):
            problems += self.element_problems(body.get("element_list"))
        elif kind != "omni_video":
            problems += _no_element_list(body, kind)
        models = ("kling-video-o1",) if kind == "omni_video" else ("kling-v2-6", "kling-v3")
        if body.get("model_name") not in models:
            problems.insert(0, f"model_name must be one of {', '.join(models)}")
        external = body.get("external_task_id")
        if isinstance(external, str) and self.emulator.external_id_taken(self.name, external):
            problems.append("external_task_id must be unique")
        if problems:
            return Reply(400, self.error_body(400, "; ".join(problems), code=1201))
        task = self.start(
            body,
            base,
            prefix="",
            kind=kind,
            input_url=input_url,
            seconds=seconds,
            orientation=body["character_orientation"] if kind == "motion_control" else None,
            external=external if isinstance(external, str) else None,
        )
        return Reply(200, self._wrap(self.view(task, task.created, base)))

    def view(self, task: Task, now: datetime, base: str) -> dict[str, Any]:
        phase = task.phase(now)
        status = {"queued": "submitted", "completed": "succeed"}.get(phase, phase)
        updated = task.entered(phase)
        data: dict[str, Any] = {
            "task_id": task.task_id,
            "task_status": status,
            "task_status_msg": task.input_error or "" if status == "failed" else "",
            "task_info": {"external_task_id": task.external_task_id},
            "created_at": int(task.created.timestamp() * 1000),
            "updated_at": int(updated.timestamp() * 1000),
        }
        if status == "succeed":
            url = self.output_url(base, task)
            # Motion control may use fewer seconds than the reference has; billing follows the
            # reference (docs/providers.md), so that output is deliberately shorter here.
            shorter = 1.0 if task.kind == "motion_control" else 0.0
            seconds = f"{max(1.0, self.billed_seconds(task) - shorter):.1f}"
            data["task_result"] = {
                "videos": [
                    {
                        "id": f"v-{task.task_id}",
                        "url": url,
                        "watermark_url": self.extra_url(base, task, "watermarked.mp4"),
                        "duration": seconds,
                    }
                ]
            }
            data["final_unit_deduction"] = f"{self.charged(self.units(task)):g}"
        return data


DIALECTS: dict[str, type[Dialect]] = {
    dialect.name: dialect for dialect in (Apimaster, Evolink, Gateway, Kling)
}


def host_of(url: str) -> str:
    return urlsplit(url).hostname or ""
