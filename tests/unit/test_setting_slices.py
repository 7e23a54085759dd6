"""Each flow takes its function's settings as its own slice, and a default two modules share is
one constant: the pairs below agree because both sides name the same object, not the same number."""

from __future__ import annotations

import ast
import inspect
import textwrap
from types import ModuleType
from typing import Any

import pytest
from pydantic import BaseModel

from klingflow import runtime
from klingflow.flows import configs
from klingflow.flows.accept import Acceptor
from klingflow.flows.archive import Archiver
from klingflow.flows.dispatch import Dispatcher
from klingflow.flows.jobs import JobQueries
from klingflow.flows.manifests import Manifests
from klingflow.flows.sweep import Sweeper
from klingflow.flows.webhook import WebhookSender
from klingflow.jobs import store
from klingflow.money import ledger
from klingflow.providers import client, defaults, health, registry
from klingflow.settings import (
    ArchiveSettings,
    JobsSettings,
    SubmitSettings,
    SweeperSettings,
    WebhookSettings,
    _ProviderSettings,
    _ScheduleSettings,
    _Settings,
)


@pytest.mark.parametrize(
    ("settings", "flow", "slice_"),
    [
        (SubmitSettings, Acceptor, configs.AcceptConfig),
        (SubmitSettings, Dispatcher, configs.DispatchConfig),
        (ArchiveSettings, Archiver, configs.ArchiveConfig),
        (SweeperSettings, Sweeper, configs.SweepConfig),
        (JobsSettings, JobQueries, configs.QueriesConfig),
    ],
)
def test_a_functions_settings_are_the_slice_its_flow_takes(
    settings: type[BaseModel], flow: type[Any], slice_: type[BaseModel]
) -> None:
    assert inspect.signature(flow).parameters["config"].annotation in (slice_, slice_.__name__)
    assert issubclass(settings, slice_)


def test_the_webhook_sender_takes_its_functions_slice_and_its_default() -> None:
    assert inspect.signature(WebhookSender).parameters["config"].annotation == "WebhookConfig | None"
    assert issubclass(WebhookSettings, configs.WebhookConfig)
    assert configs.WebhookConfig().webhook_timeout_s == configs.WEBHOOK_TIMEOUT_S


def _declared_default(owner: type[Any], name: str) -> str:
    """The source of `name`'s default where `owner` declares it: an `__init__` keyword or a
    settings field (`Field(default=...)`), whichever base class holds it."""
    for cls in owner.__mro__:
        if name not in vars(cls).get("__annotations__", {}) and "__init__" not in vars(cls):
            continue
        for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(cls)))):
            if isinstance(node, ast.arguments):
                positional = dict(zip([a.arg for a in node.args][::-1], node.defaults[::-1], strict=False))
                keywords = {a.arg: d for a, d in zip(node.kwonlyargs, node.kw_defaults, strict=True)}
                default = {**positional, **keywords}.get(name)
                if default is not None:
                    return ast.unparse(default)
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and node.target.id == name
            ):
                assert node.value is not None
                if isinstance(node.value, ast.Call):
                    return next(ast.unparse(k.value) for k in node.value.keywords if k.arg == "default")
                return ast.unparse(node.value)
    raise AssertionError(f"{owner.__name__} declares no default for {name}")


# (the constant's module, its name) -> where else it is the default: (owner, parameter or field)
SHARED: dict[tuple[ModuleType, str], list[tuple[type[Any], str]]] = {
    (configs, "SUBMIT_GRACE_S"): [
        (configs.AcceptConfig, "submit_grace_s"),
        (configs.SweepConfig, "submit_grace_s"),
    ],
    (ledger, "RETENTION_DAYS"): [
        (ledger.Ledger, "retention_days"),
        (store.JobStore, "retention_days"),
        (_Settings, "retention_days"),
    ],
    (store, "DUE_SHARDS"): [(store.JobStore, "due_shards"), (_ScheduleSettings, "due_shards")],
    (defaults, "PROVIDER_TIMEOUT_S"): [
        (client.ProviderClient, "timeout_s"),
        (registry.Registry, "timeout_s"),
        (_ProviderSettings, "provider_timeout_s"),
    ],
    (defaults, "USD_PER_CNY"): [(registry.Registry, "usd_per_cny"), (_ProviderSettings, "usd_per_cny")],
    (defaults, "BREAKER_FAILURES"): [
        (health.Breakers, "failure_threshold"),
        (_ProviderSettings, "breaker_failures"),
    ],
    (defaults, "BREAKER_COOL_DOWN_S"): [
        (health.Breakers, "cool_down_s"),
        (_ProviderSettings, "breaker_cool_down_s"),
    ],
    (configs, "MAX_MANIFEST_BYTES"): [
        (Manifests, "max_manifest_bytes"),
        (SubmitSettings, "max_manifest_bytes"),
    ],
    (configs, "WEBHOOK_TIMEOUT_S"): [(WebhookSettings, "webhook_timeout_s")],
}


@pytest.mark.parametrize(("home", "name"), list(SHARED), ids=[name for _, name in SHARED])
def test_a_shared_default_is_written_once_and_named_everywhere_else(home: ModuleType, name: str) -> None:
    assert getattr(home, name) is not None
    for owner, parameter in SHARED[home, name]:
        assert _declared_default(owner, parameter) == name, f"{owner.__name__}.{parameter}"


def test_the_pools_hold_as_many_connections_as_a_sweep_may_visit_at_once() -> None:
    bound = next(
        m.le for m in configs.SweepConfig.model_fields["poll_concurrency"].metadata if hasattr(m, "le")
    )
    assert bound is configs.MAX_POLL_CONCURRENCY
    assert runtime._POOLED.max_pool_connections is configs.MAX_POLL_CONCURRENCY  # type: ignore[attr-defined]


def test_the_sweepers_time_guard_and_first_poll_follow_its_settings() -> None:
    sweep = configs.SweepConfig(
        poll_concurrency=1, max_jobs_per_run=1, provider_timeout_s=7, first_poll_without_callback_s=9
    )
    assert sweep.time_guard_s > sweep.provider_timeout_s
    assert sweep.first_poll_s == sweep.first_poll_without_callback_s
