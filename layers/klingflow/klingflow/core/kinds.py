"""The job kinds: what each request carries and every rule that can be checked from it alone.

Rules come from shared/PROVIDERS.md and the seeds. A rule that only some dialects impose (gateway
takes 5 or 10 s, evolink 3..15 s) is not here: the request takes the union of what any dialect
accepts, and each adapter's `refusals` narrows it, so routing can pick a provider that fits.
Rules that need the media itself (sizes, durations, aspect ratios) are in `media_rules.py`;
each request lists its media with the role that decides which of those rules apply.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from .errors import FieldError, RequestRejected

# The vocabulary (kinds, modes, tiers, billing) lives apart, without pydantic; re-exported here
# (`X as X`: mypy's explicit re-export) for the modules that take it from this one.
from .vocab import AspectRatio as AspectRatio  # noqa: PLC0414
from .vocab import Billing as Billing  # noqa: PLC0414
from .vocab import JobKind as JobKind  # noqa: PLC0414
from .vocab import MediaRef as MediaRef  # noqa: PLC0414
from .vocab import MediaRole as MediaRole  # noqa: PLC0414
from .vocab import Mode as Mode  # noqa: PLC0414
from .vocab import Orientation as Orientation  # noqa: PLC0414
from .vocab import PriceTier as PriceTier  # noqa: PLC0414
from .vocab import billable_seconds as billable_seconds  # noqa: PLC0414

PROMPT_MAX_CHARS = 2500
METADATA_MAX_BYTES = 2048
METADATA_KEY_MAX_CHARS = 128
# An object key is at most 1,024 bytes and a provider takes URLs of at most 2,048 characters
# (evolink's callback rule); only a base64 image is longer.
MEDIA_REF_MAX_CHARS = 2048
# A request may set its own deadline within these bounds (seconds).
DEADLINE_S = (60, 86400)


# An object key (spaces allowed, no URL scheme), s3://bucket/key, an https URL or a data: URI.
_MEDIA_REF = re.compile(
    r"^(s3://[^/]+/.+|https://\S+|data:image/[a-z]+;base64,.+|(?![A-Za-z][A-Za-z0-9+.-]*:)\S.*)$", re.DOTALL
)
# Set while a request is rebuilt with the URLs a provider fetches (presigned, maybe http on a
# sandbox), so the "https only" rule for user input does not refuse our own links.
RESOLVED = "resolved_media"


def _yes_no(value: Any) -> Any:
    # The dialects want the strings "yes"/"no"; a JSON boolean is an honest way to say the same.
    if isinstance(value, bool):
        return "yes" if value else "no"
    return value


def _on_off(value: Any) -> Any:
    # gateway says sound "on"/"off"; we keep a boolean and accept both spellings.
    if value in ("on", "yes"):
        return True
    if value in ("off", "no"):
        return False
    return value


def media_reference(value: str, info: ValidationInfo) -> str:
    if info.context and info.context.get(RESOLVED):
        return value
    if value.startswith("http://"):
        raise PydanticCustomError("https_only", "media URLs must use https")
    if not _MEDIA_REF.match(value):
        raise PydanticCustomError(
            "media_reference", "must be an object key, s3://bucket/key, an https URL or base64 data"
        )
    if len(value) > MEDIA_REF_MAX_CHARS and not value.startswith("data:") and not _BASE64.fullmatch(value):
        raise PydanticCustomError(
            "media_reference_length",
            "an object key or URL is at most {limit} characters (found {found}); base64 images may be longer",
            {"limit": MEDIA_REF_MAX_CHARS, "found": len(value)},
        )
    return value


_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]+")
# pydantic's own words for a number outside its bounds name one bound; these name both.
_RANGE_ERRORS = frozenset({"greater_than_equal", "less_than_equal", "greater_than", "less_than"})


def between(low: float, high: float, unit: str = "") -> WrapValidator:
    """A number's range in the refusal: `Annotated[int, Field(ge=low, le=high), between(low, high)]`
    (Field keeps the range in the schema; this names it whole when a value is outside it)."""

    def check(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError as error:
            broken = next((e for e in error.errors() if e["type"] in _RANGE_ERRORS), None)
            if broken is None:
                raise
            raise PydanticCustomError(
                broken["type"],
                "must be from {low} to {high}{unit} (found {found})",
                {"low": low, "high": high, "unit": unit, "found": _shown(value)},
            ) from None

    return WrapValidator(check)


def _shown(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**20:
        return f"a number of about {int(abs(value).bit_length() * 0.30103) + 1} digits"
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}... ({len(text)} characters)"


# A media input: checked where it sits, so an error names its exact place (reference_images.1).
MediaInput = Annotated[str, Field(min_length=1), AfterValidator(media_reference)]
YesNo = Annotated[Literal["yes", "no"], BeforeValidator(_yes_no)]
OnOff = Annotated[bool, BeforeValidator(_on_off)]
Prompt = Annotated[str, Field(min_length=1, max_length=PROMPT_MAX_CHARS)]
OptionalPrompt = Annotated[str | None, Field(default=None, max_length=PROMPT_MAX_CHARS)]


# Element ids (from a custom_element job or a provider's presets), sent as the dialect's
# element_list. The seeds give no count for motion control or image-to-video (?): the most any
# kind takes (omni without a video) bounds them.
ELEMENTS_MAX = 7
ElementIds = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]],
    Field(default_factory=list, max_length=ELEMENTS_MAX, description="element ids, sent as element_list"),
]
_ELEMENT_REF = re.compile(r"<<<element_(\d+)>>>")


def element_reference_errors(prompt: str | None, elements: list[str]) -> list[FieldError]:
    """`<<<element_N>>>` in a prompt must name one of the request's elements (N from 1)."""
    return [
        FieldError(
            "prompt",
            "element_reference",
            f"prompt refers to <<<element_{number}>>> but the request has {len(elements)} element(s)",
        )
        for number in sorted(set(_ELEMENT_REF.findall(prompt or "")), key=int)
        if not 1 <= int(number) <= len(elements)
    ]


