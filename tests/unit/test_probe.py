"""Specification of media probing: the facts it finds, the errors it raises, and what it reads.

Inputs live in S3 and every read is a ranged GET, so besides the answers these tests pin down
that probing reads headers only: never a video's media data, never a JPEG's scan.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from klingflow.core.probe import IMAGE_CHUNK_BYTES, VIDEO_CHUNK_BYTES, probe_image, probe_video
from klingflow.core.probe_images import JPEG_SCAN_LIMIT_BYTES
from klingflow.core.probe_mp4 import MOOV_MAX_BYTES
from klingflow.core.probe_reader import BytesReader, ImageInfo, ProbeError, RangeReader, VideoInfo

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "tools" / "klingflow_dev" / "assets"
FIXTURES = ROOT / "tests" / "fixtures" / "media"
GIB = 1024**3


# ---- readers that let a test see (or fake) what the probe asks for ---------------------------


class CountingReader:
    """Passes reads through and records every (offset, length) asked for and bytes returned."""

    def __init__(self, inner: RangeReader) -> None:
        self.inner = inner
        self.reads: list[tuple[int, int]] = []
        self.bytes_read = 0

    @property
    def size(self) -> int:
        return self.inner.size

    def read(self, offset: int, length: int) -> bytes:
        self.reads.append((offset, length))
        data = self.inner.read(offset, length)
        self.bytes_read += len(data)
        return data


class SparseReader:
    """A file of `size` bytes, zeros except for `pieces`, that never exists in memory."""

    def __init__(self, size: int, pieces: dict[int, bytes]) -> None:
        self._size = size
        self._pieces = pieces

    @property
    def size(self) -> int:
        return self._size

    def read(self, offset: int, length: int) -> bytes:
        # A probe that asks for this much has already failed; say so instead of running out of memory.
        assert length <= 64 * 1024 * 1024, f"probe asked for {length} bytes at {offset}"
        end = min(offset + length, self._size)
        out = bytearray(max(0, end - offset))
        for start, data in self._pieces.items():
            lo, hi = max(start, offset), min(start + len(data), end)
            if lo < hi:
                out[lo - offset : hi - offset] = data[lo - start : hi - start]
        return bytes(out)


# ---- MP4/MOV builders -------------------------------------------------------------------------

IDENTITY = (0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
ROTATE_90 = (0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)
ROTATE_180 = (-0x10000, 0, 0, 0, -0x10000, 0, 0, 0, 0x40000000)


def box(kind: bytes, payload: bytes = b"") -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def big_box_header(kind: bytes, total_size: int) -> bytes:
    """A 64-bit (largesize) box header; `total_size` includes these 16 bytes."""
    return struct.pack(">I4sQ", 1, kind, total_size)


def ftyp(brand: bytes = b"isom") -> bytes:
    return box(b"ftyp", brand + b"\0\0\2\0" + b"isomiso2avc1mp41")


def mvhd(timescale: int, duration: int, version: int = 0) -> bytes:
    rest = bytes(80)  # rate, volume, reserved, matrix, pre_defined, next_track_ID
    if version == 1:
        return box(b"mvhd", b"\1\0\0\0" + bytes(16) + struct.pack(">IQ", timescale, duration) + rest)
    return box(b"mvhd", b"\0\0\0\0" + bytes(8) + struct.pack(">II", timescale, duration) + rest)


def tkhd(width: float, height: float, version: int = 0, matrix: tuple[int, ...] = IDENTITY) -> bytes:
    head = b"\1\0\0\3" + bytes(8 + 8 + 4 + 4 + 8) if version == 1 else b"\0\0\0\3" + bytes(4 * 5)
    layout = bytes(8 + 2 + 2 + 2 + 2)  # reserved, layer, alternate_group, volume, reserved
    size = struct.pack(">II", round(width * 65536), round(height * 65536))
    return box(b"tkhd", head + layout + struct.pack(">9i", *matrix) + size)


def hdlr(handler: bytes) -> bytes:
    return box(b"hdlr", bytes(4) + bytes(4) + handler + bytes(12) + b"Handler\0")


def stsd(width: int, height: int) -> bytes:
    entry = box(b"avc1", bytes(6) + b"\0\1" + bytes(16) + struct.pack(">HH", width, height) + bytes(50))
    return box(b"stsd", bytes(4) + struct.pack(">I", 1) + entry)


def trak(handler: bytes, header: bytes, sample_size: tuple[int, int] = (0, 0)) -> bytes:
    stbl = box(b"stbl", stsd(*sample_size))
    mdia = box(b"mdia", box(b"mdhd", bytes(24)) + hdlr(handler) + box(b"minf", stbl))
    return box(b"trak", header + mdia)


def moov(*children: bytes) -> bytes:
    return box(b"moov", b"".join(children))


def video_moov(width: float = 480, height: float = 640, seconds: int = 5) -> bytes:
    return moov(mvhd(1000, seconds * 1000), trak(b"vide", tkhd(width, height)))


def mp4(moov_box: bytes, brand: bytes = b"isom", mdat: bytes = b"\0" * 100, moov_first: bool = True) -> bytes:
    parts = [moov_box, box(b"mdat", mdat)] if moov_first else [box(b"mdat", mdat), moov_box]
    return ftyp(brand) + b"".join(parts)


def video(data: bytes) -> VideoInfo:
    return probe_video(BytesReader(data))


# ---- MP4/MOV: real files ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected_format", "width", "height"),
    [
        (ASSETS / "dance.mp4", "mp4", 480, 640),  # faststart: moov before mdat
        (ASSETS / "output-std.mp4", "mp4", 720, 960),  # moov after mdat
        (FIXTURES / "dance-moov-at-end.mov", "mov", 480, 640),  # QuickTime brand, moov at end
    ],
)
def test_real_videos_report_container_size_and_duration(
    path: Path, expected_format: str, width: int, height: int
) -> None:
    """Given a real MP4/MOV, probing finds its container, display size, 5 s duration and byte size."""
    data = path.read_bytes()

    info = video(data)

    assert info == VideoInfo(
        format=expected_format, width=width, height=height, duration_s=5.0, bytes=len(data)
    )


def test_moov_at_the_end_costs_two_reads() -> None:
    """Given a moov after the mdat, the probe reads the start, then jumps over mdat to the moov."""
    data = (FIXTURES / "dance-moov-at-end.mov").read_bytes()
    reader = CountingReader(BytesReader(data))

    probe_video(reader)

    moov_at = data.index(b"moov") - 4
    assert len(reader.reads) == 2
    assert reader.reads[0][0] == 0
    assert reader.reads[1][0] == moov_at


def test_moov_after_a_huge_64bit_mdat_is_found_without_reading_the_mdat() -> None:
    """Given a 5 GiB mdat declared with a 64-bit largesize, followed by the moov,
    when probed, the mdat body is skipped: only the first read-ahead chunk and the moov are read."""
    real_moov = (ASSETS / "dance.mp4").read_bytes()[32:3838]
    assert real_moov[4:8] == b"moov"
    mdat_size = 5 * GIB
    head = ftyp() + big_box_header(b"mdat", mdat_size)
    moov_at = len(ftyp()) + mdat_size
    reader = CountingReader(SparseReader(moov_at + len(real_moov), {0: head, moov_at: real_moov}))

    info = probe_video(reader)

    assert (info.width, info.height, info.duration_s) == (480, 640, 5.0)
    assert info.bytes == moov_at + len(real_moov)
    assert reader.bytes_read <= VIDEO_CHUNK_BYTES + len(real_moov)
    assert all(offset < VIDEO_CHUNK_BYTES or offset >= moov_at for offset, _ in reader.reads)


def test_a_moov_that_runs_to_the_end_of_the_file_may_declare_size_zero() -> None:
    """Given a last moov box with size 0 ("to end of file"), it is read up to the end."""
    inner = video_moov()[8:]
    data = ftyp() + box(b"mdat", bytes(1000)) + struct.pack(">I4s", 0, b"moov") + inner

    assert video(data).width == 480


# ---- MP4/MOV: header variants -----------------------------------------------------------------


def test_quicktime_brand_is_mov_any_other_brand_is_mp4() -> None:
    """The ftyp major brand decides the container name: "qt  " is mov, the rest of ISO-BMFF is mp4."""
    assert video(mp4(video_moov(), brand=b"qt  ")).format == "mov"
    assert video(mp4(video_moov(), brand=b"mp42")).format == "mp4"
    assert video(mp4(video_moov(), brand=b"M4V ")).format == "mp4"


def test_version_1_headers_with_64_bit_fields_are_read() -> None:
    """Given mvhd and tkhd version 1 (64-bit times), duration and size are read from the right offsets."""
    data = mp4(moov(mvhd(90000, 12 * 90000 + 45000, version=1), trak(b"vide", tkhd(1920, 1080, version=1))))

    info = video(data)

    assert (info.width, info.height, info.duration_s) == (1920, 1080, 12.5)


def test_duration_is_exact_for_integral_ratios() -> None:
    """A 3 s clip at timescale 600 is 3.0 s, not 2.9999 (the rules compare without tolerance)."""
    data = mp4(moov(mvhd(600, 1800), trak(b"vide", tkhd(480, 640))))

    assert video(data).duration_s == 3.0


def test_quarter_turn_matrix_swaps_width_and_height() -> None:
    """Given a track rotated by 90 degrees, the size is reported as displayed (sides swapped);
    a 180 degree turn keeps them."""
    rotated = mp4(moov(mvhd(1000, 5000), trak(b"vide", tkhd(1920, 1080, matrix=ROTATE_90))))
    upside_down = mp4(moov(mvhd(1000, 5000), trak(b"vide", tkhd(1920, 1080, matrix=ROTATE_180))))

    assert (video(rotated).width, video(rotated).height) == (1080, 1920)
    assert (video(upside_down).width, video(upside_down).height) == (1920, 1080)


def test_size_comes_from_the_video_track_not_the_first_track() -> None:
    """Given a sound track (with a nonsense size) before the video track, the video track is used."""
    data = mp4(moov(mvhd(1000, 5000), trak(b"soun", tkhd(1, 1)), trak(b"vide", tkhd(720, 1280))))

    assert (video(data).width, video(data).height) == (720, 1280)


def test_fixed_point_size_is_rounded() -> None:
    """tkhd width/height are 16.16 fixed point; a fraction of a pixel rounds to the nearest one."""
    data = mp4(moov(mvhd(1000, 5000), trak(b"vide", tkhd(853.33, 479.9))))

    assert (video(data).width, video(data).height) == (853, 480)


def test_zero_track_size_falls_back_to_the_sample_description() -> None:
    """Given a tkhd left at 0x0, the coded size from the stsd VisualSampleEntry is used."""
    data = mp4(moov(mvhd(1000, 5000), trak(b"vide", tkhd(0, 0), sample_size=(640, 360))))

    assert (video(data).width, video(data).height) == (640, 360)


def test_fragmented_file_takes_its_duration_from_mehd() -> None:
    """Given mvhd duration 0 (fragmented MP4), the total from mvex/mehd is used."""
    mehd = box(b"mehd", b"\0\0\0\0" + struct.pack(">I", 7500))
    data = mp4(moov(mvhd(1000, 0), box(b"mvex", mehd), trak(b"vide", tkhd(480, 640))))

    assert video(data).duration_s == 7.5


# ---- MP4/MOV: what is refused -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "not an MP4/MOV"),
        (b"\x00\x01garbage" * 50, "not an MP4/MOV"),
        (video_moov() + box(b"mdat"), "not an MP4/MOV"),  # no ftyp first
        ((ASSETS / "character.png").read_bytes(), "not an MP4/MOV"),
        (ftyp()[:10], "not an MP4/MOV"),
    ],
    ids=["empty", "garbage", "moov-first", "png", "cut-ftyp"],
)
def test_data_that_does_not_start_with_ftyp_is_not_a_video(data: bytes, expected: str) -> None:
    """Given data that does not begin with an ftyp box, probing refuses it as not MP4/MOV."""
    with pytest.raises(ProbeError, match=expected):
        video(data)


def test_video_truncated_inside_the_moov_is_refused() -> None:
    """Given a faststart file cut inside its moov, probing says it is truncated."""
    data = (ASSETS / "dance.mp4").read_bytes()[:2000]

    with pytest.raises(ProbeError, match="truncated"):
        video(data)


def test_video_truncated_inside_the_mdat_has_no_moov() -> None:
    """Given a moov-at-end file cut inside its mdat, probing says there is no moov and why."""
    data = (FIXTURES / "dance-moov-at-end.mov").read_bytes()[:50_000]

    with pytest.raises(ProbeError, match=r"no moov box.*truncated.*mdat"):
        video(data)


def test_file_without_moov_is_refused() -> None:
    """Given ftyp and mdat only, probing refuses it: there is nothing to say how to play it."""
    with pytest.raises(ProbeError, match="no moov box"):
        video(ftyp() + box(b"mdat", bytes(100)))


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (ftyp() + struct.pack(">I4s", 4, b"free") + video_moov(), "declares 4 bytes"),
        (ftyp() + b"\x00\x00\x00\x10\xff\xfe\x00\x01" + video_moov(), "corrupt MP4/MOV"),
        (mp4(moov(box(b"mvhd", b"\0\0\0\0" + bytes(4)))), "unreadable mvhd"),
        (mp4(moov(trak(b"vide", tkhd(480, 640)))), "no mvhd"),
        (mp4(moov(mvhd(0, 5000), trak(b"vide", tkhd(480, 640)))), "timescale is 0"),
        (mp4(moov(mvhd(1000, 0), trak(b"vide", tkhd(480, 640)))), "does not declare its duration"),
        (mp4(moov(mvhd(1000, 5000), trak(b"soun", tkhd(0, 0)))), "no video track"),
        (mp4(moov(mvhd(1000, 5000), trak(b"vide", box(b"tkhd", b"\0" * 20)))), "unreadable tkhd"),
        (mp4(moov(mvhd(1000, 5000), struct.pack(">I4s", 4000, b"trak"))), "overruns its parent"),
    ],
    ids=[
        "box-smaller-than-header",
        "binary-box-type",
        "short-mvhd",
        "no-mvhd",
        "zero-timescale",
        "zero-duration",
        "audio-only",
        "short-tkhd",
        "child-overruns-moov",
    ],
)
def test_damaged_boxes_are_refused_with_a_reason(data: bytes, expected: str) -> None:
    """Given a structurally broken MP4, probing raises ProbeError naming what is wrong."""
    with pytest.raises(ProbeError, match=expected):
        video(data)


def test_oversized_moov_is_refused_before_it_is_read() -> None:
    """Given a moov declaring more than the cap, probing refuses it without fetching it."""
    head = ftyp() + struct.pack(">I4s", MOOV_MAX_BYTES + 1, b"moov")
    reader = CountingReader(SparseReader(MOOV_MAX_BYTES + 1024, {0: head}))

    with pytest.raises(ProbeError, match="moov box is"):
        probe_video(reader)
    assert reader.bytes_read <= VIDEO_CHUNK_BYTES


def test_endless_small_boxes_are_refused() -> None:
    """Given thousands of top-level boxes before any moov, probing gives up instead of walking on."""
    data = ftyp() + box(b"free") * 5000 + video_moov()

    with pytest.raises(ProbeError, match="no moov box among the first"):
        video(data)


# ---- images -----------------------------------------------------------------------------------


def png(width: int, height: int) -> bytes:
    """8-bit RGBA, with as much (zero) image data as deflate needs at best to hold its pixels."""
    ihdr = struct.pack(">I4sII", 13, b"IHDR", width, height) + b"\x08\x06\0\0\0" + bytes(4)
    idat = bytes(height * (1 + width * 4) // 1032 + 16)
    chunk = struct.pack(">I4s", len(idat), b"IDAT") + idat + bytes(4)
    return b"\x89PNG\r\n\x1a\n" + ihdr + chunk + struct.pack(">I4s", 0, b"IEND") + bytes(4)


def jpeg_segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def sof(marker: int, width: int, height: int) -> bytes:
    return jpeg_segment(marker, struct.pack(">BHHB", 8, height, width, 3) + bytes(9))


def jpeg(*segments: bytes) -> bytes:
    # Enough scan data for any size these tests declare (a JPEG carries its pixels in it).
    return b"\xff\xd8" + b"".join(segments) + jpeg_segment(0xDA, bytes(10)) + b"\x12\x34" * 2000 + b"\xff\xd9"


def image(data: bytes) -> ImageInfo:
    return probe_image(BytesReader(data))


def test_real_png_and_jpeg_report_format_size_and_bytes() -> None:
    """Given the sample character images, probing finds format, 512x768 and their byte size."""
    png_data = (ASSETS / "character.png").read_bytes()
    jpg_data = (FIXTURES / "character.jpg").read_bytes()

    assert image(png_data) == ImageInfo(format="png", width=512, height=768, bytes=len(png_data))
    assert image(jpg_data) == ImageInfo(format="jpeg", width=512, height=768, bytes=len(jpg_data))


def test_image_probe_costs_one_read() -> None:
    """Given a small image, a single ranged read (the first chunk) is enough."""
    reader = CountingReader(BytesReader((FIXTURES / "character.jpg").read_bytes()))

    probe_image(reader)

    assert reader.reads == [(0, reader.size)]


@pytest.mark.parametrize(
    ("marker", "kind"), [(0xC0, "baseline"), (0xC1, "extended"), (0xC2, "progressive"), (0xCF, "lossless")]
)
def test_jpeg_size_comes_from_any_sof_marker(marker: int, kind: str) -> None:
    """Given a JPEG whose frame header is SOF0/1/2/15, its size is read from it."""
    info = image(jpeg(sof(marker, 1200, 800)))

    assert (info.width, info.height) == (1200, 800), kind


def test_jpeg_tables_in_the_sof_range_are_not_mistaken_for_frame_headers() -> None:
    """DHT (C4), JPG (C8) and DAC (CC) share the SOF range but carry no size; they are skipped."""
    tables = jpeg_segment(0xC4, b"\x00\x09\x02" * 20) + jpeg_segment(0xCC, b"\x00\x10")
    data = jpeg(jpeg_segment(0xE0, b"JFIF\0" + bytes(9)), tables, sof(0xC0, 640, 480))

    assert (image(data).width, image(data).height) == (640, 480)


def test_jpeg_fill_bytes_and_standalone_markers_are_skipped() -> None:
    """0xFF fill bytes before a marker, and markers without a length (RSTn), are stepped over."""
    data = jpeg(jpeg_segment(0xE0, b"JFIF\0" + bytes(9)), b"\xff\xff\xff\xd0", sof(0xC0, 300, 300))

    assert image(data).width == 300


def test_jpeg_frame_header_after_large_metadata_is_found_with_bounded_reads() -> None:
    """Given 8 maximal APP1 segments (about 512 KiB, past the first chunk) before the SOF
    and 8 MB of image data after it, the probe follows segment headers to the SOF
    and never reads the image data."""
    exif = [jpeg_segment(0xE1, b"Exif\0\0" + bytes(65527)) for _ in range(8)]
    data = jpeg(*exif, sof(0xC0, 4000, 3000)) + bytes(8 * 1024 * 1024)
    reader = CountingReader(BytesReader(data))

    info = probe_image(reader)

    assert (info.format, info.width, info.height) == ("jpeg", 4000, 3000)
    assert len(reader.reads) <= 3
    assert reader.bytes_read <= 3 * IMAGE_CHUNK_BYTES


def test_jpeg_without_a_frame_header_in_the_scan_limit_is_refused() -> None:
    """Given metadata filling more than the scan limit before any SOF, probing stops and says so,
    having read no further than the limit plus one chunk."""
    count = JPEG_SCAN_LIMIT_BYTES // 65537 + 2
    data = jpeg(*[jpeg_segment(0xE2, bytes(65533))] * count, sof(0xC0, 640, 480))
    reader = CountingReader(BytesReader(data))

    with pytest.raises(ProbeError, match="no frame header"):
        probe_image(reader)
    assert max(offset for offset, _ in reader.reads) < JPEG_SCAN_LIMIT_BYTES
    assert reader.bytes_read <= JPEG_SCAN_LIMIT_BYTES + IMAGE_CHUNK_BYTES


@pytest.mark.parametrize(
    ("data", "width", "height"),
    [
        (png(300, 750), 300, 750),
        (b"GIF89a" + struct.pack("<HH", 640, 480) + bytes(200), 640, 480),
        (b"GIF87a" + struct.pack("<HH", 1, 2) + bytes(20), 1, 2),
    ],
    ids=["png", "gif89a", "gif87a"],
)
def test_png_and_gif_headers(data: bytes, width: int, height: int) -> None:
    """PNG size is in IHDR (big-endian); GIF size follows the signature (little-endian)."""
    info = image(data)

    assert (info.width, info.height) == (width, height)


def webp(chunk: bytes, payload: bytes) -> bytes:
    body = b"WEBP" + chunk + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize(
    "data",
    [
        webp(b"VP8 ", b"\x10\x02\x00\x9d\x01\x2a" + struct.pack("<HH", 1024 | 0x4000, 768) + bytes(10)),
        webp(b"VP8L", b"\x2f" + struct.pack("<I", (1024 - 1) | (768 - 1) << 14) + bytes(10)),
        webp(b"VP8X", bytes(4) + (1024 - 1).to_bytes(3, "little") + (768 - 1).to_bytes(3, "little")),
    ],
    ids=["lossy", "lossless", "extended"],
)
def test_webp_size_from_each_bitstream_kind(data: bytes) -> None:
    """WebP size is read from the VP8, VP8L or VP8X chunk (the scaling bits of VP8 are ignored)."""
    assert image(data) == ImageInfo(format="webp", width=1024, height=768, bytes=len(data))


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "empty"),
        (b"not an image at all, just some text", "not a PNG, JPEG, GIF or WebP"),
        (png(300, 300)[:20], "truncated"),
        (png(300, 300)[:12] + b"IDAT" + png(300, 300)[16:], "first chunk is not IHDR"),
        (png(0, 300), "size of 0x300"),
        (b"\xff\xd8" + jpeg_segment(0xE0, bytes(14))[:4] + bytes(10), "truncated JPEG"),
        (b"\xff\xd8" + jpeg_segment(0xE0, bytes(14)), "truncated JPEG"),
        (b"\xff\xd8\xff\xe0\x00", "truncated JPEG"),
        (b"\xff\xd8" + jpeg_segment(0xE0, bytes(14)) + b"\x00\x00garbage", "expected a segment marker"),
        (b"\xff\xd8" + jpeg_segment(0xE0, bytes(14)) + b"\xff\xe1\x00\x01", "declares length 1"),
        (jpeg(jpeg_segment(0xE0, bytes(14))), "image data starts before any frame header"),
        (jpeg(sof(0xC0, 640, 0)), "DNL"),
        (jpeg(sof(0xC0, 0, 480)), "size of 0x480"),
        (b"\xff\xd8" + sof(0xC0, 640, 480)[:6], "truncated: the JPEG frame header"),
        (webp(b"VP8 ", bytes(20)), "bad VP8 start code"),
        (webp(b"VP8L", bytes(20)), "bad VP8L signature"),
        (webp(b"ALPH", bytes(20)), "unknown first chunk"),
        ((ASSETS / "dance.mp4").read_bytes(), "MP4/MOV video, not an image"),
        (box(b"ftyp", b"heic\0\0\0\0mif1heic"), "HEIC/HEIF images are not supported"),
        (box(b"ftyp", b"avif\0\0\0\0mif1avif"), "AVIF images are not supported"),
    ],
    ids=[
        "empty",
        "text",
        "png-cut",
        "png-no-ihdr",
        "png-zero-width",
        "jpeg-cut-in-segment",
        "jpeg-ends-after-segment",
        "jpeg-cut-in-length",
        "jpeg-garbage-between-segments",
        "jpeg-bad-length",
        "jpeg-sos-before-sof",
        "jpeg-dnl-height",
        "jpeg-zero-width",
        "jpeg-cut-in-sof",
        "webp-bad-vp8",
        "webp-bad-vp8l",
        "webp-unknown-chunk",
        "mp4",
        "heic",
        "avif",
    ],
)
def test_unusable_images_are_refused_with_a_reason(data: bytes, expected: str) -> None:
    """Given data that is not a parsable PNG/JPEG/GIF/WebP, probing raises ProbeError saying why."""
    with pytest.raises(ProbeError, match=expected):
        image(data)


# ---- BytesReader -------------------------------------------------------------------------------


def test_bytes_reader_returns_short_reads_only_at_the_end() -> None:
    """BytesReader serves any range; past the end it returns what is left, then nothing."""
    reader: RangeReader = BytesReader(b"0123456789")

    assert reader.size == 10
    assert reader.read(2, 3) == b"234"
    assert reader.read(8, 5) == b"89"
    assert reader.read(10, 5) == b""


def test_bytes_reader_refuses_negative_ranges() -> None:
    """A negative offset or length is a caller's bug, not an empty read."""
    reader = BytesReader(b"0123456789")

    with pytest.raises(ValueError, match="negative"):
        reader.read(-1, 3)
    with pytest.raises(ValueError, match="negative"):
        reader.read(0, -3)


