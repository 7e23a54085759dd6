"""Specification of the motion-control media rules (docs/providers.md, common table).

| reference image | jpg / jpeg / png, <= 10 MB, each side 300..65536 px, aspect ratio 1:2.5 .. 2.5:1 |
| reference video | mp4 / mov, <= 100 MB, each side 340..3850 px, >= 3 s; <= 10 s (orientation image),
|                 | <= 30 s (orientation video) |

Boundary tests use the module's constants, so correcting a limit is a one-line change there;
`test_limits_are_the_documented_ones` is the one place that pins the documented numbers.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from klingflow.core import media_rules as rules
from klingflow.core.errors import FieldError
from klingflow.core.kinds import AnyRequest, Orientation, parse_request
from klingflow.core.media_rules import check_media, check_motion_media, facts_from_probe, format_from_name
from klingflow.core.models import MediaFacts
from klingflow.core.probe import probe_image, probe_video
from klingflow.core.probe_reader import BytesReader, ImageInfo, VideoInfo
from tests.conftest import sample_event

ROOT = Path(__file__).resolve().parents[2]
IMAGE, VIDEO = Orientation.IMAGE, Orientation.VIDEO


def good_image(**changes: object) -> MediaFacts:
    facts = {"source": "s3://in/a.png", "format": "png", "bytes": 2_000_000, "width": 1024, "height": 1536}
    return MediaFacts.model_validate({**facts, **changes})


def good_video(**changes: object) -> MediaFacts:
    facts = {
        "source": "s3://in/a.mp4",
        "format": "mp4",
        "bytes": 20_000_000,
        "width": 720,
        "height": 1280,
        "duration_s": 5.0,
    }
    return MediaFacts.model_validate({**facts, **changes})


def rules_broken(
    orientation: Orientation = IMAGE, image: MediaFacts | None = None, video: MediaFacts | None = None
) -> list[str]:
    return [error.rule for error in check_motion_media(orientation, image, video)]


def test_limits_are_the_documented_ones() -> None:
    """The constants say what docs/providers.md says (a change to either must be deliberate)."""
    actual = {
        "image formats": rules.IMAGE_FORMATS,
        "image bytes": rules.IMAGE_MAX_BYTES,
        "image sides": (rules.IMAGE_MIN_SIDE_PX, rules.IMAGE_MAX_SIDE_PX),
        "image aspect": (rules.IMAGE_MIN_ASPECT_RATIO, rules.IMAGE_MAX_ASPECT_RATIO),
        "video formats": rules.VIDEO_FORMATS,
        "video bytes": rules.VIDEO_MAX_BYTES,
        "video sides": (rules.VIDEO_MIN_SIDE_PX, rules.VIDEO_MAX_SIDE_PX),
        "video min s": rules.VIDEO_MIN_DURATION_S,
        "video max s": rules.VIDEO_MAX_DURATION_S,
    }

    assert actual == {
        "image formats": {"jpeg", "png"},
        "image bytes": 10 * 1024 * 1024,
        "image sides": (300, 65536),
        "image aspect": (Fraction(1) / Fraction("2.5"), Fraction("2.5")),
        "video formats": {"mp4", "mov"},
        "video bytes": 100 * 1024 * 1024,
        "video sides": (340, 3850),
        "video min s": 3,
        "video max s": {IMAGE: 10, VIDEO: 30},
    }


def test_good_media_break_no_rule() -> None:
    """Given an image and a video inside every limit, no rule is broken, for either orientation."""
    assert check_motion_media(IMAGE, good_image(), good_video()) == []
    assert check_motion_media(VIDEO, good_image(), good_video()) == []


def test_absent_media_and_unknown_facts_are_not_checked() -> None:
    """A rule applies only where its fact is known: no media, or a URL with nothing but a
    format guessed from its extension, breaks nothing."""
    url_image = MediaFacts(source="https://example.com/a.jpg", format="jpeg")
    url_video = MediaFacts(source="https://example.com/a.mov", format="mov")
    nothing_known = MediaFacts(source="https://example.com/download")

    assert check_motion_media(IMAGE, None, None) == []
    assert check_motion_media(IMAGE, url_image, url_video) == []
    assert check_motion_media(VIDEO, nothing_known, nothing_known) == []


# ---- reference image --------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jpeg", "png", "PNG"])
def test_image_formats_accepted(fmt: str) -> None:
    """JPEG and PNG are accepted (the format name is compared case-insensitively)."""
    assert rules_broken(image=good_image(format=fmt)) == []


@pytest.mark.parametrize("fmt", ["gif", "webp", "heic", "mp4"])
def test_other_image_formats_are_rejected(fmt: str) -> None:
    """Any other image format breaks image_format, and the message names what was found."""
    errors = check_motion_media(IMAGE, good_image(format=fmt), None)

    assert errors == [
        FieldError(
            "image.format", "image_format", f"reference image is {fmt}; it must be JPEG (.jpg/.jpeg) or PNG"
        )
    ]


def test_image_bytes_limit_is_inclusive() -> None:
    """An image of exactly the byte limit is fine; one byte more breaks image_max_bytes."""
    assert rules_broken(image=good_image(bytes=rules.IMAGE_MAX_BYTES)) == []

    [error] = check_motion_media(IMAGE, good_image(bytes=rules.IMAGE_MAX_BYTES + 1), None)

    assert (error.field, error.rule) == ("image.bytes", "image_max_bytes")
    assert f"{rules.IMAGE_MAX_BYTES + 1} bytes" in error.message
    assert "at most 10 MB (10485760 bytes)" in error.message


@pytest.mark.parametrize("side", ["width", "height"])
def test_image_side_limits_are_inclusive(side: str) -> None:
    """Each side may be exactly 300 or 65536 px; 299 or 65537 breaks image_side_px on that side."""
    other = "height" if side == "width" else "width"
    low, high = rules.IMAGE_MIN_SIDE_PX, rules.IMAGE_MAX_SIDE_PX
    # The other side keeps the aspect ratio legal, so only the side rule can fire.
    assert rules_broken(image=good_image(**{side: low, other: low})) == []
    assert rules_broken(image=good_image(**{side: high, other: high})) == []

    for value in (low - 1, high + 1):
        errors = check_motion_media(IMAGE, good_image(**{side: value, other: value}), None)
        mine = [e for e in errors if e.field == f"image.{side}"]
        assert [(e.rule, e.message) for e in mine] == [
            ("image_side_px", f"reference image {side} is {value} px; each side must be 300..65536 px")
        ]


@pytest.mark.parametrize(("width", "height"), [(750, 300), (300, 750), (1000, 400), (400, 1000)])
def test_aspect_ratio_exactly_2_5_either_way_is_accepted(width: int, height: int) -> None:
    """2.5:1 and 1:2.5 are inside the inclusive range (exact arithmetic, no float drift)."""
    assert rules_broken(image=good_image(width=width, height=height)) == []


@pytest.mark.parametrize(("width", "height"), [(751, 300), (300, 751), (1001, 400), (400, 1001)])
def test_aspect_ratio_beyond_2_5_either_way_is_rejected(width: int, height: int) -> None:
    """Just past 2.5:1 or 1:2.5 breaks image_aspect_ratio, naming the size and the range."""
    [error] = check_motion_media(IMAGE, good_image(width=width, height=height), None)

    assert (error.field, error.rule) == ("image.aspect_ratio", "image_aspect_ratio")
    assert f"{width}x{height} px" in error.message
    assert "between 1:2.5 and 2.5:1" in error.message


def test_every_broken_image_rule_is_reported() -> None:
    """Given an image that breaks format, size, a side and the aspect ratio, all four are reported."""
    bad = good_image(format="gif", bytes=11 * 1024 * 1024, width=200, height=1000)

    assert rules_broken(image=bad) == [
        "image_format",
        "image_max_bytes",
        "image_side_px",
        "image_aspect_ratio",
    ]


# ---- reference video --------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["mp4", "mov", "MOV"])
def test_video_formats_accepted(fmt: str) -> None:
    """MP4 and MOV are accepted."""
    assert rules_broken(video=good_video(format=fmt)) == []


@pytest.mark.parametrize("fmt", ["webm", "mkv", "avi", "m4v"])
def test_other_video_formats_are_rejected(fmt: str) -> None:
    """Any other container breaks video_format."""
    errors = check_motion_media(IMAGE, None, good_video(format=fmt))

    assert errors == [
        FieldError("video.format", "video_format", f"reference video is {fmt}; it must be MP4 or MOV")
    ]


def test_video_bytes_limit_is_inclusive() -> None:
    """A video of exactly the byte limit is fine; one byte more breaks video_max_bytes."""
    assert rules_broken(video=good_video(bytes=rules.VIDEO_MAX_BYTES)) == []

    [error] = check_motion_media(IMAGE, None, good_video(bytes=rules.VIDEO_MAX_BYTES + 1))

    assert (error.field, error.rule) == ("video.bytes", "video_max_bytes")
    assert "at most 100 MB (104857600 bytes)" in error.message


@pytest.mark.parametrize("side", ["width", "height"])
def test_video_side_limits_are_inclusive(side: str) -> None:
    """Each side may be exactly 340 or 3850 px; 339 or 3851 breaks video_side_px on that side."""
    low, high = rules.VIDEO_MIN_SIDE_PX, rules.VIDEO_MAX_SIDE_PX
    assert rules_broken(video=good_video(**{side: low})) == []
    assert rules_broken(video=good_video(**{side: high})) == []

    for value in (low - 1, high + 1):
        errors = check_motion_media(IMAGE, None, good_video(**{side: value}))
        assert errors == [
            FieldError(
                f"video.{side}",
                "video_side_px",
                f"reference video {side} is {value} px; each side must be 340..3850 px",
            )
        ]


@pytest.mark.parametrize("orientation", [IMAGE, VIDEO])
def test_video_of_exactly_3_s_is_long_enough(orientation: Orientation) -> None:
    """3 s is the shortest reference video allowed, whatever the orientation."""
    assert rules_broken(orientation, video=good_video(duration_s=rules.VIDEO_MIN_DURATION_S)) == []


@pytest.mark.parametrize("orientation", [IMAGE, VIDEO])
def test_video_shorter_than_3_s_is_rejected(orientation: Orientation) -> None:
    """2.99 s breaks video_min_duration; the message shows 2.99, not a rounded 3."""
    errors = check_motion_media(orientation, None, good_video(duration_s=2.99))

    assert errors == [
        FieldError(
            "video.duration_s", "video_min_duration", "reference video is 2.99 s; it must be at least 3 s"
        )
    ]


def test_image_orientation_allows_up_to_10_s() -> None:
    """With character_orientation=image, 10 s is fine and 10.01 s breaks the image-orientation limit."""
    assert rules_broken(IMAGE, video=good_video(duration_s=10.0)) == []

    errors = check_motion_media(IMAGE, None, good_video(duration_s=10.01))

    assert errors == [
        FieldError(
            "video.duration_s",
            "video_max_duration_image_orientation",
            "reference video is 10.01 s; with character_orientation=image it must be at most 10 s",
        )
    ]


def test_video_orientation_allows_up_to_30_s() -> None:
    """With character_orientation=video, 12.4 s and 30 s are fine and 30.01 s breaks its limit."""
    assert rules_broken(VIDEO, video=good_video(duration_s=12.4)) == []
    assert rules_broken(VIDEO, video=good_video(duration_s=30.0)) == []

    [error] = check_motion_media(VIDEO, None, good_video(duration_s=30.01))

    assert (error.rule, error.message) == (
        "video_max_duration_video_orientation",
        "reference video is 30.01 s; with character_orientation=video it must be at most 30 s",
    )


def test_the_same_video_can_suit_one_orientation_and_not_the_other() -> None:
    """A 12.4 s video is too long for character_orientation=image, and the message says so."""
    [error] = check_motion_media(IMAGE, None, good_video(duration_s=12.4))

    assert (
        error.message == "reference video is 12.4 s; with character_orientation=image it must be at most 10 s"
    )


def test_a_hair_over_the_limit_is_never_shown_as_the_limit() -> None:
    """10.0004 s is rejected, and shown with enough decimals not to read as "10 s"."""
    [error] = check_motion_media(IMAGE, None, good_video(duration_s=10.0004))

    assert error.message.startswith("reference video is 10.0004 s;")


def test_every_broken_rule_of_both_inputs_is_reported() -> None:
    """Given an image and a video that each break several rules, every one is reported, image first."""
    image = good_image(format="webp", width=250)
    video = good_video(format="webm", bytes=200 * 1024 * 1024, height=4000, duration_s=2.0)

    errors = check_motion_media(IMAGE, image, video)

    assert [(e.field, e.rule) for e in errors] == [
        ("image.format", "image_format"),
        ("image.width", "image_side_px"),
        ("image.aspect_ratio", "image_aspect_ratio"),
        ("video.format", "video_format"),
        ("video.bytes", "video_max_bytes"),
        ("video.height", "video_side_px"),
        ("video.duration_s", "video_min_duration"),
    ]


# ---- format_from_name -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("character.png", "png"),
        ("uploads/Character.JPG", "jpeg"),
        ("photo.jpeg", "jpeg"),
        ("s3://bucket/in/dance.MOV", "mov"),
        ("https://cdn.example.com/v/dance.mp4?X-Amz-Signature=abc.png&t=1", "mp4"),
        ("https://cdn.example.com/v/dance.mp4#t=3", "mp4"),
        ("inputs/clip.mp4?versionId=3", "mp4"),
        ("https://example.com/a.b/photo.webp", "webp"),
        ("clip.webm", "webm"),
        ("data:image/png;base64,iVBORw0KGgo=", "png"),
        ("data:image/jpg;base64,/9j/4AAQ", "jpeg"),
        ("data:image/gif;base64,R0lGOD", "gif"),
        ("https://example.com/download", None),
        ("https://example.com/v.1/download", None),
        ("https://example.com/", None),
        ("archive.zip", None),
        ("iVBORw0KGgoAAAANSUhEUgAA/+base64", None),
    ],
)
def test_format_from_name(name: str, expected: str | None) -> None:
    """The extension of the path (never the query or fragment) names the format; jpg is jpeg;
    a data: URI names it by MIME type; a name with no known extension says nothing."""
    assert format_from_name(name) == expected


def test_a_url_format_alone_is_enough_to_reject_the_wrong_kind() -> None:
    """Given only a URL, a GIF image or WebM video is rejected before anything is fetched."""
    image = MediaFacts(source="https://x.test/a.gif", format=format_from_name("https://x.test/a.gif"))
    video = MediaFacts(source="https://x.test/a.webm", format=format_from_name("https://x.test/a.webm"))

    assert rules_broken(IMAGE, image, video) == ["image_format", "video_format"]


# ---- facts_from_probe -------------------------------------------------------------------------


def test_facts_from_image_probe() -> None:
    """An image probe becomes facts with format, size and bytes, and no duration."""
    info = ImageInfo(format="jpeg", width=512, height=768, bytes=2768)

    facts = facts_from_probe("s3://in/c.jpg", info, "image/jpeg")

    assert facts == MediaFacts(
        source="s3://in/c.jpg", content_type="image/jpeg", bytes=2768, width=512, height=768, format="jpeg"
    )


def test_facts_from_video_probe() -> None:
    """A video probe becomes facts with its duration too."""
    info = VideoInfo(format="mov", width=480, height=640, duration_s=5.0, bytes=77550)

    facts = facts_from_probe("https://x.test/d.mov", info, None)

    assert facts == MediaFacts(
        source="https://x.test/d.mov", bytes=77550, width=480, height=640, duration_s=5.0, format="mov"
    )


def test_the_sample_inputs_pass_the_rules() -> None:
    """The sandbox's sample character and dance, probed, break no rule in either orientation."""
    png = (ROOT / "tools/klingflow_dev/assets/character.png").read_bytes()
    mov = (ROOT / "tests/fixtures/media/dance-moov-at-end.mov").read_bytes()
    image = facts_from_probe("character.png", probe_image(BytesReader(png)), "image/png")
    video = facts_from_probe("dance.mov", probe_video(BytesReader(mov)), "video/quicktime")

    assert check_motion_media(IMAGE, image, video) == []
    assert check_motion_media(VIDEO, image, video) == []


