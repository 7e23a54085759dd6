"""PNG, JPEG, GIF and WebP headers: which format, how many pixels, and the fewest bytes that can
hold them.

These are parsed here rather than through `imagesize`: its file-object support depends on the
installed version, it reports failure as -1 instead of saying what is wrong, and it does not
report which format it found.
"""

from __future__ import annotations

import struct
from typing import Final

from .probe_reader import ProbeError, Window

# A JPEG whose frame header starts later than this is not a photo anyone meant to send.
JPEG_SCAN_LIMIT_BYTES: Final = 16 * 1024 * 1024
JPEG_MAX_SEGMENTS: Final = 1024

_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
# SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC), which share the range but carry no size.
_JPEG_SOF_MARKERS: Final = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_HEIF_BRANDS: Final = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"})
_AVIF_BRANDS: Final = frozenset({b"avif", b"avis"})


def image_size(window: Window) -> tuple[str, tuple[int, int]]:
    """The format of a PNG, JPEG, GIF or WebP image and the pixel size its header declares."""
    head = window.read(0, 32)
    if head.startswith(_PNG_SIGNATURE):
        return "png", _png_size(window)
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg", _jpeg_size(window)
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif", _gif_size(window)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp", _webp_size(window)
    raise ProbeError(_not_an_image(head))


# The most pixels one byte can carry in each format, at the best compression its coding allows:
# a header may claim any size, the data must be able to hold it.
_DEFLATE_MAX_RATIO: Final = 1032  # zlib's limit: 258-byte matches in 2-bit codes
_PIXELS_PER_BYTE: Final = {
    "jpeg": 4096,  # 8x8 blocks of at least a bit each (Huffman), with room for arithmetic coding
    "gif": 4096,  # LZW strings of at most 4096 pixels per code of at least 3 bits
    "webp": 65536,  # arithmetic-coded macroblocks can be skipped for a fraction of a bit
}


def smallest_image_bytes(fmt: str, width: int, height: int, window: Window) -> int:
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


def _png_size(window: Window) -> tuple[int, int]:
    header = window.exact(0, 24, "PNG header")
    if header[12:16] != b"IHDR":
        raise ProbeError("corrupt PNG: its first chunk is not IHDR")
    width, height = struct.unpack(">II", header[16:24])
    return width, height


def _jpeg_size(window: Window) -> tuple[int, int]:
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


def _gif_size(window: Window) -> tuple[int, int]:
    width, height = struct.unpack("<HH", window.exact(6, 4, "GIF header"))
    return width, height


def _webp_size(window: Window) -> tuple[int, int]:
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
