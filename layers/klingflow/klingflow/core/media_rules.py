"""The input rules from docs/providers.md and the providers' documentation that need the media itself.

| any image (frames, references, masks) | jpg / jpeg / png, <= 10 MB, each side 300..65536 px,
|                                       | aspect ratio 1:2.5 .. 2.5:1                        |
| motion-control reference video | mp4 / mov, <= 100 MB, each side 340..3850 px, 3 s .. 10 s
|                                | (orientation image) or 3 s .. 30 s (orientation video)  |
| omni reference video (the gateway's manual) | mp4 / mov, <= 200 MB, each side 720..2160 px, 3 s .. 10 s |
| element video (evolink motion control) | mp4 / mov / webm, <= 100 MB, each side 720..2160 px, <= 8 s |
| motion-brush masks (the gateway's manual)   | the frame image's aspect ratio; all masks one resolution  |
| motion-brush trajectories        | each point a pixel of the frame image (from its bottom-left) |

Each limit is one constant below. A rule is checked only when the fact is known: an https input
may only have a format guessed from its URL until it is probed.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Final
from urllib.parse import urlsplit

from .errors import FieldError
from .kind_motion import MotionControlRequest
from .kind_video import ImageToVideoRequest
from .kinds import AnyRequest, MediaRole, Orientation
from .models import MediaFacts
from .probe_reader import ImageInfo, VideoInfo

MB: Final = 1024 * 1024

IMAGE_FORMATS: Final = frozenset({"jpeg", "png"})
IMAGE_MAX_BYTES: Final = 10 * MB
IMAGE_MIN_SIDE_PX: Final = 300
IMAGE_MAX_SIDE_PX: Final = 65536
# width/height, inclusive; fractions keep 2.5:1 exactly on the right side of the limit
IMAGE_MIN_ASPECT_RATIO: Final = Fraction(1) / Fraction("2.5")
IMAGE_MAX_ASPECT_RATIO: Final = Fraction("2.5")

VIDEO_FORMATS: Final = frozenset({"mp4", "mov"})
_FORMAT_ORDER: Final = ("mp4", "mov", "webm")
VIDEO_MAX_BYTES: Final = 100 * MB
VIDEO_MIN_SIDE_PX: Final = 340
VIDEO_MAX_SIDE_PX: Final = 3850
VIDEO_MIN_DURATION_S: Final = 3.0
VIDEO_MAX_DURATION_S: Final = {
    Orientation.IMAGE: 10.0,
    Orientation.VIDEO: 30.0,
}


@dataclass(frozen=True)
class VideoLimits:
    max_bytes: int
    min_side_px: int
    max_side_px: int
    min_duration_s: float | None
    max_duration_s: float
    # The rule name for "too long" (motion control's names the orientation that set the limit).
    max_duration_rule: str = "video_max_duration"
    max_duration_why: str = ""
    formats: frozenset[str] = VIDEO_FORMATS


OMNI_VIDEO_LIMITS: Final = VideoLimits(200 * MB, 720, 2160, 3.0, 10.0)
# evolink's motion-control page: element videos may be MP4, MOV or WebM.
ELEMENT_VIDEO_LIMITS: Final = VideoLimits(
    100 * MB, 720, 2160, None, 8.0, formats=frozenset({"mp4", "mov", "webm"})
)


def motion_video_limits(orientation: Orientation) -> VideoLimits:
    return VideoLimits(
        VIDEO_MAX_BYTES,
        VIDEO_MIN_SIDE_PX,
        VIDEO_MAX_SIDE_PX,
        VIDEO_MIN_DURATION_S,
        VIDEO_MAX_DURATION_S[orientation],
        f"video_max_duration_{orientation.value}_orientation",
        f"with character_orientation={orientation.value} ",
    )


# Extensions of other media kinds are named too, so a URL input of the wrong kind is rejected
# before anything is fetched; unknown extensions say nothing (the probe will tell).
_EXTENSION_FORMATS: Final = {
    "jpg": "jpeg",
    "jpeg": "jpeg",
    "png": "png",
    "mp4": "mp4",
    "mov": "mov",
    **{ext: ext for ext in ("gif", "webp", "heic", "heif", "avif", "bmp", "tiff", "tif")},
    **{ext: ext for ext in ("m4v", "webm", "mkv", "avi", "wmv", "flv", "3gp", "mpg", "mpeg", "ts")},
}
_MIME_FORMATS: Final = {"image/jpeg": "jpeg", "image/jpg": "jpeg", "image/png": "png"}


def format_from_name(name: str) -> str | None:
    """The media format an object key, s3:// or https URL (or data: URI) names, if any.

    "jpeg"/"png"/"mp4"/"mov" for accepted kinds, the lowercase extension for other known media
    kinds (so rules can reject them), None when the name says nothing.
    """
    if name[:5].lower() == "data:":
        mime = name[5:].split(";", 1)[0].split(",", 1)[0].strip().lower()
        return _MIME_FORMATS.get(mime, mime.partition("/")[2] or None)
    path = urlsplit(name).path if "://" in name else name.split("?", 1)[0].split("#", 1)[0]
    leaf = path.rstrip("/").rsplit("/", 1)[-1]
    if "." not in leaf:
        return None
    return _EXTENSION_FORMATS.get(leaf.rsplit(".", 1)[1].lower())


def facts_from_probe(source: str, info: ImageInfo | VideoInfo, content_type: str | None) -> MediaFacts:
    """What a probe found, in the shape the job record keeps."""
    return MediaFacts(
        source=source,
        content_type=content_type,
        bytes=info.bytes,
        width=info.width,
        height=info.height,
        duration_s=info.duration_s if isinstance(info, VideoInfo) else None,
        format=info.format,
    )


def check_motion_media(
    orientation: Orientation, image: MediaFacts | None, video: MediaFacts | None
) -> list[FieldError]:
    """Every rule the known facts break (an empty list when none is broken)."""
    errors: list[FieldError] = []
    if image is not None:
        errors += check_image("image", image, "reference image")
    if video is not None:
        errors += check_video("video", video, motion_video_limits(orientation), "reference video")
    return errors


def check_media(request: AnyRequest, facts: dict[str, MediaFacts]) -> list[FieldError]:
    """Every rule the probed media of any job kind break, named by the media's field."""
    if isinstance(request, MotionControlRequest):
        return check_motion_media(request.character_orientation, facts.get("image"), facts.get("video"))
    errors: list[FieldError] = []
    masks: list[tuple[str, MediaFacts]] = []
    for ref in request.media():
        found = facts.get(ref.name)
        if found is None:
            continue
        if ref.is_image:
            errors += check_image(ref.name, found, ref.name)
            if ref.role is MediaRole.MASK:
                masks.append((ref.name, found))
        elif ref.role is MediaRole.OMNI_VIDEO:
            errors += check_video(ref.name, found, OMNI_VIDEO_LIMITS, ref.name)
        elif ref.role is MediaRole.ELEMENT_VIDEO:
            errors += check_video(ref.name, found, ELEMENT_VIDEO_LIMITS, ref.name)
    errors += _check_masks(facts.get("image"), masks)
    if isinstance(request, ImageToVideoRequest):
        errors += _check_trajectories(request, facts.get("image"))
    return errors


