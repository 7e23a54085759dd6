"""The media bucket: reading inputs in ranges, presigning, and streaming outputs in.

Layout: `incoming/` (user drops: manifests and media), `outputs/<job_id>/` (videos and a
`result.json`), `rejected/` (error reports for manifests that could not become jobs),
`quarantine/<job_id>/` (downloads that were not what they claimed, kept for a person).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from klingflow.core.errors import FieldError, RequestRejected

from .multipart import PART_CHECKSUM, UPLOAD_BUFFER_BYTES, Stored, upload_stream

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


INCOMING = "incoming/"
KEY_MAX_BYTES = 1024  # S3: an object key is at most 1,024 bytes of UTF-8
# How much of a download is read at a time to feed upload_stream (parts are cut from these).
DOWNLOAD_CHUNK_BYTES = 256 * 1024


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    content_type: str | None
    etag: str


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
        """Stream chunks into `key` as one multipart upload (`multipart.upload_stream`)."""
        return upload_stream(
            self.client,
            self.bucket,
            key,
            chunks,
            part_size=part_size,
            content_type=content_type,
            buffer_bytes=buffer_bytes,
        )
