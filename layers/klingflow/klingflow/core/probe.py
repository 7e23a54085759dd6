"""Find an input's format, size and duration by reading only its headers.

Inputs can be 100 MB objects in S3 where every read is a ranged GET, so nothing here reads a
whole file: an image costs its first chunk (plus JPEG segment headers when big metadata pushes
the frame header further in), and an MP4/MOV costs its top-level box headers and its `moov` box,
wherever that box sits. The media data itself (`mdat`, JPEG scans) is never fetched on purpose.

Each format has its module (`probe_images`, `probe_mp4`, `probe_webm`), on the readers and
results they share (`probe_reader`).
"""

from __future__ import annotations

from typing import Final

from .probe_images import image_size, smallest_image_bytes
from .probe_mp4 import probe_mp4
from .probe_reader import ImageInfo, ProbeError, RangeReader, VideoInfo, Window
from .probe_webm import EBML_MAGIC, probe_webm

# One GET of this size covers a PNG/GIF/WebP header and most JPEG metadata, and costs
# about as much as a tiny GET on S3 (latency dominates).
IMAGE_CHUNK_BYTES: Final = 256 * 1024
# Read-ahead for box headers: a faststart file's ftyp + moov usually fit in the first chunk.
VIDEO_CHUNK_BYTES: Final = 64 * 1024


def probe_image(reader: RangeReader) -> ImageInfo:
    """Format and pixel size of a PNG, JPEG, GIF or WebP image; ProbeError for anything else."""
    if reader.size <= 0:
        raise ProbeError("the data is empty, not an image")
    window = Window(reader, IMAGE_CHUNK_BYTES)
    fmt, (width, height) = image_size(window)
    if width <= 0 or height <= 0:
        raise ProbeError(f"corrupt {fmt.upper()}: it declares a size of {width}x{height} px")
    smallest = smallest_image_bytes(fmt, width, height, window)
    if reader.size < smallest:
        raise ProbeError(
            f"the {fmt.upper()} claims {width}x{height} px in {reader.size} bytes; an image that size "
            f"cannot be smaller than {smallest} bytes",
            rule="size_consistent",
        )
    return ImageInfo(format=fmt, width=width, height=height, bytes=reader.size)


def probe_video(reader: RangeReader) -> VideoInfo:
    """Container, display size and duration of an MP4/MOV or a WebM; ProbeError for anything else.

    Only box headers are read on the way to `moov`, so a `moov` after a large `mdat` costs one
    more ranged read, not the media data.
    """
    window = Window(reader, VIDEO_CHUNK_BYTES)
    if window.read(0, 12)[:4] == EBML_MAGIC:
        return probe_webm(window)
    return probe_mp4(window)
