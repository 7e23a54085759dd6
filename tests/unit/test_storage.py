"""Streaming outputs into S3 in bounded memory, several parts uploading while the next is read."""

from __future__ import annotations

import base64
import binascii
import hashlib
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError, ConnectionClosedError
from moto import mock_aws

from klingflow.core.errors import RequestRejected
from klingflow.infra.multipart import PART_CHECKSUM, part_buffers
from klingflow.infra.safehttp import ResponseTooLarge, SafeHttp
from klingflow.infra.storage import Storage

MIB = 1024 * 1024
KIB = 1024


def _body(total: int, chunk: int = 256 * 1024) -> Iterator[bytes]:
    # Deterministic, incompressible-enough bytes produced on the fly, never all at once.
    block = hashlib.sha256(b"seed").digest() * (chunk // 32)
    sent = 0
    while sent < total:
        piece = block[: min(chunk, total - sent)]
        sent += len(piece)
        yield piece


def _read_through(body: BinaryIO) -> int:
    """Read a part's body as botocore does (1 MiB at a time, for its checksum); its length."""
    return sum(len(piece) for piece in iter(lambda: body.read(MIB), b""))


def _resident_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field}")


class _PartCounter:
    """Stands in for S3 where memory is measured: reads each part through and keeps its size,
    never its bytes (moto, in process, would keep the whole object and hide what our code holds)."""

    def __init__(self) -> None:
        self.parts: list[tuple[int, int]] = []
        self.completed = False

    def create_multipart_upload(self, **_: object) -> dict[str, str]:
        return {"UploadId": "u1"}

    def upload_part(self, *, Body: BinaryIO, PartNumber: int, **_: object) -> dict[str, str]:
        self.parts.append((PartNumber, _read_through(Body)))
        return {"ETag": f'"{PartNumber}"'}

    def complete_multipart_upload(self, **_: object) -> None:
        self.completed = True

    def abort_multipart_upload(self, **_: object) -> None:
        raise AssertionError("nothing failed")


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's peak RSS reset")
def test_a_large_body_is_streamed_in_parts_holding_no_more_than_the_upload_buffer() -> None:
    # Given a 64 MiB body that arrives in 256 KiB chunks, 5 MiB parts and a 20 MiB buffer
    s3 = _PartCounter()
    storage = Storage(s3, "media")  # type: ignore[arg-type]
    total = 64 * MIB

    # When it is streamed
    before = _resident_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # the peak RSS starts again from here
    tracemalloc.start()
    stored = storage.upload_stream(
        "outputs/j/output-1.mp4", _body(total), part_size=5 * MIB, buffer_bytes=20 * MIB
    )
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    grown = (_resident_kib("VmHWM") - before) * KIB
    # tracemalloc counts every thread's allocations, and a worker may still run threads an
    # earlier test file left: a copy of a part would show in both streams, a neighbour in one.
    again = _PartCounter()
    tracemalloc.start()
    Storage(again, "media").upload_stream(  # type: ignore[arg-type]
        "outputs/j/output-2.mp4", _body(total), part_size=5 * MIB, buffer_bytes=20 * MIB
    )
    peak = min(peak, tracemalloc.get_traced_memory()[1])
    tracemalloc.stop()

    # Then it went up as 13 parts, and resident memory grew by the buffer (4 parts, uploading or
    # being read) and a little, not by the body; no part was ever copied into a Python object
    assert s3.completed
    assert sorted(s3.parts) == [(n, 5 * MIB) for n in range(1, 13)] + [(13, 4 * MIB)]
    assert stored.bytes == total
    assert grown < 20 * MIB + 8 * MIB, f"peak RSS growth {grown / MIB:.1f} MiB"
    assert peak < 4 * MIB, f"peak of Python allocations {peak / MIB:.1f} MiB"


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


# --------------------------------------------------------------------------- parts in flight