# ---- media that lies about itself is refused before any spend ---------------------------------


def test_an_image_whose_header_claims_more_pixels_than_its_bytes_can_hold_is_refused() -> None:
    # Given a 57-byte PNG whose header claims 20000x20000
    lying = png(1, 1)[:33] + struct.pack(">I4s", 0, b"IEND") + bytes(4)
    lying = lying.replace(struct.pack(">II", 1, 1), struct.pack(">II", 20000, 20000), 1)
    assert len(lying) < 64

    with pytest.raises(ProbeError, match=r"claims 20000x20000 px in \d+ bytes") as refused:
        image(lying)
    assert refused.value.rule == "size_consistent"


@pytest.mark.parametrize(
    ("data", "fmt"),
    [
        (jpeg(sof(0xC0, 30000, 30000))[:300], "JPEG"),
        (b"GIF89a" + struct.pack("<HH", 60000, 60000) + bytes(20), "GIF"),
        (webp(b"VP8X", bytes(4) + (9999).to_bytes(3, "little") + (9999).to_bytes(3, "little")), "WebP"),
    ],
)
def test_every_format_must_be_able_to_hold_the_size_it_claims(data: bytes, fmt: str) -> None:
    with pytest.raises(ProbeError, match=f"the {fmt.upper()} claims") as refused:
        image(data)
    assert refused.value.rule == "size_consistent"