class _Strict(BaseModel):
    # Validators are built on first use, not at import: of the functions that load this module
    # (an adapter's checks, a stored request read back), only submit parses requests on its
    # first event, and it builds the default kind's with its service (`build_request_models`).
    # No NaN or infinity: no provider takes them and DynamoDB cannot hold them.
    model_config = ConfigDict(
        extra="forbid", str_strip_whitespace=True, defer_build=True, allow_inf_nan=False
    )


# The outcomes a webhook may ask for (a rejected request has no job to carry a webhook).
WEBHOOK_EVENTS = ("Job Submitted", "Job Completed", "Job Failed", "Job Timed Out", "Job Cancelled")
_LOOPBACK_HTTP = re.compile(r"^http://(127\.0\.0\.1|localhost|\[::1\])(:\d+)?(/|$)")


def webhook_url(value: str) -> str:
    # The shape only; intake checks the rest (webhookurls.py: a public host; loopback http
    # only where the sandbox's configuration allows it), so a stored request always reads back.
    if not (value.startswith("https://") or _LOOPBACK_HTTP.match(value)):
        raise PydanticCustomError("webhook_https", "a webhook URL must use https (plain http is refused)")
    return value


class Webhook(_Strict):
    """Where the job's outcomes are POSTed, signed per Standard Webhooks."""

    url: Annotated[
        str,
        Field(min_length=9, max_length=2048, description="https to a public host (checked when posted)"),
        AfterValidator(webhook_url),
    ]
    events: list[Literal[WEBHOOK_EVENTS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["Job Completed", "Job Failed", "Job Timed Out", "Job Cancelled"],
        min_length=1,
        max_length=len(WEBHOOK_EVENTS),
        description="which outcomes to send (default: how the job ended)",
    )


class _Request(_Strict):
    kind: JobKind
    provider: str | None = Field(default=None, max_length=64, description="pin the job to one provider")
    metadata: dict[Annotated[str, Field(min_length=1, max_length=METADATA_KEY_MAX_CHARS)], str] = Field(
        default_factory=dict, description="echoed in every event"
    )
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=128)
    webhook: Webhook | None = None
    deadline_s: Annotated[
        int | None, Field(ge=DEADLINE_S[0], le=DEADLINE_S[1]), between(*DEADLINE_S, " s")
    ] = Field(
        default=None,
        description="seconds the job may take before TIMED_OUT (the stack's JobDeadlineSeconds otherwise)",
    )

    @field_validator("metadata")
    @classmethod
    def _metadata_small(cls, value: dict[str, str]) -> dict[str, str]:
        if len(json.dumps(value).encode()) > METADATA_MAX_BYTES:
            raise PydanticCustomError(
                "metadata_size",
                "metadata must be at most {limit} bytes as JSON",
                {"limit": METADATA_MAX_BYTES},
            )
        return value

    def media(self) -> list[MediaRef]:
        """Every media input, in a stable order; the intake probes each one."""
        return []

    def combination_errors(self) -> list[FieldError]:
        """Rules between fields, all of them at once, each naming the field it concerns."""
        return []

    def billing(self, measured_seconds: dict[str, float | None]) -> Billing:
        """The price tier and billed seconds, given the probed durations of the media by name."""
        raise NotImplementedError


