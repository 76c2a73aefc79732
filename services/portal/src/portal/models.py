"""The portal's one table: the sign-in sessions kept on the server (``sessions.py``)."""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from seteli_shared.messaging import UTCDateTime


class PortalSession(SQLModel, table=True):
    """One session id. The id itself is only in the browser's cookie: the key here is its SHA-256, and
    the data (the user's token, roles, CSRF token, a pending OpenID Connect sign-in) is encrypted under
    a key derived from ``PORTAL_SESSION_SECRET`` and the id. A signed-in session's id is replaced from
    time to time; the ids one session has had share its ``family``, so signing out ends them all."""

    __tablename__ = "portal_session"
    __table_args__ = (sa.Index("ix_portal_session_family", "family"),
                      sa.Index("ix_portal_session_ends_at", "ends_at"),
                      sa.Index("ix_portal_session_last_seen_at", "last_seen_at"))
    id_hash: str = Field(primary_key=True, max_length=64)
    family: str = Field(max_length=64)
    #: Fernet token of the session's data (JSON)
    data: str = Field(sa_type=sa.Text)
    #: when the session began (the sign-in, for a signed-in one): its absolute lifetime counts from here
    started_at: datetime = Field(sa_type=UTCDateTime())
    #: when this id was given out: it is replaced once it is SESSION_ROTATE_SECONDS old
    issued_at: datetime = Field(sa_type=UTCDateTime())
    #: the last request with this session (its idle timeout counts from here; written at most once a minute)
    last_seen_at: datetime = Field(sa_type=UTCDateTime())
    #: when this id stops working whatever happens: the absolute end, or a replaced id's end of grace
    ends_at: datetime = Field(sa_type=UTCDateTime())
    #: when this id was replaced by a newer one of its family (None: it is the current one)
    replaced_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
