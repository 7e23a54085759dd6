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

import httpx

from klingflow.core.clock import Clock, epoch, iso
from klingflow.core.codes import Actor, JobErrorCode
from klingflow.core.errors import ProviderError, UnsafeUrl
from klingflow.core.models import DetailType, Job, JobError, Output
from klingflow.core.outcomes import ArchiveOutcome, Done
from klingflow.core.outputcheck import OutputInvalid, quarantine_prefix
from klingflow.core.states import JobStatus
from klingflow.infra.events import EventPublisher
from klingflow.infra.safehttp import DownloadFailed, SafeHttp
from klingflow.infra.storage import Storage
from klingflow.jobs.elements import ElementDirectory
from klingflow.jobs.endings import announce, end_job, stop_watching
from klingflow.jobs.store import JobStore
from klingflow.jobs.writes import LeaseHeld
from klingflow.money.pricing import charged
from klingflow.money.settlement import Charge, Release, Settle
from klingflow.providers.base import TaskReport
from klingflow.providers.registry import Registry

from .archive_outputs import OutputCopier
from .configs import ArchiveConfig

Result = Done[ArchiveOutcome]


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
        self._clock = clock
        self._config = config
        self._outputs = OutputCopier(
            storage=storage,
            registry=registry,
            http=http,
            max_output_bytes=config.max_output_bytes,
            part_size_bytes=config.part_size_bytes,
        )

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
                    job_id, JobStatus.RUNNING, by=Actor.ARCHIVE, due_in_s=self._config.poll_again_s
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
            JobErrorCode.PROVIDER_CANCELLED if target is JobStatus.CANCELLED else JobErrorCode.PROVIDER_FAILED
        )
        end_job(
            self._store,
            self._events,
            job.job_id,
            target,
            by=Actor.ARCHIVE,
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
                by=Actor.ARCHIVE,
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
            outputs = self._outputs.copy_all(job, report)
        except OutputInvalid as invalid:
            return self._invalid(job, lease, invalid, charge)
        except (UnsafeUrl, DownloadFailed, httpx.HTTPError, ProviderError) as error:
            self._store.drop_lease(job.job_id, lease, self._archive_error(error))
            return Done(ArchiveOutcome.RETRY_LATER, f"{type(error).__name__}: {error}")
        except BaseException:
            self._store.drop_lease(job.job_id, lease, None)
            raise
        return self._finish(job, outputs, element_id=None, charge=charge)

    @staticmethod
    def _archive_error(error: Exception) -> JobError:
        if isinstance(error, UnsafeUrl):
            return JobError(
                code=JobErrorCode.OUTPUT_HOST_NOT_ALLOWED,
                message=f"{error.message}; add the host to the provider's download_hosts "
                "(ProviderOverrides) before the job's deadline, or the job fails then",
            )
        return JobError(code=JobErrorCode.DOWNLOAD_FAILED, message=str(error))

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
            by=Actor.ARCHIVE,
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

    def _invalid(self, job: Job, lease: str, invalid: OutputInvalid, charge: Charge) -> Result:
        """A download that is not what it claims counts like a failed one (the sweeper brings the
        job back while the provider's link lives: a CDN that served an error page or half a file
        may serve the clip next time), up to `max_invalid_downloads`. Then the job fails, settled:
        the provider did charge for the task."""
        where = self._storage.uri(quarantine_prefix(job.job_id))
        seen = job.invalid_downloads + 1  # `job` as leased: only a lease holder counts
        if seen < self._config.max_invalid_downloads:
            error = JobError(
                code=JobErrorCode.OUTPUT_INVALID, message=f"{invalid}; the bytes are kept under {where}"
            )
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
        ended = end_job(
            self._store,
            self._events,
            job.job_id,
            JobStatus.FAILED,
            by=Actor.ARCHIVE,
            code=JobErrorCode.OUTPUT_INVALID,
            message=message,
            money=Settle(charge),
            only_from=frozenset({JobStatus.SUCCEEDED}),
            fields={"invalid_downloads": seen},
            removes=("archive_lease", "archive_lease_until"),
            guard=LeaseHeld(lease),
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
            by=Actor.ARCHIVE,
            code=JobErrorCode.NO_OUTPUTS,
            message=message,
            money=Settle(charge),
        )
        return Done(ArchiveOutcome.FAILED, message)
