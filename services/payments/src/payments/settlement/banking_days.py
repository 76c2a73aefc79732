"""Banking days, pure (no I/O): the days a bank executes a SEPA credit transfer. TARGET2 is closed on
weekends and on the TARGET holidays (1 Jan, Good Friday, Easter Monday, 1 May, 25 and 26 Dec: the
``holidays`` package's ECB financial calendar); Finnish banks are closed besides on the Finnish bank
holidays (Epiphany, Ascension Day, Midsummer Eve, Independence Day, Christmas Eve: the ``holidays``
package's Finland calendar), so a payment file asks for execution on a day open in every calendar given.

The requested execution date of a run's payment file is the first banking day on or after the run's day,
unless that would pay a charge after its 14-day deadline: then the last banking day on or before the
deadline (earlier; the bank executes a day already past at once). The daily run's guarantee counts its
margin in runs whose files execute by the deadline (``domain.guarantee_due``), so a long weekend (Easter:
Friday to Monday closed) never carries a charge past its deadline."""
from __future__ import annotations

from datetime import date, timedelta
from functools import lru_cache

import holidays

#: the TARGET2 calendar (the European Central Bank's), always; then the countries' bank holidays
TARGET = "ECB"


class BankingCalendar:
    def __init__(self, countries: tuple[str, ...] = ("FI",)):
        self.countries = tuple(countries)
        self._target = holidays.financial_holidays(TARGET)
        self._national = [holidays.country_holidays(c) for c in self.countries]

    def is_banking_day(self, day: date) -> bool:
        if day.weekday() >= 5 or day in self._target:
            return False
        return not any(day in calendar for calendar in self._national)

    def closed_because(self, day: date) -> str | None:
        """Why the banks are closed on ``day`` (``weekend``, or the holiday's name), None on a banking day."""
        if day.weekday() >= 5:
            return "weekend"
        for calendar in (self._target, *self._national):
            if day in calendar:
                return calendar.get(day)
        return None

    def next_banking_day(self, day: date) -> date:
        """The first banking day on or after ``day`` (remembered: a settlement run asks once per payout)."""
        return self._next_banking_day(day)

    @lru_cache(maxsize=4096)  # noqa: B019  (the calendars are few and live as long as the process: ``calendar``)
    def _next_banking_day(self, day: date) -> date:
        while not self.is_banking_day(day):
            day += timedelta(days=1)
        return day

    def previous_banking_day(self, day: date) -> date:
        """The last banking day on or before ``day``."""
        while not self.is_banking_day(day):
            day -= timedelta(days=1)
        return day

    def execution_date(self, run_date: date, deadline: date | None) -> date:
        """The requested execution date of a payment file made on ``run_date`` whose earliest charge
        deadline is ``deadline`` (None: no charge constrains it): the next banking day, or the last one
        before the deadline when moving later would break the guarantee."""
        later = self.next_banking_day(run_date)
        if deadline is None or later <= deadline:
            return later
        return self.previous_banking_day(deadline)


@lru_cache(maxsize=8)
def calendar(countries: tuple[str, ...] = ("FI",)) -> BankingCalendar:
    """One calendar per set of countries (the ``holidays`` objects fill in years as they are asked)."""
    return BankingCalendar(countries)