def _check_trajectories(request: ImageToVideoRequest, frame: MediaFacts | None) -> list[FieldError]:
    """the gateway's manual: a trajectory point is a pixel of the frame image; one outside it moves nothing
    the provider can place (known only once the frame is probed)."""
    if frame is None or not frame.width or not frame.height:
        return []
    return [
        FieldError(
            f"dynamic_masks.{group}.trajectories.{index}",
            "trajectory_in_image",
            f"point ({point.x}, {point.y}) is outside image, which is {frame.width}x{frame.height} px: "
            f"x must be 0..{frame.width} and y 0..{frame.height}, from its bottom-left corner",
        )
        for group, mask in enumerate(request.dynamic_masks)
        for index, point in enumerate(mask.trajectories)
        if point.x > frame.width or point.y > frame.height
    ]


def _check_masks(frame: MediaFacts | None, masks: list[tuple[str, MediaFacts]]) -> list[FieldError]:
    """the gateway's manual: a mask has the frame's aspect ratio, and every mask has one resolution; the
    provider fails such a task only after it has been queued (and charged)."""
    errors: list[FieldError] = []
    sized = [(name, mask) for name, mask in masks if mask.width and mask.height]
    if frame is not None and frame.width and frame.height:
        for name, mask in sized:
            assert mask.width and mask.height
            if Fraction(mask.width, mask.height) != Fraction(frame.width, frame.height):
                errors.append(
                    FieldError(
                        f"{name}.aspect_ratio",
                        "mask_aspect_ratio",
                        f"{name} is {mask.width}x{mask.height} px; it must have the aspect ratio of "
                        f"image ({frame.width}x{frame.height} px)",
                    )
                )
    if len({(mask.width, mask.height) for _, mask in sized}) > 1:
        sizes = ", ".join(f"{name} {mask.width}x{mask.height}" for name, mask in sized)
        errors.append(
            FieldError(sized[0][0], "mask_resolution", f"every mask must have one resolution; found {sizes}")
        )
    return errors