class _HeldS3:
    """An in-memory S3 for the multipart calls (AWS adds nothing to what is checked here): it
    counts the parts uploading at once, can hold every part until released, fail one part when
    told to, or delay each part so that they finish out of order."""

    def __init__(
        self,
        *,
        held: bool = False,
        fail_part: int | None = None,
        delay_s: dict[int, float] | None = None,
    ) -> None:
        self.release = threading.Event()
        if not held:
            self.release.set()
        self.fail_part = fail_part
        self.fail_now = threading.Event()
        self.delay_s = delay_s or {}
        self._lock = threading.Lock()
        self.uploading = 0
        self.most_uploading = 0
        self.created: dict[str, Any] = {}
        self.parts: dict[int, tuple[bytes, dict[str, Any]]] = {}
        self.completed: dict[str, Any] | None = None
        self.aborted_while_uploading: list[int] = []

    def create_multipart_upload(self, **kwargs: Any) -> dict[str, str]:
        self.created = kwargs
        return {"UploadId": "u1"}

    def upload_part(self, *, Body: BinaryIO, PartNumber: int, **kwargs: Any) -> dict[str, str]:
        with self._lock:
            self.uploading += 1
            self.most_uploading = max(self.most_uploading, self.uploading)
        try:
            if PartNumber == self.fail_part:  # when told to, held or not
                assert self.fail_now.wait(timeout=10), "never failed"
                raise ClientError({"Error": {"Code": "InternalError", "Message": "part lost"}}, "UploadPart")
            assert self.release.wait(timeout=10), "never released"
            time.sleep(self.delay_s.get(PartNumber, 0))
            self.parts[PartNumber] = (Body.read(), kwargs)
            return {"ETag": f'"etag-{PartNumber}"', "ChecksumCRC32": f"crc-{PartNumber}"}
        finally:
            with self._lock:
                self.uploading -= 1

    def complete_multipart_upload(self, **kwargs: Any) -> None:
        assert self.uploading == 0
        self.completed = kwargs

    def abort_multipart_upload(self, **_: Any) -> None:
        self.aborted_while_uploading.append(self.uploading)


