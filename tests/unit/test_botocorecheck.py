"""`make botocore-check`: the layers' botocore is pinned exactly, and the check says when PyPI
has a newer one (what pip answers is parsed here; the check itself asks PyPI)."""

from __future__ import annotations

import pytest

from klingflow_dev import botocorecheck

PIP_ANSWER = """botocore (1.44.18)
Available versions: 1.44.18, 1.44.9, 1.43.127, 1.43.126, 1.9.0
  INSTALLED: 1.43.127
  LATEST:    1.44.18
"""


def test_the_layers_bundle_botocore_at_one_exact_version() -> None:
    pin = botocorecheck.pinned(botocorecheck.PIN_FILE.read_text())
    assert pin.count(".") == 2 and all(part.isdigit() for part in pin.split("."))


def test_a_range_is_refused_naming_the_file_and_the_fix() -> None:
    with pytest.raises(
        ValueError, match=r"botocore\.txt: 'botocore>=1.36,<2' is not an exact pin; write botocore==X\.Y\.Z"
    ):
        botocorecheck.pinned("# bundled\nbotocore>=1.36,<2\n")
    with pytest.raises(ValueError, match="names no botocore"):
        botocorecheck.pinned("httpx==0.28\n")


def test_newer_releases_are_named_newest_first_by_number_not_by_text() -> None:
    versions = botocorecheck.available(PIP_ANSWER)
    assert versions == ["1.44.18", "1.44.9", "1.43.127", "1.43.126", "1.9.0"]
    assert botocorecheck.newer("1.43.127", versions) == ["1.44.18", "1.44.9"]
    assert botocorecheck.newer("1.44.18", versions) == []


def test_the_verdict_says_what_to_do_and_fails_only_when_behind() -> None:
    status, message = botocorecheck.verdict("1.43.127", ["1.44.18", "1.43.127"])
    assert status == 1
    assert "botocore 1.44.18 is on PyPI; the layers bundle 1.43.127 (1 release(s) behind)" in message
    assert "botocore==1.44.18 in layers/klingflow/botocore.txt" in message
    assert botocorecheck.verdict("1.44.18", ["1.44.18", "1.43.127"])[0] == 0


def test_an_answer_without_versions_is_an_error_not_a_pass() -> None:
    with pytest.raises(ValueError, match="Available versions"):
        botocorecheck.available("ERROR: No matching distribution found for botocore\n")
