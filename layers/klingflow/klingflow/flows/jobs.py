"""The read model behind GET /jobs, GET /jobs/{job_id}, GET /spend and GET /elements."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import TYPE_CHECKING, Any

from klingflow.core.clock import Clock, epoch
from klingflow.core.errors import FieldError, JobNotFound, QueryRejected
from klingflow.core.models import Job, WebhookDelivery
from klingflow.core.params import whole_number
from klingflow.core.states import JobStatus
from klingflow.jobs.elements import ElementDirectory
from klingflow.jobs.store import JobStore
from klingflow.money.ledger import Ledger

from .configs import QueriesConfig

if TYPE_CHECKING:
    from klingflow.infra.storage import Storage


class JobQueries:
    def __init__(
        self,
        *,
        store: JobStore,
        storage: Callable[[], Storage],
        ledger: Ledger,
        elements: ElementDirectory,
        clock: Clock,
        config: QueriesConfig,
    ) -> None:
        self._clock = clock
        self._elements = elements
        self._ledger = ledger
        self._store = store
        # The bucket's client is built by the first request that shows an archived job's links:
        # listing, spend, elements and live jobs never need it (S3's model costs a cold start
        # 45-100 ms).
        self._storage = storage
        self._link_ttl_s = config.output_link_ttl_s
        self._max_page_size = config.max_page_size

    def get(self, job_id: str) -> dict[str, Any]:
        job = self._store.get(job_id)
        if job is None:
            raise JobNotFound(f"no job {job_id!r}")
        view = job.model_dump(mode="json", exclude={"due_at", "hint_status", "callbacks", "polls", "eta_at"})
        view.update(self._progress(job))
        hook = job.request.get("webhook")
        if job.webhook is None and isinstance(hook, dict) and hook.get("url"):
            # Not tried yet: the same shape as after the first try.
            view["webhook"] = WebhookDelivery(url=str(hook["url"])).model_dump(mode="json")
        if job.error is not None:
            view["error"] = job.error.model_dump(mode="json", exclude_none=True)
        for output in view["outputs"]:
            # Links expire; the S3 URI is the durable name.
            output["url"] = self._storage().presign_get(output["key"], self._link_ttl_s)
        if job.result_key:
            view["result_url"] = self._storage().presign_get(job.result_key, self._link_ttl_s)
        return view

    def list(self, *, limit: str | None, next_token: str | None, status: str | None) -> dict[str, Any]:
        page_size = self._page_size(limit)
        wanted = None
        if status:
            try:
                wanted = JobStatus(status.upper())
            except ValueError:
                raise QueryRejected(
                    [
                        FieldError(
                            "status", "job_status", f"status must be one of {[s.value for s in JobStatus]}"
                        )
                    ]
                ) from None
        page = self._store.list_jobs(limit=page_size, next_token=next_token, status=wanted)
        return {"jobs": [_summary(job) for job in page.jobs], "next_token": page.next_token}

    def _progress(self, job: Job) -> dict[str, Any]:
        """`progress` (0..100, or null when no provider said) and `eta_s` (seconds the provider
        expects the task still to take, or null)."""
        if job.status in (JobStatus.SUCCEEDED, JobStatus.ARCHIVED):
            return {"progress": 100, "eta_s": 0}
        if job.status.terminal or job.eta_at is None:
            return {"progress": job.progress, "eta_s": None}
        return {"progress": job.progress, "eta_s": max(0, job.eta_at - epoch(self._clock.now()))}

    def elements(self, *, limit: str | None, next_token: str | None) -> dict[str, Any]:
        """The elements klingflow made, newest first (deleted ones say so)."""
        page = self._elements.page(limit=self._page_size(limit), next_token=next_token)
        return page.model_dump(mode="json")

    def spend(self, day: str | None) -> dict[str, Any]:
        """A UTC day's budget, reserved, settled and remaining (today when no day is given)."""
        if day is None:
            return self._ledger.report(self._ledger.today())
        try:
            parsed = date.fromisoformat(day)
        except ValueError:
            parsed = None
        if parsed is None or parsed.isoformat() != day:
            raise QueryRejected([FieldError("day", "iso_date", "day must be a date as YYYY-MM-DD (UTC)")])
        return self._ledger.report(day)

    def _page_size(self, limit: str | None) -> int:
        return whole_number(
            "limit", limit, default=min(50, self._max_page_size), low=1, high=self._max_page_size
        )


def _summary(job: Job) -> dict[str, Any]:
    return {
        "job_id": job.job_id,
        "kind": job.kind.value,
        "status": job.status.value,
        "provider": job.provider,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "cost": job.cost.model_dump(mode="json", exclude_none=True),
        "error": job.error.model_dump(mode="json", exclude_none=True) if job.error else None,
        "metadata": job.metadata,
        "source": job.source.model_dump(mode="json"),
    }
