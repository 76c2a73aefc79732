"""Charges in a CSV file, read the way Finnish spreadsheets write them, pure (no I/O):

- UTF-8 with or without a byte-order mark. A file whose first 64 KiB are not UTF-8 (Latin-1, Windows-1252:
  what spreadsheets write as "CSV") is refused whole (``encoding_not_utf8``), before anything is charged;
  a line further on that is not UTF-8 is refused by itself with the same reason (the file streams: the
  lines before it may be charged already);
- a line holding a personal identity code (or a NUL) is refused by itself
  (``personal_identity_code``, ``nul_character``), naming the column only; in the header it
  refuses the file. Streamed bodies skip the request guard's whole-body scan: this is that scan, per line;
- a comma or a semicolon between fields, found from the header line;
- numbers as ``seteli_shared.schemas`` reads them everywhere (ASCII digits, at most one decimal separator),
  with a decimal comma or point (``1,5`` or ``1.5`` units; ``27,50`` EUR in ``unit_price``) and thousands
  grouped by a space, no-break space or narrow no-break space in groups of three (``1 000,50``); no sign,
  exponent, underscore, other scripts' digits or stray spaces (``1 0``): the line is refused
  ``invalid_number_or_date``; dates as ``2026-06-01`` or ``1.6.2026`` (ASCII digits), within the dates the
  line model takes (``BusinessDate``: 1900-01-01..2199-12-31);
- a header line naming the columns (any order, any case): ``provider_reference``, ``service_date``,
  ``units`` and one of ``voucher_id`` / ``voucher_code`` are required; ``unit_price`` (EUR) or
  ``unit_price_cents``, ``tariff`` and ``category`` are optional. A missing column refuses the whole file
  (``csv_missing_column``); a column the format does not have (a free-text note, an empty one after a
  trailing separator) is ignored, with one warning for the file (``UNKNOWN_COLUMNS_IGNORED``: the columns'
  names and positions); its cells are still scanned for personal identity codes with the rest of the line.

The rows come one at a time (``rows``) from an iterable of byte chunks, each with its line number in
the file (the header is line 1), as a dict of field values for the bulk line model, or as the
reason it cannot be read. Nothing here echoes a value back: reasons name fields only.
"""
from __future__ import annotations

import codecs
import csv
import re
from functools import lru_cache
from dataclasses import dataclass, field
from datetime import date
from typing import Iterable, Iterator

from seteli_shared.errors import DomainError
from seteli_shared.privacy import cannot_hold_code, find_in
from seteli_shared.schemas import parse_decimal_strict, parse_whole_strict

REQUIRED = ("provider_reference", "service_date", "units")
VOUCHER = ("voucher_id", "voucher_code")
OPTIONAL = ("unit_price", "unit_price_cents", "tariff", "category")
COLUMNS = (*VOUCHER, *REQUIRED, *OPTIONAL)
_DMY = re.compile(r"^([0-9]{1,2})\.([0-9]{1,2})\.([0-9]{4})$")
#: the first bytes of a file are decoded strictly: a file that is not UTF-8 is refused whole
STRICT_BYTES = 64 * 1024
_NOT_UTF8 = "\ufffd"


@dataclass(frozen=True, slots=True)
class Row:
    """One data line: its line number and its fields (values for ``intake.ChargeLine``), or why it
    cannot be read (``reason`` with the ``fields`` it concerns)."""

    line: int
    values: dict
    reason: str | None = None
    fields: list[str] = field(default_factory=list)

    @property
    def provider_reference(self) -> str | None:
        ref = self.values.get("provider_reference")
        return ref if isinstance(ref, str) else None


def _not_utf8() -> DomainError:
    return DomainError("encoding_not_utf8", "the file is not UTF-8 text: save it as UTF-8 (\"CSV UTF-8\") "
                       "and send it again", status_code=400)


