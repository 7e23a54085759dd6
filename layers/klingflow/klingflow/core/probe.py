"""Find an input's format, size and duration by reading only its headers.

Inputs can be 100 MB objects in S3 where every read is a ranged GET, so nothing here reads a
whole file: an image costs its first chunk (plus JPEG segment headers when big metadata pushes
the frame header further in), and an MP4/MOV costs its top-level box headers and its `moov` box,
wherever that box sits. The media data itself (`mdat`, JPEG scans) is never fetched on purpose.

PNG, JPEG, GIF and WebP headers are parsed here rather than through `imagesize`: its file-object
support depends on the installed version, it reports failure as -1 instead of saying what is
wrong, and it does not report which format it found.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, Protocol

# One GET of this size covers a PNG/GIF/WebP header and most JPEG metadata, and costs
# about as much as a tiny GET on S3 (latency dominates).
IMAGE_CHUNK_BYTES: Final = 256 * 1024
# A JPEG whose frame header starts later than this is not a photo anyone meant to send.
JPEG_SCAN_LIMIT_BYTES: Final = 16 * 1024 * 1024
JPEG_MAX_SEGMENTS: Final = 1024
# Read-ahead for box headers: a faststart file's ftyp + moov usually fit in the first chunk.
VIDEO_CHUNK_BYTES: Final = 64 * 1024
# A 30 s clip has a moov of well under 1 MiB; the cap bounds memory against hostile files.
MOOV_MAX_BYTES: Final = 32 * 1024 * 1024
MAX_TOP_LEVEL_BOXES: Final = 1024

_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
# SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC), which share the range but carry no size.
_JPEG_SOF_MARKERS: Final = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_HEIF_BRANDS: Final = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"})
_AVIF_BRANDS: Final = frozenset({b"avif", b"avis"})
_UNKNOWN_DURATION_32: Final = 0xFFFFFFFF
_UNKNOWN_DURATION_64: Final = 0xFFFFFFFFFFFFFFFF


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


class _Window:
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


# ---- images -----------------------------------------------------------------------------------


def probe_image(reader: RangeReader) -> ImageInfo:
    """Format and pixel size of a PNG, JPEG, GIF or WebP image; ProbeError for anything else."""
    if reader.size <= 0:
        raise ProbeError("the data is empty, not an image")
    window = _Window(reader, IMAGE_CHUNK_BYTES)
    head = window.read(0, 32)
    if head.startswith(_PNG_SIGNATURE):
        fmt, (width, height) = "png", _png_size(window)
    elif head.startswith(b"\xff\xd8\xff"):
        fmt, (width, height) = "jpeg", _jpeg_size(window)
    elif head[:6] in (b"GIF87a", b"GIF89a"):
        fmt, (width, height) = "gif", _gif_size(window)
    elif head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        fmt, (width, height) = "webp", _webp_size(window)
    else:
        raise ProbeError(_not_an_image(head))
    if width <= 0 or height <= 0:
        raise ProbeError(f"corrupt {fmt.upper()}: it declares a size of {width}x{height} px")
    smallest = _smallest_image_bytes(fmt, width, height, window)
    if reader.size < smallest:
        raise ProbeError(
            f"the {fmt.upper()} claims {width}x{height} px in {reader.size} bytes; an image that size "
            f"cannot be smaller than {smallest} bytes",
            rule="size_consistent",
        )
    return ImageInfo(format=fmt, width=width, height=height, bytes=reader.size)


# The most pixels one byte can carry in each format, at the best compression its coding allows:
# a header may claim any size, the data must be able to hold it.
_DEFLATE_MAX_RATIO: Final = 1032  # zlib's limit: 258-byte matches in 2-bit codes
_PIXELS_PER_BYTE: Final = {
    "jpeg": 4096,  # 8x8 blocks of at least a bit each (Huffman), with room for arithmetic coding
    "gif": 4096,  # LZW strings of at most 4096 pixels per code of at least 3 bits
    "webp": 65536,  # arithmetic-coded macroblocks can be skipped for a fraction of a bit
}


def _smallest_image_bytes(fmt: str, width: int, height: int, window: _Window) -> int:
    if fmt == "png":
        # IHDR: bit depth and colour type give the bits per pixel of each filtered scanline.
        depth, colour = window.exact(24, 2, "PNG header")
        channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(colour, 1)
        row = 1 + (width * depth * channels + 7) // 8
        return 8 + 25 + (height * row) // _DEFLATE_MAX_RATIO
    return (width * height) // _PIXELS_PER_BYTE[fmt]


def _not_an_image(head: bytes) -> str:
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _HEIF_BRANDS or brand in _AVIF_BRANDS:
            kind = "AVIF" if brand in _AVIF_BRANDS else "HEIC/HEIF"
            return f"{kind} images are not supported; convert the image to JPEG or PNG"
        return "the data is an MP4/MOV video, not an image"
    return "the data is not a PNG, JPEG, GIF or WebP image"


def _png_size(window: _Window) -> tuple[int, int]:
    header = window.exact(0, 24, "PNG header")
    if header[12:16] != b"IHDR":
        raise ProbeError("corrupt PNG: its first chunk is not IHDR")
    width, height = struct.unpack(">II", header[16:24])
    return width, height


def _jpeg_size(window: _Window) -> tuple[int, int]:
    offset = 2  # after SOI
    for _ in range(JPEG_MAX_SEGMENTS):
        if offset >= JPEG_SCAN_LIMIT_BYTES:
            raise ProbeError(f"JPEG: no frame header (SOF) within the first {JPEG_SCAN_LIMIT_BYTES} bytes")
        header = window.read(offset, 4)
        if len(header) < 2:
            raise ProbeError("truncated JPEG: the data ends before the frame header (SOF)")
        if header[0] != 0xFF:
            raise ProbeError(f"corrupt JPEG: expected a segment marker at offset {offset}")
        marker = header[1]
        if marker == 0xFF:  # a fill byte: markers may be padded with any number of them
            offset += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # TEM, RSTn, SOI: no length field
            offset += 2
            continue
        if marker in (0xD9, 0xDA):
            raise ProbeError("corrupt JPEG: the image data starts before any frame header (SOF)")
        if len(header) < 4:
            raise ProbeError("truncated JPEG: the data ends inside a segment header")
        (length,) = struct.unpack(">H", header[2:4])
        if length < 2:
            raise ProbeError(f"corrupt JPEG: segment at offset {offset} declares length {length}")
        if marker in _JPEG_SOF_MARKERS:
            frame = window.exact(offset + 4, 5, "JPEG frame header")
            height, width = struct.unpack(">HH", frame[1:5])
            if height == 0:
                raise ProbeError("JPEG height is only given after the image data (DNL); not supported")
            return width, height
        offset += 2 + length
    raise ProbeError(f"JPEG: no frame header (SOF) within the first {JPEG_MAX_SEGMENTS} segments")


def _gif_size(window: _Window) -> tuple[int, int]:
    width, height = struct.unpack("<HH", window.exact(6, 4, "GIF header"))
    return width, height


def _webp_size(window: _Window) -> tuple[int, int]:
    header = window.exact(0, 30, "WebP header")
    chunk = header[12:16]
    if chunk == b"VP8 ":  # lossy: a VP8 key frame header
        if header[23:26] != b"\x9d\x01\x2a":
            raise ProbeError("corrupt WebP: bad VP8 start code")
        width, height = struct.unpack("<HH", header[26:30])
        return width & 0x3FFF, height & 0x3FFF  # the top two bits are scaling hints
    if chunk == b"VP8L":  # lossless: 14-bit width-1 and height-1 packed after a signature byte
        if header[20] != 0x2F:
            raise ProbeError("corrupt WebP: bad VP8L signature")
        (bits,) = struct.unpack("<I", header[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: 24-bit canvas width-1 and height-1
        return int.from_bytes(header[24:27], "little") + 1, int.from_bytes(header[27:30], "little") + 1
    raise ProbeError(f"corrupt WebP: unknown first chunk {chunk!r}")


# ---- MP4 / MOV --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Box:
    type: bytes
    offset: int
    header: int
    size: int

    @property
    def payload(self) -> int:
        return self.offset + self.header

    @property
    def end(self) -> int:
        return self.offset + self.size


def probe_video(reader: RangeReader) -> VideoInfo:
    """Container, display size and duration of an MP4/MOV or a WebM; ProbeError for anything else.

    Only box headers are read on the way to `moov`, so a `moov` after a large `mdat` costs one
    more ranged read, not the media data.
    """
    size = reader.size
    window = _Window(reader, VIDEO_CHUNK_BYTES)
    head = window.read(0, 12)
    if head[:4] == _EBML_MAGIC:
        return _probe_webm(window)
    if len(head) < 12 or head[4:8] != b"ftyp":
        raise ProbeError("not an MP4/MOV file: it does not start with an ftyp box")
    ftyp = _top_level_box(window, 0)
    if ftyp.size < ftyp.header + 4:
        raise ProbeError("corrupt MP4/MOV: the ftyp box is too small to hold a brand")
    brand = window.exact(ftyp.payload, 4, "ftyp brand")
    fmt = "mov" if brand == b"qt  " else "mp4"

    offset, overrun = ftyp.end, ""
    for _ in range(MAX_TOP_LEVEL_BOXES):
        # Fewer than 8 bytes cannot hold a box: trailing padding, or the end.
        if size - offset < 8:
            raise ProbeError(f"not a playable MP4/MOV: no moov box{overrun}")
        box = _top_level_box(window, offset)
        if box.end > size:
            overrun = (
                f" (the data looks truncated: the {box.type.decode('latin-1')} box at offset {offset}"
                f" declares {box.size} bytes but the data ends at {size})"
            )
        if box.type == b"moov":
            if box.size > MOOV_MAX_BYTES:
                raise ProbeError(f"moov box is {box.size} bytes; at most {MOOV_MAX_BYTES} are read")
            if overrun:
                raise ProbeError(f"truncated MP4/MOV{overrun}", rule="truncated")
            moov = window.exact(box.payload, box.end - box.payload, "moov box")
            # The media after moov (a faststart file's mdat) must be all there too.
            _check_rest(window, box.end)
            return _from_moov(memoryview(moov), fmt, size)
        offset = box.end
    raise ProbeError(f"corrupt MP4/MOV: no moov box among the first {MAX_TOP_LEVEL_BOXES} boxes")


def _check_rest(window: _Window, offset: int) -> None:
    """Every top-level box after moov ends within the data (headers only are read)."""
    for _ in range(MAX_TOP_LEVEL_BOXES):
        if window.size - offset < 8:
            return
        box = _top_level_box(window, offset)
        if box.end > window.size:
            raise ProbeError(
                f"truncated MP4/MOV: the {box.type.decode('latin-1')} box at offset {offset} declares "
                f"{box.size} bytes but the data ends at {window.size}",
                rule="truncated",
            )
        offset = box.end


def _top_level_box(window: _Window, offset: int) -> _Box:
    raw = window.exact(offset, min(16, window.size - offset), "box header")
    if len(raw) < 8:
        raise ProbeError(f"truncated: box header at offset {offset}")
    size32, kind = struct.unpack(">I4s", raw[:8])
    # Box types are four printable characters; anything else means we are reading garbage.
    if not all(0x20 <= c <= 0x7E for c in kind):
        raise ProbeError(f"corrupt MP4/MOV: box at offset {offset} has type {kind!r}")
    if size32 == 1:  # 64-bit largesize follows the type
        if len(raw) < 16:
            raise ProbeError(f"truncated: 64-bit box header at offset {offset}")
        (size,) = struct.unpack(">Q", raw[8:16])
        header = 16
    elif size32 == 0:  # the box runs to the end of the file
        size, header = window.size - offset, 8
    else:
        size, header = size32, 8
    if size < header:
        raise ProbeError(f"corrupt MP4/MOV: {kind!r} box at offset {offset} declares {size} bytes")
    return _Box(kind, offset, header, size)


def _children(parent: memoryview, where: str) -> Iterator[tuple[bytes, memoryview]]:
    """(type, payload) of each box directly inside `parent`."""
    offset, end = 0, len(parent)
    while end - offset >= 8:  # QuickTime may end a list with a 4-byte zero terminator
        size, kind = struct.unpack_from(">I4s", parent, offset)
        header = 8
        if size == 1:
            if end - offset < 16:
                raise ProbeError(f"corrupt MP4/MOV: truncated box header in {where}")
            (size,) = struct.unpack_from(">Q", parent, offset + 8)
            header = 16
        elif size == 0:
            size = end - offset
        if size < header or offset + size > end:
            raise ProbeError(f"corrupt MP4/MOV: the {kind!r} box overruns its parent {where}")
        yield kind, parent[offset + header : offset + size]
        offset += size


def _child(parent: memoryview, kind: bytes, where: str) -> memoryview | None:
    return next((payload for k, payload in _children(parent, where) if k == kind), None)


def _from_moov(moov: memoryview, fmt: str, size: int) -> VideoInfo:
    mvhd = _child(moov, b"mvhd", "moov")
    if mvhd is None:
        raise ProbeError("corrupt MP4/MOV: moov has no mvhd box")
    timescale, declared = _mvhd(mvhd)
    duration: int | None = declared
    if declared in (0, _UNKNOWN_DURATION_32, _UNKNOWN_DURATION_64):
        # Fragmented files leave mvhd empty and may state the total in mvex/mehd.
        duration = _mehd_duration(moov)
    if duration is None:
        raise ProbeError("the MP4/MOV does not declare its duration")
    width, height = _video_track_size(moov)
    declared_s = duration / timescale
    for kind, trak in _children(moov, "moov"):
        if kind == b"trak":
            _check_track(trak, size, declared_s)
    return VideoInfo(format=fmt, width=width, height=height, duration_s=declared_s, bytes=size)


# A track's samples may run a little shorter or longer than the movie says (edit lists trim a
# few frames, audio priming): more than this is a duration box that lies.
DURATION_SLACK_S: Final = 1.0
DURATION_SLACK_RATIO: Final = 0.1
MAX_SAMPLES: Final = 10_000_000


def _check_track(trak: memoryview, size: int, declared_s: float) -> None:
    """A track's sample tables must point inside the data, and its samples must last about as
    long as the movie declares."""
    mdia = _child(trak, b"mdia", "trak")
    minf = _child(mdia, b"minf", "mdia") if mdia is not None else None
    stbl = _child(minf, b"stbl", "minf") if minf is not None else None
    if mdia is None or stbl is None:
        return
    end = _last_sample_end(stbl)
    if end > size:
        raise ProbeError(
            f"truncated MP4/MOV: its sample tables point to byte {end} but the data ends at {size}",
            rule="truncated",
        )
    hdlr = _child(mdia, b"hdlr", "mdia")
    mdhd = _child(mdia, b"mdhd", "mdia")
    stts = _child(stbl, b"stts", "stbl")
    if hdlr is None or bytes(hdlr[8:12]) != b"vide" or mdhd is None or stts is None:
        return
    timescale = _mdhd_timescale(mdhd)
    ticks = sum(count * delta for count, delta in _pairs(stts, "stts"))
    if not ticks or not timescale:
        return  # fragmented: the samples live in moof boxes, not here
    samples_s = ticks / timescale
    if abs(samples_s - declared_s) > max(DURATION_SLACK_S, DURATION_SLACK_RATIO * declared_s):
        raise ProbeError(
            f"the MP4/MOV declares {declared_s:.2f} s but its video samples last {samples_s:.2f} s",
            rule="duration_consistent",
        )


def _mdhd_timescale(mdhd: memoryview) -> int:
    version = mdhd[0] if len(mdhd) else -1
    at = 20 if version == 1 else 12
    if len(mdhd) < at + 4:
        raise ProbeError(f"corrupt MP4/MOV: unreadable mdhd box ({len(mdhd)} bytes)")
    return int(struct.unpack_from(">I", mdhd, at)[0])


def _table(box: memoryview, width: int, what: str) -> tuple[int, int]:
    """(entry count, bytes per entry) of a full box's table, checked to fit inside the box."""
    if len(box) < 8:
        raise ProbeError(f"corrupt MP4/MOV: unreadable {what} box")
    (count,) = struct.unpack_from(">I", box, 4)
    if count > MAX_SAMPLES or 8 + count * width > len(box):
        raise ProbeError(f"corrupt MP4/MOV: the {what} table declares {count} entries it does not hold")
    return int(count), width


