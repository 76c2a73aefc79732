"""How the invoices write dates and money, pure: Finnish for people (Babel's fi_FI: ``1.6.2026``,
``1 234,50 €``), and Finvoice's machine forms (``CCYYMMDD``, ``1234,50`` with a decimal comma)."""
from __future__ import annotations

from datetime import date
from decimal import Decimal

from babel.dates import format_date
from babel.numbers import format_currency

from seteli_shared.catalogue import CATALOGUE


def euros_fi(cents: int) -> str:
    """``1 234,50 €`` (Babel's spaces are no-break spaces, as Finnish typesetting wants)."""
    return format_currency(Decimal(cents) / 100, "EUR", locale="fi_FI")


def date_fi(day: date) -> str:
    """``1.6.2026``."""
    return format_date(day, "d.M.yyyy", locale="fi_FI")


def finvoice_amount(cents: int) -> str:
    """``1234,50`` / ``-1234,50``: Finvoice's amounts, a decimal comma and two decimals, no grouping."""
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    return f"{sign}{whole},{part:02d}"


def finvoice_date(day: date) -> str:
    return day.strftime("%Y%m%d")


def category_name(code: str, lang: str = "fi") -> str:
    info = CATALOGUE.get(code)
    if info is None:
        return code
    return {"fi": info.name_fi, "sv": info.name_sv}.get(lang, info.name_en)