def decode(chunks: Iterable[bytes]) -> Iterator[str]:
    """UTF-8 text of the chunks, a leading byte-order mark dropped. The chunks that begin in the first
    ``STRICT_BYTES`` are decoded strictly (``encoding_not_utf8`` for the file); later ones with U+FFFD for
    what is not UTF-8, so that the line holding it is refused by itself."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    first, offset = True, 0
    try:
        for chunk in chunks:
            decoder.errors = "strict" if offset < STRICT_BYTES else "replace"
            offset += len(chunk)
            text = decoder.decode(chunk)
            if first and text:
                text, first = text.removeprefix("\ufeff"), False
            if text:
                yield text
        decoder.errors = "strict" if offset <= STRICT_BYTES else "replace"
        tail = decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise _not_utf8() from None
    if tail:
        yield tail


def _lines(texts: Iterator[str]) -> Iterator[str]:
    """Lines with their endings (as ``csv`` wants them), across chunk boundaries."""
    pending = ""
    for text in texts:
        pending += text
        parts = pending.splitlines(keepends=True)
        # the last part may be a line still going on (or a lone \r whose \n is in the next chunk)
        pending = parts.pop() if parts and not parts[-1].endswith("\n") else ""
        yield from parts
    if pending:
        yield pending


def separator(header: str) -> str:
    """A semicolon when the header has more of them than commas (a Finnish spreadsheet's), else a comma."""
    return ";" if header.count(";") > header.count(",") else ","


#: the warning of a file whose header names columns the format does not have (they are ignored)
UNKNOWN_COLUMNS_IGNORED = "csv_unknown_columns_ignored"
#: of the ignored columns at most this many are named, each name at most this long
_MAX_NAMED, _MAX_NAME = 20, 60


def header_columns(names: list[str]) -> list[str]:
    """The header's column names, checked: none of the known ones twice, the required ones there. Names the
    format does not have stay in their places (their cells are ignored: ``unknown_columns``)."""
    columns = [n.strip().lower().removeprefix("\ufeff") for n in names]
    twice = sorted({n for n in columns if n in COLUMNS and columns.count(n) > 1})
    if twice:
        raise DomainError("csv_duplicate_column", "the header names a column twice", duplicated=twice)
    missing = [n for n in REQUIRED if n not in columns]
    if not any(v in columns for v in VOUCHER):
        missing.append("voucher_id|voucher_code")
    if missing:
        raise DomainError("csv_missing_column", "the header lacks a required column", missing=missing,
                          columns=list(COLUMNS))
    return columns


def unknown_columns(names: list[str], columns: list[str]) -> dict | None:
    """The warning for the header's columns the format does not have (None when there are none): its
    ``code``, the ``columns`` as the header names them (shortened) and their 1-based ``positions``."""
    unknown = [i for i, n in enumerate(columns) if n not in COLUMNS]
    if not unknown:
        return None
    return {"code": UNKNOWN_COLUMNS_IGNORED,
            "message": "the file has columns this format does not have: they were ignored",
            "columns": [names[i].strip().removeprefix("\ufeff")[:_MAX_NAME] for i in unknown[:_MAX_NAMED]],
            "positions": [i + 1 for i in unknown[:_MAX_NAMED]], "count": len(unknown),
            "known_columns": list(COLUMNS)}


#: distinct cells remembered per reading function: a month's file repeats its dates, units and prices on most
#: lines, and each is read the same way every time (pure functions of the text; a refused cell is not remembered)
_CELLS = 4096


@lru_cache(maxsize=_CELLS)
def decimal_text(raw: str) -> str:
    """``1,5`` / ``1.5`` / ``1 000,50`` as a decimal in plain digits (a ValueError, ``NumberRefused``, when it is
    none: the strict reading every service's numbers get, with a decimal comma and grouped thousands)."""
    return format(parse_decimal_strict(raw, decimal_comma=True, grouping=True), "f")


@lru_cache(maxsize=_CELLS)
def date_text(raw: str) -> str:
    """``2026-06-01`` as is; ``1.6.2026`` (Finnish) as ``2026-06-01`` (ValueError when no such day)."""
    text = raw.strip()
    m = _DMY.match(text)
    if m:
        return date(int(m[3]), int(m[2]), int(m[1])).isoformat()
    return text  # the line model parses (and refuses) ISO dates


@lru_cache(maxsize=_CELLS)
def price_cents(raw: str) -> int:
    """``27,50`` (EUR, at most two decimals) in cents (ValueError when it is no such price)."""
    return int(parse_decimal_strict(raw, places=2, decimal_comma=True, grouping=True) * 100)


@lru_cache(maxsize=_CELLS)
def whole_cents(raw: str) -> int:
    return parse_whole_strict(raw, grouping=True)


def _values(columns: list[str], cells: list[str]) -> tuple[dict, str | None, list[str]]:
    values: dict = {}
    bad: list[str] = []
    for name, cell in zip(columns, cells):
        cell = cell.strip()
        if cell == "" or name not in COLUMNS:  # an unknown column's cells are not read (the file's warning)
            continue
        try:
            if name == "units":
                values[name] = decimal_text(cell)
            elif name == "unit_price":
                values["unit_price_cents"] = price_cents(cell)
            elif name == "unit_price_cents":
                values[name] = whole_cents(cell)
            elif name == "service_date":
                values[name] = date_text(cell)
            else:
                values[name] = cell
        except ValueError:
            bad.append(name)
    if "unit_price" in columns and "unit_price_cents" in columns:
        priced = [cells[columns.index(n)].strip() for n in ("unit_price", "unit_price_cents")
                  if columns.index(n) < len(cells)]
        if all(priced) and len(priced) == 2:
            return values, "csv_price_given_twice", ["unit_price", "unit_price_cents"]
    if bad:
        return values, "invalid_number_or_date", bad
    return values, None, []


def rows(chunks: Iterable[bytes], warnings: list[dict] | None = None) -> Iterator[Row]:
    """The file's data lines one at a time; the header is read (and checked) before the first, and a
    warning about it (``unknown_columns``) appended to ``warnings``. Blank lines are skipped. Raises
    ``DomainError`` for a file that cannot be read at all (its encoding, its header)."""
    lines = _lines(decode(chunks))
    header_line = ""
    for line in lines:
        if line.strip():
            header_line = line
            break
    if not header_line:
        raise DomainError("csv_header_missing", "the file is empty: its first line must name the columns",
                          columns=list(COLUMNS))
    if _NOT_UTF8 in header_line:
        raise _not_utf8()
    found = find_in(header_line)
    if found:  # before the header's names could be echoed as unknown columns
        raise DomainError(found[1], "the header holds personal data; nothing was read", errors=[
            {"loc": ["body", "header"], "reason": found[1]}])
    sep = separator(header_line)
    header_offset = 1  # blank lines before the header are rare; the header counts as line 1 of what is read
    reader = csv.reader(_chain(header_line, lines), delimiter=sep, quotechar='"', strict=False)
    try:
        names = next(reader)
        columns = header_columns(names)
        warning = unknown_columns(names, columns)
        if warning is not None and warnings is not None:
            warnings.append(warning)
        for cells in reader:
            line = reader.line_num
            if not any(c.strip() for c in cells):
                continue
            refused = _refused(columns, cells)
            if refused is not None:  # nothing of the line is kept or echoed
                yield Row(line=line + header_offset - 1, values={}, reason=refused[0], fields=refused[1])
                continue
            values, reason, fields = _values(columns, cells)
            if reason is None and len(cells) > len(columns):
                reason, fields = "csv_too_many_fields", []
            yield Row(line=line + header_offset - 1, values=values, reason=reason, fields=fields)
    except csv.Error:
        raise DomainError("csv_malformed", "the file is not CSV that can be read (an unclosed quote?)",
                          line=reader.line_num) from None


def _refused(columns: list[str], cells: list[str]) -> tuple[str, list[str]] | None:
    """A line that is not read at all: one holding personal data or a NUL (the scan the request guard
    makes of other bodies), or bytes that were not UTF-8; the reason and the columns concerned."""
    joined = ";".join(cells)
    if cannot_hold_code(joined):
        return None  # the guard's fast path: no code can be spelt without six digits this close
    bad = [i for i, c in enumerate(cells) if _NOT_UTF8 in c]
    if bad:
        return "encoding_not_utf8", [columns[i] for i in bad if i < len(columns)]
    found = find_in(cells)
    if found:
        i = found[0][0]
        return found[1], [columns[i]] if i < len(columns) else []
    found = find_in(joined)  # a code split over cells, as the guard sees a whole body
    return (found[1], []) if found else None


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    yield first
    yield from rest
