"""Specification of what archive accepts as a clip or a cover: the decision, the words it gives a
person when a download is not what it claims, and what it reads to decide."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from klingflow.core.outcomes import ArchiveOutcome
from klingflow.core.outputcheck import (
    IMAGE_TYPES,
    OutputInvalid,
    check_image,
    check_video,
    cover_type,
    describe,
    image_type,
    peek,
)
from klingflow.core.probe_reader import BytesReader
from klingflow.infra.storage import Storage
from klingflow_dev.sandbox import template
from tests.unit.test_probe import webm

ROOT = Path(__file__).resolve().parents[2]
CLIP = (ROOT / "tools" / "klingflow_dev" / "assets" / "output-std.mp4").read_bytes()
PNG = (ROOT / "tools" / "klingflow_dev" / "assets" / "character.png").read_bytes()
JPEG = (ROOT / "tests" / "fixtures" / "media" / "character.jpg").read_bytes()
HTML = b"<!DOCTYPE html>\n<html><body><h1>403 Forbidden</h1></body></html>\n"
GIB = 1024**3


class _ClipThenPadding:
    """The clip followed by a `free` box of `padding` bytes, never held in memory; records
    every byte read."""

    def __init__(self, padding: int) -> None:
        self._tail = struct.pack(">I4s", 1, b"free") + struct.pack(">Q", padding)
        self.size = len(CLIP) + padding
        self.bytes_read = 0

    def read(self, offset: int, length: int) -> bytes:
        real = CLIP + self._tail
        end = min(offset + length, self.size)
        data = real[offset:end] + b"\0" * max(0, end - max(offset, len(real)))
        self.bytes_read += len(data)
        return data


# ---- clips ------------------------------------------------------------------------------------


def test_a_whole_clip_is_a_video_with_its_size_and_duration() -> None:
    video = check_video(BytesReader(CLIP), label="output 1", served_as="video/mp4")
    assert (video.format, video.duration_s) == ("mp4", 5.0)
    assert video.width > 0 and video.height > 0


def test_an_html_page_is_not_a_video_and_the_message_quotes_its_start_and_type() -> None:
    with pytest.raises(OutputInvalid) as refused:
        check_video(BytesReader(HTML), label="output 1", served_as="text/html; charset=utf-8")
    assert str(refused.value) == (
        "output 1 is not a video: it starts with '<!DOCTYPE html>' (text/html; charset=utf-8)"
    )


def test_an_empty_download_is_not_a_video() -> None:
    with pytest.raises(OutputInvalid, match=r"^output 2 is not a video: it is empty \(video/mp4\)$"):
        check_video(BytesReader(b""), label="output 2", served_as="video/mp4")


def test_a_clip_cut_in_half_is_not_a_video_and_probing_says_it_is_truncated() -> None:
    with pytest.raises(OutputInvalid) as refused:
        check_video(BytesReader(CLIP[: len(CLIP) // 2]), label="output 1", served_as="video/mp4")
    message = str(refused.value)
    assert message.startswith("output 1 is not a video: ")
    assert "truncated" in message and message.endswith("(video/mp4)")


def test_an_image_served_as_a_clip_is_not_a_video() -> None:
    with pytest.raises(OutputInvalid, match=r"output 1 is not a video: it is a PNG image \(video/mp4\)"):
        check_video(BytesReader(PNG), label="output 1", served_as="video/mp4")


def test_a_webm_clip_is_a_video_but_not_the_mp4_it_would_be_stored_as() -> None:
    with pytest.raises(OutputInvalid) as refused:
        check_video(BytesReader(webm(1280, 720, 5000.0)), label="output 1", served_as="video/webm")
    assert str(refused.value) == "output 1 is not an MP4 video: it is a WEBM video (video/webm)"


def test_a_download_served_without_a_type_says_so() -> None:
    assert describe(b"\x00\x01garbage", None) == r"it starts with '\x00\x01garbage' (no Content-Type)"


def test_checking_a_gib_clip_reads_its_headers_only() -> None:
    # Given a stored clip of more than a GiB (its media a `free` box after the clip's boxes)
    stored = _ClipThenPadding(GIB)
    # When it is checked, then it is a video, and only its box headers and moov were read
    assert check_video(stored, label="output 1", served_as="video/mp4").duration_s == 5.0
    assert stored.bytes_read < len(CLIP) + 256 * 1024


def test_a_stored_html_object_in_s3_is_refused_through_ranged_reads(aws_env: None) -> None:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="media")
        storage = Storage(s3, "media")
        storage.put_bytes("outputs/j/output-1.mp4", HTML, "video/mp4")
        info = storage.head("output", "outputs/j/output-1.mp4")
        with pytest.raises(OutputInvalid, match="it starts with '<!DOCTYPE html>'"):
            check_video(storage.reader(info), label="output 1", served_as="text/html")


# ---- covers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (PNG[:32], IMAGE_TYPES["png"]),
        (JPEG[:32], IMAGE_TYPES["jpeg"]),
        (b"GIF89a" + b"\0" * 26, IMAGE_TYPES["gif"]),
        (b"RIFF\x10\0\0\0WEBPVP8 " + b"\0" * 16, IMAGE_TYPES["webp"]),
        (HTML[:32], None),
        (CLIP[:32], None),
        (b"", None),
    ],
)
def test_a_covers_type_is_what_its_first_bytes_prove(head: bytes, expected: object) -> None:
    assert image_type(head) == expected


def test_the_proven_types_have_their_content_type_and_extension() -> None:
    assert {t.content_type: t.suffix for t in IMAGE_TYPES.values()} == {
        "image/png": ".png",
        "image/jpeg": ".jpg",
        "image/gif": ".gif",
        "image/webp": ".webp",
    }


def test_a_page_served_as_a_cover_is_not_an_image() -> None:
    with pytest.raises(OutputInvalid) as refused:
        cover_type(HTML[:32], label="cover 1", served_as="text/html")
    assert str(refused.value) == "cover 1 is not an image: it starts with '<!DOCTYPE html>' (text/html)"


def test_a_png_served_as_html_is_a_png() -> None:
    assert cover_type(PNG[:32], label="cover 1", served_as="text/html") == IMAGE_TYPES["png"]


def test_a_stored_cover_whose_header_claims_more_pixels_than_its_bytes_hold_is_refused() -> None:
    # A PNG header of 8000x8000 RGBA in a few hundred bytes
    forged = PNG[:16] + struct.pack(">II", 8000, 8000) + PNG[24:400]
    with pytest.raises(OutputInvalid, match="cover 1 is not an image: the PNG claims 8000x8000"):
        check_image(BytesReader(forged), IMAGE_TYPES["png"], label="cover 1", served_as="image/png")


def test_a_whole_stored_cover_is_an_image() -> None:
    info = check_image(BytesReader(PNG), IMAGE_TYPES["png"], label="cover 1", served_as="text/html")
    assert info.format == "png"


# ---- peeking at a stream ----------------------------------------------------------------------


def test_peeking_gives_the_first_bytes_and_leaves_the_whole_stream_to_read() -> None:
    chunks = [b"\x89P", b"NG\r\n", b"\x1a\n" + b"x" * 100, b"rest"]
    head, stream = peek(iter(chunks), size=8)
    assert head == b"\x89PNG\r\n\x1a\n"
    assert b"".join(stream) == b"".join(chunks)


def test_peeking_at_an_empty_stream_gives_nothing() -> None:
    head, stream = peek(iter([]))
    assert (head, list(stream)) == (b"", [])


# ---- the stack's side: where quarantined bytes may go, how long they stay, who hears of them --

TEMPLATE = template.load(ROOT / "template.yaml")


def _s3_statements(function: str) -> list[tuple[set[str], str]]:
    """(actions, resource) of a function's S3 statements, the resource as text."""
    found = []
    for policy in TEMPLATE["Resources"][function]["Properties"].get("Policies", []):
        for statement in policy.get("Statement", []) if isinstance(policy, dict) else []:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            if any(str(action).startswith("s3:") for action in actions):
                found.append((set(actions), json.dumps(statement["Resource"])))
    return found


