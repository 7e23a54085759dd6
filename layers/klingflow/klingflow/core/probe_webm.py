"""WebM (Matroska): the container, display size and duration, from the element headers.

evolink's motion-control page take WebM element videos. A WebM is a tree of EBML elements: the header's
DocType, then one Segment whose Info holds the duration (in TimestampScale units) and whose
Tracks hold each video track's pixel size. Only element headers are read on the way; Clusters
(the media) are stepped over by their declared sizes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from .probe_reader import MAX_TOP_LEVEL_BOXES, ProbeError, VideoInfo, Window

EBML_MAGIC: Final = b"\x1a\x45\xdf\xa3"
_SEGMENT: Final = 0x18538067
_INFO: Final = 0x1549A966
_TRACKS: Final = 0x1654AE6B
_WEBM_HEAD_MAX_BYTES: Final = 4 * 1024 * 1024  # Info and Tracks are a few hundred bytes
_SKIPPED: Final = frozenset({0xEC, 0xBF})  # Void, CRC-32


@dataclass(frozen=True)
class _Element:
    id: int
    data: int  # where the payload starts
    size: int | None  # None: "unknown size" (a live recording still being written)

    @property
    def end(self) -> int | None:
        return None if self.size is None else self.data + self.size


def _vint(raw: bytes, at: int, *, keep_marker: bool) -> tuple[int, int]:
    """An EBML variable-length integer at `at`: (value, its length in bytes)."""
    if at >= len(raw):
        raise ProbeError("truncated WebM: an element header runs past the end", rule="truncated")
    first = raw[at]
    length = 9 - first.bit_length() if first else 9
    if length > 8 or at + length > len(raw):
        raise ProbeError(f"corrupt WebM: bad element header at offset {at}")
    value = int.from_bytes(raw[at : at + length], "big")
    if not keep_marker:
        value &= (1 << (7 * length)) - 1
    return value, length


def _element(raw: bytes, at: int, base: int = 0) -> _Element:
    element_id, id_len = _vint(raw, at, keep_marker=True)
    size, size_len = _vint(raw, at + id_len, keep_marker=False)
    unknown = size == (1 << (7 * size_len)) - 1
    return _Element(element_id, base + at + id_len + size_len, None if unknown else size)


def _children_of(raw: bytes) -> Iterator[tuple[int, bytes]]:
    at = 0
    while at < len(raw):
        element = _element(raw, at)
        start = element.data
        if element.size is None or start + element.size > len(raw):
            raise ProbeError("corrupt WebM: a header element overruns its parent")
        yield element.id, raw[start : start + element.size]
        at = start + element.size


def _uint(raw: bytes) -> int:
    return int.from_bytes(raw, "big") if raw else 0


def probe_webm(window: Window) -> VideoInfo:
    size = window.size
    head = window.read(0, 64)
    header = _element(head, 0)
    if header.end is None or header.end > size:
        raise ProbeError("corrupt WebM: the EBML header has no size", rule="truncated")
    doc_type = next(
        (
            value
            for kind, value in _children_of(
                window.exact(header.data, header.end - header.data, "EBML header")
            )
            if kind == 0x4282
        ),
        b"",
    ).rstrip(b"\x00")
    if doc_type not in (b"webm", b"matroska"):
        raise ProbeError(f"not a WebM/Matroska file (DocType {doc_type!r})")
    at = header.end
    for _ in range(MAX_TOP_LEVEL_BOXES):
        segment = _element(window.exact(at, min(12, size - at), "Segment header"), 0, at)
        if segment.id not in _SKIPPED or segment.end is None:
            break
        at = segment.end  # Void or CRC-32 padding before the Segment
    if segment.id != _SEGMENT:
        raise ProbeError("corrupt WebM: no Segment after the EBML header")
    if segment.end is not None and segment.end > size:
        raise ProbeError(
            f"truncated WebM: the Segment declares {segment.size} bytes but the data ends at {size}",
            rule="truncated",
        )
    scale, duration, dimensions = _walk_segment(window, segment.data, segment.end or size)
    if dimensions is None:
        raise ProbeError("WebM without a video track (no Tracks with PixelWidth/PixelHeight)")
    # A recording written live (a browser's MediaRecorder) declares no Duration: the length
    # stays unknown, as for an input given by URL, rather than refusing what the providers
    # allow.
    return VideoInfo(
        format="webm" if doc_type == b"webm" else "mkv",
        width=dimensions[0],
        height=dimensions[1],
        duration_s=None if duration is None else duration * scale / 1e9,
        bytes=size,
    )


def _walk_segment(window: Window, at: int, end: int) -> tuple[int, float | None, tuple[int, int] | None]:
    """The Segment's children by their headers: Info and Tracks read, the rest stepped over,
    each checked to end within the data."""
    scale, duration, dimensions = 1_000_000, None, None
    for _ in range(MAX_TOP_LEVEL_BOXES):
        if end - at < 2:
            break
        element = _element(window.exact(at, min(12, end - at), "element header"), 0, at)
        if element.end is None:
            break  # a live recording's Cluster: nothing after it can be stepped over
        if element.end > end:
            raise ProbeError(
                f"truncated WebM: an element at offset {at} declares {element.size} bytes but the data "
                f"ends at {end}",
                rule="truncated",
            )
        if element.id in (_INFO, _TRACKS):
            if element.end - element.data > _WEBM_HEAD_MAX_BYTES:
                raise ProbeError("a WebM Info or Tracks element is too large to read")
            payload = window.exact(element.data, element.end - element.data, "WebM header element")
            if element.id == _INFO:
                scale, duration = _webm_info(payload, scale)
            else:
                dimensions = _webm_video_size(payload)
        at = element.end
    return scale, duration, dimensions


def _webm_info(payload: bytes, scale: int) -> tuple[int, float | None]:
    duration = None
    for kind, value in _children_of(payload):
        if kind == 0x2AD7B1:  # TimestampScale, nanoseconds per tick
            scale = _uint(value) or scale
        elif kind == 0x4489 and len(value) in (4, 8):  # Duration, a float in ticks
            duration = struct.unpack(">f" if len(value) == 4 else ">d", value)[0]
    if duration is not None and not (duration >= 0 and duration < float("inf")):
        raise ProbeError("corrupt WebM: its Duration is not a number of seconds")
    return scale, duration


def _webm_video_size(payload: bytes) -> tuple[int, int] | None:
    for kind, entry in _children_of(payload):
        if kind != 0xAE:  # TrackEntry
            continue
        fields = dict(_children_of(entry))
        if _uint(fields.get(0x83, b"")) != 1 or 0xE0 not in fields:  # TrackType 1: video
            continue
        video = dict(_children_of(fields[0xE0]))
        width, height = _uint(video.get(0xB0, b"")), _uint(video.get(0xBA, b""))
        if width and height:
            return width, height
    return None