class _Pulled:
    """A body of `total` bytes in `chunk`-byte pieces that counts how much has been read."""

    def __init__(self, total: int, chunk: int, fail_after: int | None = None) -> None:
        self.total = total
        self.chunk = chunk
        self.fail_after = fail_after
        self.read = 0

    def __iter__(self) -> Iterator[bytes]:
        while self.read < self.total:
            if self.fail_after is not None and self.read >= self.fail_after:
                raise ConnectionError("provider closed the connection")
            piece = bytes([self.read // self.chunk % 251]) * min(self.chunk, self.total - self.read)
            self.read += len(piece)
            yield piece


def _wait_for(condition: Any, timeout_s: float = 5) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.005)


def test_parts_finishing_out_of_order_are_completed_in_order_with_their_checksums() -> None:
    # Given 7 parts of 64 KiB, the later ones quicker to upload than the earlier ones
    part = 64 * KIB
    s3 = _HeldS3(delay_s={n: (8 - n) * 0.01 for n in range(1, 8)})
    body = _Pulled(6 * part + 100, chunk=10_000)  # chunks straddle part boundaries

    # When the body is streamed with 4 part buffers
    storage = Storage(s3, "media")  # type: ignore[arg-type]
    stored = storage.upload_stream("outputs/j/o.mp4", body, part_size=part, buffer_bytes=4 * part)

    # Then the parts went up concurrently, each naming the checksum S3 computes per part
    assert s3.most_uploading == 4 == part_buffers(part, 4 * part)
    assert s3.created["ChecksumAlgorithm"] == PART_CHECKSUM == "CRC32"
    assert all(kwargs["ChecksumAlgorithm"] == "CRC32" for _, kwargs in s3.parts.values())
    # And the completion lists them in order, each with its ETag and its checksum
    assert s3.completed is not None
    assert s3.completed["MultipartUpload"]["Parts"] == [
        {"PartNumber": n, "ETag": f'"etag-{n}"', "ChecksumCRC32": f"crc-{n}"} for n in range(1, 8)
    ]
    # And the bytes, cut at part boundaries, are the body's, in order
    whole = b"".join(s3.parts[n][0] for n in range(1, 8))
    assert [len(s3.parts[n][0]) for n in range(1, 8)] == [part] * 6 + [100]
    expected = b"".join(_Pulled(6 * part + 100, chunk=10_000))
    assert whole == expected
    assert stored.bytes == len(expected)
    assert stored.sha256 == hashlib.sha256(expected).hexdigest()


def test_reading_stops_while_the_buffer_is_full_and_resumes_as_parts_finish() -> None:
    # Given an S3 that holds every part until released, 4 part buffers, aligned chunks
    part = 64 * KIB
    s3 = _HeldS3(held=True)
    body = _Pulled(20 * part, chunk=16 * KIB)
    storage = Storage(s3, "media")  # type: ignore[arg-type]
    result: list[Any] = []
    worker = threading.Thread(
        target=lambda: result.append(
            storage.upload_stream("outputs/j/o.mp4", body, part_size=part, buffer_bytes=4 * part)
        )
    )

    # When the stream starts and the first parts cannot finish
    worker.start()
    _wait_for(lambda: s3.uploading == 4)
    _wait_for(lambda: body.read > 4 * part)
    time.sleep(0.2)

    # Then reading stopped with 4 parts uploading: the buffer (and the chunk that found no
    # buffer free), no more
    assert body.read == 4 * part + 16 * KIB
    assert s3.uploading == 4

    # And once S3 answers, the rest streams through, never more than 4 parts at once
    s3.release.set()
    worker.join(timeout=10)
    assert not worker.is_alive()
    assert result[0].bytes == 20 * part
    assert s3.most_uploading == 4
    assert s3.completed is not None
    assert [p["PartNumber"] for p in s3.completed["MultipartUpload"]["Parts"]] == list(range(1, 21))


def test_a_failed_part_aborts_the_upload_after_the_parts_in_flight_and_reaches_the_caller() -> None:
    # Given 4 part buffers, parts 1, 2 and 4 held until released, and part 3 about to fail
    part = 64 * KIB
    s3 = _HeldS3(held=True, fail_part=3)
    body = _Pulled(40 * part, chunk=16 * KIB)
    storage = Storage(s3, "media")  # type: ignore[arg-type]
    errors: list[BaseException] = []

    def stream() -> None:
        try:
            storage.upload_stream("outputs/j/o.mp4", body, part_size=part, buffer_bytes=4 * part)
        except BaseException as error:
            errors.append(error)

    worker = threading.Thread(target=stream)
    worker.start()
    # (the reader waits for a free buffer: 4 parts uploading)
    _wait_for(lambda: body.read > 4 * part and s3.uploading == 4)

    # When part 3 fails
    s3.fail_now.set()
    time.sleep(0.2)

    # Then reading stopped there, and the upload is not aborted while parts still upload
    assert body.read == 4 * part + 16 * KIB
    assert s3.aborted_while_uploading == []
    assert worker.is_alive()

    # And once they finish, it is aborted (once, nothing uploading) and the part's error reaches
    # the caller, nothing completed
    s3.release.set()
    worker.join(timeout=10)
    assert not worker.is_alive()
    assert s3.aborted_while_uploading == [0]
    assert len(errors) == 1 and isinstance(errors[0], ClientError)
    assert s3.completed is None
    assert sorted(s3.parts) == [1, 2, 4]


def test_a_download_that_fails_mid_stream_aborts_after_the_parts_in_flight() -> None:
    # Given a download that breaks off after 5 parts while parts are slow to upload
    part = 64 * KIB
    s3 = _HeldS3(delay_s=dict.fromkeys(range(1, 10), 0.05))
    body = _Pulled(40 * part, chunk=16 * KIB, fail_after=5 * part)
    storage = Storage(s3, "media")  # type: ignore[arg-type]

    # When it is streamed, the reader's error reaches the caller
    with pytest.raises(ConnectionError):
        storage.upload_stream("outputs/j/o.mp4", body, part_size=part, buffer_bytes=4 * part)

    # And the upload was aborted only once no part was uploading any more
    assert s3.completed is None
    assert s3.aborted_while_uploading == [0]


def test_the_buffer_holds_at_least_two_parts() -> None:
    assert part_buffers(8 * MIB) == 4  # the default buffer: 32 MiB
    assert part_buffers(8 * MIB, 16 * MIB) == 2
    assert part_buffers(64 * MIB, 16 * MIB) == 2  # one uploading while the next is read


def test_an_empty_body_is_stored_as_an_empty_object(aws_env: None) -> None:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="media")
        stored = Storage(s3, "media").upload_stream("outputs/j/output-1.mp4", iter([]), part_size=5 * MIB)
        body = s3.get_object(Bucket="media", Key="outputs/j/output-1.mp4")["Body"].read()
        assert (stored.bytes, stored.sha256, body) == (0, hashlib.sha256(b"").hexdigest(), b"")


def test_s3_keeps_the_object_checksum_built_from_the_parts_crc32(aws_env: None) -> None:
    # Given a body of 3 parts
    data = b"".join(_body(12 * MIB))
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="media")

        # When it is streamed
        Storage(s3, "media").upload_stream("outputs/j/output-1.mp4", _body(12 * MIB), part_size=5 * MIB)

        # Then the object's checksum is the composite CRC32 of its parts' CRC32s
        parts = (data[: 5 * MIB], data[5 * MIB : 10 * MIB], data[10 * MIB :])
        crcs = b"".join(binascii.crc32(p).to_bytes(4, "big") for p in parts)
        composite = base64.b64encode(binascii.crc32(crcs).to_bytes(4, "big")).decode()
        answer = s3.get_object_attributes(
            Bucket="media", Key="outputs/j/output-1.mp4", ObjectAttributes=["Checksum"]
        )
        assert answer["Checksum"] == {"ChecksumCRC32": composite, "ChecksumType": "COMPOSITE"}


