"""Submit: what the submit function does, one door per trigger.

A request is accepted (validated, probed, priced, stored and queued: `accept.py`), whether it
came from POST /jobs, a manifest under incoming/ (`manifests.py`) or a `Job Requested` event;
only the submit queue's consumer sends a stored job to a provider, paying at most once
(`dispatch.py`), so the queue's concurrency caps every provider call.
"""

from __future__ import annotations

from typing import Any

from klingflow.core.models import Job, Source
from klingflow.core.outcomes import Done, SubmitOutcome
from klingflow.core.states import JobStatus

from .accept import Acceptor
from .dispatch import Dispatcher
from .manifests import Manifests


class Intake:
    def __init__(self, *, acceptor: Acceptor, manifests: Manifests, dispatcher: Dispatcher) -> None:
        self._acceptor = acceptor
        self._manifests = manifests
        self._dispatcher = dispatcher

    def accept(self, data: Any, source: Source, *, idempotency_key: str | None = None) -> Job:
        """Validate and store one request, QUEUED, and hand it to the submit queue."""
        return self._acceptor.accept(data, source, idempotency_key=idempotency_key)

    def quote(self, data: Any) -> dict[str, Any]:
        """Each provider's price for a request, validated like POST /jobs; stores nothing."""
        return self._acceptor.quote(data)

    def accept_manifest(self, key: str, *, delivery: str) -> Job | None:
        """A manifest under incoming/ as a job, or None and a report under rejected/."""
        return self._manifests.accept(key, delivery=delivery)

    def submit_queued(self, job_id: str) -> Done[SubmitOutcome]:
        """Send a job taken from the submit queue; a manifest's job the day's budget refused
        when it was claimed gets its report under rejected/, as a refused manifest does."""
        done, job = self._dispatcher.submit_queued(job_id)
        # Whatever this delivery did: a redelivery after a crash between the claim that failed
        # the job and its report finds the job FAILED already, and writes the report then.
        if job is not None and job.status is JobStatus.FAILED:
            self._manifests.report_failed(job)
        return done
