"""The state machine: forward only, terminal states absorb, except salvage."""

from __future__ import annotations

import itertools

import pytest

from klingflow.core.states import TERMINAL, JobStatus, allowed_sources, can_move


def test_the_happy_path_is_allowed_step_by_step() -> None:
    path = [JobStatus.QUEUED, JobStatus.SUBMITTED, JobStatus.RUNNING, JobStatus.SUCCEEDED, JobStatus.ARCHIVED]
    for source, target in itertools.pairwise(path):
        assert can_move(source, target)


SALVAGE = (JobStatus.TIMED_OUT, JobStatus.SUCCEEDED)


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
def test_a_terminal_state_never_changes_but_a_timed_out_task_that_completes_is_salvaged(
    terminal: JobStatus,
) -> None:
    moves = {target for target in JobStatus if can_move(terminal, target)}
    assert moves == ({JobStatus.SUCCEEDED} if terminal is JobStatus.TIMED_OUT else set())


@pytest.mark.parametrize(("source", "target"), list(itertools.product(JobStatus, JobStatus)))
def test_no_transition_goes_backwards_except_salvage(source: JobStatus, target: JobStatus) -> None:
    if can_move(source, target) and (source, target) != SALVAGE:
        assert target.rank > source.rank


def test_queued_is_only_ever_a_starting_point() -> None:
    with pytest.raises(ValueError, match="not a transition target"):
        allowed_sources(JobStatus.QUEUED)


def test_a_job_that_succeeded_can_still_fail_to_archive_but_not_be_cancelled() -> None:
    assert can_move(JobStatus.SUCCEEDED, JobStatus.FAILED)
    assert not can_move(JobStatus.SUCCEEDED, JobStatus.CANCELLED)
