"""Shared fixtures: sample events from events/, a manual clock, and the sandbox."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from klingflow_dev.clock import ManualClock
from klingflow_dev.sandbox.aws import ensure_aws_models
from tests import tiers
from tests.tiers import guard

__all__ = ["guard"]  # the tier guard, autouse for every test

REPO = Path(__file__).resolve().parents[1]
EVENTS = REPO / "events"


def pytest_configure(config: pytest.Config) -> None:
    # Once, before xdist's workers start: every test's klingflow clients are made from the
    # trimmed models, as the layer's are (klingflow/infra/awsmodels.py).
    if not hasattr(config, "workerinput"):
        ensure_aws_models()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tiers.assign(items)


def sample_event(name: str) -> dict[str, Any]:
    """A fresh copy of one of the sample events in events/ (the ones `sam local invoke -e` uses)."""
    return copy.deepcopy(json.loads((EVENTS / name).read_text()))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


# Credentials that can only ever reach moto.
TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials that can only ever reach moto."""
    for name, value in TEST_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