# ---- motion control ---------------------------------------------------------------------------


class MotionControlRequest(_Request):
    """A character image animated by a reference performance video."""

    kind: Literal[JobKind.MOTION_CONTROL] = JobKind.MOTION_CONTROL
    image: MediaInput = Field(
        description="reference image: an object key in the bucket, s3://bucket/key, an https URL "
        "or base64 (with or without a data:image/...;base64, prefix)",
    )
    video: MediaInput = Field(description="reference video: object key, s3://bucket/key or https URL")
    character_orientation: Orientation
    mode: Mode
    prompt: OptionalPrompt
    keep_original_sound: YesNo = "yes"
    elements: ElementIds
    watermark: bool | None = Field(
        default=None,
        description="the provider's watermark on the clip (watermark_info, apimaster and kling); "
        "left out, it is off where a provider takes watermark_info",
    )

    def combination_errors(self) -> list[FieldError]:
        return element_reference_errors(self.prompt, self.elements)

    def media(self) -> list[MediaRef]:
        return [
            MediaRef(("image",), self.image, MediaRole.IMAGE),
            MediaRef(("video",), self.video, MediaRole.MOTION_VIDEO),
        ]

    def billing(self, measured_seconds: dict[str, float | None]) -> Billing:
        # Billed on the reference video; unknown (an unprobed URL) -> the most the orientation allows.
        measured = billable_seconds(measured_seconds.get("video"))
        if measured is None:
            return Billing(
                PriceTier.of(self.mode), 10 if self.character_orientation is Orientation.IMAGE else 30, True
            )
        return Billing(PriceTier.of(self.mode), measured)


# ---- text and image to video ------------------------------------------------------------------

CAMERA_AXES = ("horizontal", "vertical", "pan", "tilt", "roll", "zoom")
# The union of what the dialects accept: 3..15 s on evolink (Kling 3.0), 5 or 10 s elsewhere.
GENERATED_SECONDS = (3, 15)
VOICES_MAX = 2
DYNAMIC_MASKS_MAX = 6
TRAJECTORY_POINTS = (2, 77)
_VOICE_REF = re.compile(r"<<<voice_(\d+)>>>")


# Seed 003: each camera axis in [-10, 10].
CameraAxis = Annotated[float, Field(ge=-10, le=10), between(-10, 10)]


class CameraConfig(_Strict):
    horizontal: CameraAxis = 0
    vertical: CameraAxis = 0
    pan: CameraAxis = 0
    tilt: CameraAxis = 0
    roll: CameraAxis = 0
    zoom: CameraAxis = 0

    @model_validator(mode="after")
    def _exactly_one_axis(self) -> Self:
        moving = [axis for axis in CAMERA_AXES if getattr(self, axis) != 0]
        if len(moving) != 1:
            raise PydanticCustomError(
                "camera_one_axis",
                "exactly one of horizontal/vertical/pan/tilt/roll/zoom must be non-zero (found {n})",
                {"n": len(moving)},
            )
        return self


