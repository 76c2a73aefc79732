"""Numbers, money, dates and months as people in Finland write them, whatever the page's language:
``7.10.2026``, ``1,5``, ``1 234,50 €``, ``lokakuu 2026`` / ``oktober 2026`` (Babel's ``fi_FI`` and
``sv_FI``; English as written in Finland, ``en_FI``). Times are shown in Finland's time zone. The
services speak ISO dates and plain numbers; only the pages (and the spreadsheet CSVs) say them this way."""
from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from babel.dates import format_date
from babel.numbers import format_currency, format_decimal, format_percent

LOCALES = {"fi": "fi_FI", "sv": "sv_FI", "en": "en_FI"}
HELSINKI = ZoneInfo("Europe/Helsinki")
DASH = "–"


class Formats:
    """The page's formats in its language (``fmt`` in the templates)."""

    def __init__(self, lang: str):
        self.lang = lang
        self.locale = LOCALES.get(lang, "fi_FI")

    def eur(self, cents: Any) -> str:
        """Cents as euros: ``1 234,50 €`` (a no-break space groups the thousands and holds the sign)."""
        if cents is None or cents == "":
            return DASH
        return format_currency(Decimal(int(cents)) / 100, "EUR", locale=self.locale)

    def number(self, value: Any, places: int | None = None) -> str:
        """A decimal the services send as text (``"20.00"``, ``"1.5"``) as people write it (``20``, ``1,5``)."""
        if value is None or value == "":
            return DASH
        try:
            d = Decimal(str(value))
        except InvalidOperation:
            return str(value)
        if places is None:
            d = d.normalize() if d == d.to_integral_value() else d
            pattern = "#,##0.##########"
        else:
            pattern = "#,##0." + "0" * places
        return format_decimal(d, format=pattern, locale=self.locale)

    def share(self, value: Any) -> str:
        """A share (``0.8823``) as a percentage: ``88 %``."""
        if value is None or value == "":
            return DASH
        return format_percent(Decimal(str(value)), locale=self.locale)

    def date(self, value: Any) -> str:
        """A date (``2026-10-07``, or the date of a timestamp) as ``7.10.2026``."""
        day = _date_of(value)
        return DASH if day is None else f"{day.day}.{day.month}.{day.year}"

    def datetime(self, value: Any) -> str:
        """A moment (ISO, UTC) in Finland's time: ``7.10.2026 14.05``."""
        if not value:
            return DASH
        try:
            moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return str(value)
        local = moment.astimezone(HELSINKI) if moment.tzinfo else moment
        return f"{local.day}.{local.month}.{local.year} {local.hour}.{local.minute:02d}"

    def month(self, period: Any) -> str:
        """``2026-11`` as ``marraskuu 2026`` (``november 2026``)."""
        try:
            year, month = (int(x) for x in str(period).split("-")[:2])
        except ValueError:
            return str(period)
        return format_date(date(year, month, 1), "LLLL y", locale=self.locale)


def _date_of(value: Any) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.astimezone(HELSINKI).date() if value.tzinfo else value.date()
    if isinstance(value, date):
        return value
    text = str(value)
    try:
        if len(text) > 10:
            return _date_of(datetime.fromisoformat(text.replace("Z", "+00:00")))
        return date.fromisoformat(text)
    except ValueError:
        return None


def typed_date(text: str) -> date | None:
    """A date a person typed: ``7.10.2026`` (``7.10.26`` not: the century is not guessed) or ISO
    ``2026-10-07`` (what a browser's date field sends); None when it is neither."""
    text = (text or "").strip()
    try:
        if "." in text:
            d, m, y = text.split(".")
            if len(y) == 4:
                return date(int(y), int(m), int(d))
            return None
        return date.fromisoformat(text)
    except ValueError:
        return None
