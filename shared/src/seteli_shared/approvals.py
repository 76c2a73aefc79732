"""An approval's life cycle as the services that rely on the registry fold it from its events
(``ProviderApproved``, ``ProviderSuspended``, ``ProviderReinstated``, ``ProviderRevoked``), pure: the
vouchers service (may the provider be chosen today?) and payments (does the approval cover a service
date?) keep the same state by the same rules, whatever order the events arrive in, each in its own table
through the same projection code (``ApprovalProjection``)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, timezone
from typing import Any, Callable

from .events import ProviderApproved, ProviderReinstated, ProviderRevoked, ProviderSuspended

#: the status of an approval as a service knows it from the registry's events
APPROVED = "approved"
SUSPENDED = "suspended"
REVOKED = "revoked"


@dataclass(frozen=True)
class ApprovalState:
    """What the projection knows of one funder's approval of a provider for a category.

    ``approved_at`` is None while only life-cycle events of the approval have arrived (events may come
    in any order). ``not_in_force_from`` is the first day the approval is not in force (suspension or
    revocation); ``changed_at`` the registry's time of the latest status event applied."""

    approval_id: str | None
    approved_at: datetime | None = None
    status: str = APPROVED
    not_in_force_from: date | None = None
    changed_at: datetime | None = None
    reason: str | None = None


@dataclass(frozen=True)
class LifeCycleChange:
    """A ``ProviderSuspended`` (status SUSPENDED), ``ProviderReinstated`` (APPROVED) or
    ``ProviderRevoked`` (REVOKED), reduced to what the projection needs."""

    status: str
    approval_id: str
    at: datetime
    effective_from: date | None = None
    reason: str | None = None


def _supersedes(state: ApprovalState, at: datetime) -> bool:
    """Whether an event of another approval begins a new approval: only after a revocation, and only
    when it is newer than the revocation (a new approval may follow one that ended for good)."""
    return state.status == REVOKED and state.changed_at is not None and at > state.changed_at


def _same_approval(state: ApprovalState, approval_id: str) -> bool:
    return state.approval_id is None or state.approval_id == approval_id


def apply_approved(state: ApprovalState | None, approval_id: str, approved_at: datetime) -> ApprovalState:
    """Fold a ``ProviderApproved`` into the state: idempotent; a new approval replaces a revoked one."""
    if state is None:
        return ApprovalState(approval_id=approval_id, approved_at=approved_at)
    if _same_approval(state, approval_id):
        if state.approved_at is None or state.approval_id is None:
            return replace(state, approval_id=approval_id, approved_at=state.approved_at or approved_at)
        return state
    if _supersedes(state, approved_at):
        return ApprovalState(approval_id=approval_id, approved_at=approved_at)
    return state  # an older approval's announcement, or one that cannot replace a live approval


def apply_change(state: ApprovalState | None, change: LifeCycleChange) -> ApprovalState:
    """Fold a suspension, reinstatement or revocation into the state, whatever order the events come
    in and however often: a status event older than (or as old as) the latest one applied changes
    nothing, so a stale reinstatement cannot undo a newer suspension; a revocation is final (a later
    one can only move its date earlier)."""
    if state is None:
        state = ApprovalState(approval_id=change.approval_id)
    elif not _same_approval(state, change.approval_id):
        if not _supersedes(state, change.at):
            return state
        state = ApprovalState(approval_id=change.approval_id)
    if state.status == REVOKED:
        if change.status == REVOKED and change.effective_from is not None and (
                state.not_in_force_from is None or change.effective_from < state.not_in_force_from):
            return replace(state, not_in_force_from=change.effective_from)
        return state
    if change.status != REVOKED and state.changed_at is not None and change.at <= state.changed_at:
        return state
    changed_at = change.at if state.changed_at is None else max(change.at, state.changed_at)
    if change.status == APPROVED:
        return replace(state, status=APPROVED, not_in_force_from=None, changed_at=changed_at, reason=None)
    return replace(state, status=change.status, not_in_force_from=change.effective_from, changed_at=changed_at,
                   reason=change.reason)


