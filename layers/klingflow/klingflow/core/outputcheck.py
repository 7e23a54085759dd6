"""Whether a download is what it claims: a clip that probes as a video, a cover whose bytes are
an image of a type klingflow can name.

Archive streams a clip into S3 before anything can be known of it (its `moov` may sit at the
end), then probes the stored object as inputs are probed (`probe.py`): a few ranged GETs, never
the whole object, so archive's memory and throughput stay those of the copy. A cover's type is
read from its first bytes before it is stored, so its key and ContentType are what its bytes
prove, whatever it was served as.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

from .probe import probe_image, probe_video
from .probe_reader import ImageInfo, ProbeError, RangeReader, VideoInfo

# Enough for every magic number below and for a readable start of a page.
SNIFF_BYTES: Final = 32
# The containers a clip may come in: ISO-BMFF (MP4, and QuickTime, which shares its boxes).
CLIP_FORMATS: Final = frozenset({"mp4", "mov"})
# How much of a download's start a message quotes (an HTML page's doctype fits).
_QUOTED_CHARS: Final = 24


@dataclass(frozen=True)
class ImageType:
    format: str  # as probe.ImageInfo names it
    content_type: str
    suffix: str


IMAGE_TYPES: Final = {
    "png": ImageType("png", "image/png", ".png"),
    "jpeg": ImageType("jpeg", "image/jpeg", ".jpg"),
    "gif": ImageType("gif", "image/gif", ".gif"),
    "webp": ImageType("webp", "image/webp", ".webp"),
}


class OutputInvalid(Exception):
    """A download that is not what it claims; the message says what it is instead."""

    def __init__(self, label: str, expected: str, reason: str) -> None:
        super().__init__(f"{label} is not {expected}: {reason}")
        self.label = label
        self.reason = reason


def quarantine_prefix(job_id: str) -> str:
    """Where a job's downloads that were not what they claimed are kept for a person."""
    return f"quarantine/{job_id}/"


def image_type(head: bytes) -> ImageType | None:
    """The image type a file's first bytes prove (PNG, JPEG, GIF, WebP), or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return IMAGE_TYPES["png"]
    if head.startswith(b"\xff\xd8\xff"):
        return IMAGE_TYPES["jpeg"]
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return IMAGE_TYPES["gif"]
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return IMAGE_TYPES["webp"]
    return None


def peek(chunks: Iterable[bytes], size: int = SNIFF_BYTES) -> tuple[bytes, Iterator[bytes]]:
    """The first `size` bytes of a stream (fewer if it is shorter) and the whole stream, still
    to be read from its start."""
    stream = iter(chunks)
    taken: list[bytes] = []
    held = 0
    while held < size and (chunk := next(stream, None)) is not None:
        taken.append(chunk)
        held += len(chunk)
    return b"".join(taken)[:size], itertools.chain(taken, stream)


def cover_type(head: bytes, *, label: str, served_as: str | None) -> ImageType:
    """The type a cover's first bytes prove; OutputInvalid when they are not an image's."""
    found = image_type(head)
    if found is None:
        raise OutputInvalid(label, "an image", describe(head, served_as))
    return found


def check_image(reader: RangeReader, expected: ImageType, *, label: str, served_as: str | None) -> ImageInfo:
    """A stored cover probed whole: its header must hold together and fit its bytes."""
    try:
        info = probe_image(reader)
    except ProbeError as error:
        raise OutputInvalid(label, "an image", f"{error} ({served_as or 'no Content-Type'})") from None
    if info.format != expected.format:
        raise OutputInvalid(label, "an image", f"it began as {expected.format} but probes as {info.format}")
    return info


def check_video(reader: RangeReader, *, label: str, served_as: str | None) -> VideoInfo:
    """A stored clip probed (structure, boxes and sample tables within its bytes, duration);
    OutputInvalid saying what it is instead."""
    try:
        video = probe_video(reader)
    except ProbeError as error:
        head = reader.read(0, SNIFF_BYTES)
        raise OutputInvalid(label, "a video", describe(head, served_as, probed=str(error))) from None
    if video.format not in CLIP_FORMATS:
        # Every provider documents MP4 clips, and the clip is stored and served as one.
        raise OutputInvalid(
            label, "an MP4 video", f"it is a {video.format.upper()} video ({served_as or 'no Content-Type'})"
        )
    return video


def describe(head: bytes, served_as: str | None, *, probed: str | None = None) -> str:
    """What a download is, in words a person can act on: empty, an image, a damaged video (what
    probing it found) or the start of whatever else it is, with the type it was served as."""
    served = f"({served_as or 'no Content-Type'})"
    if not head:
        return f"it is empty {served}"
    image = image_type(head)
    if image is not None:
        return f"it is a {image.format.upper()} image {served}"
    if probed is not None and (head[4:8] == b"ftyp" or head[:4] == b"\x1a\x45\xdf\xa3"):
        return f"{probed} {served}"
    if head[4:8] == b"ftyp":
        return f"it is an MP4/MOV file {served}"
    text = head.decode("latin-1")
    first_line = next((line.strip() for line in text.splitlines() if line.strip()), text)
    return f"it starts with {first_line[:_QUOTED_CHARS]!r} {served}"
