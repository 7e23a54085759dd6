"""The daily budget: reservations, fail-over moves, settlement, release, against a moto table
built from template.yaml (a $5 day, at most $2 a job; see conftest)."""

from __future__ import annotations

import json

import pytest

from klingflow.core.codes import Actor
from klingflow.core.errors import BudgetExceeded
from klingflow.core.models import BilledSource, DetailType, SpendState
from klingflow.core.states import JobStatus
from klingflow.infra.dynamo import Table
from klingflow.jobs.items import ElementDeleted, NoRoom
from klingflow.jobs.reservations import Claim
from klingflow.jobs.store import JobStore
from klingflow.money.ledger import Ledger, SpendMetrics
from klingflow.money.settlement import Charge, Keep, Release, Settle
from klingflow_dev.clock import ManualClock
from tests.unit.test_store import _job


def _claimed(store: JobStore, job_id: str, usd: float, provider: str = "gateway") -> Claim:
    job, _ = store.create(_job(job_id))
    return store.reserve_and_claim(job, f"claim-{job_id}", provider, usd)[0]


def _sent(store: JobStore, job_id: str, usd: float, provider: str = "gateway") -> None:
    assert _claimed(store, job_id, usd, provider) is Claim.CLAIMED
    assert store.transition(job_id, JobStatus.SUBMITTED, by=Actor.ARCHIVE, fields={"provider": provider})


def test_claims_reserve_until_the_day_is_full_and_then_are_refused(store: JobStore, ledger: Ledger) -> None:
    # Given a $5 day, when $2 jobs are claimed one after another
    outcomes = [_claimed(store, f"01J{i}", 2.0) for i in range(3)]

    # Then two fit, the third does not, and the refused job holds neither claim nor reservation
    assert outcomes == [Claim.CLAIMED, Claim.CLAIMED, Claim.NO_ROOM]
    refused = store.get("01J2")
    assert refused is not None and refused.reservation is None
    report = ledger.report(ledger.today())
    assert (report["reserved_usd"], report["settled_usd"], report["remaining_usd"]) == (4.0, 0.0, 1.0)
    assert report["by_provider"] == {"gateway": {"reserved_usd": 4.0, "settled_usd": 0.0}}
    assert report["by_kind"] == {"motion_control": {"reserved_usd": 4.0, "settled_usd": 0.0}}


def test_the_days_first_claim_must_fit_the_whole_budget_by_itself(store: JobStore, ledger: Ledger) -> None:
    # Given a $5 day with nothing spent yet (no spend item exists), a $7 claim does not fit
    assert _claimed(store, "01JFIRST", 7.0) is Claim.NO_ROOM
    assert ledger.report(ledger.today())["reserved_usd"] == 0.0
    # And one that fits is taken
    assert _claimed(store, "01JSECOND", 5.0) is Claim.CLAIMED


def test_a_job_is_reserved_once_however_often_it_is_claimed(store: JobStore, ledger: Ledger) -> None:
    assert _claimed(store, "01J", 1.0) is Claim.CLAIMED
    job = store.get("01J")
    assert job is not None
    assert store.reserve_and_claim(job, "another", "gateway", 1.0)[0] is Claim.TAKEN
    assert ledger.report(ledger.today())["reserved_usd"] == 1.0


def test_fail_over_moves_the_one_reservation_and_a_dearer_provider_must_still_fit(
    store: JobStore, ledger: Ledger
) -> None:
    # Given a day with $4.50 reserved, $0.35 of it for a job about to fail over
    assert _claimed(store, "01BIG", 1.9) is Claim.CLAIMED
    assert _claimed(store, "01BIG2", 1.9) is Claim.CLAIMED
    assert _claimed(store, "01J", 0.35) is Claim.CLAIMED
    job = store.get("01J")
    assert job is not None

    # When it moves to kling at $0.42: the difference fits, and the reservation follows it
    moved = store.move_reservation(job, "claim-01J", "kling", 0.42)
    assert moved is not None and moved.reservation is not None
    assert (moved.reservation.provider, moved.reservation.usd) == ("kling", 0.42)
    report = ledger.report(ledger.today())
    assert report["reserved_usd"] == 4.22
    assert report["by_provider"]["kling"]["reserved_usd"] == 0.42

    # Then a move to a provider whose estimate would pass the day is refused, changing nothing
    with pytest.raises(NoRoom):
        store.move_reservation(moved, "claim-01J", "evolink", 1.3)
    assert ledger.report(ledger.today())["reserved_usd"] == 4.22
    # And a move under someone else's claim writes nothing
    assert store.move_reservation(moved, "not-mine", "gateway", 0.35) is None


