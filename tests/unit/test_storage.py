"""Streaming outputs into S3 in bounded memory."""

from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import Iterator

import boto3
from moto import mock_aws

from klingflow.storage import Storage

MIB = 1024 * 1024


def _body(total: int, chunk: int = 256 * 1024) -> Iterator[bytes]:
    # Deterministic, incompressible-enough bytes produced on the fly, never all at once.
    block = hashlib.sha256(b"seed").digest() * (chunk // 32)
    sent = 0
    while sent < total:
        piece = block[: min(chunk, total - sent)]
        sent += len(piece)
        yield piece


class _PartCounter:
    """Stands in for S3 where memory is measured: keeps each part's size, never its bytes
    (moto, in process, would keep the whole object and hide what our code holds)."""

    def __init__(self) -> None:
        self.parts: list[int] = []
        self.completed = False

    def create_multipart_upload(self, **_: object) -> dict[str, str]:
        return {"UploadId": "u1"}

    def upload_part(self, *, Body: bytes, PartNumber: int, **_: object) -> dict[str, str]:
        self.parts.append(len(Body))
        return {"ETag": f'"{PartNumber}"'}

    def complete_multipart_upload(self, **_: object) -> None:
        self.completed = True

    def abort_multipart_upload(self, **_: object) -> None:
        raise AssertionError("nothing failed")


def test_a_large_body_is_streamed_in_parts_holding_about_one_part_in_memory() -> None:
    # Given a 64 MiB body that arrives in 256 KiB chunks and 5 MiB parts
    s3 = _PartCounter()
    storage = Storage(s3, "media")  # type: ignore[arg-type]
    total = 64 * MIB

    # When it is streamed
    tracemalloc.start()
    stored = storage.upload_stream("outputs/j/output-1.mp4", _body(total), part_size=5 * MIB)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    # Then it went up as 13 parts and memory stayed near one part, not the body
    assert s3.completed
    assert s3.parts == [5 * MIB] * 12 + [4 * MIB]
    assert stored.bytes == total
    assert peak < 2.5 * 5 * MIB, f"peak {peak / MIB:.1f} MiB"


def test_a_streamed_object_in_s3_has_the_recorded_size_and_digest(aws_env: None) -> None:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="media")
        total = 12 * MIB
        stored = Storage(s3, "media").upload_stream("outputs/j/output-1.mp4", _body(total), part_size=5 * MIB)
        body = s3.get_object(Bucket="media", Key="outputs/j/output-1.mp4")["Body"].read()
        assert stored.bytes == len(body) == total
        assert stored.sha256 == hashlib.sha256(body).hexdigest()
        assert s3.head_object(Bucket="media", Key="outputs/j/output-1.mp4")["ETag"].strip('"').endswith("-3")


def test_a_failed_stream_aborts_its_multipart_upload(aws_env: None) -> None:
    def broken() -> Iterator[bytes]:
        yield b"x" * (6 * MIB)
        raise ConnectionError("provider closed the connection")

    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="media")
        storage = Storage(s3, "media")
        try:
            storage.upload_stream("outputs/j/output-1.mp4", broken(), part_size=5 * MIB)
        except ConnectionError:
            pass
        else:
            raise AssertionError("the failure must reach the caller")
        assert s3.list_multipart_uploads(Bucket="media").get("Uploads", []) == []
        assert s3.list_objects_v2(Bucket="media").get("KeyCount") == 0
