"""The shape every request and list response shares.

Request bodies are ``RequestModel``s: strings are stripped before they are validated (a name of only
spaces is empty, hence refused) and unknown fields are refused (422), never silently dropped.
Lists answer ``Page[T]``: a stable order, a ``limit`` with a maximum and an opaque ``next_cursor``.

Numbers and dates are read strictly, by one set of types every service's request fields and query
parameters use (and the CSV charges, through the same parsers):

- ``Units`` (quantities, at most two decimals), ``Rate`` (fee rates, percentages), ``Cents`` and ``BigCents``
  (whole cents: a per-unit price or value, an amount), ``Count`` (days, sizes, ratings, limits): a JSON
  number, or a string of ASCII digits with at most one decimal point (``"4"``, ``"4.5"``); no sign, exponent,
  underscore, NaN, infinity, whitespace inside, other scripts' digits (``"１０"``) or a boolean
  (``invalid_number``); whole numbers have no decimals at all; beyond what the column holds
  (``number_out_of_range``: 2,147,483,647 for ``Cents``, ``Count`` and the hundredths of ``Units``, 64 bits
  for ``BigCents``). The request guard (``web.py``) refuses exponents, NaN, Infinity, integers beyond 64
  bits and JSON numbers with more digits than a double keeps before any of this runs.
- ``BusinessDate``: ``YYYY-MM-DD`` and within ``DATE_MIN``..``DATE_MAX`` (1900-01-01..2199-12-31;
  ``date_out_of_range``): every date a request carries is one of a business's days (a service, a validity, a
  booking), and arithmetic on them (deadlines, a month's end) stays within what dates can hold.
"""
from __future__ import annotations

import base64
import json
import math
import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from functools import partial
from typing import Annotated, Any, Callable, Generic, Sequence, TypeVar

import sqlalchemy as sa
from fastapi import Depends, Query
from pydantic import BaseModel, ConfigDict, GetJsonSchemaHandler, StringConstraints
from pydantic_core import PydanticCustomError, core_schema

from .errors import DomainError
from .ids import cursor_text

T = TypeVar("T")

#: a non-empty line of text (after stripping)
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class RequestModel(BaseModel):
    """Base of every request body."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


# ------------------------------------------------------------------ numbers and dates, strictly
INT32_MAX = 2**31 - 1  # a PostgreSQL integer column
INT64_MAX = 2**63 - 1  # a bigint column
DATE_MIN, DATE_MAX = date(1900, 1, 1), date(2199, 12, 31)
NUMBER_REASONS = ("invalid_number", "number_out_of_range", "invalid_date", "date_out_of_range")
_PLAIN = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_PLAIN_OR_COMMA = re.compile(r"[0-9]+(?:[.,][0-9]+)?")
#: thousands grouped by one space, no-break space or narrow no-break space (as Finnish spreadsheets write
#: ``1 000,50``): in CSV cells only, and only in groups of three (``1 0`` is no number)
_GROUPED = re.compile(r"[0-9]{1,3}(?:[ \u00a0\u202f][0-9]{3})+(?:[.,][0-9]+)?")
_WHOLE = re.compile(r"[0-9]+")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class NumberRefused(ValueError):
    """A number or date the API does not take; ``reason`` is one of ``NUMBER_REASONS``."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message


def _not_a_number(what: str = "a number") -> NumberRefused:
    return NumberRefused("invalid_number", f"{what}: ASCII digits with at most one decimal point (no sign, "
                         "exponent, underscore, space or other digits)")