class CameraControl(_Strict):
    type: Literal["simple", "down_back", "forward_up", "right_turn_forward", "left_turn_forward"]
    config: CameraConfig | None = None

    @model_validator(mode="after")
    def _config_only_for_simple(self) -> Self:
        if self.type == "simple" and self.config is None:
            raise PydanticCustomError("camera_config_required", "config is required when type is simple")
        if self.type != "simple" and self.config is not None:
            raise PydanticCustomError("camera_config_forbidden", "config is only for type simple")
        return self


# Kling 3.0's multi-shot (seed 002: "custom shot sequence, per-shot prompt and duration"). The
# seeds give no count or per-shot minimum (?): Kling 3.0 documents up to 6 shots of >= 1 s.
SHOTS_MAX = 6


class Shot(_Strict):
    prompt: Prompt
    duration_s: Annotated[
        int, Field(ge=1, le=GENERATED_SECONDS[1]), between(1, GENERATED_SECONDS[1], " s")
    ] = Field(description="this shot's seconds")


class _Generated(_Request):
    """What text- and image-to-video share: a generated clip of a chosen length, in one shot or
    (Kling 3.0) a sequence of shots whose lengths add up to it."""

    negative_prompt: OptionalPrompt
    mode: Mode = Mode.STD
    duration_s: Annotated[
        int, Field(ge=GENERATED_SECONDS[0], le=GENERATED_SECONDS[1]), between(*GENERATED_SECONDS, " s")
    ] = 5
    sound: OnOff = False
    camera_control: CameraControl | None = None
    cfg_scale: Annotated[float | None, Field(ge=0, le=1), between(0, 1)] = Field(
        default=None, description="freedom of generation, 0..1 (seed 003; not on V2.x models)"
    )
    shots: list[Shot] = Field(
        default_factory=list,
        max_length=SHOTS_MAX,
        description="multi-shot: each shot's prompt and seconds, adding up to duration_s (which "
        "defaults to their sum)",
    )

    @model_validator(mode="before")
    @classmethod
    def _duration_from_shots(cls, data: Any) -> Any:
        # A multi-shot clip lasts as long as its shots: duration_s may be left out.
        if isinstance(data, dict) and "duration_s" not in data and isinstance(data.get("shots"), list):
            given = [s.get("duration_s") for s in data["shots"] if isinstance(s, dict)]
            seconds = [n for n in given if isinstance(n, int) and not isinstance(n, bool)]
            if seconds and len(seconds) == len(given):
                total = sum(seconds)
                if GENERATED_SECONDS[0] <= total <= GENERATED_SECONDS[1]:
                    return {**data, "duration_s": total}
        return data

    @field_validator("shots")
    @classmethod
    def _shots_fit_a_clip(cls, shots: list[Shot]) -> list[Shot]:
        total = sum(shot.duration_s for shot in shots)
        if shots and not GENERATED_SECONDS[0] <= total <= GENERATED_SECONDS[1]:
            raise PydanticCustomError(
                "shots_total",
                "the shots last {total} s in all; a clip is {low}..{high} s",
                {"total": total, "low": GENERATED_SECONDS[0], "high": GENERATED_SECONDS[1]},
            )
        return shots

    def shot_errors(self) -> list[FieldError]:
        if not self.shots:
            return []
        total = sum(shot.duration_s for shot in self.shots)
        errors = []
        if total != self.duration_s:
            errors.append(
                FieldError(
                    "shots",
                    "shots_sum",
                    f"the shots last {total} s in all but duration_s is {self.duration_s}; they must match",
                )
            )
        if len(self.shots) < 2:  # (?) one shot is a plain clip: use prompt and duration_s
            errors.append(FieldError("shots", "shots_min", "a multi-shot clip has at least 2 shots"))
        return errors

    def billing(self, measured_seconds: dict[str, float | None]) -> Billing:
        return Billing(PriceTier.of(self.mode, sound=self.sound), self.duration_s)


class TextToVideoRequest(_Generated):
    """A clip generated from a prompt alone."""

    kind: Literal[JobKind.TEXT_TO_VIDEO] = JobKind.TEXT_TO_VIDEO
    prompt: OptionalPrompt = Field(default=None, description="required unless shots carry the prompts")
    aspect_ratio: AspectRatio = AspectRatio.LANDSCAPE

    def combination_errors(self) -> list[FieldError]:
        errors = self.shot_errors()
        if not self.prompt and not self.shots:
            errors.append(
                FieldError("prompt", "missing", "prompt is required (or shots, each with its prompt)")
            )
        return errors


