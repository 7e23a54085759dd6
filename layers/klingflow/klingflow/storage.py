"""The media bucket: reading inputs in ranges, presigning, and streaming outputs in.

Layout: `incoming/` (user drops: manifests and media), `outputs/<job_id>/` (videos and a
`result.json`), `rejected/` (error reports for manifests that could not become jobs).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from .errors import FieldError, RequestRejected

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


INCOMING = "incoming/"


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

    def copy(self, source_key: str, key: str) -> None:
        """A server-side copy within the bucket (the bytes never pass through the function)."""
        self.client.copy_object(
            Bucket=self.bucket, Key=key, CopySource={"Bucket": self.bucket, "Key": source_key}
        )

    def put_json(self, key: str, document: Any) -> None:
        body = json.dumps(document, indent=2, sort_keys=True, default=str).encode()
        self.put_bytes(key, body, "application/json")

    def upload_stream(
        self, key: str, chunks: Iterable[bytes], *, part_size: int, content_type: str = "video/mp4"
    ) -> Stored:
        """Stream chunks into one object with a multipart upload, holding at most one part.

        Memory stays near `part_size` whatever the body's size; the digest is computed on the
        way through. A failure aborts the upload so no orphaned parts are billed.
        """
        digest = hashlib.sha256()
        total = 0
        buffer = bytearray()
        upload_id = self.client.create_multipart_upload(
            Bucket=self.bucket, Key=key, ContentType=content_type
        )["UploadId"]
        parts: list[dict[str, Any]] = []
        try:
            for chunk in chunks:
                digest.update(chunk)
                total += len(chunk)
                buffer += chunk
                while len(buffer) >= part_size:
                    with memoryview(buffer) as view:
                        part = bytes(view[:part_size])  # one copy: the part that is sent
                    del buffer[:part_size]
                    self._put_part(key, upload_id, parts, part)
                    del part
            if buffer or not parts:
                self._put_part(key, upload_id, parts, bytes(buffer))
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
            )
        except BaseException:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise
        return Stored(key, total, digest.hexdigest())

    def _put_part(self, key: str, upload_id: str, parts: list[dict[str, Any]], body: bytes) -> None:
        number = len(parts) + 1
        answer = self.client.upload_part(
            Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
        )
        parts.append({"PartNumber": number, "ETag": answer["ETag"]})
