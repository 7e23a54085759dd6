"""Archive's copies: each output a provider made streamed into S3 and proven what it claims
(a clip a video, a cover an image), or moved to quarantine/ when it is not.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager

import httpx
from aws_lambda_powertools import Logger

from klingflow.core.errors import UnsafeUrl
from klingflow.core.models import Job, Output, OutputRole
from klingflow.core.outputcheck import (
    OutputInvalid,
    check_image,
    check_video,
    cover_type,
    peek,
    quarantine_prefix,
)
from klingflow.infra.safehttp import DownloadFailed, SafeHttp, SafeResponse
from klingflow.infra.storage import DOWNLOAD_CHUNK_BYTES, ObjectInfo, Storage
from klingflow.providers.base import Download, TaskOutput, TaskReport
from klingflow.providers.registry import Registry

logger = Logger(child=True)


class OutputCopier:
    def __init__(
        self,
        *,
        storage: Storage,
        registry: Registry,
        http: SafeHttp,
        max_output_bytes: int,
        part_size_bytes: int,
    ) -> None:
        self._storage = storage
        self._registry = registry
        self._http = http
        self._max_output_bytes = max_output_bytes
        self._part_size_bytes = part_size_bytes

    def copy_all(self, job: Job, report: TaskReport) -> list[Output]:
        provider, task_id = job.provider, job.provider_task_id
        assert provider is not None and task_id is not None
        adapter = self._registry.adapter(provider)
        outputs = []
        for index, produced in enumerate(report.outputs, start=1):
            download = adapter.download(task_id, produced)
            key, label = f"outputs/{job.job_id}/output-{index}.mp4", f"output {index}"
            try:
                outputs.append(self._copy_one(job, key, download, OutputRole.VIDEO, label))
            except UnsafeUrl:
                # A link we may not fetch (host not allowed, redirect elsewhere): the dialect's
                # own content endpoint if it has one; otherwise the refusal is recorded and the
                # job retried until its deadline, because a paid output must not be dropped on
                # a policy an operator can correct (download_hosts).
                fallback = adapter.content_endpoint(task_id)
                if fallback is None or fallback.url == download.url:
                    raise
                outputs.append(self._copy_one(job, key, fallback, OutputRole.VIDEO, label))
        for index, produced in enumerate(report.outputs, start=1):
            outputs += self._copy_extras(job, index, produced)
        return outputs

    def _copy_extras(self, job: Job, index: int, produced: TaskOutput) -> list[Output]:
        """A clip's cover and watermarked copy, when the provider made them. They are extras:
        one that cannot be fetched, or is not what it claims, is logged and left, never holding
        up the paid clip."""
        extras = []
        for role, url, name, label in (
            (OutputRole.COVER, produced.cover_url, f"cover-{index}", f"cover {index}"),
            (
                OutputRole.WATERMARKED,
                produced.watermarked_url,
                f"output-{index}-watermarked.mp4",
                f"watermarked copy {index}",
            ),
        ):
            if url is None:
                continue
            try:
                extras.append(self._copy_one(job, f"outputs/{job.job_id}/{name}", Download(url), role, label))
            except (UnsafeUrl, DownloadFailed, httpx.HTTPError, OutputInvalid) as error:
                logger.warning(
                    "extra output not kept", extra={"job_id": job.job_id, "role": role, "error": str(error)}
                )
        return extras

    def _copy_one(self, job: Job, key: str, download: Download, role: OutputRole, label: str) -> Output:
        """Stream one download into `key`, then prove it is what it claims (OutputInvalid, with
        the stored bytes moved to quarantine/, when it is not)."""
        with self._open(job, download) as response:
            served_as = response.headers.get("content-type")
            chunks: Iterable[bytes] = response.iter_bytes(DOWNLOAD_CHUNK_BYTES)
            content_type = "video/mp4"
            if role is OutputRole.COVER:
                # Named and typed by what its first bytes prove, not by what it was served as;
                # bytes that are no image are never stored.
                head, chunks = peek(chunks)
                image = cover_type(head, label=label, served_as=served_as)
                key, content_type = key + image.suffix, image.content_type
            stored = self._storage.upload_stream(
                key, chunks, part_size=self._part_size_bytes, content_type=content_type
            )
        output = Output(
            role=role,
            s3_uri=self._storage.uri(key),
            key=key,
            bytes=stored.bytes,
            sha256=stored.sha256,
            content_type=content_type,
        )
        # Ranged reads of the object just stored: a few small GETs, never the whole object.
        reader = self._storage.reader(ObjectInfo(key, stored.bytes, content_type, ""))
        try:
            if role is OutputRole.COVER:
                check_image(reader, image, label=label, served_as=served_as)
                return output
            video = check_video(reader, label=label, served_as=served_as)
        except OutputInvalid as invalid:
            self._quarantine(job, key, invalid, served_as)
            raise
        duration = None if video.duration_s is None else round(video.duration_s, 3)
        return output.model_copy(
            update={"duration_s": duration, "width": video.width, "height": video.height}
        )

    def _open(self, job: Job, download: Download) -> AbstractContextManager[SafeResponse]:
        assert job.provider is not None
        headers: dict[str, str] = {}
        if download.authenticated:
            adapter = self._registry.adapter(job.provider)
            headers = adapter.auth_headers(self._registry.credentials(job.provider))
        return self._http.stream(
            download.url,
            allowed_hosts=self._registry.download_hosts(job.provider),
            max_bytes=self._max_output_bytes,
            headers=headers,
        )

    def _quarantine(self, job: Job, key: str, invalid: OutputInvalid, served_as: str | None) -> None:
        """Bytes that are not what they claim leave outputs/ (nothing there may pass for a clip)
        and are kept, one folder per download, for a person to look at."""
        name = key.rsplit("/", 1)[-1]
        to_key = f"{quarantine_prefix(job.job_id)}download-{job.invalid_downloads + 1}/{name}"
        self._storage.move_aside(
            key,
            to_key,
            {"served-as": _header_safe(served_as or "none"), "problem": _header_safe(str(invalid))},
        )
        logger.warning(
            "download is not what it claims; quarantined",
            extra={"job_id": job.job_id, "key": to_key, "problem": str(invalid)},
        )


def _header_safe(text: str, limit: int = 512) -> str:
    """Text an S3 metadata header can carry: printable ASCII, bounded (2 KB for all of them)."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:limit]