class Voice(_Strict):
    voice_id: str = Field(min_length=1, max_length=64)


# Seed 003: a point is a pixel of the input image, from its bottom-left corner; an image's
# side is at most 65536 px (media_rules.IMAGE_MAX_SIDE_PX), and the probed image narrows it.
TRAJECTORY_MAX_PX = 65536
Pixel = Annotated[int, Field(ge=0, le=TRAJECTORY_MAX_PX), between(0, TRAJECTORY_MAX_PX, " px")]


class TrajectoryPoint(_Strict):
    x: Pixel
    y: Pixel


class DynamicMask(_Strict):
    mask: MediaInput
    trajectories: list[TrajectoryPoint] = Field(
        min_length=TRAJECTORY_POINTS[0], max_length=TRAJECTORY_POINTS[1]
    )


class ImageToVideoRequest(_Generated):
    """A clip animated from a first frame, a last frame, or both."""

    kind: Literal[JobKind.IMAGE_TO_VIDEO] = JobKind.IMAGE_TO_VIDEO
    image: MediaInput | None = Field(default=None, description="first frame")
    image_tail: MediaInput | None = Field(default=None, description="last frame")
    prompt: OptionalPrompt
    voice_list: list[Voice] = Field(default_factory=list, max_length=VOICES_MAX)
    static_mask: MediaInput | None = None
    dynamic_masks: list[DynamicMask] = Field(default_factory=list, max_length=DYNAMIC_MASKS_MAX)
    elements: ElementIds

    def billing(self, measured_seconds: dict[str, float | None]) -> Billing:
        # Seed 003: naming a voice of voice_list in the prompt is billed "with specified voice".
        voiced = bool(self.voice_list) and _VOICE_REF.search(self.prompt or "") is not None
        return Billing(PriceTier.of(self.mode, sound=self.sound, voice=voiced), self.duration_s)

    def combination_errors(self) -> list[FieldError]:
        errors = []
        if self.image is None and self.image_tail is None:
            errors.append(FieldError("image", "frame_required", "give image, image_tail or both"))
        used = [
            name
            for name, present in (
                ("image_tail", self.image_tail is not None),
                ("static_mask/dynamic_masks", bool(self.static_mask or self.dynamic_masks)),
                ("camera_control", self.camera_control is not None),
            )
            if present
        ]
        if len(used) > 1:
            errors.append(
                FieldError(
                    used[1].split("/")[0],
                    "exclusive_controls",
                    f"first/last frame (image_tail), motion brush (static_mask/dynamic_masks) and "
                    f"camera_control exclude each other; this request uses {' and '.join(used)}",
                )
            )
        if (self.static_mask or self.dynamic_masks) and self.image is None:
            errors.append(
                FieldError("image", "mask_needs_image", "a motion brush needs image, the frame it paints")
            )
        if self.voice_list and not self.sound:
            errors.append(FieldError("sound", "voices_need_sound", "voice_list needs sound on"))
        errors += element_reference_errors(self.prompt, self.elements)
        errors += self.shot_errors()
        for number in sorted(set(_VOICE_REF.findall(self.prompt or ""))):
            if not 1 <= int(number) <= len(self.voice_list):
                errors.append(
                    FieldError(
                        "prompt",
                        "voice_reference",
                        f"prompt refers to <<<voice_{number}>>> but voice_list has "
                        f"{len(self.voice_list)} voice(s)",
                    )
                )
        return errors

    def media(self) -> list[MediaRef]:
        found = [
            MediaRef((name,), ref, MediaRole.IMAGE)
            for name, ref in (("image", self.image), ("image_tail", self.image_tail))
            if ref is not None
        ]
        if self.static_mask is not None:
            found.append(MediaRef(("static_mask",), self.static_mask, MediaRole.MASK))
        found += [
            MediaRef(("dynamic_masks", index, "mask"), group.mask, MediaRole.MASK)
            for index, group in enumerate(self.dynamic_masks)
        ]
        return found


# ---- omni video -------------------------------------------------------------------------------

