"""MP4/MOV: the container, display size and duration, from the top-level box headers and `moov`.

Only box headers are read on the way to `moov`, wherever it sits; the media data (`mdat`) is
never fetched. A file whose boxes or sample tables run past its end, or whose declared duration
its samples contradict, is refused.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from .probe_reader import MAX_TOP_LEVEL_BOXES, ProbeError, VideoInfo, Window

# A 30 s clip has a moov of well under 1 MiB; the cap bounds memory against hostile files.
MOOV_MAX_BYTES: Final = 32 * 1024 * 1024
_UNKNOWN_DURATION_32: Final = 0xFFFFFFFF
_UNKNOWN_DURATION_64: Final = 0xFFFFFFFFFFFFFFFF


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


def probe_mp4(window: Window) -> VideoInfo:
    """An MP4/MOV's container, display size and duration; ProbeError for anything else."""
    size = window.size
    head = window.read(0, 12)
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


def _check_rest(window: Window, offset: int) -> None:
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


def _top_level_box(window: Window, offset: int) -> _Box:
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
