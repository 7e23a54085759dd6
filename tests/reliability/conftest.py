"""The fault suite: a short form runs in `make test`, the long form in `make chaos`.

`KLINGFLOW_CHAOS=1` (what `make chaos` sets) scales every run up: more generated bodies and
manifests, more jobs in the storm.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from klingflow_dev import ASSETS
from tests.integration.conftest import Stack, module_stack

__all__ = ["module_stack"]  # the fixture, for this folder

CHAOS = os.environ.get("KLINGFLOW_CHAOS") == "1"

settings.register_profile(
    "short", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "chaos", max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("chaos" if CHAOS else "short")


@pytest.fixture(scope="module")
def shared_stack(module_stack: Stack) -> Stack:
    """One sandbox for a module's generated examples (each names its own objects), with the
    media the sample requests refer to."""
    for name in ("character.png", "character-side.png", "dance.mp4"):
        source = ASSETS / ("character.png" if name == "character-side.png" else name)
        module_stack.s3.put_object(
            Bucket=module_stack.bucket, Key=f"incoming/{name}", Body=source.read_bytes()
        )
    return module_stack