def test_only_archive_may_write_quarantine_and_only_there_beside_outputs() -> None:
    functions = [
        name for name, r in TEMPLATE["Resources"].items() if r["Type"] == "AWS::Serverless::Function"
    ]
    writers = {
        name
        for name in functions
        for actions, resource in _s3_statements(name)
        if "/quarantine/*" in resource
    }
    assert writers == {"ArchiveFunction"}
    archive = _s3_statements("ArchiveFunction")
    assert [actions for actions, resource in archive if "/quarantine/*" in resource] == [{"s3:PutObject"}]
    # the move out of outputs/ deletes there, and nowhere else
    deleting = [resource for actions, resource in archive if "s3:DeleteObject" in actions]
    assert len(deleting) == 1 and deleting[0].endswith('/outputs/*"]]}')


def test_quarantined_bytes_are_kept_as_long_as_rejected_reports() -> None:
    rules = {
        rule.get("Prefix"): rule
        for rule in TEMPLATE["Resources"]["MediaBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    }
    assert rules["quarantine/"]["Status"] == "Enabled"
    assert rules["quarantine/"]["ExpirationInDays"] == rules["rejected/"]["ExpirationInDays"]


def test_the_alarm_watches_the_metric_archive_counts() -> None:
    alarm = TEMPLATE["Resources"]["OutputsInvalidAlarm"]["Properties"]
    assert (alarm["Namespace"], alarm["MetricName"]) == ("klingflow", "Outcomes")
    assert alarm["Dimensions"] == [
        {"Name": "service", "Value": "klingflow"},
        {"Name": "function", "Value": "archive"},
        {"Name": "outcome", "Value": ArchiveOutcome.OUTPUT_INVALID.value},
    ]
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (1, "GreaterThanOrEqualToThreshold")
