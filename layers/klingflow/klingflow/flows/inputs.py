"""A request's media as submit sees them: probed where they are (ranged reads of our bucket),
base64 images decoded and probed, stored beside the job once it exists, and handed to a
provider as links.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from klingflow.core.errors import FieldError, RequestRejected
from klingflow.core.kinds import AnyRequest, MediaRef
from klingflow.core.media_rules import check_media, facts_from_probe, format_from_name
from klingflow.core.models import Job, MediaFacts
from klingflow.core.payload import is_base64
from klingflow.core.probe import probe_image, probe_video
from klingflow.core.probe_reader import BytesReader, ImageInfo, ProbeError, VideoInfo
from klingflow.core.states import JobStatus
from klingflow.infra.storage import Storage

_DATA_URI = re.compile(r"^data:image/(?P<subtype>[a-z]+);base64,", re.IGNORECASE)
# Where a job's base64 images are stored: incoming/<job id, a ULID>/.
_JOB_FOLDER = re.compile(r"incoming/[0-9A-HJKMNP-TV-Z]{26}")


@dataclass(frozen=True)
class Input:
    facts: MediaFacts
    key: str | None  # set when the input is an object in our bucket
    url: str | None  # set when the input is an https URL the provider fetches itself
    # A base64 image to be stored at `key` once the job is (`Inputs.write`): nothing of
    # a rejected request, or of a race's loser, may be left in the bucket.
    pending: bytes | None = None


class Inputs:
    def __init__(self, storage: Storage, *, url_ttl_s: int) -> None:
        self._storage = storage
        self._url_ttl_s = url_ttl_s

    def inspect(self, job_id: str, request: AnyRequest) -> dict[str, Input]:
        errors: list[FieldError] = []
        found: dict[str, Input] = {}
        for media in request.media():
            try:
                found[media.name] = self._inspect_one(job_id, media)
            except RequestRejected as rejection:
                errors.extend(rejection.errors)
        errors.extend(check_media(request, {name: value.facts for name, value in found.items()}))
        if errors:
            raise RequestRejected(errors)
        return found

    def write(self, inputs: dict[str, Input]) -> None:
        """Store the base64 images of a job whose create has just won.

        After the create, not before: written first, an image would be left behind by every
        request that then loses an idempotency race or cannot be stored, with nothing to delete
        it. Written after, the job exists a moment before its image, so nothing may read the
        image until it is there: this job is sent (or queued for sending) only after this
        returns; a repeat of the request that finds the job QUEUED (a race's loser, the
        trigger's retry after a crash between the two writes) writes the same bytes to the same
        key before sending it (`restore`); and the dispatcher fails a job whose stored image
        is missing rather than send a link to nothing. Every such write is conditional on the
        key being empty (`put_new`): whoever writes first stores the one version the bucket keeps.
        """
        for value in inputs.values():
            if value.pending is not None and value.key is not None:
                self._storage.put_new(value.key, value.pending, value.facts.content_type or "image/png")

    def restore(self, stored: Job, request: AnyRequest) -> None:
        """Before a repeat of a stored request may send its job (still QUEUED), the job's
        base64 images are where it expects them: the same bytes at the same key, written only if
        the key is empty, so however many repeats race, the bucket holds one version per image."""
        if stored.status is not JobStatus.QUEUED:
            return  # sent already: its images were there
        expected = {media.name: media.ref for media in stored.parsed_request.media()}
        for media in request.media():
            key = expected.get(media.name, "")
            if not (media.is_image and is_base64(media.ref) and _holds_base64(key, media.name)):
                continue
            try:
                data = base64.b64decode(_DATA_URI.sub("", media.ref, count=1), validate=True)
            except (binascii.Error, ValueError):
                continue  # not the bytes the job was made from (a job older than fingerprints)
            facts = stored.inputs.get(media.name)
            self._storage.put_new(key, data, (facts.content_type if facts else None) or "image/png")

    def missing(self, request: AnyRequest) -> list[str]:
        """The fields whose base64 image intake stores beside the job and which are not there."""
        missing = []
        for media in request.media():
            if media.is_image and _holds_base64(media.ref, media.name):
                try:
                    self._storage.head(media.name, media.ref)
                except RequestRejected:
                    missing.append(media.name)
        return missing

    def provider_url(self, ref: str) -> str:
        if ref.startswith("https://"):
            return ref
        return self._storage.presign_get(ref, self._url_ttl_s)

    def _inspect_one(self, job_id: str, media: MediaRef) -> Input:
        field, ref, kind = media.name, media.ref, "image" if media.is_image else "video"
        if ref.startswith("https://"):
            # A provider fetches it itself; all we can check is what the name says.
            return Input(MediaFacts(source=ref, format=format_from_name(ref)), None, ref)
        if kind == "image" and is_base64(ref):
            return self._store_base64_image(job_id, field, ref)
        key = self._storage.key_of(field, ref)
        info = self._storage.head(field, key)
        reader = self._storage.reader(info)
        probed: ImageInfo | VideoInfo
        try:
            probed = probe_image(reader) if kind == "image" else probe_video(reader)
        except ProbeError as error:
            raise RequestRejected(
                [FieldError(field, f"{kind}_{error.rule}", f"{self._storage.uri(key)}: {error}")]
            ) from None
        return Input(facts_from_probe(self._storage.uri(key), probed, info.content_type), key, None)

    def _store_base64_image(self, job_id: str, field: str, ref: str) -> Input:
        # Its size was bounded when the request was parsed (core/payload.py: every base64 image
        # of a request together within what one invocation carries, far under IMAGE_MAX_BYTES).
        payload = _DATA_URI.sub("", ref, count=1)
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise RequestRejected(
                [FieldError(field, "base64", "image is neither a reference nor valid base64")]
            ) from None
        try:
            probed = probe_image(BytesReader(data))
        except ProbeError as error:
            raise RequestRejected([FieldError(field, f"image_{error.rule}", str(error))]) from None
        # Stored in the bucket once the request is accepted (a DynamoDB item cannot hold it) and
        # handed over as a URL, which every dialect accepts.
        key = f"incoming/{job_id}/{field}.{'jpg' if probed.format == 'jpeg' else probed.format}"
        facts = facts_from_probe(self._storage.uri(key), probed, f"image/{probed.format}")
        return Input(facts, key, None, pending=data)


def _holds_base64(key: str, field: str) -> bool:
    """Whether `key` is where intake stores a base64 image given as `field`: in the job's own
    folder under incoming/ (named by its ULID), named by the field (`_store_base64_image`)."""
    folder, _, name = key.rpartition("/")
    return _JOB_FOLDER.fullmatch(folder) is not None and name.rpartition(".")[0] == field