def test_settling_replaces_the_reservation_with_the_charge_exactly_once(
    store: JobStore, ledger: Ledger
) -> None:
    _sent(store, "01J", 2.0)
    store.transition("01J", JobStatus.SUCCEEDED, by=Actor.ARCHIVE)
    charge = Charge(usd=1.5, source=BilledSource.PROVIDER, provider_amount=10.7, currency="CNY", seconds=5)

    done = store.transition("01J", JobStatus.ARCHIVED, by=Actor.ARCHIVE, money=Settle(charge))
    again = store.transition("01J", JobStatus.ARCHIVED, by=Actor.ARCHIVE, money=Settle(charge))

    assert done is not None and again is None
    assert done.reservation is not None and done.reservation.state is SpendState.SETTLED
    assert (done.cost.billed_usd, done.cost.billed_source, done.cost.billed_seconds) == (
        1.5,
        BilledSource.PROVIDER,
        5,
    )
    report = ledger.report(ledger.today())
    assert (report["reserved_usd"], report["settled_usd"], report["remaining_usd"]) == (0.0, 1.5, 3.5)
    assert report["by_provider"]["gateway"] == {"reserved_usd": 0.0, "settled_usd": 1.5}


def test_a_failed_task_gives_its_reservation_back(store: JobStore, ledger: Ledger) -> None:
    _sent(store, "01J", 2.0)
    failed = store.transition("01J", JobStatus.FAILED, by=Actor.ARCHIVE, money=Release())
    assert failed is not None and failed.reservation is not None
    assert failed.reservation.state is SpendState.RELEASED
    assert (failed.cost.billed_usd, failed.cost.billed_source) == (0.0, BilledSource.RULE)
    report = ledger.report(ledger.today())
    assert (report["reserved_usd"], report["settled_usd"], report["remaining_usd"]) == (0.0, 0.0, 5.0)


def test_an_unknown_outcome_stays_reserved_and_says_possibly_billed(store: JobStore, ledger: Ledger) -> None:
    _sent(store, "01J", 2.0)
    ended = store.transition("01J", JobStatus.TIMED_OUT, by=Actor.ARCHIVE, money=Keep())
    assert ended is not None and ended.cost.possibly_billed
    assert ended.reservation is not None and ended.reservation.state is SpendState.RESERVED
    assert ledger.report(ledger.today())["reserved_usd"] == 2.0

    # When the salvaged task completes after all, the reservation is settled
    salvaged = store.transition("01J", JobStatus.SUCCEEDED, by=Actor.ARCHIVE)
    assert salvaged is not None
    charge = Charge(usd=1.0, source=BilledSource.RULE)
    done = store.transition("01J", JobStatus.ARCHIVED, by=Actor.ARCHIVE, money=Settle(charge))
    assert done is not None and not done.cost.possibly_billed
    report = ledger.report(ledger.today())
    assert (report["reserved_usd"], report["settled_usd"]) == (0.0, 1.0)


def test_a_job_settles_on_the_day_it_reserved_even_after_midnight(
    store: JobStore, ledger: Ledger, clock: ManualClock
) -> None:
    _sent(store, "01J", 2.0)
    store.transition("01J", JobStatus.SUCCEEDED, by=Actor.ARCHIVE)
    day = ledger.today()
    clock.advance(24 * 3600)
    charge = Charge(usd=2.0, source=BilledSource.RULE)
    assert store.transition("01J", JobStatus.ARCHIVED, by=Actor.ARCHIVE, money=Settle(charge)) is not None
    assert ledger.report(day)["settled_usd"] == 2.0
    assert ledger.report(ledger.today())["settled_usd"] == 0.0


def test_a_job_dearer_than_the_per_job_cap_is_refused_naming_the_figures(ledger: Ledger) -> None:
    with pytest.raises(BudgetExceeded) as refused:
        ledger.check_job(2.5)
    assert refused.value.code == "BUDGET_EXCEEDED"
    assert refused.value.budget == {
        "daily_budget_usd": 5,
        "remaining_usd": 5.0,
        "estimate_usd": 2.5,
        "max_job_cost_usd": 2,
    }
    ledger.check_job(2.0)  # at the cap is allowed


def test_an_estimate_that_does_not_fit_what_is_left_is_refused_before_any_write(
    store: JobStore, ledger: Ledger
) -> None:
    _sent(store, "01J", 2.0)
    _sent(store, "01K", 2.0)
    with pytest.raises(BudgetExceeded, match=r"\$1.5 does not fit the \$1.0 left"):
        ledger.check_fits(1.5)
    ledger.check_fits(1.0)


