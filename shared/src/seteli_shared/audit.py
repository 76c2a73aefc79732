"""Audit trail: every state-changing action, over HTTP or the bus, records who (subject, role,
tenant), what, on which resource, when and the correlation id, in the same transaction as the
action, in the service where it happens. Append-only; never client personal data (clients are
pseudonymous voucher-bound subjects)."""
from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from .auth import Principal
from .events import Envelope, Event
from .logging import correlation_id_var
from .messaging import BigIntPK, UTCDateTime
from .rows import RowsInsert


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_log"
    id: int | None = Field(default=None, sa_column=sa.Column(BigIntPK, primary_key=True, autoincrement=True))
    at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    channel: str = Field(sa_column=sa.Column(sa.String(8), nullable=False))  # http | bus
    actor: str = Field(sa_column=sa.Column(sa.String(200), nullable=False))
    roles: str = Field(sa_column=sa.Column(sa.String(300), nullable=False))
    actor_tenant: str = Field(sa_column=sa.Column(sa.String(120), nullable=False))
    action: str = Field(sa_column=sa.Column(sa.String(120), nullable=False))
    resource_type: str = Field(sa_column=sa.Column(sa.String(60), nullable=False))
    resource_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(100)))
    #: the funder whose data the action touched (what a funder may read back)
    funder_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(40), index=True))
    correlation_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(100)))


T = AuditEntry.__table__
#: a consumer's batch of rows in one prepared statement
_BUS_ROWS = RowsInsert(T, ["at", "channel", "actor", "roles", "actor_tenant", "action", "resource_type", "resource_id",
                           "funder_id", "correlation_id"])


async def record(session: AsyncSession, principal: Principal, action: str, resource_type: str,
                 resource_id: str | None, funder_id: str | None, *, channel: str = "http") -> None:
    """An action of ``principal`` (over HTTP, or ``channel="bus"`` for an outside system's message)."""
    await session.execute(T.insert().values(**row(principal, action, resource_type, resource_id, funder_id,
                                                  channel=channel)))


def row(principal: Principal, action: str, resource_type: str, resource_id: str | None, funder_id: str | None,
        *, channel: str = "http") -> dict:
    """The audit row ``record`` inserts, for a caller that inserts it in one statement with others."""
    return {"at": datetime.now(timezone.utc), "channel": channel, "actor": principal.subject,
            "roles": ",".join(sorted(principal.roles)), "actor_tenant": principal.tenant, "action": action,
            "resource_type": resource_type, "resource_id": resource_id, "funder_id": funder_id,
            "correlation_id": correlation_id_var.get()}


async def record_bus(session: AsyncSession, consumed: list[tuple[Envelope, str | None]]) -> None:
    """Consumed events changed this service's state; the actor of each is the publishing system, as
    the broker vouches for it (``user_id``) and as the envelope names it (``source``)."""
    if not consumed:
        return
    now = datetime.now(timezone.utc)
    rows = []
    for env, publisher in consumed:
        data = env.data or {}
        row = {"at": now, "channel": "bus", "actor": f"{publisher or 'unknown'}:{env.source}", "roles": "system",
               "actor_tenant": "system", "action": env.type, "resource_type": env.type.split(".")[2],
               "resource_id": env.subject, "funder_id": data.get("funder_id"), "correlation_id": env.correlationid}
        listed = _listed(env.type, data)
        if listed is None:
            rows.append(row)
        else:  # an event standing for several (``VouchersIssued``): a row per resource it lists, as before
            rows += [{**row, "resource_id": item} for item in listed]
    await _BUS_ROWS.execute(session, rows)


def _listed(event_type: str, data: dict) -> list | None:
    """The ids of the resources an event lists (``Event.audit_items``), or None for an event of one resource."""
    cls = Event.registry.get(event_type)
    spec = cls.audit_items if cls is not None else None
    items = data.get(spec[0]) if spec is not None else None
    if not isinstance(items, list) or not items:
        return None
    return [str(item.get(spec[1]))[:100] if isinstance(item, dict) else None for item in items]


def create_audit_table(op) -> None:  # noqa: ANN001
    op.create_table(
        "audit_log",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("channel", sa.String(8), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("roles", sa.String(300), nullable=False),
        sa.Column("actor_tenant", sa.String(120), nullable=False),
        sa.Column("action", sa.String(120), nullable=False),
        sa.Column("resource_type", sa.String(60), nullable=False),
        sa.Column("resource_id", sa.String(100)),
        sa.Column("funder_id", sa.String(40), index=True),
        sa.Column("correlation_id", sa.String(100)),
    )
    # append-only: PostgreSQL refuses updates and deletes outright
    if op.get_bind().dialect.name == "postgresql":
        op.execute("""CREATE FUNCTION audit_log_append_only() RETURNS trigger AS $$
            BEGIN RAISE EXCEPTION 'audit_log is append-only'; END; $$ LANGUAGE plpgsql""")
        op.execute("""CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
            FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()""")
    else:
        op.execute("""CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
            BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END""")
        op.execute("""CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
            BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END""")


def drop_audit_table(op) -> None:  # noqa: ANN001
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_change ON audit_log")
        op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
    op.drop_table("audit_log")
