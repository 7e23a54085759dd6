"""Manifests: a JSON request dropped under incoming/ becomes a job, or a report under rejected/."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from klingflow.core.clock import Clock, iso
from klingflow.core.errors import BudgetExceeded, FieldError, KlingflowError, Refused, RequestRejected
from klingflow.core.kinds import parse_request, with_media
from klingflow.core.models import Job, Source
from klingflow.core.states import JobStatus
from klingflow.infra.storage import Storage

from .accept import Acceptor
from .configs import MAX_MANIFEST_BYTES


class Manifests:
    def __init__(
        self,
        *,
        storage: Storage,
        acceptor: Acceptor,
        clock: Clock,
        max_manifest_bytes: int = MAX_MANIFEST_BYTES,
    ) -> None:
        self._storage = storage
        self._acceptor = acceptor
        self._clock = clock
        self._max_manifest_bytes = max_manifest_bytes

    def accept(self, key: str, *, delivery: str) -> Job | None:
        """A manifest dropped under incoming/. One that cannot become a job gets an error report
        under rejected/ (the manifest itself stays where it is); None is returned for it.

        `delivery` identifies this upload (version id or sequencer), so a redelivered S3 event
        finds the job the first delivery made while a new upload of the same name is a new job.
        """
        source = Source(type="s3", ref=self._storage.uri(key))
        try:
            data = _relative_to(key, json.loads(self._storage.read_small(key, self._max_manifest_bytes)))
        except (ValueError, RecursionError) as error:  # not UTF-8, not JSON, or nested past parsing
            reason = "nested too deeply" if isinstance(error, RecursionError) else str(error)
            rejection = RequestRejected([FieldError("(manifest)", "json", f"not valid JSON: {reason}")])
            self._acceptor.reject(None, source, rejection)
            self._report(key, rejection)
            return None
        except Refused as rejection:
            self._acceptor.reject(None, source, rejection)
            self._report(key, rejection)
            return None
        try:
            # Stored QUEUED and handed to the submit queue, whose consumer sends it.
            return self._acceptor.accept(data, source, idempotency_key=f"s3:{key}:{delivery}")
        except Refused as rejection:
            self._report(key, rejection)
            return None

    def report_failed(self, job: Job) -> None:
        """A manifest's job accepted, then refused by the day's budget when the submit queue
        claimed it: the manifest's owner looks in rejected/ for what became of it."""
        prefix = self._storage.uri("")
        ref = job.source.ref or ""
        if job.source.type != "s3" or not ref.startswith(prefix) or job.status is not JobStatus.FAILED:
            return
        if job.error is not None and job.error.code == BudgetExceeded.code:
            self._report(
                ref.removeprefix(prefix),
                {"job_id": job.job_id, "error": job.error.model_dump(mode="json", exclude_none=True)},
            )

    def _report(self, key: str, rejection: KlingflowError | dict[str, Any]) -> None:
        self._storage.put_json(
            report_key(key),
            {
                "manifest": self._storage.uri(key),
                "rejected_at": iso(self._clock.now()),
                **(rejection.body() if isinstance(rejection, KlingflowError) else rejection),
            },
        )


# S3 keys are at most 1,024 bytes of UTF-8; "rejected/" + name + ".error.json" is 6 bytes more
# than the "incoming/" + name + ".json" it reports on.
S3_KEY_MAX_BYTES = 1024
_REPORT_PREFIX, _REPORT_SUFFIX = "rejected/", ".error.json"


def report_key(manifest_key: str) -> str:
    """Where the report on a refused manifest goes: beside its name under rejected/, or, for a
    name too long to fit, its leading part and a digest of the whole key (the report names the
    manifest in full)."""
    name = manifest_key.removeprefix("incoming/").removesuffix(".json")
    key = f"{_REPORT_PREFIX}{name}{_REPORT_SUFFIX}"
    if len(key.encode()) <= S3_KEY_MAX_BYTES:
        return key
    digest = "~" + hashlib.sha256(manifest_key.encode()).hexdigest()[:16]
    room = S3_KEY_MAX_BYTES - len(_REPORT_PREFIX) - len(_REPORT_SUFFIX) - len(digest)
    head = name.encode()[:room].decode(errors="ignore")  # never half a character
    return f"{_REPORT_PREFIX}{head}{digest}{_REPORT_SUFFIX}"


def _relative_to(manifest_key: str, data: Any) -> Any:
    """Bare file names in a manifest name objects beside it (incoming/a.json -> incoming/x.png).

    The request is parsed first to learn where its media are; one that does not parse is
    returned as it is, to be rejected with its own errors.
    """
    folder = manifest_key.rpartition("/")[0]
    if not isinstance(data, dict) or not folder:
        return data
    try:
        request = parse_request(data)
    except RequestRejected:
        return data
    beside = {
        media.name: f"{folder}/{media.ref}"
        for media in request.media()
        if "/" not in media.ref and ":" not in media.ref and 0 < len(media.ref) < 256
    }
    if not beside:
        return data
    resolved = with_media(request, beside).model_dump(mode="json", exclude_none=True)
    # Only the media change: everything else stays as the user wrote it.
    return {**data, **{key: resolved[key] for key in resolved if key in data}}
