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


@pytest.mark.parametrize(
    ("kind", "provider"),
    [
        ("text_to_video", "gateway"),  # 720p with sound: 0.75 CNY/s (sandbox price) is the cheapest
        ("image_to_video", "evolink"),
        ("omni_video", "gateway"),
        ("custom_element", "evolink"),
    ],
)
def test_every_other_kind_runs_from_an_s3_drop_on_its_cheapest_provider(kind: str, provider: str) -> None:
    summary = demo.run(kind=kind, say=lambda _: None, timeout_s=90)
    assert demo.ok(summary), summary
    assert (summary["kind"], summary["provider"]) == (kind, provider)
    assert [e["detail-type"] for e in summary["events"]] == ["Job Submitted", "Job Completed"]


def test_an_element_made_by_the_demo_is_used_by_a_motion_control_job_without_a_pin() -> None:
    # Given `klingflow sandbox demo --kind custom_element`
    summary = demo.run(kind="custom_element", say=lambda _: None, timeout_s=90)

    # Then the element is made, and a motion-control job naming it (no provider) is archived on
    # the account that holds it
    assert demo.ok(summary), summary
    follow = summary["followed_by"]
    assert (follow["kind"], follow["status"], follow["provider"]) == ("motion_control", "ARCHIVED", "evolink")
    assert follow["elements"] == [summary["element_id"]]
    assert all(o["verified"] for o in follow["outputs"])


@pytest.mark.parametrize("provider", ["apimaster", "evolink", "kling"])
def test_a_job_pinned_to_each_other_dialect_is_archived(provider: str) -> None:
    # apimaster never calls back (the sweeper finishes it); evolink and kling do.
    summary = demo.run(provider=provider, say=lambda _: None, timeout_s=90)
    assert demo.ok(summary), summary
    assert summary["provider"] == provider
    assert [e["detail-type"] for e in summary["events"]] == ["Job Submitted", "Job Completed"]
