"""What every probe shares: the reader it reads through, what it finds, and how it fails.

`Window` serves a probe's many small header reads from one cached chunk, so walking a file's
headers costs a few ranged GETs (see `probe.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol

# The most top-level boxes (MP4/MOV) or elements (WebM) a probe walks before giving up.
MAX_TOP_LEVEL_BOXES: Final = 1024


class RangeReader(Protocol):
    """Random access to some bytes (an S3 object, a local buffer) without loading them all."""

    @property
    def size(self) -> int: ...

    def read(self, offset: int, length: int) -> bytes:
        """Up to `length` bytes starting at `offset`; fewer only at the end of the data."""
        ...


class BytesReader:
    """A RangeReader over bytes already in memory."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    @property
    def size(self) -> int:
        return len(self._data)

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError(f"offset and length must not be negative (got {offset}, {length})")
        return self._data[offset : offset + length]


class ProbeError(Exception):
    """The data is not an image/video of a kind klingflow can probe, or it is damaged.

    `rule` names what is wrong, for the rejection (`readable`, `truncated`, `size_consistent`,
    `duration_consistent`).
    """

    def __init__(self, message: str, rule: str = "readable") -> None:
        super().__init__(message)
        self.rule = rule


@dataclass(frozen=True)
class ImageInfo:
    format: str  # "png", "jpeg", "gif" or "webp"
    width: int
    height: int
    bytes: int


@dataclass(frozen=True)
class VideoInfo:
    # "mov" for QuickTime (ftyp brand "qt  "), "mp4" for any other ISO-BMFF brand, "webm" or
    # "mkv" for Matroska by its DocType
    format: str
    width: int  # as displayed: swapped when the track matrix rotates by 90 or 270 degrees
    height: int
    duration_s: float | None  # None only for a WebM written live, which declares none
    bytes: int


class Window:
    """Serves small reads from one cached chunk, so walking headers costs few ranged GETs."""

    def __init__(self, reader: RangeReader, chunk: int) -> None:
        self._reader = reader
        self._chunk = chunk
        self._start = 0
        self._data = b""
        self.size = reader.size

    def read(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self.size)
        if offset >= end:
            return b""
        if not (self._start <= offset and end <= self._start + len(self._data)):
            want = min(max(length, self._chunk), self.size - offset)
            self._data = self._reader.read(offset, want)
            self._start = offset
        return self._data[offset - self._start : end - self._start]

    def exact(self, offset: int, length: int, what: str) -> bytes:
        data = self.read(offset, length)
        if len(data) < length:
            raise ProbeError(
                f"truncated: the {what} needs {length} bytes at offset {offset} "
                f"but the data ends at {self.size} bytes"
            )
        return data