def test_a_terminal_write_owes_its_event_and_moves_money_in_one_go(store: JobStore) -> None:
    _sent(store, "01J", 2.0)
    ended = store.transition(
        "01J", JobStatus.CANCELLED, by=Actor.ARCHIVE, money=Release(), announce=DetailType.CANCELLED.value
    )
    assert ended is not None and ended.pending_event == "Job Cancelled"
    assert ended.reservation is not None and ended.reservation.state is SpendState.RELEASED


def test_settlements_and_the_days_use_are_published_as_metrics(
    store: JobStore, ledger: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a ledger that publishes (Powertools prints EMF to stdout, which CloudWatch reads)
    ledger._metrics = SpendMetrics(namespace="klingflow")
    _sent(store, "01J", 2.0)
    store.transition("01J", JobStatus.SUCCEEDED, by=Actor.ARCHIVE)
    capsys.readouterr()

    # When a job settles
    store.transition(
        "01J", JobStatus.ARCHIVED, by=Actor.ARCHIVE, money=Settle(Charge(usd=1.5, source=BilledSource.RULE))
    )

    # Then SpendUsd carries provider and kind, and BudgetUsedPercent the day's share (1.5 of 5)
    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    spend = next(m for m in emitted if "SpendUsd" in m)
    assert (spend["SpendUsd"], spend["provider"], spend["kind"]) == ([1.5], "gateway", "motion_control")
    [directive] = spend["_aws"]["CloudWatchMetrics"]
    assert {"provider", "kind"} <= set(directive["Dimensions"][0])
    used = next(m for m in emitted if "BudgetUsedPercent" in m)
    assert used["BudgetUsedPercent"] == [30.0]


def _settled_at(store: JobStore, job_id: str, reserved: float, charged: float) -> None:
    _sent(store, job_id, reserved)
    store.transition(job_id, JobStatus.SUCCEEDED, by=Actor.ARCHIVE)
    charge = Charge(usd=charged, source=BilledSource.PROVIDER)
    assert store.transition(job_id, JobStatus.ARCHIVED, by=Actor.ARCHIVE, money=Settle(charge)) is not None


def test_a_charge_beyond_the_reservation_is_settled_whole_and_recorded_as_an_overrun(
    store: JobStore, ledger: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a $5 day holding $2 for another job, and a job that reserved $2
    ledger._metrics = SpendMetrics(namespace="klingflow")
    assert _claimed(store, "01OTHER", 2.0) is Claim.CLAIMED
    capsys.readouterr()

    # When its provider charges $3.40, $1.40 more than reserved
    _settled_at(store, "01J", 2.0, 3.4)

    # Then the charge is settled as charged, and the excess recorded, counted and published
    job = store.get("01J")
    assert job is not None and job.cost.billed_usd == 3.4
    report = ledger.report(ledger.today())
    assert (report["settled_usd"], report["reserved_usd"], report["committed_usd"]) == (3.4, 2.0, 5.4)
    assert (report["overrun_usd"], report["overruns"]) == (1.4, 1)
    assert (report["remaining_usd"], report["over_budget_usd"]) == (0.0, pytest.approx(0.4))
    # Settled + reserved pass the budget by no more than the recorded overrun
    assert report["committed_usd"] - report["overrun_usd"] <= report["budget_usd"]
    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    [overrun] = [m for m in emitted if "SpendOverrun" in m]
    assert (overrun["SpendOverrun"], overrun["service"]) == ([1.4], "klingflow")


def test_a_charge_within_the_reservation_is_no_overrun(store: JobStore, ledger: Ledger) -> None:
    _settled_at(store, "01J", 2.0, 1.5)
    report = ledger.report(ledger.today())
    assert (report["overrun_usd"], report["overruns"], report["over_budget_usd"]) == (0.0, 0, 0.0)


def test_while_the_day_stands_over_its_budget_no_claim_fits_until_it_is_back_under(
    store: JobStore, ledger: Ledger
) -> None:
    # Given a day pushed over its $5 by an overrun: $4.50 settled for a $2 reservation, $1 held
    assert _claimed(store, "01HELD", 1.0) is Claim.CLAIMED
    _settled_at(store, "01J", 2.0, 4.5)
    assert ledger.report(ledger.today())["over_budget_usd"] == pytest.approx(0.5)

    # Then no claim fits, however small, and the courtesy check says why
    assert _claimed(store, "01NEW", 0.01) is Claim.NO_ROOM
    with pytest.raises(BudgetExceeded) as refused:
        ledger.check_fits(0.01)
    assert "providers charged $2.5 more than was reserved (1 overrun(s))" in refused.value.message
    assert "stands $0.5 over the budget and no job is sent until it is back under" in refused.value.message

    # When the held job fails and its $1 comes back, the day is under again and a claim fits
    assert store.transition("01HELD", JobStatus.FAILED, by=Actor.ARCHIVE, money=Release()) is not None
    assert ledger.report(ledger.today())["remaining_usd"] == 0.5
    assert _claimed(store, "01NEXT", 0.5) is Claim.CLAIMED


def test_a_claim_refuses_a_job_whose_element_was_deleted_and_writes_nothing(
    store: JobStore, ledger: Ledger, table: Table
) -> None:
    # Given an element klingflow made and deleted, one it made and kept, and a preset it never made
    table.put_item(Item={"pk": "ELEMENT#gone", "deleted_at": "2026-11-21T12:00:00Z"})
    table.put_item(Item={"pk": "ELEMENT#kept"})
    job, _ = store.create(_job("01J"))

    # When the job naming the deleted one is claimed, the claim names it and changes nothing
    with pytest.raises(ElementDeleted) as deleted:
        store.reserve_and_claim(job, "c", "gateway", 1.0, elements=["kept", "preset-146", "gone"])
    assert deleted.value.element_id == "gone"
    unclaimed = store.get("01J")
    assert unclaimed is not None and unclaimed.reservation is None
    assert "submit_claim" not in table.get_item(Key={"pk": "JOB#01J"})["Item"]
    assert ledger.report(ledger.today())["reserved_usd"] == 0.0

    # And live elements (made and kept, or never made here) do not stand in the way
    assert (
        store.reserve_and_claim(job, "c", "gateway", 1.0, elements=["kept", "preset-146"])[0] is Claim.CLAIMED
    )


def test_a_job_waiting_with_its_reservation_is_checked_for_deleted_elements_too(
    store: JobStore, table: Table
) -> None:
    # Given a job that holds a reservation and gave its claim up to wait for its provider
    assert _claimed(store, "01J", 1.0) is Claim.CLAIMED
    assert store.touch("01J", status_in=frozenset({JobStatus.QUEUED}), removes=("submit_claim",))
    table.put_item(Item={"pk": "ELEMENT#gone", "deleted_at": "2026-11-21T12:00:00Z"})
    waiting = store.get("01J")
    assert waiting is not None and waiting.reservation is not None

    with pytest.raises(ElementDeleted):
        store.reserve_and_claim(waiting, "again", "gateway", 1.0, elements=["gone"])
    assert "submit_claim" not in table.get_item(Key={"pk": "JOB#01J"})["Item"]


def test_a_job_waiting_with_its_reservation_is_not_claimed_while_the_day_stands_over(
    store: JobStore, ledger: Ledger, table: Table
) -> None:
    # Given a job that holds its $1 and gave its claim up to wait for its provider (a 429)
    assert _claimed(store, "01WAIT", 1.0) is Claim.CLAIMED
    assert store.touch("01WAIT", status_in=frozenset({JobStatus.QUEUED}), removes=("submit_claim",))
    waiting = store.get("01WAIT")
    assert waiting is not None and waiting.reservation is not None

    # When an overrun puts the $5 day over: $1 held by another job, $3.60 settled for a $2 reservation
    assert _claimed(store, "01HELD", 1.0) is Claim.CLAIMED
    _settled_at(store, "01J", 2.0, 3.6)
    assert ledger.report(ledger.today())["over_budget_usd"] == pytest.approx(0.6)

    # Then the waiting job is not claimed either, and nothing is written
    assert store.reserve_and_claim(waiting, "again", "gateway", 1.0) == (Claim.NO_ROOM, None)
    assert "submit_claim" not in table.get_item(Key={"pk": "JOB#01WAIT"})["Item"]
    assert ledger.report(ledger.today())["reserved_usd"] == 2.0

    # And once the day is back under its budget, it is claimed with the reservation it holds
    assert store.transition("01HELD", JobStatus.FAILED, by=Actor.ARCHIVE, money=Release()) is not None
    outcome, claimed = store.reserve_and_claim(waiting, "again", "gateway", 1.0)
    assert outcome is Claim.CLAIMED and claimed is not None and claimed.reservation == waiting.reservation
    assert ledger.report(ledger.today())["reserved_usd"] == 1.0
