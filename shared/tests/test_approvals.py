"""The approval projection vouchers and payments share (``seteli_shared.approvals``): the pure fold, and the
projection on a table of a service's shape in a real PostgreSQL database, whatever order the registry's
events arrive in and however often."""
from __future__ import annotations

from datetime import date, datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from seteli_shared.approvals import (APPROVED, REVOKED, SUSPENDED, ApprovalProjection, ApprovalState, apply_approved,
                                     apply_change, state_of)
from seteli_shared.db import make_engine, session_factory, unit_of_work
from seteli_shared.events import Envelope, ProviderApproved, ProviderReinstated, ProviderRevoked, ProviderSuspended
from seteli_shared.messaging import UTCDateTime
from seteli_shared.testing import APPROVAL_T0 as T0
from seteli_shared.testing import approval_after as fold
from seteli_shared.testing import approval_change as change

APPROVAL = ApprovalState(approval_id="a1", approved_at=T0)


def test_a_stale_reinstatement_changes_nothing_and_redeliveries_neither():
    assert fold(change(SUSPENDED, 2), change(APPROVED, 1)) == fold(change(SUSPENDED, 2))
    once = fold(change(SUSPENDED, 1), change(APPROVED, 2))
    assert fold(change(SUSPENDED, 1), change(SUSPENDED, 1), change(APPROVED, 2), change(SUSPENDED, 1),
                change(APPROVED, 2)) == once
    assert apply_approved(once, "a1", T0) == once


def test_a_revocation_is_final_whatever_order_it_came_in():
    revoked = fold(change(REVOKED, 1))
    assert fold(change(REVOKED, 1), change(APPROVED, 5)) == revoked
    late = fold(change(APPROVED, 5), change(REVOKED, 1))
    assert (late.status, late.not_in_force_from) == (REVOKED, date(2026, 11, 15))


def test_a_life_cycle_event_before_its_approval_is_kept_and_the_approval_fills_in():
    early = apply_change(None, change(SUSPENDED, 1))
    assert (early.approved_at, early.status) == (None, SUSPENDED)
    assert apply_approved(early, "a1", T0).approved_at == T0


class ApprovalRow(SQLModel, table=True):
    """A service's approval table: the shape payments' ``ApprovalView`` and vouchers' ``ApprovedProvider`` have."""

    __tablename__ = "test_shared_approval"
    funder_id: str = Field(primary_key=True, max_length=40)
    provider_id: str = Field(primary_key=True, max_length=64)
    category: str = Field(primary_key=True, max_length=40)
    approved_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    approval_id: str | None = Field(default=None, max_length=64)
    status: str = Field(default="approved", max_length=16)
    not_in_force_from: date | None = None
    status_changed_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    status_reason: str | None = Field(default=None, max_length=64)


def _events() -> list:
    base = dict(approval_id="ap-1", provider_id="p-1", funder_id="091", category="home_care")
    return [ProviderApproved(approved_at=T0, **base),
            ProviderSuspended(suspended_at=T0 + timedelta(days=10), effective_from=date(2026, 2, 1),
                              reason="insurance_lapsed", **base),
            ProviderReinstated(reinstated_at=T0 + timedelta(days=20), **base),
            ProviderRevoked(revoked_at=T0 + timedelta(days=30), effective_from=date(2026, 3, 1), reason="other",
                            **base)]


async def test_the_projection_folds_the_events_into_a_services_table_in_any_order_and_any_number_of_times(pg):  # noqa: ANN001
    projection = ApprovalProjection(ApprovalRow)
    handlers = projection.handlers()
    engine = make_engine(await pg.create("approvals"))
    try:
        async with engine.begin() as conn:
            await conn.run_sync(lambda c: ApprovalRow.__table__.create(c))
        sessions = session_factory(engine)
        events = _events()
        finals = []
        for key, order in enumerate([events, events[::-1], events + events[1:3] + events[:1]]):
            for event in order:
                event = event.model_copy(update={"provider_id": f"p-{key}"})
                async with unit_of_work(sessions) as session:
                    await handlers[event.event_type()](session, Envelope.wrap(event, "registry"), event)
            async with sessions() as session:
                finals.append(state_of(await session.get(ApprovalRow, ("091", f"p-{key}", "home_care"))))
        assert finals[0] == finals[1] == finals[2], finals
        assert (finals[0].status, finals[0].not_in_force_from, finals[0].approved_at) == (
            REVOKED, date(2026, 3, 1), T0)
        async with sessions() as session:
            assert (await session.execute(sa.select(sa.func.count()).select_from(ApprovalRow))).scalar_one() == 3
    finally:
        await engine.dispose()