def decimal_places(value: Decimal) -> int:
    """Decimals that count (``4.50`` has one)."""
    exponent = value.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def parse_decimal_strict(value: Any, *, places: int | None = None, maximum: Decimal | None = None,
                         decimal_comma: bool = False, grouping: bool = False) -> Decimal:
    """``value`` as a Decimal, read strictly: a JSON/Python number (never a boolean, NaN or infinity; a float
    as its shortest decimal form, which is what the JSON said: ``web.py`` lets through no number a double does
    not keep exactly), or text of ASCII digits with at most one decimal point (a comma too with
    ``decimal_comma``; thousands grouped by spaces with ``grouping``: CSV cells). At most ``places`` decimals
    (``invalid_number``) and at most ``maximum`` (``number_out_of_range``). Raises ``NumberRefused``."""
    if isinstance(value, bool):
        raise _not_a_number("a number, not true or false")
    if isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _not_a_number()
        result = Decimal(repr(value))
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise _not_a_number()
        result = value
    elif isinstance(value, str):
        text = value.strip(" \t")
        if _PLAIN.fullmatch(text) or decimal_comma and _PLAIN_OR_COMMA.fullmatch(text):
            result = Decimal(text.replace(",", "."))
        elif grouping and _GROUPED.fullmatch(text):
            result = Decimal(re.sub(r"[ \u00a0\u202f]", "", text).replace(",", "."))
        else:
            raise _not_a_number()
    else:
        raise _not_a_number()
    if places is not None and decimal_places(result) > places:
        raise NumberRefused("invalid_number", f"at most {places} decimals" if places else "a whole number")
    if maximum is not None and result > maximum:
        raise NumberRefused("number_out_of_range", f"at most {maximum}")
    return result


def parse_whole_strict(value: Any, *, maximum: int = INT64_MAX, grouping: bool = False) -> int:
    """``value`` as a whole number, read strictly: a JSON/Python integer (never a boolean or a float, not even
    ``5.0``) or text of ASCII digits; at most ``maximum`` (``number_out_of_range``). Raises ``NumberRefused``."""
    if isinstance(value, bool) or isinstance(value, float):
        raise _not_a_number("a whole number")
    if isinstance(value, int):
        result = value
    elif isinstance(value, Decimal):
        if not value.is_finite() or value != value.to_integral_value():
            raise _not_a_number("a whole number")
        result = int(value)
    elif isinstance(value, str):
        text = value.strip(" \t")
        if grouping and _GROUPED.fullmatch(text) and not re.search(r"[.,]", text):
            text = re.sub(r"[ \u00a0\u202f]", "", text)
        if not _WHOLE.fullmatch(text):
            raise _not_a_number("a whole number")
        if len(text.lstrip("0")) > len(str(maximum)):  # never int() of thousands of digits
            raise NumberRefused("number_out_of_range", f"at most {maximum}")
        result = int(text)
    else:
        raise _not_a_number("a whole number")
    if result > maximum:
        raise NumberRefused("number_out_of_range", f"at most {maximum}")
    return result


def parse_date_strict(value: Any) -> date:
    """``value`` as a business date: ``YYYY-MM-DD`` (ASCII digits; ``invalid_date``) within
    ``DATE_MIN``..``DATE_MAX`` (``date_out_of_range``). Raises ``NumberRefused``."""
    if isinstance(value, datetime):
        raise NumberRefused("invalid_date", "a date YYYY-MM-DD, not a date and time")
    if isinstance(value, date):
        day = value
    elif isinstance(value, str) and _ISO_DATE.fullmatch(value.strip(" \t")):
        try:
            day = date.fromisoformat(value.strip(" \t"))
        except ValueError:
            raise NumberRefused("invalid_date", "no such day") from None
    else:
        raise NumberRefused("invalid_date", "a date YYYY-MM-DD")
    if not DATE_MIN <= day <= DATE_MAX:
        raise NumberRefused("date_out_of_range", f"a date from {DATE_MIN} to {DATE_MAX}")
    return day


@dataclass(frozen=True, eq=False)  # hashed by identity (typing hashes Annotated metadata)
class _Strictly:
    """A type's strict parser run before pydantic's own validation (which then checks the field's bounds),
    and the JSON schema that says what is taken."""

    parse: Callable[[Any], Any]
    json_schema: dict

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> core_schema.CoreSchema:
        def run(value: Any) -> Any:
            try:
                return self.parse(value)
            except NumberRefused as exc:
                raise PydanticCustomError(exc.reason, exc.message) from None

        return core_schema.no_info_before_validator_function(run, handler(source))

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler) -> dict:
        """The strict shape, with the field's bounds (``gt``, ``le``...) on its number branch. Bounds go inside an
        optional field's type (``Annotated[Units, Field(gt=0)] | None``): pydantic cannot place them through
        this type's validator from outside the ``None`` (it would write them as keys JSON Schema lacks)."""
        lax = handler.resolve_ref_schema(handler(schema))
        bounds: dict = {}
        for part in (lax, *lax.get("anyOf", [])):
            bounds.update({k: part[k] for k in _BOUNDS if k in part})
        shape = json.loads(json.dumps(self.json_schema))
        for branch in shape.get("anyOf", [shape]):
            if branch.get("type") in ("number", "integer"):
                branch.update(bounds)
        rest = {k: v for k, v in lax.items() if k not in ("anyOf", "type", "pattern", "format", *_BOUNDS)}
        return {**rest, **shape}