# ---- the other kinds --------------------------------------------------------------------------


def _request(kind: str, **changes: object) -> AnyRequest:
    body = {**sample_event(f"requests/{kind}.json"), **changes}
    return parse_request({k: v for k, v in body.items() if v is not None})


def test_other_kinds_limits_are_the_documented_ones() -> None:
    """the gateway's manual's omni video (mp4/mov, <= 200 MB, 720..2160 px, 3..10 s) and the element video of
    evolink's pages (mp4/mov/webm, <= 100 MB, 720..2160 px, at most 8 s)."""
    assert rules.VideoLimits(200 * rules.MB, 720, 2160, 3.0, 10.0) == rules.OMNI_VIDEO_LIMITS
    assert (
        rules.VideoLimits(100 * rules.MB, 720, 2160, None, 8.0, formats=frozenset({"mp4", "mov", "webm"}))
        == rules.ELEMENT_VIDEO_LIMITS
    )


def test_an_omni_video_is_named_by_where_it_sits_and_held_to_omni_limits() -> None:
    request = _request("omni_video", video={"url": "incoming/v.mp4"})
    video = good_video(width=640, duration_s=10.5, bytes=150 * rules.MB)  # 150 MB is fine for omni
    errors = check_media(request, {"video.url": video, "reference_images.0": good_image(width=200)})
    assert [(e.field, e.rule) for e in errors] == [
        ("reference_images.0.width", "image_side_px"),
        ("reference_images.0.aspect_ratio", "image_aspect_ratio"),
        ("video.url.width", "video_side_px"),
        ("video.url.duration_s", "video_max_duration"),
    ]


