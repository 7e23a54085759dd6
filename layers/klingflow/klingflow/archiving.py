"""Archive: confirm with the provider, copy every output into S3, finish the job.

A custom_element job has no file to copy: its outcome is the element id, which is recorded in
the job and in result.json the same way.

Runs from the archive queue. Anything transient raises, so SQS redelivers the message (and,
after five tries, parks it in the DLQ while the sweeper keeps re-enqueuing the job). Anything
permanent (the provider says failed; an output URL we must not fetch) ends the job with a reason.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from aws_lambda_powertools import Logger

from .clock import Clock, iso
from .endings import announce, end_job
from .errors import UnsafeUrl
from .events import EventPublisher
from .kinds import billable_seconds
from .models import Cost, DetailType, Job, Output
from .pricing import billing_of
from .probe import ProbeError, probe_video
from .providers.base import Download, TaskReport
from .providers.registry import Registry
from .safehttp import SafeHttp
from .states import JobStatus
from .storage import Storage
from .store import JobStore

logger = Logger(child=True)


@dataclass(frozen=True)
class ArchiveConfig:
    max_output_bytes: int
    part_size_bytes: int
    archive_stall_s: int
    poll_again_s: int


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
    ) -> None:
        self._store = store
        self._storage = storage
        self._events = events
        self._registry = registry
        self._http = http
        self._clock = clock
        self._config = config

    def archive(self, job_id: str) -> str:
        """Bring one job as far as the provider's own answer allows; returns what happened."""
        job = self._store.get(job_id)
        if job is None:
            return "ignored: unknown job"
        if job.status.terminal:
            return f"ignored: already {job.status.value}"
        if job.provider is None or job.provider_task_id is None:
            return "ignored: not submitted yet"
        report = self._registry.task_report(job.provider, job.provider_task_id, job.kind, made=job.element_id)
        match report.status:
            case JobStatus.SUCCEEDED:
                return self._copy_outputs(job, report)
            case JobStatus.FAILED | JobStatus.CANCELLED:
                return self._provider_failed(job, report)
            case JobStatus.RUNNING if job.status is JobStatus.SUBMITTED:
                self._store.transition(
                    job_id, JobStatus.RUNNING, by="archive", due_in_s=self._config.poll_again_s
                )
                return "still running"
            case _:
                # The hint was early (or forged): the sweeper keeps polling.
                return f"not finished: provider says {report.provider_status!r}"

    def _provider_failed(self, job: Job, report: TaskReport) -> str:
        target = JobStatus.CANCELLED if report.status is JobStatus.CANCELLED else JobStatus.FAILED
        code = report.error_code or (
            "PROVIDER_CANCELLED" if target is JobStatus.CANCELLED else "PROVIDER_FAILED"
        )
        message = report.error_message or f"{job.provider} reports the task {report.provider_status}"
        end_job(self._store, self._events, job.job_id, target, by="archive", code=code, message=message)
        return f"failed: {message}"

    def _copy_outputs(self, job: Job, report: TaskReport) -> str:
        provider, task_id = job.provider, job.provider_task_id
        assert provider is not None and task_id is not None
        if job.status is not JobStatus.SUCCEEDED:
            moved = self._store.transition(
                job.job_id,
                JobStatus.SUCCEEDED,
                by="archive",
                note=f"{len(report.outputs)} output(s)" if job.kind.makes_video else "element made",
                due_in_s=self._config.archive_stall_s,
            )
            job = moved or self._store.get(job.job_id) or job
            if job.status is not JobStatus.SUCCEEDED:
                return f"ignored: now {job.status.value}"
        if not job.kind.makes_video:
            if report.element_id is None:
                return self._fail(job, "NO_OUTPUTS", f"{job.provider} reports success but no element_id")
            return self._finish(job, [], element_id=report.element_id, cost=self._billed(job, report))
        if not report.outputs:
            return self._fail(job, "NO_OUTPUTS", f"{job.provider} reports success but lists no output")
        adapter = self._registry.adapter(provider)
        outputs = []
        for index, produced in enumerate(report.outputs, start=1):
            download = adapter.download(task_id, produced)
            try:
                outputs.append(self._copy_one(job, index, download))
            except UnsafeUrl:
                # A link we may not fetch (host not allowed, redirect elsewhere): the dialect's
                # own content endpoint if it has one; otherwise it raises and is retried, then
                # dead-lettered and alarmed, because a paid output must not be dropped on a
                # policy an operator can correct (download_hosts).
                fallback = adapter.content_endpoint(task_id)
                if fallback is None or fallback.url == download.url:
                    raise
                outputs.append(self._copy_one(job, index, fallback))
        return self._finish(job, outputs, element_id=None, cost=self._billed(job, report))

    def _finish(self, job: Job, outputs: list[Output], *, element_id: str | None, cost: Cost) -> str:
        made = element_id or f"{len(outputs)} output(s)"
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
                "cost": cost.model_dump(mode="json", exclude_none=True),
                "result_key": result_key,
            },
            announce=DetailType.COMPLETED.value,
        )
        if done is None:
            return "ignored: archived by another worker"
        announce(self._store, self._events, done, DetailType.COMPLETED)
        return f"archived {made}"

    def _copy_one(self, job: Job, index: int, download: Download) -> Output:
        assert job.provider is not None
        headers: dict[str, str] = {}
        if download.authenticated:
            adapter = self._registry.adapter(job.provider)
            headers = adapter.auth_headers(self._registry.credentials(job.provider))
        key = f"outputs/{job.job_id}/output-{index}.mp4"
        with self._http.stream(
            download.url,
            allowed_hosts=self._registry.download_hosts(job.provider),
            max_bytes=self._config.max_output_bytes,
            headers=headers,
        ) as response:
            stored = self._storage.upload_stream(
                key, response.iter_bytes(256 * 1024), part_size=self._config.part_size_bytes
            )
        duration = width = height = None
        try:
            info = self._storage.head("output", key)
            video = probe_video(self._storage.reader(info))
            duration, width, height = round(video.duration_s, 3), video.width, video.height
        except ProbeError as error:
            # The bytes are safely ours either way; a probe failure only leaves facts empty.
            logger.warning("output not probed", extra={"job_id": job.job_id, "key": key, "error": str(error)})
        return Output(
            s3_uri=self._storage.uri(key),
            key=key,
            bytes=stored.bytes,
            sha256=stored.sha256,
            duration_s=duration,
            width=width,
            height=height,
        )

    def _billed(self, job: Job, report: TaskReport) -> Cost:
        """Billed cost: the seconds the provider reports, else what the job itself implies (the
        probed reference video, the clip length asked for, or the flat price)."""
        assert job.provider is not None
        billing = billing_of(job.parsed_request, job.inputs)
        reported = billable_seconds(report.billed_seconds)
        # The job's own rule wins (a 5 s clip reported as 5.04 s is billed 5 s); what the
        # provider reports only stands in for a duration we could not measure.
        if billing.upper_bound and reported is not None:
            billing = replace(billing, seconds=reported, upper_bound=False)
        if billing.upper_bound:
            return job.cost.model_copy(update={"billed_seconds": None})
        return job.cost.model_copy(
            update={
                "billed_usd": self._registry.price_usd(job.provider, job.kind, billing),
                "provider_amount": self._registry.price(job.provider, job.kind, billing),
                "currency": self._registry.configs[job.provider].currency,
                "billed_seconds": None if billing.flat else billing.seconds,
            }
        )

    def _fail(self, job: Job, code: str, message: str) -> str:
        end_job(
            self._store, self._events, job.job_id, JobStatus.FAILED, by="archive", code=code, message=message
        )
        return f"failed: {message}"