def check_image(field: str, image: MediaFacts, label: str) -> list[FieldError]:
    errors: list[FieldError] = []
    if image.format is not None and image.format.lower() not in IMAGE_FORMATS:
        errors.append(
            FieldError(
                f"{field}.format",
                "image_format",
                f"{label} is {image.format}; it must be JPEG (.jpg/.jpeg) or PNG",
            )
        )
    if image.bytes is not None and image.bytes > IMAGE_MAX_BYTES:
        errors.append(
            FieldError(
                f"{field}.bytes",
                "image_max_bytes",
                f"{label} is {_size(image.bytes)}; it must be at most {_size(IMAGE_MAX_BYTES)}",
            )
        )
    for side, value in (("width", image.width), ("height", image.height)):
        if value is not None and not IMAGE_MIN_SIDE_PX <= value <= IMAGE_MAX_SIDE_PX:
            errors.append(
                FieldError(
                    f"{field}.{side}",
                    "image_side_px",
                    f"{label} {side} is {value} px; each side must be "
                    f"{IMAGE_MIN_SIDE_PX}..{IMAGE_MAX_SIDE_PX} px",
                )
            )
    if image.width and image.height:
        ratio = Fraction(image.width, image.height)
        if not IMAGE_MIN_ASPECT_RATIO <= ratio <= IMAGE_MAX_ASPECT_RATIO:
            errors.append(
                FieldError(
                    f"{field}.aspect_ratio",
                    "image_aspect_ratio",
                    f"{label} is {image.width}x{image.height} px (width/height "
                    f"{float(ratio):.3g}); the aspect ratio must be between "
                    f"{_ratio(IMAGE_MIN_ASPECT_RATIO)} and {_ratio(IMAGE_MAX_ASPECT_RATIO)}",
                )
            )
    return errors


def check_video(field: str, video: MediaFacts, limits: VideoLimits, label: str) -> list[FieldError]:
    errors: list[FieldError] = []
    if video.format is not None and video.format.lower() not in limits.formats:
        allowed = " or ".join(
            "WebM" if f == "webm" else f.upper() for f in sorted(limits.formats, key=_FORMAT_ORDER.index)
        )
        errors.append(
            FieldError(f"{field}.format", "video_format", f"{label} is {video.format}; it must be {allowed}")
        )
    if video.bytes is not None and video.bytes > limits.max_bytes:
        errors.append(
            FieldError(
                f"{field}.bytes",
                "video_max_bytes",
                f"{label} is {_size(video.bytes)}; it must be at most {_size(limits.max_bytes)}",
            )
        )
    for side, value in (("width", video.width), ("height", video.height)):
        if value is not None and not limits.min_side_px <= value <= limits.max_side_px:
            errors.append(
                FieldError(
                    f"{field}.{side}",
                    "video_side_px",
                    f"{label} {side} is {value} px; each side must be "
                    f"{limits.min_side_px}..{limits.max_side_px} px",
                )
            )
    duration = video.duration_s
    if duration is not None:
        # No tolerance: a duration is one correctly rounded division, so a clip that really is
        # at the limit compares equal to it.
        shortest = limits.min_duration_s
        if shortest is not None and duration < shortest:
            errors.append(
                FieldError(
                    f"{field}.duration_s",
                    "video_min_duration",
                    f"{label} is {_seconds(duration, shortest)} s; "
                    f"it must be at least {_seconds(shortest)} s",
                )
            )
        limit = limits.max_duration_s
        if duration > limit:
            errors.append(
                FieldError(
                    f"{field}.duration_s",
                    limits.max_duration_rule,
                    f"{label} is {_seconds(duration, limit)} s; {limits.max_duration_why}"
                    f"it must be at most {_seconds(limit)} s",
                )
            )
    return errors


def _size(n: int) -> str:
    mb = n / MB
    shown = f"{mb:.0f}" if mb == int(mb) else f"{mb:.1f}"
    return f"{shown} MB ({n} bytes)"


def _ratio(r: Fraction) -> str:
    def num(x: Fraction) -> str:
        return f"{float(x):g}"

    return f"{num(r)}:1" if r >= 1 else f"1:{num(1 / r)}"


def _seconds(value: float, limit: float | None = None) -> str:
    """`value` with as few decimals as read well, but never so few it looks equal to `limit`."""
    for decimals in (1, 2, 3, 6):
        shown = f"{value:.{decimals}f}".rstrip("0").rstrip(".")
        if limit is None or value == limit or float(shown) != limit:
            return shown
    return repr(value)