# ------------------------------------------------------------------ the projection on a service's own table
def as_utc(at: datetime) -> datetime:
    """The registry's times compared as UTC (a time without a zone is taken to be UTC)."""
    return at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at.astimezone(timezone.utc)


def state_of(row: Any) -> ApprovalState | None:
    """A projection row as the pure rules see it (None: no row yet)."""
    if row is None:
        return None
    return ApprovalState(approval_id=row.approval_id, approved_at=row.approved_at, status=row.status,
                         not_in_force_from=row.not_in_force_from, changed_at=row.status_changed_at,
                         reason=row.status_reason)


class ApprovalProjection:
    """The approval projection of a service that relies on the registry, on the service's own table: a
    SQLModel table keyed by (``funder_id``, ``provider_id``, ``category``) with the columns ``approval_id``,
    ``approved_at``, ``status``, ``not_in_force_from``, ``status_changed_at`` and ``status_reason``. Its
    ``handlers`` fold ``ProviderApproved``, ``ProviderSuspended``, ``ProviderReinstated`` and
    ``ProviderRevoked`` into the row by ``apply_approved`` and ``apply_change``, in any order, each
    redelivery changing nothing. Vouchers and payments each keep their own table; this code is both's."""

    def __init__(self, table: type):
        self.table = table

    async def fold(self, session: Any, funder_id: str, provider_id: str, category: str,
                   fold: Callable[[ApprovalState | None], ApprovalState]) -> None:
        """Apply a pure fold of the approval's state to its row (locked: one event at a time per approval)."""
        row = await session.get(self.table, (funder_id, provider_id, category), with_for_update=True)
        before = state_of(row)
        after = fold(before)
        if after == before:
            return  # a redelivery or a stale event: nothing changes
        if row is None:
            row = self.table(funder_id=funder_id, provider_id=provider_id, category=category)
        row.approval_id, row.approved_at, row.status = after.approval_id, after.approved_at, after.status
        row.not_in_force_from, row.status_changed_at, row.status_reason = (after.not_in_force_from, after.changed_at,
                                                                           after.reason)
        session.add(row)
        await session.flush()

    async def on_provider_approved(self, session: Any, _env: Any, event: Any) -> None:
        await self.fold(session, event.funder_id, event.provider_id, event.category,
                        lambda s: apply_approved(s, event.approval_id, as_utc(event.approved_at)))

    async def on_provider_suspended(self, session: Any, _env: Any, event: Any) -> None:
        change = LifeCycleChange(SUSPENDED, event.approval_id, as_utc(event.suspended_at), event.effective_from,
                                 event.reason)
        await self.fold(session, event.funder_id, event.provider_id, event.category,
                        lambda s: apply_change(s, change))

    async def on_provider_reinstated(self, session: Any, _env: Any, event: Any) -> None:
        change = LifeCycleChange(APPROVED, event.approval_id, as_utc(event.reinstated_at))
        await self.fold(session, event.funder_id, event.provider_id, event.category,
                        lambda s: apply_change(s, change))

    async def on_provider_revoked(self, session: Any, _env: Any, event: Any) -> None:
        change = LifeCycleChange(REVOKED, event.approval_id, as_utc(event.revoked_at), event.effective_from,
                                 event.reason)
        await self.fold(session, event.funder_id, event.provider_id, event.category,
                        lambda s: apply_change(s, change))

    def handlers(self) -> dict:
        """Event type -> handler, for a service's ``HANDLERS``."""
        return {ProviderApproved.event_type(): self.on_provider_approved,
                ProviderSuspended.event_type(): self.on_provider_suspended,
                ProviderReinstated.event_type(): self.on_provider_reinstated,
                ProviderRevoked.event_type(): self.on_provider_revoked}
