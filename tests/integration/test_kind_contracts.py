"""Contract tests for every job kind: each dialect that builds a kind, against the emulator.

The emulator checks create bodies with its own reading of the providers' documentation (emulator/rules.py),
so a
field an adapter names or shapes wrongly for any kind fails here, over real HTTP.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from klingflow.core.errors import ProviderError
from klingflow.core.kinds import AnyRequest, JobKind, parse_request, with_media
from klingflow.core.states import JobStatus
from klingflow.providers.base import TaskSpec
from klingflow.providers.dialects import ADAPTERS
from tests.conftest import sample_event

from .emulated import KEYS, Providers

SUPPORTED = {
    "apimaster": {JobKind.MOTION_CONTROL},
    "evolink": {
        JobKind.MOTION_CONTROL,
        JobKind.TEXT_TO_VIDEO,
        JobKind.IMAGE_TO_VIDEO,
        JobKind.CUSTOM_ELEMENT,
    },
    "gateway": set(JobKind),
    "kling": {JobKind.MOTION_CONTROL, JobKind.TEXT_TO_VIDEO, JobKind.IMAGE_TO_VIDEO, JobKind.OMNI_VIDEO},
}
PAIRS = [(dialect, kind) for dialect, kinds in SUPPORTED.items() for kind in sorted(kinds)]


def _provider_request(kind: JobKind, **changes: Any) -> AnyRequest:
    """The sample request of a kind, as a provider gets it: every media input an https URL
    (the emulator takes non-loopback inputs on trust; it never leaves the machine)."""
    request = parse_request({**sample_event(f"requests/{kind.value}.json"), **changes})
    return with_media(request, {m.name: f"https://media.example/{m.name}.bin" for m in request.media()})


def test_each_dialect_builds_the_kinds_providers_md_gives_it() -> None:
    """Given the adapters, when asked what they build, then it is docs/providers.md's list per dialect."""
    assert {name: set(adapter.kinds) for name, adapter in ADAPTERS.items()} == SUPPORTED


@pytest.mark.parametrize(("dialect", "kind"), PAIRS)
def test_every_kind_is_taken_and_finishes_with_its_outcome(
    providers: Providers, dialect: str, kind: JobKind
) -> None:
    """Given the sample request of a kind, when a dialect that builds it is sent it and its task
    finishes, then the provider accepted the body and reports the kind's outcome: a fetchable
    video, or an element id."""
    client = providers.registry().client(dialect)

    submission, _ = client.create(
        TaskSpec(job_id=f"job-{kind.value}", request=_provider_request(kind), callback_url=None)
    )
    providers.clock.advance(15)
    report = client.query(submission.task_id, kind)

    if report is None:  # made while the create call waited: the answer itself is the outcome
        assert (dialect, kind) == ("gateway", JobKind.CUSTOM_ELEMENT)
        assert submission.element_id is not None and submission.element_id.isdigit()
        return
    assert report.status is JobStatus.SUCCEEDED
    if kind is JobKind.CUSTOM_ELEMENT:
        assert report.element_id is not None and report.outputs == ()
        return
    [output] = report.outputs
    download = client.adapter.download(submission.task_id, output)
    headers = client.adapter.auth_headers(KEYS[dialect]) if download.authenticated else {}
    assert httpx.get(download.url, headers=headers).content == providers.emulator.output_bytes(dialect)


@pytest.mark.parametrize("dialect", ["gateway", "kling"])
def test_a_generated_clip_bills_the_seconds_asked_for(providers: Providers, dialect: str) -> None:
    """Given a 10 s text-to-video, when it completes, then the provider reports 10 billed or
    produced seconds (not the motion-control reference rule)."""
    client = providers.registry().client(dialect)
    request = _provider_request(JobKind.TEXT_TO_VIDEO, duration_s=10)

    submission, _ = client.create(TaskSpec(job_id="job-10s", request=request, callback_url=None))
    providers.clock.advance(15)
    report = client.query(submission.task_id, JobKind.TEXT_TO_VIDEO)

    assert report is not None
    assert report.outputs[0].duration_s == 10.0


def test_kling_answers_for_a_task_only_on_its_own_family_path(providers: Providers) -> None:
    """Given a Kling text-to-video task, when it is asked for under the motion-control path, then
    Kling says not found: the query path must follow the job's kind."""
    client = providers.registry().client("kling")
    submission, _ = client.create(
        TaskSpec(job_id="job-path", request=_provider_request(JobKind.TEXT_TO_VIDEO), callback_url=None)
    )

    assert client.query(submission.task_id, JobKind.TEXT_TO_VIDEO) is not None
    with pytest.raises(ProviderError, match="not found"):
        client.query(submission.task_id, JobKind.MOTION_CONTROL)


@pytest.mark.parametrize(
    ("dialect", "kind", "changes", "refused"),
    [
        ("gateway", JobKind.TEXT_TO_VIDEO, {"duration_s": 7}, "seconds"),
        ("kling", JobKind.IMAGE_TO_VIDEO, {"duration_s": 15}, "duration"),
        ("gateway", JobKind.CUSTOM_ELEMENT, {"name": "AVeryLongName"}, "element_name"),
    ],
)
def test_options_an_adapter_refuses_are_options_the_provider_refuses(
    providers: Providers, dialect: str, kind: JobKind, changes: dict[str, Any], refused: str
) -> None:
    """Given options a dialect's adapter refuses before any call, when they are sent anyway, then
    the provider refuses them too: the refusal protects real money, not a guess."""
    request = _provider_request(kind, **changes)
    client = providers.registry().client(dialect)
    assert client.adapter.refusals(request), "the adapter should refuse these options"

    with pytest.raises(ProviderError, match=refused):
        client.create(TaskSpec(job_id="job-refused", request=request, callback_url=None))
