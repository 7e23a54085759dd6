"""The daily budget: reservations, fail-over moves, settlement, release, against a moto table
built from template.yaml (a $5 day, at most $2 a job; see conftest)."""

from __future__ import annotations

import json

import pytest

from klingflow.errors import BudgetExceeded
from klingflow.models import BilledSource, DetailType, SpendState
from klingflow.money import Charge, Keep, Release, Settle
from klingflow.spend import Ledger, SpendMetrics
from klingflow.states import JobStatus
from klingflow.store import Claim, JobStore, NoRoom
from klingflow_dev.clock import ManualClock
from tests.unit.test_store import _job


def _claimed(store: JobStore, job_id: str, usd: float, provider: str = "gateway") -> Claim:
    job, _ = store.create(_job(job_id))
    return store.reserve_and_claim(job, f"claim-{job_id}", provider, usd)[0]


def _sent(store: JobStore, job_id: str, usd: float, provider: str = "gateway") -> None:
    assert _claimed(store, job_id, usd, provider) is Claim.CLAIMED
    assert store.transition(job_id, JobStatus.SUBMITTED, by="t", fields={"provider": provider})


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
    store.transition("01J", JobStatus.SUCCEEDED, by="t")
    charge = Charge(usd=1.5, source=BilledSource.PROVIDER, provider_amount=10.7, currency="CNY", seconds=5)

    done = store.transition("01J", JobStatus.ARCHIVED, by="t", money=Settle(charge))
    again = store.transition("01J", JobStatus.ARCHIVED, by="t", money=Settle(charge))

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
    failed = store.transition("01J", JobStatus.FAILED, by="t", money=Release())
    assert failed is not None and failed.reservation is not None
    assert failed.reservation.state is SpendState.RELEASED
    assert (failed.cost.billed_usd, failed.cost.billed_source) == (0.0, BilledSource.RULE)
    report = ledger.report(ledger.today())
    assert (report["reserved_usd"], report["settled_usd"], report["remaining_usd"]) == (0.0, 0.0, 5.0)


def test_an_unknown_outcome_stays_reserved_and_says_possibly_billed(store: JobStore, ledger: Ledger) -> None:
    _sent(store, "01J", 2.0)
    ended = store.transition("01J", JobStatus.TIMED_OUT, by="t", money=Keep())
    assert ended is not None and ended.cost.possibly_billed
    assert ended.reservation is not None and ended.reservation.state is SpendState.RESERVED
    assert ledger.report(ledger.today())["reserved_usd"] == 2.0

    # When the salvaged task completes after all, the reservation is settled
    salvaged = store.transition("01J", JobStatus.SUCCEEDED, by="t")
    assert salvaged is not None
    charge = Charge(usd=1.0, source=BilledSource.RULE)
    done = store.transition("01J", JobStatus.ARCHIVED, by="t", money=Settle(charge))
    assert done is not None and not done.cost.possibly_billed
    report = ledger.report(ledger.today())
    assert (report["reserved_usd"], report["settled_usd"]) == (0.0, 1.0)


def test_a_job_settles_on_the_day_it_reserved_even_after_midnight(
    store: JobStore, ledger: Ledger, clock: ManualClock
) -> None:
    _sent(store, "01J", 2.0)
    store.transition("01J", JobStatus.SUCCEEDED, by="t")
    day = ledger.today()
    clock.advance(24 * 3600)
    charge = Charge(usd=2.0, source=BilledSource.RULE)
    assert store.transition("01J", JobStatus.ARCHIVED, by="t", money=Settle(charge)) is not None
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
        "01J", JobStatus.CANCELLED, by="t", money=Release(), announce=DetailType.CANCELLED.value
    )
    assert ended is not None and ended.pending_event == "Job Cancelled"
    assert ended.reservation is not None and ended.reservation.state is SpendState.RELEASED


def test_settlements_and_the_days_use_are_published_as_metrics(
    store: JobStore, ledger: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a ledger that publishes (Powertools prints EMF to stdout, which CloudWatch reads)
    ledger._metrics = SpendMetrics(namespace="klingflow")
    _sent(store, "01J", 2.0)
    store.transition("01J", JobStatus.SUCCEEDED, by="t")
    capsys.readouterr()

    # When a job settles
    store.transition(
        "01J", JobStatus.ARCHIVED, by="t", money=Settle(Charge(usd=1.5, source=BilledSource.RULE))
    )

    # Then SpendUsd carries provider and kind, and BudgetUsedPercent the day's share (1.5 of 5)
    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    spend = next(m for m in emitted if "SpendUsd" in m)
    assert (spend["SpendUsd"], spend["provider"], spend["kind"]) == ([1.5], "gateway", "motion_control")
    [directive] = spend["_aws"]["CloudWatchMetrics"]
    assert {"provider", "kind"} <= set(directive["Dimensions"][0])
    used = next(m for m in emitted if "BudgetUsedPercent" in m)
    assert used["BudgetUsedPercent"] == [30.0]
