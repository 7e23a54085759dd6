"""Omni video: Kling's omni model, with text, frames, reference images, elements and one video."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field

from .errors import FieldError
from .kind_fields import BaseRequest, ElementIds, MediaInput, Prompt, StrictModel, YesNo, between
from .vocab import AspectRatio, Billing, JobKind, MediaRef, MediaRole, Mode, PriceTier, billable_seconds

OMNI_SECONDS = (3, 10)
OMNI_PLAIN_SECONDS = (5, 10)  # text-to-video and first-frame-to-video
OMNI_REFERENCES_WITH_VIDEO = 4
OMNI_REFERENCES_WITHOUT_VIDEO = 7
_OMNI_REF = re.compile(r"<<<(image|element|video)_(\d+)>>>")


class OmniVideoInput(StrictModel):
    url: MediaInput = Field(description="the video: object key, s3://bucket/key or https URL")
    refer_type: Literal["base", "feature"] = Field(
        default="feature", description="base: edit this video; feature: borrow its style or camera"
    )
    keep_original_sound: YesNo = "yes"


class OmniVideoRequest(BaseRequest):
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
        return [*self._reference_count_errors(), *self._shape_errors(), *self._prompt_reference_errors()]

    def _reference_count_errors(self) -> list[FieldError]:
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
        return errors

    def _shape_errors(self) -> list[FieldError]:
        """What editing, a first frame or a plain clip rule out."""
        errors = []
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
        return errors

    def _prompt_reference_errors(self) -> list[FieldError]:
        errors = []
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
