"""The media bucket: reading inputs in ranges, presigning, and streaming outputs in.

Layout: `incoming/` (user drops: manifests and media), `outputs/<job_id>/` (videos and a
`result.json`), `rejected/` (error reports for manifests that could not become jobs),
`quarantine/<job_id>/` (downloads that were not what they claimed, kept for a person).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import mmap
import queue
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Final, cast

from botocore.exceptions import ClientError

from klingflow.core.errors import FieldError, RequestRejected

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


INCOMING = "incoming/"
KEY_MAX_BYTES = 1024  # S3: an object key is at most 1,024 bytes of UTF-8
# How much of a download is read at a time to feed upload_stream (parts are cut from these).
DOWNLOAD_CHUNK_BYTES = 256 * 1024
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
class ObjectInfo:
    key: str
    size: int
    content_type: str | None
    etag: str


@dataclass(frozen=True)
class Stored:
    key: str
    bytes: int
    sha256: str


class S3RangeReader:
    """Random access to an object, one ranged GET per read (see probe.RangeReader)."""

    def __init__(self, client: S3Client, bucket: str, key: str, size: int) -> None:
        self._client = client
        self._bucket = bucket
        self._key = key
        self.size = size

    def read(self, offset: int, length: int) -> bytes:
        if offset >= self.size or length <= 0:
            return b""
        end = min(self.size, offset + length) - 1
        answer = self._client.get_object(Bucket=self._bucket, Key=self._key, Range=f"bytes={offset}-{end}")
        return answer["Body"].read()


class Storage:
    def __init__(self, client: S3Client, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def key_of(self, field: str, ref: str) -> str:
        """The object key an input reference names: only under incoming/ in our own bucket
        (submit may read nothing else, and one job must not reach another's outputs)."""
        key = ref.lstrip("/")
        if ref.startswith("s3://"):
            bucket, _, key = ref[5:].partition("/")
            if bucket != self.bucket:
                raise RequestRejected(
                    [
                        FieldError(
                            field,
                            "own_bucket",
                            f"only objects in s3://{self.bucket}/ can be used, not s3://{bucket}/",
                        )
                    ]
                )
        if len(key.encode("utf-8", "surrogatepass")) > KEY_MAX_BYTES:
            # S3 answers such a key with a bare 400 (KeyTooLongError), never a 404.
            raise RequestRejected(
                [
                    FieldError(
                        field,
                        "s3_key_length",
                        f"an S3 key is at most {KEY_MAX_BYTES} bytes of UTF-8; {field} names one of "
                        f"{len(key.encode('utf-8', 'surrogatepass'))}: use a shorter name",
                    )
                ]
            )
        if not key.startswith(INCOMING) or ".." in key.split("/"):
            raise RequestRejected(
                [
                    FieldError(
                        field,
                        "incoming_prefix",
                        f"input objects must be under {INCOMING} in the bucket, not {key!r}",
                    )
                ]
            )
        return key

    def head(self, field: str, key: str) -> ObjectInfo:
        try:
            answer = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise RequestRejected(
                    [FieldError(field, "object_exists", f"s3://{self.bucket}/{key} does not exist")]
                ) from None
            raise
        return ObjectInfo(key, answer["ContentLength"], answer.get("ContentType"), answer["ETag"].strip('"'))

    def reader(self, info: ObjectInfo) -> S3RangeReader:
        return S3RangeReader(self.client, self.bucket, info.key, info.size)

    def read_small(self, key: str, max_bytes: int) -> bytes:
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes=0-{max_bytes}")
        except ClientError as error:
            # A range on an empty object is "not satisfiable": the object is simply empty.
            if error.response.get("Error", {}).get("Code") == "InvalidRange":
                return b""
            raise
        data = answer["Body"].read()
        if len(data) > max_bytes:
            raise RequestRejected(
                [FieldError("(manifest)", "manifest_size", f"a manifest must be at most {max_bytes} bytes")]
            )
        return data

    def presign_get(self, key: str, ttl_s: int) -> str:
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=ttl_s
        )

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def put_new(self, key: str, data: bytes, content_type: str) -> bool:
        """Store `data` at `key` unless an object is there already (S3's conditional write):
        in a versioned bucket every rewrite of the same bytes is one more billed version. False
        when one was there (412); a write that conflicts with another in flight (409) is tried
        once more, which then finds that one stored."""
        for attempt in range(2):
            try:
                self.client.put_object(
                    Bucket=self.bucket, Key=key, Body=data, ContentType=content_type, IfNoneMatch="*"
                )
            except ClientError as error:
                code = error.response.get("Error", {}).get("Code")
                if code == "PreconditionFailed":
                    return False
                if code != "ConditionalRequestConflict" or attempt:
                    raise
                continue
            return True
        raise AssertionError("unreachable: the second attempt returns or raises")

    def copy(self, source_key: str, key: str) -> None:
        """A server-side copy within the bucket (the bytes never pass through the function)."""
        self.client.copy_object(
            Bucket=self.bucket, Key=key, CopySource={"Bucket": self.bucket, "Key": source_key}
        )

    def move_aside(self, key: str, to_key: str, metadata: dict[str, str]) -> None:
        """Move an object within the bucket (a server-side copy, then the original deleted),
        stored as opaque bytes whatever it was served as: a page kept for a person to look at
        is never served to a browser as a page. The copy gets a whole-object checksum of its
        own (the original's was built from its parts)."""
        self.client.copy_object(
            Bucket=self.bucket,
            Key=to_key,
            CopySource={"Bucket": self.bucket, "Key": key},
            MetadataDirective="REPLACE",
            ContentType="application/octet-stream",
            Metadata=metadata,
            ChecksumAlgorithm=PART_CHECKSUM,
        )
        self.client.delete_object(Bucket=self.bucket, Key=key)

    def put_json(self, key: str, document: Any) -> None:
        body = json.dumps(document, indent=2, sort_keys=True, default=str).encode()
        self.put_bytes(key, body, "application/json")

    def upload_stream(
        self,
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
        digest = hashlib.sha256()
        total = 0
        upload_id = self.client.create_multipart_upload(
            Bucket=self.bucket, Key=key, ContentType=content_type, ChecksumAlgorithm=PART_CHECKSUM
        )["UploadId"]
        uploader = _PartUploader(
            self.client,
            self.bucket,
            key,
            upload_id,
            part_size=part_size,
            buffers=part_buffers(part_size, buffer_bytes),
        )
        try:
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
            parts = uploader.finish()
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
            )
        except BaseException:
            uploader.stop()
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise
        return Stored(key, total, digest.hexdigest())


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