def _pairs(box: memoryview, what: str) -> Iterator[tuple[int, int]]:
    count, _ = _table(box, 8, what)
    for index in range(count):
        yield struct.unpack_from(">II", box, 8 + 8 * index)


def _last_sample_end(stbl: memoryview) -> int:
    """The byte after the last sample any chunk of this track points to (0 without tables)."""
    stsz = _child(stbl, b"stsz", "stbl")
    stsc = _child(stbl, b"stsc", "stbl")
    stco, co64 = _child(stbl, b"stco", "stbl"), _child(stbl, b"co64", "stbl")
    if stsz is None or stsc is None or (stco is None and co64 is None):
        return 0
    if co64 is not None:
        count, _ = _table(co64, 8, "co64")
        offsets = [struct.unpack_from(">Q", co64, 8 + 8 * i)[0] for i in range(count)]
    else:
        assert stco is not None
        count, _ = _table(stco, 4, "stco")
        offsets = [struct.unpack_from(">I", stco, 8 + 4 * i)[0] for i in range(count)]
    if len(stsz) < 12:
        raise ProbeError("corrupt MP4/MOV: unreadable stsz box")
    uniform, samples = struct.unpack_from(">II", stsz, 4)
    if samples > MAX_SAMPLES or (not uniform and 12 + 4 * samples > len(stsz)):
        raise ProbeError(f"corrupt MP4/MOV: the stsz table declares {samples} samples it does not hold")
    runs = [(first, per_chunk) for first, per_chunk, _ in _triples(stsc)]
    end, sample = 0, 0
    for run, (first, per_chunk) in enumerate(runs):
        last = runs[run + 1][0] - 1 if run + 1 < len(runs) else len(offsets)
        for chunk in range(first, min(last, len(offsets)) + 1):
            if sample + per_chunk > samples:
                return end  # more chunks than samples: the rest hold nothing
            sizes = (
                uniform * per_chunk
                if uniform
                else sum(struct.unpack_from(f">{per_chunk}I", stsz, 12 + 4 * sample))
            )
            end = max(end, offsets[chunk - 1] + sizes)
            sample += per_chunk
    return end


