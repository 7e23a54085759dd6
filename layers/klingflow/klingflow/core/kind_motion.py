"""Motion control: a character image animated by a reference performance video."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .errors import FieldError
from .kind_fields import BaseRequest, ElementIds, MediaInput, OptionalPrompt, YesNo, element_reference_errors
from .payload import BASE64_MAX_BYTES
from .vocab import Billing, JobKind, MediaRef, MediaRole, Mode, Orientation, PriceTier, billable_seconds


class MotionControlRequest(BaseRequest):
    """A character image animated by a reference performance video."""

    kind: Literal[JobKind.MOTION_CONTROL] = JobKind.MOTION_CONTROL
    image: MediaInput = Field(
        description="reference image: an object key in the bucket, s3://bucket/key, an https URL "
        "or base64 (with or without a data:image/...;base64, prefix; a request's base64 images "
        f"together at most {BASE64_MAX_BYTES:,} bytes, else upload under incoming/ and pass the key)",
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
