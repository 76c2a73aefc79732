"""The approval's life cycle as the vouchers service folds it: pure rules, events in any order."""
from datetime import date, datetime, timedelta, timezone
from itertools import permutations

import pytest

from seteli_shared.errors import DomainError
from vouchers.domain import (APPROVED, REVOKED, SUSPENDED, ApprovalState, LifeCycleChange, apply_approved,
                             apply_change, check_provider_in_force)

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=timezone.utc)
DAY = date(2026, 6, 10)


def at(hours: int) -> datetime:
    return T0 + timedelta(hours=hours)


def suspended(hours: int, effective_from: date = DAY, approval_id: str = "a1") -> LifeCycleChange:
    return LifeCycleChange(SUSPENDED, approval_id, at(hours), effective_from, "insurance_lapsed")


def reinstated(hours: int, approval_id: str = "a1") -> LifeCycleChange:
    return LifeCycleChange(APPROVED, approval_id, at(hours))


def revoked(hours: int, effective_from: date = DAY, approval_id: str = "a1") -> LifeCycleChange:
    return LifeCycleChange(REVOKED, approval_id, at(hours), effective_from, "funder_decision")


def fold(*events) -> ApprovalState | None:  # noqa: ANN002
    state = None
    for e in events:
        state = apply_approved(state, *e) if isinstance(e, tuple) else apply_change(state, e)
    return state


def refusal(state: ApprovalState | None, day: date = DAY) -> str | None:
    try:
        check_provider_in_force(state, day)
    except DomainError as e:
        return e.reason
    return None


APPROVAL = ("a1", at(0))


def test_a_suspension_refuses_from_its_date_and_a_reinstatement_lifts_it():
    s = fold(APPROVAL, suspended(1))
    assert refusal(s, DAY - timedelta(days=1)) is None, "not yet in force the day before"
    assert refusal(s) == refusal(s, DAY + timedelta(days=30)) == "provider_suspended"
    assert refusal(fold(APPROVAL, suspended(1), reinstated(2))) is None


def test_a_revocation_is_final():
    s = fold(APPROVAL, revoked(1))
    assert refusal(s) == "provider_revoked" and refusal(s, DAY - timedelta(days=1)) is None
    assert fold(APPROVAL, revoked(1), reinstated(5)) == s, "even a newer reinstatement cannot undo it"
    assert fold(APPROVAL, revoked(1), suspended(5)) == s
    assert fold(APPROVAL, reinstated(5), revoked(1)).status == REVOKED, "whatever order they came in"
    earlier = fold(APPROVAL, revoked(1), revoked(2, DAY - timedelta(days=3)))
    assert earlier.not_in_force_from == DAY - timedelta(days=3), "a revocation's date only moves earlier"
    assert fold(APPROVAL, revoked(1), revoked(2, DAY + timedelta(days=3))) == s


def test_a_stale_reinstatement_does_not_undo_a_newer_suspension():
    s = fold(APPROVAL, suspended(2), reinstated(1))
    assert refusal(s) == "provider_suspended"
    # ...but a newer one does, whichever arrives first
    assert refusal(fold(APPROVAL, reinstated(3), suspended(2))) is None


def test_redelivered_events_change_nothing():
    once = fold(APPROVAL, suspended(1), reinstated(2), suspended(3))
    assert fold(APPROVAL, APPROVAL, suspended(1), suspended(1), reinstated(2), reinstated(2), suspended(3),
                suspended(3), APPROVAL) == once


@pytest.mark.parametrize("order", list(permutations(range(4))))
def test_any_order_of_the_events_gives_the_same_state(order):
    events = [APPROVAL, suspended(1), reinstated(2), suspended(3, DAY + timedelta(days=1))]
    state = fold(*(events[i] for i in order))
    assert (state.status, state.not_in_force_from, state.approved_at) == (SUSPENDED, DAY + timedelta(days=1), at(0))


def test_a_life_cycle_event_before_the_approval_is_kept_and_the_approval_fills_in():
    s = fold(suspended(1))
    assert s.approved_at is None and refusal(s) == "provider_suspended"
    assert refusal(s, DAY - timedelta(days=1)) == "provider_not_approved", "not approved as far as it knows"
    assert refusal(fold(suspended(1), APPROVAL, reinstated(2))) is None
    assert refusal(None) == "provider_not_approved"


def test_a_new_approval_may_follow_a_revocation_and_the_old_ones_events_then_change_nothing():
    s = fold(APPROVAL, revoked(1), ("a2", at(5)))
    assert (s.approval_id, s.status, refusal(s)) == ("a2", APPROVED, None)
    assert fold(APPROVAL, revoked(1), ("a2", at(5)), suspended(0), APPROVAL) == s
    assert fold(APPROVAL, ("a2", at(5))) == fold(APPROVAL), "a live approval is not replaced"
    assert fold(APPROVAL, revoked(6), ("a2", at(5))).approval_id == "a1", "older than the revocation"
