"""Tables of the transactional outbox and the inbox; every service has both."""
from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

BigIntPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class UTCDateTime(sa.types.TypeDecorator):
    """A timestamp with time zone that always comes back aware (SQLite drops the zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):  # noqa: ANN001, ANN201
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime: timestamps must carry a time zone")
        return value.astimezone(timezone.utc) if value is not None else None

    def process_result_value(self, value, dialect):  # noqa: ANN001, ANN201
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value


class OutboxMessage(SQLModel, table=True):
    """An event waiting to be published; written in the same transaction as the state change."""

    __tablename__ = "outbox"
    __table_args__ = (sa.Index("ix_outbox_unsent", "seq", postgresql_where=sa.text("sent_at IS NULL"),
                               sqlite_where=sa.text("sent_at IS NULL")),)
    seq: int | None = Field(default=None, sa_column=sa.Column(BigIntPK, primary_key=True, autoincrement=True))
    message_id: str = Field(sa_column=sa.Column(sa.String(64), nullable=False, unique=True))
    routing_key: str = Field(sa_column=sa.Column(sa.String(200), nullable=False))
    body: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    created_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    sent_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))
    attempts: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0"))
    next_attempt_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))
    last_error: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    #: the W3C traceparent of the span that wrote the row (NULL when tracing is off): the message's header
    traceparent: str | None = Field(default=None, sa_column=sa.Column(sa.String(55)))


class InboxMessage(SQLModel, table=True):
    """A message a consumer has processed; recorded in the same transaction as its effect."""

    __tablename__ = "inbox"
    consumer: str = Field(sa_column=sa.Column(sa.String(100), primary_key=True))
    message_id: str = Field(sa_column=sa.Column(sa.String(64), primary_key=True))
    received_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))


def create_messaging_tables(op) -> None:  # noqa: ANN001
    """Used by each service's first Alembic migration."""
    op.create_table(
        "outbox",
        sa.Column("seq", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("message_id", sa.String(64), nullable=False, unique=True),
        sa.Column("routing_key", sa.String(200), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
        sa.Column("last_error", sa.Text),
        # the span that wrote the row (``tracing``); on a database made before it, shared_0002 adds it
        sa.Column("traceparent", sa.String(55)),
    )
    op.create_index(
        "ix_outbox_unsent", "outbox", ["seq"],
        postgresql_where=sa.text("sent_at IS NULL"), sqlite_where=sa.text("sent_at IS NULL"),
    )
    op.create_table(
        "inbox",
        sa.Column("consumer", sa.String(100), primary_key=True),
        sa.Column("message_id", sa.String(64), primary_key=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )


def drop_messaging_tables(op) -> None:  # noqa: ANN001
    op.drop_table("inbox")
    op.drop_index("ix_outbox_unsent", table_name="outbox")
    op.drop_table("outbox")
