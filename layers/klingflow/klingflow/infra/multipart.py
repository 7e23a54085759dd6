"""Streaming an output into S3 as one multipart upload, a bounded number of part buffers at a
time, each part checked by S3 (CRC32) and the whole body hashed (sha256) on the way through."""

from __future__ import annotations

import contextlib
import hashlib
import io
import mmap
import queue
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Final, cast

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# The most bytes of one streamed output held at once: its part buffers, uploading or being read
# (see upload_stream). With 8 MiB parts that is 4 buffers, 34 MB, which leaves room under
# archive's 64 MB bound for the HTTP buffers and botocore's reads of a part (peak growth measured
# 46 MB over a 1 GiB copy; 5 buffers measured 57 MB, no faster against moto).
UPLOAD_BUFFER_BYTES = 32 * 1024 * 1024
# Named when a multipart upload is created, so S3 checks each part's CRC32 as it arrives and
# builds the object's checksum from the parts' (no pass over the whole object at completion).
# CRC32 is the algorithm botocore computes without awscrt, which the Lambda runtime lacks.
PART_CHECKSUM: Final = "CRC32"
# What a part's body reads ahead (see _PartUploader._put).
_PART_READ_BUFFER = 256 * 1024


def part_buffers(part_size: int, buffer_bytes: int = UPLOAD_BUFFER_BYTES) -> int:
    """How many parts one upload holds at once within buffer_bytes: at least 2, so that a part
    always uploads while the next one is read."""
    return max(2, buffer_bytes // part_size)


@dataclass(frozen=True)
class Stored:
    key: str
    bytes: int
    sha256: str


def upload_stream(
    client: S3Client,
    bucket: str,
    key: str,
    chunks: Iterable[bytes],
    *,
    part_size: int,
    content_type: str = "video/mp4",
    buffer_bytes: int = UPLOAD_BUFFER_BYTES,
) -> Stored:
    """Stream chunks into one object with a multipart upload, reading while parts upload.

    This thread reads the chunks (the download), hashes them and copies them into one of
    `part_buffers(part_size, buffer_bytes)` part buffers; each full part uploads on a thread
    of this upload's own while the next is read, so the download waits on the upload only
    when every buffer is taken. The buffers (`buffer_bytes` at most, or two parts when a
    part is more than half of it) are made once per upload and reused: memory stays there,
    plus one chunk, whatever the body's size. Each part carries a CRC32 that S3 checks; the
    sha256 of the whole body is computed on the way through. Any failure, reading or
    uploading, waits for the parts in flight, aborts the upload (no orphaned parts are
    billed) and reaches the caller.
    """
    upload_id = client.create_multipart_upload(
        Bucket=bucket, Key=key, ContentType=content_type, ChecksumAlgorithm=PART_CHECKSUM
    )["UploadId"]
    uploader = _PartUploader(
        client, bucket, key, upload_id, part_size=part_size, buffers=part_buffers(part_size, buffer_bytes)
    )
    try:
        total, sha256 = _cut_parts(chunks, uploader, part_size)
        parts = uploader.finish()
        client.complete_multipart_upload(
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
        )
    except BaseException:
        uploader.stop()
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        raise
    return Stored(key, total, sha256)


def _cut_parts(chunks: Iterable[bytes], uploader: _PartUploader, part_size: int) -> tuple[int, str]:
    """Copy the chunks into part buffers, sending each part as it fills and then the last one;
    returns the body's length and sha256."""
    digest = hashlib.sha256()
    total = 0
    part: mmap.mmap | None = None  # the part being read, `filled` bytes of it so far
    filled = 0
    for chunk in chunks:
        digest.update(chunk)
        total += len(chunk)
        rest = memoryview(chunk)
        while rest:
            if part is None:
                part, filled = uploader.buffer(), 0  # waits while every buffer is taken
            taken = min(len(rest), part_size - filled)
            part[filled : filled + taken] = rest[:taken]
            filled += taken
            rest = rest[taken:]
            if filled == part_size:
                uploader.send(part, filled)
                part = None
    if part is not None or not uploader.sent:
        # The last part, shorter (or the only one, maybe empty).
        uploader.send(part if part is not None else uploader.buffer(), filled)
    return total, digest.hexdigest()


class _PartUploader:
    """The parts of one multipart upload, from `buffers` reusable buffers: the reader fills one
    while the others' parts upload, each on a thread (all of them while the reader waits).

    The buffers are anonymous memory maps: their pages are taken as they are first written and
    given back to the system when the upload ends. Reusing them, rather than a fresh bytes object
    per part, keeps the allocator's heap from fragmenting: 5 bytes parts of 8 MiB at a time grew
    a 1 GiB copy's resident memory by 61 MB, 19 MB over their size (44 MB with glibc's mmap
    threshold pinned, which is what these buffers amount to).

    A thread pool per upload, not one per container: its threads start only as parts need them
    (a one-part output starts one), cost microseconds against a part's upload, and `stop` can
    wait for exactly this upload's parts before it is aborted (S3 may keep a part whose upload
    was still running when the upload was aborted). Nothing outlives the upload.
    """

    def __init__(
        self, client: S3Client, bucket: str, key: str, upload_id: str, *, part_size: int, buffers: int
    ) -> None:
        self._client = client
        self._bucket = bucket
        self._key = key
        self._upload_id = upload_id
        self._part_size = part_size
        self._capacity = buffers
        self._buffers: list[mmap.mmap] = []
        self._free: queue.SimpleQueue[mmap.mmap] = queue.SimpleQueue()
        self._pool = ThreadPoolExecutor(max_workers=buffers, thread_name_prefix="s3-part")
        self._futures: list[Future[dict[str, Any]]] = []
        self._failure: BaseException | None = None

    @property
    def sent(self) -> int:
        return len(self._futures)

    def buffer(self) -> mmap.mmap:
        """A buffer for the next part: a free one, a new one while there are fewer than the
        capacity, or else the next one an upload gives back. Raises an earlier part's failure."""
        if self._failure is None:
            try:
                return self._free.get_nowait()
            except queue.Empty:
                pass
            if len(self._buffers) < self._capacity:
                self._buffers.append(mmap.mmap(-1, self._part_size))
                return self._buffers[-1]
            free = self._free.get()  # a failing part gives its buffer back too
            if self._failure is None:
                return free
            self._free.put(free)
        raise self._failure

    def send(self, buffer: mmap.mmap, length: int) -> None:
        """Upload the first `length` bytes of buffer as the next part (unless a part failed)."""
        if self._failure is not None:
            raise self._failure
        self._futures.append(self._pool.submit(self._put, len(self._futures) + 1, buffer, length))

    def _put(self, number: int, buffer: mmap.mmap, length: int) -> dict[str, Any]:
        try:
            # A buffered file: awscrt, botocore's signer where it is installed, reads a body 4 KiB
            # at a time, which the buffer answers in C (0.2 s of CPU a GiB, not 0.8 s).
            with io.BufferedReader(_PartBody(buffer, length), _PART_READ_BUFFER) as body:
                answer = self._client.upload_part(
                    Bucket=self._bucket,
                    Key=self._key,
                    UploadId=self._upload_id,
                    PartNumber=number,
                    Body=cast("IO[bytes]", body),
                    ChecksumAlgorithm=PART_CHECKSUM,
                )
        except BaseException as error:
            self._failure = self._failure or error
            raise
        finally:
            self._free.put(buffer)  # (the body, closed, no longer views it)
        part = {"PartNumber": number, "ETag": answer["ETag"]}
        if "ChecksumCRC32" in answer:
            # S3 wants every part's checksum again at completion when the upload names one.
            part["ChecksumCRC32"] = answer["ChecksumCRC32"]
        return part

    def finish(self) -> list[dict[str, Any]]:
        """Every part, in order, once all are uploaded; the first failure, if any, is raised."""
        parts = [future.result() for future in self._futures]
        self._release()
        return parts

    def stop(self) -> None:
        """Drop the parts not started and wait for those uploading (then the upload can be aborted)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._release()

    def _release(self) -> None:
        self._pool.shutdown()
        for buffer in self._buffers:
            # One still viewed (from an error's traceback) is unmapped with its last reference.
            with contextlib.suppress(BufferError):
                buffer.close()
        self._buffers.clear()


class _PartBody(io.RawIOBase):
    """A part's bytes in its buffer, read as a file: botocore reads it for the part's CRC32 (and
    for the payload signature over plain http), finds its length by seeking, and streams it,
    without a copy of the whole part."""

    def __init__(self, buffer: mmap.mmap, length: int) -> None:
        super().__init__()
        self._view = memoryview(buffer)[:length]
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence not in (io.SEEK_SET, io.SEEK_CUR, io.SEEK_END):
            raise ValueError(f"invalid whence {whence}")
        base = (0, self._position, len(self._view))[whence]
        self._position = min(max(0, base + offset), len(self._view))
        return self._position

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("read of a closed part")
        end = len(self._view) if size is None or size < 0 else min(len(self._view), self._position + size)
        data = bytes(self._view[self._position : end])
        self._position = end
        return data

    def readinto(self, buffer: Any) -> int:
        if self.closed:
            raise ValueError("read of a closed part")
        target = memoryview(buffer).cast("B")
        size = min(len(target), len(self._view) - self._position)
        target[:size] = self._view[self._position : self._position + size]
        self._position += size
        return size

    def close(self) -> None:
        if not self.closed:
            self._view.release()
        super().close()