def test_a_video_cut_off_after_its_moov_is_refused_as_truncated() -> None:
    # Given a faststart MP4 (moov before mdat) with half its bytes gone
    whole = (ASSETS / "dance.mp4").read_bytes()

    with pytest.raises(ProbeError, match=r"mdat box .* declares") as refused:
        probe_video(BytesReader(whole[: len(whole) // 2]))
    assert refused.value.rule == "truncated"


def test_a_video_whose_sample_tables_point_past_its_end_is_refused() -> None:
    # Given the same cut, with the mdat header rewritten to end where the data now ends
    whole = (ASSETS / "dance.mp4").read_bytes()
    cut = bytearray(whole[: len(whole) // 2])
    mdat = cut.index(b"mdat") - 4
    cut[mdat : mdat + 4] = struct.pack(">I", len(cut) - mdat)

    with pytest.raises(ProbeError, match="sample tables point to byte") as refused:
        probe_video(BytesReader(bytes(cut)))
    assert refused.value.rule == "truncated"


def test_a_video_whose_declared_duration_contradicts_its_samples_is_refused() -> None:
    # Given the 5 s sample video whose mvhd is rewritten to say 1.5 s
    data = bytearray((ASSETS / "dance.mp4").read_bytes())
    mvhd = data.index(b"mvhd") + 4
    assert data[mvhd] == 0  # version 0: timescale and duration are 32-bit at +12 and +16
    (timescale,) = struct.unpack_from(">I", data, mvhd + 12)
    struct.pack_into(">I", data, mvhd + 16, int(1.5 * timescale))

    with pytest.raises(ProbeError, match=r"declares 1.50 s but its video samples last 5") as refused:
        probe_video(BytesReader(bytes(data)))
    assert refused.value.rule == "duration_consistent"


def test_the_sample_videos_are_consistent() -> None:
    for name in ("dance.mp4", "output-std.mp4"):
        info = probe_video(BytesReader((ASSETS / name).read_bytes()))
        assert info.duration_s == pytest.approx(5.0, abs=0.1)
    for path in FIXTURES.glob("*.m*"):
        probe_video(BytesReader(path.read_bytes()))


# ---- WebM (evolink's motion-control page take WebM element videos)
# -------------------------------------------


def ebml(element_id: int, payload: bytes, *, unknown_size: bool = False) -> bytes:
    """One EBML element: its id (marker bits kept), an 8-byte size (or "unknown"), the payload."""
    id_bytes = element_id.to_bytes((element_id.bit_length() + 7) // 8, "big")
    size = (
        b"\x01\xff\xff\xff\xff\xff\xff\xff"
        if unknown_size
        else (0x01 << 56 | len(payload)).to_bytes(8, "big")
    )
    return id_bytes + size + payload


def webm(
    width: int = 1280,
    height: int = 720,
    duration_ms: float | None = 5000.0,
    *,
    doc_type: bytes = b"webm",
    clusters: int = 2,
    cut: int = 0,
) -> bytes:
    header = ebml(0x1A45DFA3, ebml(0x4286, b"\x01") + ebml(0x4282, doc_type))
    info = ebml(0x2AD7B1, (1_000_000).to_bytes(3, "big")) + ebml(0x4D80, b"klingflow-test")
    if duration_ms is not None:
        info += ebml(0x4489, struct.pack(">d", duration_ms))
    audio = ebml(0xAE, ebml(0xD7, b"\x01") + ebml(0x83, b"\x02"))
    video_track = ebml(
        0xAE,
        ebml(0xD7, b"\x02")
        + ebml(0x83, b"\x01")
        + ebml(0xE0, ebml(0xB0, width.to_bytes(2, "big")) + ebml(0xBA, height.to_bytes(2, "big"))),
    )
    body = ebml(0x1549A966, info) + ebml(0x1654AE6B, audio + video_track)
    body += b"".join(ebml(0x1F43B675, ebml(0xE7, bytes([n])) + b"\0" * 5000) for n in range(clusters))
    data = header + ebml(0x18538067, body)
    return data[: len(data) - cut] if cut else data


def test_a_webm_reports_its_size_and_duration_from_its_headers() -> None:
    info = video(webm(1280, 720, 7500.0))
    assert (info.format, info.width, info.height, info.duration_s) == ("webm", 1280, 720, 7.5)


def test_a_matroska_doc_type_is_mkv() -> None:
    assert video(webm(doc_type=b"matroska")).format == "mkv"


def test_a_cut_off_webm_is_refused_as_truncated() -> None:
    with pytest.raises(ProbeError) as caught:
        video(webm(cut=1000))
    assert caught.value.rule == "truncated"


def test_a_webm_written_live_without_a_duration_has_an_unknown_length() -> None:
    # A browser's MediaRecorder declares none: unknown, as for a URL input, not refused
    assert video(webm(duration_ms=None)).duration_s is None


def test_void_padding_before_the_segment_is_stepped_over() -> None:
    data = webm()
    header_end = data.index(b"\x18\x53\x80\x67")
    padded = data[:header_end] + ebml(0xEC, b"\0" * 10) + data[header_end:]
    assert video(padded).duration_s == 5.0


def test_a_webm_without_a_video_track_is_refused() -> None:
    data = webm().replace(b"\xb0", b"\xec")  # PixelWidth renamed to a Void: no size left
    with pytest.raises(ProbeError):
        video(data)
