"""Text- and image-to-video: a generated clip of a chosen length, in one shot or several."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Self

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from .errors import FieldError
from .kind_fields import (
    BaseRequest,
    ElementIds,
    MediaInput,
    OnOff,
    OptionalPrompt,
    Prompt,
    StrictModel,
    between,
    element_reference_errors,
)
from .vocab import AspectRatio, Billing, JobKind, MediaRef, MediaRole, Mode, PriceTier

CAMERA_AXES = ("horizontal", "vertical", "pan", "tilt", "roll", "zoom")
# The union of what the dialects accept: 3..15 s on evolink (Kling 3.0), 5 or 10 s elsewhere.
GENERATED_SECONDS = (3, 15)
VOICES_MAX = 2
DYNAMIC_MASKS_MAX = 6
TRAJECTORY_POINTS = (2, 77)
_VOICE_REF = re.compile(r"<<<voice_(\d+)>>>")


# the gateway's manual: each camera axis in [-10, 10].
CameraAxis = Annotated[float, Field(ge=-10, le=10), between(-10, 10)]


class CameraConfig(StrictModel):
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


class CameraControl(StrictModel):
    type: Literal["simple", "down_back", "forward_up", "right_turn_forward", "left_turn_forward"]
    config: CameraConfig | None = None

    @model_validator(mode="after")
    def _config_only_for_simple(self) -> Self:
        if self.type == "simple" and self.config is None:
            raise PydanticCustomError("camera_config_required", "config is required when type is simple")
        if self.type != "simple" and self.config is not None:
            raise PydanticCustomError("camera_config_forbidden", "config is only for type simple")
        return self


# Kling 3.0's multi-shot (evolink's Kling 3.0 pages: "custom shot sequence, per-shot prompt and duration").
# The providers publish no count or per-shot minimum (?): Kling 3.0 documents up to 6 shots of >= 1 s.
SHOTS_MAX = 6


class Shot(StrictModel):
    prompt: Prompt
    duration_s: Annotated[
        int, Field(ge=1, le=GENERATED_SECONDS[1]), between(1, GENERATED_SECONDS[1], " s")
    ] = Field(description="this shot's seconds")


class _Generated(BaseRequest):
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
        default=None, description="freedom of generation, 0..1 (the gateway's manual; not on V2.x models)"
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


class Voice(StrictModel):
    voice_id: str = Field(min_length=1, max_length=64)


# the gateway's manual: a point is a pixel of the input image, from its bottom-left corner; an image's
# side is at most 65536 px (media_rules.IMAGE_MAX_SIDE_PX), and the probed image narrows it.
TRAJECTORY_MAX_PX = 65536
Pixel = Annotated[int, Field(ge=0, le=TRAJECTORY_MAX_PX), between(0, TRAJECTORY_MAX_PX, " px")]


class TrajectoryPoint(StrictModel):
    x: Pixel
    y: Pixel


class DynamicMask(StrictModel):
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
        # the gateway's manual: naming a voice of voice_list in the prompt is billed "with specified voice".
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
