"""The job kinds as one request: the union of every kind's model, and how a request is parsed.

Rules come from the providers' documentation (docs/providers.md). A rule that only some dialects
impose (gateway takes 5 or 10 s, evolink 3..15 s) is not here: the request takes the union of what any dialect
accepts, and each adapter's `refusals` narrows it, so routing can pick a provider that fits.
Each family of kinds has its module (`kind_motion`, `kind_video`, `kind_omni`, `kind_element`),
on the field types and base model they share (`kind_fields`). Rules that need the media itself
(sizes, durations, aspect ratios) are in `media_rules.py`; each request lists its media with the
role that decides which of those rules apply.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError

from .errors import FieldError, RequestRejected, RequestTooLarge
from .kind_element import CustomElementRequest
from .kind_fields import RESOLVED, shown
from .kind_motion import MotionControlRequest
from .kind_omni import OmniVideoRequest
from .kind_video import ImageToVideoRequest, TextToVideoRequest
from .payload import too_large

# The vocabulary (kinds, modes, tiers, billing) lives apart, without pydantic; re-exported here
# (`X as X`: mypy's explicit re-export) for the modules that take it from this one.
from .vocab import AspectRatio as AspectRatio  # noqa: PLC0414
from .vocab import Billing as Billing  # noqa: PLC0414
from .vocab import JobKind as JobKind  # noqa: PLC0414
from .vocab import MediaRef as MediaRef  # noqa: PLC0414
from .vocab import MediaRole as MediaRole  # noqa: PLC0414
from .vocab import Mode as Mode  # noqa: PLC0414
from .vocab import Orientation as Orientation  # noqa: PLC0414
from .vocab import PriceTier as PriceTier  # noqa: PLC0414
from .vocab import billable_seconds as billable_seconds  # noqa: PLC0414

JobRequest = Annotated[
    MotionControlRequest | TextToVideoRequest | ImageToVideoRequest | OmniVideoRequest | CustomElementRequest,
    Field(discriminator="kind"),
]
AnyRequest = (
    MotionControlRequest | TextToVideoRequest | ImageToVideoRequest | OmniVideoRequest | CustomElementRequest
)
REQUEST_ADAPTER: TypeAdapter[AnyRequest] = TypeAdapter(JobRequest, config=ConfigDict(defer_build=True))


def build_request_models(*kinds: JobKind) -> None:
    """Build the validators of these kinds now rather than on the first request of each: for the
    function whose first event parses a request (submit), as its service is built. Each kind's
    model is built on its first request otherwise; the union of all five, only to refuse a
    kind that is none of them, or for the schema."""
    for kind in kinds:
        _MODEL_OF[kind.value].model_rebuild()  # its validator and serializer (model_dump too)


_MODEL_OF: dict[str, type[AnyRequest]] = {
    model.model_fields["kind"].default.value: model
    for model in (
        MotionControlRequest,
        TextToVideoRequest,
        ImageToVideoRequest,
        OmniVideoRequest,
        CustomElementRequest,
    )
}


def field_errors(error: ValidationError, prefix: str = "") -> list[FieldError]:
    """Flatten pydantic's errors into (field, rule, message) triples a person can act on."""
    found = []
    for item in error.errors(include_url=False):
        # Each request is validated by its own kind's model (`_validate`), so a location is the
        # field's; only a kind that is none of them reaches the union, which says so of `kind`.
        loc = list(item["loc"])
        message = item["msg"]
        if item["type"] == "union_tag_invalid":
            loc = ["kind"]
        if len(loc) >= 2 and loc[-1] == "[key]":  # a map's key, named by the map
            loc, message = loc[:-2], f"key {shown(str(loc[-2]))}: {message}"
        name = ".".join(str(part) for part in loc) or "(request)"
        found.append(FieldError(f"{prefix}{name}", item["type"], message))
    return found


def parse_request(data: Any) -> AnyRequest:
    """Validate a raw request; raises RequestRejected naming every broken field and rule.

    `kind` defaults to motion_control, the pipeline's first and most common job.
    """
    if not isinstance(data, dict):
        raise RequestRejected([FieldError("(request)", "object_type", "a job request must be a JSON object")])
    data = {"kind": JobKind.MOTION_CONTROL.value, **data}
    try:
        request = _validate(data)
    except ValidationError as error:
        raise RequestRejected(field_errors(error)) from None
    if errors := request.combination_errors():
        raise RequestRejected(errors)
    # Its base64 images, together, within what one function invocation can carry (413).
    if errors := too_large({media.name: media.ref for media in request.media()}):
        raise RequestTooLarge(errors)
    return request


def with_media(request: AnyRequest, refs: dict[str, str]) -> AnyRequest:
    """The same request with media replaced by name (`reference_images.0` -> a presigned URL)."""
    data = request.model_dump(mode="json", exclude_none=True)
    for ref in request.media():
        if ref.name in refs:
            _set(data, ref.path, refs[ref.name])
    return _validate(data, context={RESOLVED: True})


def load_request(data: dict[str, Any]) -> AnyRequest:
    """A stored request (its media may be object keys or presigned URLs): trusted, not re-judged."""
    return _validate({"kind": JobKind.MOTION_CONTROL.value, **data}, context={RESOLVED: True})


def _validate(data: dict[str, Any], context: dict[str, Any] | None = None) -> AnyRequest:
    """With its own kind's model, as the union would pick it: a function builds the models of
    the kinds it meets, not all five (the union's adapter builds every one of them)."""
    kind = data.get("kind")
    model = _MODEL_OF.get(kind) if isinstance(kind, str) else None
    if model is None:  # not a kind: the union says so as it would of any request
        return REQUEST_ADAPTER.validate_python(data, context=context)
    return model.model_validate(data, context=context)


def _set(data: Any, path: tuple[str | int, ...], value: str) -> None:
    for step in path[:-1]:
        data = data[step]
    data[path[-1]] = value
