"""The element registry: every element klingflow makes, which provider account holds it, and
where a job that names elements must go.

An element id means something only in the account that made it. So a job naming elements is
sent to their holder without the user pinning it (and never failed over); a pin to another
account is refused, naming the holder. An id klingflow did not make (a preset, or one made
elsewhere) is only accepted with a pin: klingflow cannot know where it lives.

Records share the jobs table as `ELEMENT#<element_id>` items. They sit in the table's list-index
under their own partition (`list_pk = ELEMENT`), sorted by the id of the job that made them (a
ULID, so newest first is creation order), which pages `GET /elements` without a scan.

An element klingflow did not make, deleted through `DELETE /elements/{id}?provider=X`, gets a
tombstone under the same key (`DeletedElement`: who held it and when it was deleted, outside the
list-index): a claim's check on the key then refuses jobs already queued with it, and intake
refuses new ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, Field

from klingflow.core.clock import Clock, iso
from klingflow.core.codes import ProviderErrorClass
from klingflow.core.errors import (
    ElementNotFound,
    FieldError,
    ProviderError,
    QueryRejected,
    RequestRejected,
)
from klingflow.core.models import Job
from klingflow.core.params import whole_number
from klingflow.infra.dynamo import key_fits

from .items import ELEMENT_PREFIX
from .pages import list_page

if TYPE_CHECKING:
    from klingflow.core.kinds import AnyRequest
    from klingflow.infra.dynamo import Table
    from klingflow.infra.storage import Storage
    from klingflow.providers.registry import Registry

logger = Logger(child=True)
LIST_PK = "ELEMENT"
# Where an element's reference media are kept: incoming/ expires, the element does not.
MEDIA_PREFIX = "elements"


class _Deferred(BaseModel):
    # Built on first use: most events of the functions that load this module touch no element
    # (building the three validators at import cost every cold start ~15 ms).
    model_config = ConfigDict(defer_build=True)


class ElementRecord(_Deferred):
    element_id: str
    provider: str = Field(description="the provider account that holds the element")
    name: str
    description: str
    reference_type: str
    tags: list[str] = Field(default_factory=list)
    voice_id: str | None = None
    media: dict[str, str] = Field(
        default_factory=dict, description="reference media by field: an object key in the bucket or a URL"
    )
    job_id: str = Field(description="the custom_element job that made it")
    created_at: str
    deleted_at: str | None = None
    deleted_at_provider: bool | None = None


class DeletedElement(_Deferred):
    """A deletion recorded for an element klingflow did not make: never listed, never usable."""

    element_id: str
    provider: str = Field(description="the provider account it was deleted from")
    deleted_at: str
    deleted_at_provider: bool | None = None


class ElementPage(_Deferred):
    elements: list[ElementRecord]
    next_token: str | None = None


class ElementStore:
    """ELEMENT# items in the jobs table."""

    def __init__(self, table: Table) -> None:
        self._table = table

    @staticmethod
    def _key(element_id: str) -> dict[str, str]:
        return {"pk": f"{ELEMENT_PREFIX}{element_id}"}

    def put(self, record: ElementRecord) -> None:
        """Once per element: a redelivered archive finds it recorded and changes nothing."""
        item = {**self._key(record.element_id), "list_pk": LIST_PK, **record.model_dump(exclude_none=True)}
        try:
            self._table.put_item(Item=item, ConditionExpression="attribute_not_exists(pk)")
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise

    def get(self, element_id: str) -> ElementRecord | DeletedElement | None:
        if not key_fits(element_id):
            return None  # no element has such an id, and DynamoDB would refuse the key outright
        item = self._table.get_item(Key=self._key(element_id), ConsistentRead=True).get("Item")
        return None if item is None else _record(item)

    def get_many(self, element_ids: Sequence[str]) -> dict[str, ElementRecord | DeletedElement]:
        found: dict[str, ElementRecord | DeletedElement] = {}
        for element_id in dict.fromkeys(element_ids):  # a job names few elements
            record = self.get(element_id)
            if record is not None:
                found[element_id] = record
        return found

    def mark_deleted(self, element_id: str, at: str, *, at_provider: bool) -> ElementRecord | None:
        """Marked once; None when there is no record or it was already marked."""
        try:
            answer = self._table.update_item(
                Key=self._key(element_id),
                UpdateExpression="SET deleted_at = :at, deleted_at_provider = :p",
                ConditionExpression="attribute_exists(pk) AND attribute_not_exists(deleted_at)",
                ExpressionAttributeValues={":at": at, ":p": at_provider},
                ReturnValues="ALL_NEW",
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return None
            raise
        return _made(answer["Attributes"])

    def bury(self, tombstone: DeletedElement) -> DeletedElement | None:
        """Record the deletion of an element klingflow did not make, once; without `list_pk`, so
        GET /elements never lists it. None when the key holds something already (a record, or
        an earlier tombstone): that stands."""
        item = {**self._key(tombstone.element_id), **tombstone.model_dump(exclude_none=True)}
        try:
            self._table.put_item(Item=item, ConditionExpression="attribute_not_exists(pk)")
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return None
            raise
        return tombstone

    def page(self, *, limit: int, next_token: str | None = None) -> ElementPage:
        """Newest first; `next_token` is opaque to callers."""
        items, token = list_page(self._table, LIST_PK, limit=limit, next_token=next_token)
        return ElementPage(elements=[_made(item) for item in items], next_token=token)


def _record(item: Any) -> ElementRecord | DeletedElement:
    """A record of an element klingflow made (listed), or a tombstone (not listed)."""
    if "list_pk" in item:
        return _made(item)
    return DeletedElement.model_validate({k: v for k, v in item.items() if k in DeletedElement.model_fields})


def _made(item: Any) -> ElementRecord:
    return ElementRecord.model_validate({k: v for k, v in item.items() if k in ElementRecord.model_fields})


class ElementDirectory:
    """Where a job's elements live, and the record of each element klingflow makes."""

    def __init__(self, store: ElementStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def place(self, request: AnyRequest) -> AnyRequest:
        """The request sent where its elements are held (its `provider` set to the holder), or
        RequestRejected naming the element and the rule."""
        elements: list[str] = list(getattr(request, "elements", None) or [])
        if not elements:
            return request
        known = self._store.get_many(elements)
        errors: list[FieldError] = []
        for index, element_id in enumerate(elements):
            record = known.get(element_id)
            if record is not None and record.deleted_at is not None:
                errors.append(
                    FieldError(
                        f"elements.{index}",
                        "element_deleted",
                        f"element {element_id} was deleted from {record.provider}'s account "
                        f"({record.deleted_at}) and cannot be used: name another element",
                    )
                )
            elif record is not None and request.provider not in (None, record.provider):
                errors.append(
                    FieldError(
                        "provider",
                        "element_holder",
                        f"element {element_id} is held by {record.provider}'s account, not "
                        f"{request.provider}'s: pin {record.provider} or leave provider out",
                    )
                )
            elif record is None and request.provider is None:
                errors.append(
                    FieldError(
                        f"elements.{index}",
                        "element_unknown",
                        f"klingflow did not make element {element_id}, so it cannot tell which account "
                        "holds it: set provider to that account (for a preset, the provider that offers it)",
                    )
                )
        holders = sorted({record.provider for record in known.values()})
        if len(holders) > 1:
            errors.append(
                FieldError(
                    "elements",
                    "elements_one_account",
                    f"the elements are held by different accounts ({', '.join(holders)}); one job can "
                    "use elements of one account only",
                )
            )
        if errors:
            raise RequestRejected(errors)
        if request.provider is None:
            return request.model_copy(update={"provider": holders[0]})
        return request

    def record(self, job: Job, element_id: str, storage: Storage) -> ElementRecord:
        """Record an element a job made, its reference media copied under elements/ (uploads
        under incoming/ expire with UploadRetentionDays; the element stays usable)."""
        from klingflow.core.kind_element import (  # noqa: PLC0415 (the read API never records)
            CustomElementRequest,
        )

        request = job.parsed_request
        assert isinstance(request, CustomElementRequest) and job.provider is not None
        media: dict[str, str] = {}
        for ref in request.media():
            media[ref.name] = ref.ref
            if ref.ref.startswith(("https://", "http://")):
                continue  # a URL the user gave: recorded as given
            target = f"{MEDIA_PREFIX}/{element_id}/{ref.name}-{ref.ref.rsplit('/', 1)[-1]}"
            try:
                storage.copy(ref.ref, target)
            except ClientError as error:
                # The upload expired or was deleted: the element (paid for) is recorded anyway,
                # naming where its media were.
                logger.warning(
                    "element media not kept", extra={"element_id": element_id, "error": str(error)}
                )
                continue
            media[ref.name] = target
        record = ElementRecord(
            element_id=element_id,
            provider=job.provider,
            name=request.name,
            description=request.description,
            reference_type=request.reference_type,
            tags=request.tags,
            voice_id=request.voice_id,
            media=media,
            job_id=job.job_id,
            created_at=iso(self._clock.now()),
        )
        self._store.put(record)
        return record

    def find(self, element_id: str) -> ElementRecord | DeletedElement | None:
        return self._store.get(element_id)

    def get(self, element_id: str) -> ElementRecord:
        record = self._store.get(element_id)
        if not isinstance(record, ElementRecord):  # none, or only a tombstone: not one we made
            raise ElementNotFound(f"no element {element_id!r} made by klingflow")
        return record

    def page(self, *, limit: int, next_token: str | None = None) -> ElementPage:
        return self._store.page(limit=limit, next_token=next_token)

    def mark_deleted(self, element_id: str, *, at_provider: bool) -> ElementRecord:
        record = self._store.mark_deleted(element_id, iso(self._clock.now()), at_provider=at_provider)
        if record is None:
            return self.get(element_id)  # marked already (a retried DELETE), or ElementNotFound
        return record

    def bury(self, element_id: str, provider: str, *, at_provider: bool) -> None:
        """Record that an element klingflow did not make was deleted from `provider`'s account,
        so that no job, queued or new, uses it. What the key already holds stands (a retried
        DELETE's tombstone)."""
        tombstone = DeletedElement(
            element_id=element_id,
            provider=provider,
            deleted_at=iso(self._clock.now()),
            deleted_at_provider=at_provider,
        )
        self._store.bury(tombstone)


# the gateway's manual's paging of the provider's element lists.
PAGE_NUM = (1, 1000)
PAGE_SIZE = (1, 500)


class ElementAdmin:
    """What /elements does beyond our registry: the provider's own lists, and deletes."""

    def __init__(self, directory: ElementDirectory, registry: Registry) -> None:
        self._directory = directory
        self._registry = registry

    def _listing_provider(self, provider: str | None) -> str:
        able = [
            name
            for name, config in self._registry.configs.items()
            if config.configured
            and self._registry.adapter(name).list_elements(presets=True, page_num=1, page_size=1) is not None
        ]
        if provider is None and len(able) == 1:
            return able[0]
        if provider is None or provider not in able:
            given = "give provider" if provider is None else f"{provider!r} documents no element list"
            raise QueryRejected(
                [FieldError("provider", "lists_elements", f"{given}; providers that list elements: {able}")]
            )
        return provider

    def provider_elements(
        self, provider: str | None, *, presets: bool, page_num: str | None, page_size: str | None
    ) -> dict[str, Any]:
        """One page of a provider's elements (its presets, or the account's own), as it pages them."""
        name = self._listing_provider(provider)
        number = whole_number("page_num", page_num, default=1, low=PAGE_NUM[0], high=PAGE_NUM[1])
        size = whole_number("page_size", page_size, default=30, low=PAGE_SIZE[0], high=PAGE_SIZE[1])
        found = self._registry.client(name).elements(presets=presets, page_num=number, page_size=size)
        return {"provider": name, "page_num": number, "page_size": size, "elements": found or []}

    def delete(self, element_id: str, provider: str | None) -> dict[str, Any]:
        """Delete at the provider (where its dialect documents how) and mark our record. An
        element klingflow did not make needs `provider`, and gets a tombstone: from then on a
        job naming it is refused, and one already queued with it fails unsent when claimed."""
        found = self._directory.find(element_id)
        record = found if isinstance(found, ElementRecord) else None
        if (
            found is not None
            and found.deleted_at is not None
            and (record is not None or provider in (None, found.provider))
        ):
            return _deleted_already(element_id, found)  # a retried DELETE: not asked again
        holder = record.provider if record is not None else provider
        if holder is None or not key_fits(element_id):
            raise ElementNotFound(
                f"no element {element_id[:100]!r} made by klingflow: give provider to delete it there"
            )
        if record is not None and provider not in (None, holder):
            raise QueryRejected(
                [FieldError("provider", "element_holder", f"element {element_id} is held by {holder}")]
            )
        if holder not in self._registry.configs:
            raise QueryRejected([FieldError("provider", "known_provider", f"unknown provider {holder!r}")])
        try:
            at_provider = self._registry.client(holder).delete_element(element_id)
        except ProviderError as error:
            # Ours, and the provider no longer knows it: deleted already (a DELETE whose record
            # was not marked the first time). Anything else is the provider's answer to report.
            if record is None or error.error_class is not ProviderErrorClass.NOT_FOUND:
                raise
            at_provider = True
        answer: dict[str, Any] = {
            "element_id": element_id,
            "provider": holder,
            "deleted_at_provider": at_provider,
        }
        if not at_provider:
            answer["note"] = f"{holder} documents no way to delete an element: it stays in that account"
        if record is not None:
            answer["element"] = self._directory.mark_deleted(element_id, at_provider=at_provider).model_dump()
        else:
            self._directory.bury(element_id, holder, at_provider=at_provider)
        return answer


def _deleted_already(element_id: str, found: ElementRecord | DeletedElement) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "element_id": element_id,
        "provider": found.provider,
        "deleted_at_provider": found.deleted_at_provider,
    }
    if isinstance(found, ElementRecord):
        answer["element"] = found.model_dump()
    return answer