OMNI_SECONDS = (3, 10)
OMNI_PLAIN_SECONDS = (5, 10)  # text-to-video and first-frame-to-video
OMNI_REFERENCES_WITH_VIDEO = 4
OMNI_REFERENCES_WITHOUT_VIDEO = 7
_OMNI_REF = re.compile(r"<<<(image|element|video)_(\d+)>>>")


class OmniVideoInput(_Strict):
    url: MediaInput = Field(description="the video: object key, s3://bucket/key or https URL")
    refer_type: Literal["base", "feature"] = Field(
        default="feature", description="base: edit this video; feature: borrow its style or camera"
    )
    keep_original_sound: YesNo = "yes"


class OmniVideoRequest(_Request):
    """Kling's omni model: text, frames, reference images, elements and one video in one prompt."""

    kind: Literal[JobKind.OMNI_VIDEO] = JobKind.OMNI_VIDEO
    prompt: Prompt = Field(description="may refer to <<<image_N>>>, <<<element_N>>>, <<<video_1>>>")
    first_frame: MediaInput | None = None
    last_frame: MediaInput | None = None
    reference_images: list[MediaInput] = Field(default_factory=list, max_length=OMNI_REFERENCES_WITHOUT_VIDEO)
    elements: ElementIds
    video: OmniVideoInput | None = None
    mode: Mode = Mode.PRO
    aspect_ratio: AspectRatio | None = None
    duration_s: Annotated[
        int | None, Field(ge=OMNI_SECONDS[0], le=OMNI_SECONDS[1]), between(*OMNI_SECONDS, " s")
    ] = None

    @property
    def editing(self) -> bool:
        return self.video is not None and self.video.refer_type == "base"

    @property
    def image_count(self) -> int:
        return len(self.reference_images) + (self.first_frame is not None) + (self.last_frame is not None)

    @property
    def plain(self) -> bool:
        """Text-to-video or first-frame-to-video: the shapes that only come in 5 s or 10 s."""
        return not (self.reference_images or self.elements or self.video or self.last_frame)

    def combination_errors(self) -> list[FieldError]:
        errors = []
        if self.last_frame is not None and self.first_frame is None:
            errors.append(FieldError("last_frame", "last_frame_needs_first", "last_frame needs first_frame"))
        if self.last_frame is not None and self.image_count > 2:
            errors.append(
                FieldError(
                    "last_frame",
                    "last_frame_max_images",
                    f"no last_frame with more than 2 images in all (found {self.image_count})",
                )
            )
        limit = OMNI_REFERENCES_WITH_VIDEO if self.video else OMNI_REFERENCES_WITHOUT_VIDEO
        if self.image_count + len(self.elements) > limit:
            errors.append(
                FieldError(
                    "elements" if self.elements else "reference_images",
                    "omni_references",
                    f"images + elements must be at most {limit} {'with' if self.video else 'without'} a "
                    f"reference video (found {self.image_count + len(self.elements)})",
                )
            )
        if self.editing and (self.first_frame or self.last_frame):
            errors.append(
                FieldError(
                    "first_frame" if self.first_frame else "last_frame",
                    "edit_no_frames",
                    "video.refer_type=base (editing) forbids first_frame and last_frame",
                )
            )
        if self.editing and self.duration_s is not None:
            errors.append(
                FieldError(
                    "duration_s", "edit_duration", "editing keeps the input video's length: leave it out"
                )
            )
        if self.aspect_ratio is not None and (self.editing or self.first_frame):
            errors.append(
                FieldError(
                    "aspect_ratio",
                    "aspect_ratio_forbidden",
                    "aspect_ratio is not allowed when editing a video (refer_type base) or with first_frame",
                )
            )
        if self.plain and self.duration_s is not None and self.duration_s not in OMNI_PLAIN_SECONDS:
            errors.append(
                FieldError(
                    "duration_s",
                    "omni_plain_seconds",
                    f"text-to-video and first-frame-to-video take 5 or 10 s (asked {self.duration_s})",
                )
            )
        counts = {"image": self.image_count, "element": len(self.elements), "video": 1 if self.video else 0}
        for what, number in sorted(set(_OMNI_REF.findall(self.prompt))):
            if not 1 <= int(number) <= counts[what]:
                errors.append(
                    FieldError(
                        "prompt",
                        "prompt_reference",
                        f"prompt refers to <<<{what}_{number}>>> but the request has "
                        f"{counts[what]} {what}(s)",
                    )
                )
        return errors

    @property
    def generated_seconds(self) -> int | None:
        """The clip length asked for; None when editing (it follows the input video)."""
        if self.editing:
            return None
        return self.duration_s or 5

    @property
    def resolved_aspect_ratio(self) -> AspectRatio | None:
        """What to send: required without a first frame or a video being edited, else absent."""
        if self.editing or self.first_frame:
            return None
        return self.aspect_ratio or AspectRatio.LANDSCAPE

    def media(self) -> list[MediaRef]:
        found = [
            MediaRef((name,), ref, MediaRole.IMAGE)
            for name, ref in (("first_frame", self.first_frame), ("last_frame", self.last_frame))
            if ref is not None
        ]
        found += [
            MediaRef(("reference_images", index), ref, MediaRole.IMAGE)
            for index, ref in enumerate(self.reference_images)
        ]
        if self.video is not None:
            found.append(MediaRef(("video", "url"), self.video.url, MediaRole.OMNI_VIDEO))
        return found

    def billing(self, measured_seconds: dict[str, float | None]) -> Billing:
        seconds = self.generated_seconds
        if seconds is not None:
            return Billing(PriceTier.of(self.mode), seconds)
        measured = billable_seconds(measured_seconds.get("video.url"))
        if measured is None:
            return Billing(PriceTier.of(self.mode), OMNI_SECONDS[1], True)
        return Billing(PriceTier.of(self.mode), measured)