def _triples(stsc: memoryview) -> Iterator[tuple[int, int, int]]:
    count, _ = _table(stsc, 12, "stsc")
    for index in range(count):
        first, per_chunk, description = struct.unpack_from(">III", stsc, 8 + 12 * index)
        if first < 1:
            raise ProbeError("corrupt MP4/MOV: stsc counts chunks from 1")
        yield first, per_chunk, description


def _mvhd(mvhd: memoryview) -> tuple[int, int]:
    version = mvhd[0] if len(mvhd) else -1
    if version == 1 and len(mvhd) >= 32:
        timescale, duration = struct.unpack_from(">IQ", mvhd, 20)
    elif version == 0 and len(mvhd) >= 20:
        timescale, duration = struct.unpack_from(">II", mvhd, 12)
    else:
        raise ProbeError(f"corrupt MP4/MOV: unreadable mvhd box (version {version}, {len(mvhd)} bytes)")
    if timescale == 0:
        raise ProbeError("corrupt MP4/MOV: mvhd timescale is 0")
    return int(timescale), int(duration)


def _mehd_duration(moov: memoryview) -> int | None:
    mvex = _child(moov, b"mvex", "moov")
    mehd = _child(mvex, b"mehd", "mvex") if mvex is not None else None
    if mehd is None or len(mehd) < 8:
        return None
    if mehd[0] == 1 and len(mehd) >= 12:
        (duration,) = struct.unpack_from(">Q", mehd, 4)
    else:
        (duration,) = struct.unpack_from(">I", mehd, 4)
    return int(duration) or None


