"""The shape every request and list response shares.

Request bodies are ``RequestModel``s: strings are stripped before they are validated (a name of only
spaces is empty, hence refused) and unknown fields are refused (422), never silently dropped.
Lists answer ``Page[T]``: a stable order, a ``limit`` with a maximum and an opaque ``next_cursor``.
"""
from __future__ import annotations

import base64
import json
from datetime import date, datetime
from typing import Annotated, Any, Generic, Sequence, TypeVar

import sqlalchemy as sa
from fastapi import Depends, Query
from pydantic import BaseModel, ConfigDict, StringConstraints

from .errors import DomainError
from .ids import cursor_text

T = TypeVar("T")

#: a non-empty line of text (after stripping)
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class RequestModel(BaseModel):
    """Base of every request body."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


# ------------------------------------------------------------------ pagination
MAX_LIMIT = 500
DEFAULT_LIMIT = 50


class PageParams:
    def __init__(self, limit: int, cursor: str | None):
        self.limit = limit
        self.cursor = cursor


async def _page_params(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"at most {MAX_LIMIT} items")] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=400, pattern=r"^[A-Za-z0-9_=-]+$",
                                        description="`next_cursor` of the previous page")] = None,
) -> PageParams:
    return PageParams(limit, cursor)


PageDep = Annotated[PageParams, Depends(_page_params)]


class Page(BaseModel, Generic[T]):
    items: list[T]
    #: pass as ``cursor`` for the next page; null on the last page
    next_cursor: str | None = None


def _encode(values: Sequence[Any]) -> str:
    return cursor_text(json.dumps([v.isoformat() if isinstance(v, (date, datetime)) else v for v in values]))


def _decode(cursor: str, columns: Sequence[Any]) -> list[Any]:
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if not isinstance(raw, list) or len(raw) != len(columns):
            raise ValueError
        out = []
        for value, col in zip(raw, columns):
            kind = col.type
            py = getattr(kind, "impl", kind).python_type  # a TypeDecorator (AutoString, UTCDateTime): its impl's
            if py is datetime:
                out.append(datetime.fromisoformat(value))
            elif py is date:
                out.append(date.fromisoformat(value))
            elif py is int and isinstance(value, int) or py is str and isinstance(value, str):
                out.append(value)
            else:
                raise ValueError
        return out
    except (ValueError, TypeError, NotImplementedError, json.JSONDecodeError) as exc:
        raise DomainError("invalid_cursor", "the cursor is not one this list gave", status_code=400) from exc


async def paginate(session, query: sa.Select, order: Sequence[Any], page: PageParams, *,
                   as_rows: bool = False) -> tuple[list[Any], str | None]:
    """Run ``query`` (selecting one entity; ``as_rows``: selecting columns, answered as rows) in the stable
    ``order`` (unique together) from the page's cursor. Returns the rows and the cursor of the next page."""
    if page.cursor:
        query = query.where(sa.tuple_(*order) > sa.tuple_(*_decode(page.cursor, order)))
    result = await session.execute(query.order_by(*order).limit(page.limit + 1))
    rows = list(result.all() if as_rows else result.scalars().all())
    if len(rows) <= page.limit:
        return rows, None
    rows = rows[: page.limit]
    last = rows[-1]
    return rows, _encode([getattr(last, col.key) for col in order])
