"""Custom elements: a reusable subject made from images or a video; the result is an element id."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .errors import FieldError
from .kind_fields import BaseRequest, MediaInput
from .vocab import Billing, JobKind, MediaRef, MediaRole, PriceTier

ELEMENT_NAME_MAX = 20  # evolink; gateway allows 10 (its adapter refuses longer)
ELEMENT_DESCRIPTION_MAX = 100
ELEMENT_REFER_IMAGES_MAX = 3
TAGS_MAX = 20  # (?) the providers give no count


class CustomElementRequest(BaseRequest):
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