def _video_track_size(moov: memoryview) -> tuple[int, int]:
    for kind, trak in _children(moov, "moov"):
        if kind != b"trak":
            continue
        mdia = _child(trak, b"mdia", "trak")
        hdlr = _child(mdia, b"hdlr", "mdia") if mdia is not None else None
        # hdlr: version/flags, pre_defined (QuickTime: component type), then the handler type
        if mdia is None or hdlr is None or bytes(hdlr[8:12]) != b"vide":
            continue
        tkhd = _child(trak, b"tkhd", "trak")
        width, height = _tkhd_size(tkhd) if tkhd is not None else (0, 0)
        if not (width and height):
            # Some muxers leave tkhd at 0x0; the sample description still has the coded size.
            width, height = _stsd_size(mdia)
        if width and height:
            return width, height
    raise ProbeError("the MP4/MOV has no video track with a known size")


def _tkhd_size(tkhd: memoryview) -> tuple[int, int]:
    version = tkhd[0] if len(tkhd) else -1
    if version == 1 and len(tkhd) >= 96:
        matrix_at, size_at = 52, 88
    elif version == 0 and len(tkhd) >= 84:
        matrix_at, size_at = 40, 76
    else:
        raise ProbeError(f"corrupt MP4/MOV: unreadable tkhd box (version {version}, {len(tkhd)} bytes)")
    a, b, _u, c, d = struct.unpack_from(">iiiii", tkhd, matrix_at)
    width, height = (round(v / 65536) for v in struct.unpack_from(">II", tkhd, size_at))  # 16.16
    # A matrix with a zero diagonal turns the picture a quarter (90 or 270 degrees, maybe
    # mirrored): viewers, and the provider, see it with its sides swapped.
    if a == 0 and d == 0 and b != 0 and c != 0:
        return height, width
    return width, height