def test_an_element_video_may_be_short_but_not_longer_than_8_seconds() -> None:
    request = _request(
        "custom_element",
        reference_type="video_refer",
        video="incoming/v.mp4",
        frontal_image=None,
        refer_images=[],
    )
    assert check_media(request, {"video": good_video(duration_s=1.0)}) == []
    [error] = check_media(request, {"video": good_video(duration_s=8.5)})
    assert (error.field, error.rule) == ("video.duration_s", "video_max_duration")


def test_masks_keep_the_frames_aspect_ratio_and_share_one_resolution() -> None:
    masks = [{"mask": "incoming/m.png", "trajectories": [{"x": 0, "y": 0}, {"x": 1, "y": 1}]}]
    request = _request("image_to_video", static_mask="incoming/s.png", dynamic_masks=masks)
    frame = good_image(width=1024, height=1536)
    same_shape = good_image(width=512, height=768)
    assert (
        check_media(request, {"image": frame, "static_mask": same_shape, "dynamic_masks.0.mask": same_shape})
        == []
    )
    errors = check_media(
        request,
        {
            "image": frame,
            "static_mask": good_image(width=768, height=768),
            "dynamic_masks.0.mask": same_shape,
        },
    )
    assert [(e.field, e.rule) for e in errors] == [
        ("static_mask.aspect_ratio", "mask_aspect_ratio"),
        ("static_mask", "mask_resolution"),
    ]


def test_a_trajectory_point_lies_within_the_probed_frame() -> None:
    # the gateway's manual: points are pixels of image, from its bottom-left corner
    points = [{"x": 0, "y": 0}, {"x": 1024, "y": 1536}, {"x": 1025, "y": 10}, {"x": 5, "y": 1537}]
    masks = [{"mask": "incoming/m.png", "trajectories": points}]
    request = _request("image_to_video", image_tail=None, camera_control=None, dynamic_masks=masks)
    errors = check_media(request, {"image": good_image(width=1024, height=1536)})
    assert [(e.field, e.rule) for e in errors] == [
        ("dynamic_masks.0.trajectories.2", "trajectory_in_image"),
        ("dynamic_masks.0.trajectories.3", "trajectory_in_image"),
    ]
    assert "x must be 0..1024 and y 0..1536" in errors[0].message
    # An unprobed frame (an https URL) leaves the points to the provider
    assert check_media(request, {}) == []