_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
_RAW_BOUNDS = {"gt": "exclusiveMinimum", "ge": "minimum", "lt": "exclusiveMaximum", "le": "maximum"}


def place_bounds(node: Any) -> None:
    """Put the bounds pydantic leaves as raw ``gt``/``ge``/``lt``/``le`` keys (those of an optional field of a
    strict type: it cannot place them through the type's validator from outside the ``None``) onto the number
    branches of their schema, as JSON Schema says them. Walks a whole document (OpenAPI, AsyncAPI) in place."""
    if isinstance(node, list):
        for item in node:
            place_bounds(item)
        return
    if not isinstance(node, dict):
        return
    raw = {k: node.pop(k) for k in list(node) if k in _RAW_BOUNDS and isinstance(node[k], (int, float, str))
           and not isinstance(node[k], bool) and "anyOf" in node}
    if raw:
        _bound_numbers(node, {_RAW_BOUNDS[k]: float(v) if isinstance(v, str) else v for k, v in raw.items()})
    for value in node.values():
        place_bounds(value)


def _bound_numbers(node: dict, bounds: dict) -> None:
    for branch in node.get("anyOf", []):
        if branch.get("type") in ("number", "integer"):
            branch.update(bounds)
        elif "anyOf" in branch:
            _bound_numbers(branch, bounds)


def _digits_schema(places: int) -> dict:
    fraction = r"(\.[0-9]{1,%d})?" % places if places else ""
    return {"anyOf": [{"type": "integer" if not places else "number"},
                      {"type": "string", "pattern": rf"^[0-9]+{fraction}$"}]}


def _whole(maximum: int) -> _Strictly:
    return _Strictly(partial(parse_whole_strict, maximum=maximum),
                     {"anyOf": [{"type": "integer", "maximum": maximum}, {"type": "string", "pattern": "^[0-9]+$"}]})


#: a quantity of units: at most two decimals, stored in hundredths in an integer column
Units = Annotated[Decimal, _Strictly(partial(parse_decimal_strict, places=2, maximum=Decimal(INT32_MAX) / 100),
                                     _digits_schema(2))]
#: a rate or a percentage (an operator's fee rate, an income table's percentages): at most four decimals
Rate = Annotated[Decimal, _Strictly(partial(parse_decimal_strict, places=4, maximum=Decimal(INT32_MAX)),
                                    _digits_schema(4))]
#: whole cents per unit (a price, a voucher value, a fee), held in an integer column
Cents = Annotated[int, _whole(INT32_MAX)]
#: whole cents of an amount (a payment, a budget, a correction), held in a bigint column
BigCents = Annotated[int, _whole(INT64_MAX)]
#: a whole count: days, sizes, ratings, a page's limit
Count = Annotated[int, _whole(INT32_MAX)]
#: a business date, ``YYYY-MM-DD`` within 1900-01-01..2199-12-31
BusinessDate = Annotated[date, _Strictly(parse_date_strict, {"type": "string", "format": "date",
                                                              "description": f"a date from {DATE_MIN} to {DATE_MAX}"})]


# ------------------------------------------------------------------ pagination
MAX_LIMIT = 500
DEFAULT_LIMIT = 50


class PageParams:
    def __init__(self, limit: int, cursor: str | None):
        self.limit = limit
        self.cursor = cursor


async def _page_params(
    limit: Annotated[Count, Query(ge=1, le=MAX_LIMIT, description=f"at most {MAX_LIMIT} items")] = DEFAULT_LIMIT,
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