def _stsd_size(mdia: memoryview) -> tuple[int, int]:
    minf = _child(mdia, b"minf", "mdia")
    stbl = _child(minf, b"stbl", "minf") if minf is not None else None
    stsd = _child(stbl, b"stsd", "stbl") if stbl is not None else None
    # stsd: version/flags, entry count, then a VisualSampleEntry with width/height at +32
    if stsd is None or len(stsd) < 44:
        return 0, 0
    width, height = struct.unpack_from(">HH", stsd, 40)
    return int(width), int(height)


# ---- WebM (Matroska) --------------------------------------------------------------------------
# Seeds 000/001 take WebM element videos. A WebM is a tree of EBML elements: the header's
# DocType, then one Segment whose Info holds the duration (in TimestampScale units) and whose
# Tracks hold each video track's pixel size. Only element headers are read on the way; Clusters
# (the media) are stepped over by their declared sizes.

_EBML_MAGIC: Final = b"\x1a\x45\xdf\xa3"
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


def _probe_webm(window: _Window) -> VideoInfo:
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
    # stays unknown, as for an input given by URL, rather than refusing what the seeds allow.
    return VideoInfo(
        format="webm" if doc_type == b"webm" else "mkv",
        width=dimensions[0],
        height=dimensions[1],
        duration_s=None if duration is None else duration * scale / 1e9,
        bytes=size,
    )


def _walk_segment(window: _Window, at: int, end: int) -> tuple[int, float | None, tuple[int, int] | None]:
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