# ---- custom elements --------------------------------------------------------------------------

ELEMENT_NAME_MAX = 20  # evolink; gateway allows 10 (its adapter refuses longer)
ELEMENT_DESCRIPTION_MAX = 100
ELEMENT_REFER_IMAGES_MAX = 3
TAGS_MAX = 20  # (?) the seeds give no count


class CustomElementRequest(_Request):
    """A reusable subject (element) made from images or a video; the result is an element id."""

    kind: Literal[JobKind.CUSTOM_ELEMENT] = JobKind.CUSTOM_ELEMENT
    name: str = Field(min_length=1, max_length=ELEMENT_NAME_MAX)
    description: str = Field(min_length=1, max_length=ELEMENT_DESCRIPTION_MAX)
    reference_type: Literal["image_refer", "video_refer"] = "image_refer"
    frontal_image: MediaInput | None = None
    refer_images: list[MediaInput] = Field(default_factory=list, max_length=ELEMENT_REFER_IMAGES_MAX)
    video: MediaInput | None = None
    voice_id: str | None = Field(default=None, min_length=1, max_length=64)
    tags: list[Annotated[str, Field(min_length=1, max_length=32)]] = Field(
        default_factory=list, max_length=TAGS_MAX
    )

    def combination_errors(self) -> list[FieldError]:
        errors = []
        if self.reference_type == "image_refer":
            if self.frontal_image is None:
                errors.append(
                    FieldError(
                        "frontal_image", "frontal_image_required", "reference_type image_refer needs it"
                    )
                )
            errors += [
                FieldError(name, "video_refer_only", f"{name} is only for reference_type video_refer")
                for name, value in (("video", self.video), ("voice_id", self.voice_id))
                if value is not None
            ]
        else:
            if self.video is None:
                errors.append(FieldError("video", "video_required", "reference_type video_refer needs it"))
            errors += [
                FieldError(name, "image_refer_only", f"{name} is only for reference_type image_refer")
                for name, value in (
                    ("frontal_image", self.frontal_image),
                    ("refer_images", self.refer_images),
                )
                if value
            ]
        return errors

    def media(self) -> list[MediaRef]:
        found = []
        if self.frontal_image is not None:
            found.append(MediaRef(("frontal_image",), self.frontal_image, MediaRole.IMAGE))
        found += [
            MediaRef(("refer_images", index), ref, MediaRole.IMAGE)
            for index, ref in enumerate(self.refer_images)
        ]
        if self.video is not None:
            found.append(MediaRef(("video",), self.video, MediaRole.ELEMENT_VIDEO))
        return found

    def billing(self, measured_seconds: dict[str, float | None]) -> Billing:
        return Billing(PriceTier.FLAT, 0)


