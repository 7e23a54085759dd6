"""A refused manifest's report lands under rejected/ at a key S3 accepts, whatever its name."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from klingflow.flows.manifests import S3_KEY_MAX_BYTES, report_key


def test_a_short_name_is_reported_beside_its_own_name() -> None:
    assert report_key("incoming/batch/job-1.json") == "rejected/batch/job-1.error.json"


def test_the_longest_manifest_key_s3_takes_still_gets_a_report_key_s3_takes() -> None:
    # Given a manifest key of exactly 1,024 bytes, of multi-byte characters
    name = "é" * ((S3_KEY_MAX_BYTES - len("incoming/") - len(".json")) // 2)
    manifest = f"incoming/{name}.json"
    assert len(manifest.encode()) <= S3_KEY_MAX_BYTES
    key = report_key(manifest)
    # Then its report key fits, is valid UTF-8, keeps the place and is told apart by a digest
    assert len(key.encode()) <= S3_KEY_MAX_BYTES
    assert key.startswith("rejected/éé") and key.endswith(".error.json") and "~" in key
    # And two long names that differ only at their end get different reports
    other = f"incoming/{name[:-1]}x.json"
    assert report_key(other) != key


@given(st.text(min_size=1, max_size=1100))
def test_any_name_gives_a_key_within_s3s_limit(name: str) -> None:
    key = report_key(f"incoming/{name}.json")
    assert len(key.encode()) <= S3_KEY_MAX_BYTES
    assert key.startswith("rejected/") and key.endswith(".error.json")
