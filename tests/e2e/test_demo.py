"""The sandbox as a user runs it: background event sources, real time, real HTTP on loopback."""

from __future__ import annotations

import pytest

from klingflow_dev import demo

pytestmark = pytest.mark.e2e


def test_make_demo_archives_a_job_and_announces_it() -> None:
    summary = demo.run(say=lambda _: None, timeout_s=90)
    assert demo.ok(summary), summary
    assert summary["provider"] == "gateway"
    assert [e["detail-type"] for e in summary["events"]] == ["Job Submitted", "Job Completed"]
    [output] = summary["outputs"]
    assert output["s3_uri"].endswith(f"/outputs/{summary['job_id']}/output-1.mp4")
    assert len(output["sha256"]) == 64


@pytest.mark.parametrize("provider", ["apimaster", "evolink", "kling"])
def test_a_job_pinned_to_each_other_dialect_is_archived(provider: str) -> None:
    # apimaster never calls back (the sweeper finishes it); evolink and kling do.
    summary = demo.run(provider=provider, say=lambda _: None, timeout_s=90)
    assert demo.ok(summary), summary
    assert summary["provider"] == provider
    assert [e["detail-type"] for e in summary["events"]] == ["Job Submitted", "Job Completed"]