# ---- parsing ----------------------------------------------------------------------------------

JobRequest = Annotated[
    MotionControlRequest | TextToVideoRequest | ImageToVideoRequest | OmniVideoRequest | CustomElementRequest,
    Field(discriminator="kind"),
]
AnyRequest = (
    MotionControlRequest | TextToVideoRequest | ImageToVideoRequest | OmniVideoRequest | CustomElementRequest
)
REQUEST_ADAPTER: TypeAdapter[AnyRequest] = TypeAdapter(JobRequest, config=ConfigDict(defer_build=True))


def build_request_models(*kinds: JobKind) -> None:
    """Build the validators of these kinds now rather than on the first request of each: for the
    function whose first event parses a request (submit), as its service is built. Each kind's
    model is built on its first request otherwise; the union of all five, only to refuse a
    kind that is none of them, or for the schema."""
    for kind in kinds:
        _MODEL_OF[kind.value].model_rebuild()  # its validator and serializer (model_dump too)


_MODEL_OF: dict[str, type[AnyRequest]] = {
    model.model_fields["kind"].default.value: model
    for model in (
        MotionControlRequest,
        TextToVideoRequest,
        ImageToVideoRequest,
        OmniVideoRequest,
        CustomElementRequest,
    )
}


def field_errors(error: ValidationError, prefix: str = "") -> list[FieldError]:
    """Flatten pydantic's errors into (field, rule, message) triples a person can act on."""
    found = []
    for item in error.errors(include_url=False):
        # Each request is validated by its own kind's model (`_validate`), so a location is the
        # field's; only a kind that is none of them reaches the union, which says so of `kind`.
        loc = list(item["loc"])
        message = item["msg"]
        if item["type"] == "union_tag_invalid":
            loc = ["kind"]
        if len(loc) >= 2 and loc[-1] == "[key]":  # a map's key, named by the map
            loc, message = loc[:-2], f"key {_shown(str(loc[-2]))}: {message}"
        name = ".".join(str(part) for part in loc) or "(request)"
        found.append(FieldError(f"{prefix}{name}", item["type"], message))
    return found


def parse_request(data: Any) -> AnyRequest:
    """Validate a raw request; raises RequestRejected naming every broken field and rule.

    `kind` defaults to motion_control, the pipeline's first and most common job.
    """
    if not isinstance(data, dict):
        raise RequestRejected([FieldError("(request)", "object_type", "a job request must be a JSON object")])
    data = {"kind": JobKind.MOTION_CONTROL.value, **data}
    try:
        request = _validate(data)
    except ValidationError as error:
        raise RequestRejected(field_errors(error)) from None
    if errors := request.combination_errors():
        raise RequestRejected(errors)
    return request


def with_media(request: AnyRequest, refs: dict[str, str]) -> AnyRequest:
    """The same request with media replaced by name (`reference_images.0` -> a presigned URL)."""
    data = request.model_dump(mode="json", exclude_none=True)
    for ref in request.media():
        if ref.name in refs:
            _set(data, ref.path, refs[ref.name])
    return _validate(data, context={RESOLVED: True})


def load_request(data: dict[str, Any]) -> AnyRequest:
    """A stored request (its media may be object keys or presigned URLs): trusted, not re-judged."""
    return _validate({"kind": JobKind.MOTION_CONTROL.value, **data}, context={RESOLVED: True})


def _validate(data: dict[str, Any], context: dict[str, Any] | None = None) -> AnyRequest:
    """With its own kind's model, as the union would pick it: a function builds the models of
    the kinds it meets, not all five (the union's adapter builds every one of them)."""
    kind = data.get("kind")
    model = _MODEL_OF.get(kind) if isinstance(kind, str) else None
    if model is None:  # not a kind: the union says so as it would of any request
        return REQUEST_ADAPTER.validate_python(data, context=context)
    return model.model_validate(data, context=context)


def _set(data: Any, path: tuple[str | int, ...], value: str) -> None:
    for step in path[:-1]:
        data = data[step]
    data[path[-1]] = value
