"""Archive: confirm with the provider, copy every output into S3, finish the job.

A custom_element job has no file to copy: its outcome is the element id, which is recorded in
the job and in result.json the same way.

Runs from the archive queue. A job is copied under a lease, so two deliveries of one message
never download its outputs twice. A provider or a download that fails (the query endpoint is
down, a link refused or cut off) is recorded on the job as `archive_error` and left to the
sweeper, which brings the job back: the dead-letter queue (alarmed) only ever holds work that
failed in a way nobody planned for. Anything permanent (the provider says failed) ends the job
with a reason; an output host outside the allowlist ends it at its deadline (OUTPUT_HOST_NOT_ALLOWED),
not a day later.

A job is ARCHIVED only once every clip it keeps has been proven a video (`outputcheck`): a
download that is not (an HTML page, a truncated MP4, nothing) is moved to `quarantine/<job_id>/`
and counted like a failed download, and after `max_invalid_downloads` of them the job fails
OUTPUT_INVALID, settled (the provider charged for the task).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import httpx
from aws_lambda_powertools import Logger

from klingflow.core.clock import Clock, epoch, iso
from klingflow.core.errors import OUTPUT_HOST_NOT_ALLOWED, OUTPUT_INVALID, ProviderError, UnsafeUrl
from klingflow.core.models import DetailType, Job, JobError, Output, OutputRole
from klingflow.core.outcomes import ArchiveOutcome, Done
from klingflow.core.outputcheck import (
    OutputInvalid,
    check_image,
    check_video,
    cover_type,
    peek,
    quarantine_prefix,
)
from klingflow.core.states import JobStatus
from klingflow.infra.events import EventPublisher
from klingflow.infra.safehttp import DownloadFailed, SafeHttp, SafeResponse
from klingflow.infra.storage import DOWNLOAD_CHUNK_BYTES, ObjectInfo, Storage
from klingflow.jobs.elements import ElementDirectory
from klingflow.jobs.endings import announce, end_job, stop_watching
from klingflow.jobs.store import JobStore
from klingflow.money.pricing import charged
from klingflow.money.settlement import Charge, Release, Settle
from klingflow.providers.base import Download, TaskOutput, TaskReport
from klingflow.providers.registry import Registry

# Why a copy did not finish, as the job's `archive_error` says (or the host refusal).
DOWNLOAD_FAILED = "DOWNLOAD_FAILED"
Result = Done[ArchiveOutcome]

logger = Logger(child=True)


@dataclass(frozen=True)
class ArchiveConfig:
    max_output_bytes: int
    part_size_bytes: int
    archive_stall_s: int
    poll_again_s: int
    # How long a worker holds a job while copying it: longer than the function may run.
    lease_s: int = 330
    # Downloads that are not what they claim (each retried by the sweeper, like a failed one)
    # before the job fails OUTPUT_INVALID.
    max_invalid_downloads: int = 3


class Archiver:
    def __init__(
        self,
        *,
        store: JobStore,
        storage: Storage,
        events: EventPublisher,
        registry: Registry,
        http: SafeHttp,
        clock: Clock,
        config: ArchiveConfig,
        elements: ElementDirectory,
    ) -> None:
        self._elements = elements
        self._store = store
        self._storage = storage
        self._events = events
        self._registry = registry
        self._http = http
        self._clock = clock
        self._config = config

    def archive(self, job_id: str) -> Result:
        """Bring one job as far as the provider's own answer allows; returns what happened."""
        job = self._store.get(job_id)
        if job is None:
            return Done(ArchiveOutcome.IGNORED, "unknown job")
        if job.salvaging:
            # Timed out, but its task is still watched: if it completed, it was paid for.
            if epoch(self._clock.now()) >= (job.salvage_until or 0):
                return Done(ArchiveOutcome.IGNORED, "past the salvage window")
        elif job.status.terminal:
            return Done(ArchiveOutcome.IGNORED, f"already {job.status.value}")
        if job.provider is None or job.provider_task_id is None:
            return Done(ArchiveOutcome.IGNORED, "not submitted yet")
        try:
            report = self._registry.job_report(job)
        except ProviderError as error:
            # Could not ask: the sweeper polls the job (or re-enqueues it) and asks again.
            return Done(ArchiveOutcome.RETRY_LATER, f"provider query failed: {error.message}")
        match report.status:
            case JobStatus.SUCCEEDED:
                return self._copy_outputs(job, report)
            case JobStatus.FAILED | JobStatus.CANCELLED:
                return self._provider_failed(job, report)
            case JobStatus.RUNNING if job.status is JobStatus.SUBMITTED:
                self._store.transition(
                    job_id, JobStatus.RUNNING, by="archive", due_in_s=self._config.poll_again_s
                )
                return Done(ArchiveOutcome.RUNNING)
            case _:
                # The hint was early (or forged): forget it, so the real one is heard when it
                # comes (a recorded hint stops its equal); the sweeper keeps polling meanwhile.
                self._store.forget_hint(job_id)
                return Done(ArchiveOutcome.NOT_FINISHED, f"provider says {report.provider_status!r}")

    def _provider_failed(self, job: Job, report: TaskReport) -> Result:
        """The provider failed or cancelled the task: nothing was charged ("full refund on
        failure"), so the reservation is released."""
        message = report.error_message or f"{job.provider} reports the task {report.provider_status}"
        if job.salvaging:
            stop_watching(
                self._store, self._clock, job, Release(), f"{report.provider_status} after the deadline"
            )
            return Done(ArchiveOutcome.RELEASED, message)
        target = JobStatus.CANCELLED if report.status is JobStatus.CANCELLED else JobStatus.FAILED
        code = report.error_code or (
            "PROVIDER_CANCELLED" if target is JobStatus.CANCELLED else "PROVIDER_FAILED"
        )
        end_job(
            self._store,
            self._events,
            job.job_id,
            target,
            by="archive",
            code=code,
            message=message,
            money=Release(),
        )
        return Done(ArchiveOutcome.FAILED, message)

    def _copy_outputs(self, job: Job, report: TaskReport) -> Result:
        provider, task_id = job.provider, job.provider_task_id
        assert provider is not None and task_id is not None
        if job.status is not JobStatus.SUCCEEDED:
            late = job.status is JobStatus.TIMED_OUT
            moved = self._store.transition(
                job.job_id,
                JobStatus.SUCCEEDED,
                by="archive",
                note=self._succeeded_note(job, report, late=late),
                due_in_s=self._config.archive_stall_s,
                # Salvaged: no longer timed out, no longer expiring, and marked late for good.
                fields={
                    "succeeded_at": epoch(self._clock.now()),
                    **({"late": True} if late else {}),
                    **({"upstream_provider": report.upstream} if report.upstream else {}),
                },
                removes=("salvage_until", "error", "expires_at") if late else (),
            )
            job = moved or self._store.get(job.job_id) or job
            if job.status is not JobStatus.SUCCEEDED:
                return Done(ArchiveOutcome.IGNORED, f"now {job.status.value}")
        charge = charged(self._registry, job, report)
        if not job.kind.makes_video:
            if report.element_id is None:
                return self._fail(job, f"{job.provider} reports success but no element_id", charge)
            # Recorded before the job is ARCHIVED: whoever sees the job done can use the element.
            self._elements.record(job, report.element_id, self._storage)
            return self._finish(job, [], element_id=report.element_id, charge=charge)
        if not report.outputs:
            return self._fail(job, f"{job.provider} reports success but lists no output", charge)
        lease = uuid.uuid4().hex
        leased = self._store.take_lease(job.job_id, lease, for_s=self._config.lease_s)
        if leased is None:
            # Another delivery of this job is copying it now: downloading again would only race it.
            return Done(ArchiveOutcome.BUSY, "another worker holds the job's lease")
        job = leased  # as the lease found it: what other holders counted before (invalid_downloads)
        try:
            outputs = self._copy_all(job, report)
        except OutputInvalid as invalid:
            return self._invalid(job, lease, invalid, charge)
        except (UnsafeUrl, DownloadFailed, httpx.HTTPError, ProviderError) as error:
            self._store.drop_lease(job.job_id, lease, self._archive_error(error))
            return Done(ArchiveOutcome.RETRY_LATER, f"{type(error).__name__}: {error}")
        except BaseException:
            self._store.drop_lease(job.job_id, lease, None)
            raise
        return self._finish(job, outputs, element_id=None, charge=charge)

    def _copy_all(self, job: Job, report: TaskReport) -> list[Output]:
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

    @staticmethod
    def _archive_error(error: Exception) -> JobError:
        if isinstance(error, UnsafeUrl):
            return JobError(
                code=OUTPUT_HOST_NOT_ALLOWED,
                message=f"{error.message}; add the host to the provider's download_hosts "
                "(ProviderOverrides) before the job's deadline, or the job fails then",
            )
        return JobError(code=DOWNLOAD_FAILED, message=str(error))

    @staticmethod
    def _succeeded_note(job: Job, report: TaskReport, *, late: bool) -> str:
        made = f"{len(report.outputs)} output(s)" if job.kind.makes_video else "element made"
        return f"{made}, after the deadline (salvaged)" if late else made

    def _finish(self, job: Job, outputs: list[Output], *, element_id: str | None, charge: Charge) -> Result:
        made = element_id or f"{len(outputs)} output(s)"
        settle = Settle(charge)
        cost, _ = settle.apply(job)
        result_key = f"outputs/{job.job_id}/result.json"
        self._storage.put_json(
            result_key,
            {
                "job_id": job.job_id,
                "kind": job.kind.value,
                "provider": job.provider,
                "provider_task_id": job.provider_task_id,
                "request": job.request,
                "inputs": {name: facts.model_dump(mode="json") for name, facts in job.inputs.items()},
                "outputs": [o.model_dump(mode="json") for o in outputs],
                **({"element_id": element_id} if element_id else {}),
                "cost": cost.model_dump(mode="json"),
                "late": job.late,
                "metadata": job.metadata,
                "archived_at": iso(self._clock.now()),
            },
        )
        done = self._store.transition(
            job.job_id,
            JobStatus.ARCHIVED,
            by="archive",
            note=f"element {element_id}"
            if element_id
            else f"{len(outputs)} output(s) in s3://{self._storage.bucket}/outputs/{job.job_id}/",
            fields={
                "element_id": element_id,
                "outputs": [o.model_dump(mode="json") for o in outputs],
                "result_key": result_key,
            },
            removes=("archive_lease", "archive_lease_until", "archive_error"),
            announce=DetailType.COMPLETED.value,
            money=settle,
        )
        if done is None:
            return Done(ArchiveOutcome.IGNORED, "archived by another worker")
        announce(self._store, self._events, done, DetailType.COMPLETED)
        return Done(ArchiveOutcome.ARCHIVED, made)

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
                key, chunks, part_size=self._config.part_size_bytes, content_type=content_type
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
            max_bytes=self._config.max_output_bytes,
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

    def _invalid(self, job: Job, lease: str, invalid: OutputInvalid, charge: Charge) -> Result:
        """A download that is not what it claims counts like a failed one (the sweeper brings the
        job back while the provider's link lives: a CDN that served an error page or half a file
        may serve the clip next time), up to `max_invalid_downloads`. Then the job fails, settled:
        the provider did charge for the task."""
        where = self._storage.uri(quarantine_prefix(job.job_id))
        seen = job.invalid_downloads + 1  # `job` as leased: only a lease holder counts
        if seen < self._config.max_invalid_downloads:
            error = JobError(code=OUTPUT_INVALID, message=f"{invalid}; the bytes are kept under {where}")
            # (None: the lease ran out and another worker has the job; its outcome stands.)
            self._store.drop_lease(job.job_id, lease, error, invalid=True)
            return Done(ArchiveOutcome.OUTPUT_INVALID, f"{invalid} (download {seen}, tried again later)")
        message = (
            f"{invalid}; {seen} downloads were not a video. {job.provider} charged for task "
            f"{job.provider_task_id}: the bytes are kept under {where} for a person to look at; "
            "ask the provider for the clip"
        )
        # Ended under the lease, in the one write: were it given back first, a duplicate message
        # could take it meanwhile and archive a clip that has come right, racing this ending.
        condition, values = self._store.lease_held(lease)
        ended = end_job(
            self._store,
            self._events,
            job.job_id,
            JobStatus.FAILED,
            by="archive",
            code=OUTPUT_INVALID,
            message=message,
            money=Settle(charge),
            only_from=frozenset({JobStatus.SUCCEEDED}),
            fields={"invalid_downloads": seen},
            removes=("archive_lease", "archive_lease_until"),
            extra_condition=condition,
            extra_values=values,
        )
        if ended is None:
            return Done(
                ArchiveOutcome.OUTPUT_INVALID,
                f"{invalid} (download {seen}); the job's lease ran out and passed to another "
                "worker, whose outcome stands",
            )
        return Done(ArchiveOutcome.OUTPUT_INVALID, message)

    def _fail(self, job: Job, message: str, charge: Charge) -> Result:
        # The provider says it finished, so it charged, even though there is nothing to keep.
        end_job(
            self._store,
            self._events,
            job.job_id,
            JobStatus.FAILED,
            by="archive",
            code="NO_OUTPUTS",
            message=message,
            money=Settle(charge),
        )
        return Done(ArchiveOutcome.FAILED, message)


def _header_safe(text: str, limit: int = 512) -> str:
    """Text an S3 metadata header can carry: printable ASCII, bounded (2 KB for all of them)."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:limit]