def test_an_output_over_the_size_limit_is_stopped_mid_stream_and_its_upload_aborted(aws_env: None) -> None:
    # Given a provider that streams 20 MiB (no Content-Length) where at most 12 MiB is allowed
    sent = _Pulled(20 * MIB, chunk=256 * KIB)
    transport = httpx.MockTransport(lambda _: httpx.Response(200, content=iter(sent)))
    http = SafeHttp(client=httpx.Client(transport=transport), resolver=lambda host, port: ["93.184.216.34"])
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="media")

        # When archive streams it into S3 through SafeHttp
        with (
            pytest.raises(ResponseTooLarge),
            http.stream("https://cdn.test/o.mp4", allowed_hosts=["cdn.test"], max_bytes=12 * MIB) as response,
        ):
            Storage(s3, "media").upload_stream(
                "outputs/j/output-1.mp4", response.iter_bytes(256 * KIB), part_size=5 * MIB
            )

        # Then the download stopped at the limit, after two parts had gone up, and the upload was
        # aborted: no object, no parts left behind
        assert sent.read <= 12 * MIB + 256 * KIB
        assert s3.list_multipart_uploads(Bucket="media").get("Uploads", []) == []
        assert s3.list_objects_v2(Bucket="media").get("KeyCount") == 0


def test_a_part_botocore_sends_again_after_a_dropped_connection_is_sent_whole(aws_env: None) -> None:
    # Given an S3 connection that drops the first upload of part 2 after reading some of it
    data = b"".join(_body(12 * MIB))
    attempts: list[int] = []

    def drop_first_part_2(request: Any, **_: Any) -> None:
        if "partNumber=2" in request.url:
            attempts.append(2)
            if len(attempts) == 1:
                request.body.read(100_000)
                raise ConnectionClosedError(endpoint_url=request.url)

    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="media")
        s3.meta.events.register_first("before-send.s3.UploadPart", drop_first_part_2)

        # When the body is streamed
        stored = Storage(s3, "media").upload_stream(
            "outputs/j/output-1.mp4", _body(12 * MIB), part_size=5 * MIB
        )

        # Then botocore sent part 2 again, from its start, and the object is the body
        assert attempts == [2, 2]
        body = s3.get_object(Bucket="media", Key="outputs/j/output-1.mp4")["Body"].read()
        assert body == data
        assert stored.sha256 == hashlib.sha256(data).hexdigest()


def test_an_input_key_longer_than_s3_takes_is_refused_by_name_before_any_call() -> None:
    # S3 answers a key over 1,024 bytes with a bare 400 (moto with a 404): refused here instead
    storage = Storage(None, "bucket")  # type: ignore[arg-type]
    too_long = "incoming/" + "é" * 1000 + ".mp4"
    with pytest.raises(RequestRejected) as refused:
        storage.key_of("video", too_long)
    [error] = refused.value.errors
    assert (error.field, error.rule) == ("video", "s3_key_length")
    assert "1024 bytes" in error.message
    assert storage.key_of("video", "incoming/" + "é" * 500 + ".mp4").startswith("incoming/")


def test_put_new_stores_one_version_and_leaves_what_is_there(aws_env: None) -> None:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="media")
        s3.put_bucket_versioning(Bucket="media", VersioningConfiguration={"Status": "Enabled"})
        storage = Storage(s3, "media")

        assert storage.put_new("incoming/j/image.png", b"first", "image/png") is True
        assert storage.put_new("incoming/j/image.png", b"again", "image/png") is False

        versions = s3.list_object_versions(Bucket="media", Prefix="incoming/j/")["Versions"]
        assert len(versions) == 1
        assert s3.get_object(Bucket="media", Key="incoming/j/image.png")["Body"].read() == b"first"


class _Conflicting:
    """S3 answering 409 ConditionalRequestConflict (another write in flight) `times` times."""

    def __init__(self, times: int) -> None:
        self.times = times
        self.calls = 0

    def put_object(self, **request: Any) -> dict[str, Any]:
        assert request["IfNoneMatch"] == "*"
        self.calls += 1
        if self.calls <= self.times:
            error = {"Error": {"Code": "ConditionalRequestConflict", "Message": "in flight"}}
            raise ClientError(error, "PutObject")  # type: ignore[arg-type]
        return {}


def test_put_new_tries_once_more_after_a_conflicting_write_then_lets_it_be_seen() -> None:
    once = _Conflicting(times=1)
    assert Storage(once, "media").put_new("incoming/j/image.png", b"x", "image/png") is True  # type: ignore[arg-type]
    assert once.calls == 2

    twice = _Conflicting(times=2)
    with pytest.raises(ClientError):
        Storage(twice, "media").put_new("incoming/j/image.png", b"x", "image/png")  # type: ignore[arg-type]
    assert twice.calls == 2
