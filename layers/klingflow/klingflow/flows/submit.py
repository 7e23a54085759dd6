"""Submit: what the submit function does, one door per trigger.

A request is accepted (validated, probed, priced, stored: `accept.py`), a manifest under
incoming/ read into one (`manifests.py`), and a stored job sent to a provider, paying at most
once (`dispatch.py`).
"""

from __future__ import annotations

from typing import Any

from klingflow.core.models import Job, Source
from klingflow.core.outcomes import Done, SubmitOutcome

from .accept import Acceptor
from .dispatch import Dispatcher
from .manifests import Manifests


class Intake:
    def __init__(self, *, acceptor: Acceptor, manifests: Manifests, dispatcher: Dispatcher) -> None:
        self._acceptor = acceptor
        self._manifests = manifests
        self._dispatcher = dispatcher

    def accept(
        self, data: Any, source: Source, *, idempotency_key: str | None = None, defer: bool = False
    ) -> Job:
        """Validate, store and (unless `defer`red to the submit queue) send one request."""
        return self._acceptor.accept(data, source, idempotency_key=idempotency_key, defer=defer)

    def quote(self, data: Any) -> dict[str, Any]:
        """Each provider's price for a request, validated like POST /jobs; stores nothing."""
        return self._acceptor.quote(data)

    def accept_manifest(self, key: str, *, delivery: str) -> Job | None:
        """A manifest under incoming/ as a job, or None and a report under rejected/."""
        return self._manifests.accept(key, delivery=delivery)

    def submit_queued(self, job_id: str) -> Done[SubmitOutcome]:
        """Send a job the API accepted and queued."""
        return self._dispatcher.submit_queued(job_id)
