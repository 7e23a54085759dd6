"""The words every part of klingflow uses about a job request: its kind, mode, orientation,
media roles, price tier and billing. Plain enums and dataclasses, no pydantic.

The request models themselves (what each kind carries, every rule checked from it) are in
`kinds.py`, which re-exports these names. They are apart so that a function that never parses a
request (the callback, the read API, the webhook) can name a kind or a tier without loading
those models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum


class JobKind(StrEnum):
    MOTION_CONTROL = "motion_control"
    TEXT_TO_VIDEO = "text_to_video"
    IMAGE_TO_VIDEO = "image_to_video"
    OMNI_VIDEO = "omni_video"
    CUSTOM_ELEMENT = "custom_element"

    @property
    def makes_video(self) -> bool:
        return self is not JobKind.CUSTOM_ELEMENT


class Mode(StrEnum):
    STD = "std"  # 720p
    PRO = "pro"  # 1080p


class Orientation(StrEnum):
    IMAGE = "image"  # character faces as in the image; reference video <= 10 s
    VIDEO = "video"  # character faces as in the video; reference video <= 30 s


class AspectRatio(StrEnum):
    LANDSCAPE = "16:9"
    PORTRAIT = "9:16"
    SQUARE = "1:1"


class MediaRole(StrEnum):
    """Which limits a media input is held to (media_rules.py has the numbers)."""

    IMAGE = "image"  # jpg/png <= 10 MB, sides >= 300 px, aspect 1:2.5..2.5:1
    MASK = "mask"  # an image that must also match the frame image's aspect ratio
    MOTION_VIDEO = "motion_video"  # mp4/mov <= 100 MB, 340..3850 px, 3..10/30 s
    OMNI_VIDEO = "omni_video"  # mp4/mov <= 200 MB, 720..2160 px, 3..10 s
    ELEMENT_VIDEO = "element_video"  # mp4/mov <= 100 MB, 720..2160 px, <= 8 s


@dataclass(frozen=True)
class MediaRef:
    """One media input of a request: where it sits, what it says, which rules hold it."""

    path: tuple[str | int, ...]
    ref: str
    role: MediaRole

    @property
    def name(self) -> str:
        return ".".join(str(part) for part in self.path)

    @property
    def is_image(self) -> bool:
        return self.role in (MediaRole.IMAGE, MediaRole.MASK)


class PriceTier(StrEnum):
    """What a second costs depends on quality and sound (and, on image-to-video, a voice);
    elements cost a flat price per request. A price list keyed by anything else is refused."""

    STD = "std"
    PRO = "pro"
    STD_SOUND = "std_sound"
    PRO_SOUND = "pro_sound"
    STD_SOUND_VOICE = "std_sound_voice"
    PRO_SOUND_VOICE = "pro_sound_voice"
    FLAT = "flat"

    @classmethod
    def of(cls, mode: Mode, *, sound: bool = False, voice: bool = False) -> PriceTier:
        return cls(mode.value + ("_sound" if sound else "") + ("_voice" if sound and voice else ""))


@dataclass(frozen=True)
class Billing:
    """How a job is charged: per second at a price tier, or a flat price per request."""

    tier: PriceTier
    seconds: int  # 0 for flat prices
    upper_bound: bool = False  # the seconds are the most the rules allow, not a measurement

    @property
    def flat(self) -> bool:
        return self.tier is PriceTier.FLAT


def billable_seconds(duration_s: float | None) -> int | None:
    """Providers bill whole seconds, rounded up (at least one)."""
    return None if duration_s is None else max(1, math.ceil(duration_s - 1e-9))
