"""Payment files ask the bank for TARGET2 banking days only (weekends, TARGET holidays, Finnish bank
holidays skipped) and the 14-day guarantee still holds: the pain.001 file of a run on a Sunday and on
Good Friday validated against the ISO 20022 pain.001.001.03 XSD (the one ``sepaxml`` ships), the daily
run paying a small payout before Easter when waiting would execute it after its deadline, and the rules."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sepaxml
from lxml import etree

from payments.settlement import domain
from seteli_shared.events import ProviderRegistered
from payments.settlement.banking_days import BankingCalendar, calendar

XSD = etree.XMLSchema(etree.parse(str(Path(sepaxml.__file__).parent / "schemas" / "pain.001.001.03.xsd")))
PAIN = "{urn:iso:std:iso:20022:tech:xsd:pain.001.001.03}"
SUNDAY, GOOD_FRIDAY, EASTER_MONDAY = date(2026, 6, 21), date(2026, 4, 3), date(2026, 4, 6)


def at(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 9, 0, tzinfo=timezone.utc)


# ------------------------------------------------------------------ the calendar and the rules, pure
@pytest.mark.parametrize("day, open_", [
    (date(2026, 6, 22), True), (SUNDAY, False), (date(2026, 6, 20), False),  # Monday; the weekend
    (date(2026, 1, 1), False), (GOOD_FRIDAY, False), (EASTER_MONDAY, False), (date(2026, 5, 1), False),
    (date(2026, 12, 25), False), (date(2026, 12, 26), False),  # TARGET's holidays
    (date(2026, 1, 6), False), (date(2026, 5, 14), False), (date(2026, 6, 19), False),  # Finnish bank holidays:
    (date(2026, 12, 24), False), (date(2027, 12, 6), False),  # Epiphany, Ascension, Midsummer Eve, Christmas Eve,
    (date(2026, 4, 2), True), (date(2026, 4, 7), True), (date(2026, 12, 28), True)])  # Independence Day
def test_banking_days(day: date, open_: bool) -> None:
    assert calendar().is_banking_day(day) is open_


def test_target_only_calendar_keeps_finnish_holidays_open() -> None:
    target = BankingCalendar(())
    assert target.is_banking_day(date(2026, 1, 6)) and not target.is_banking_day(GOOD_FRIDAY)


def test_execution_date_moves_later_unless_the_guarantee_breaks() -> None:
    cal = calendar()
    assert cal.execution_date(SUNDAY, None) == date(2026, 6, 22)
    assert cal.execution_date(GOOD_FRIDAY, EASTER_MONDAY + timedelta(days=5)) == date(2026, 4, 7)
    # a run made on Saturday 4.4. for a charge due on Easter Monday: Tuesday would be late, Thursday is not
    assert cal.execution_date(date(2026, 4, 4), EASTER_MONDAY) == date(2026, 4, 2)
    assert cal.execution_date(date(2026, 4, 2), EASTER_MONDAY) == date(2026, 4, 2)


def test_the_guarantee_counts_its_margin_in_runs_that_execute_in_time() -> None:
    rules, accepted = domain.PayoutRules(), [at(date(2026, 3, 23))]  # due on Easter Monday 6.4., margin 2 days
    days = calendar().next_banking_day
    monday, tuesday = date(2026, 3, 30), date(2026, 3, 31)
    # Monday: the runs of Tuesday, Wednesday and Thursday still execute by the deadline
    assert not domain.decide_payout(2375, accepted, monday, rules, execution_of=days).pay
    # Tuesday: were it to wait, only Wednesday's and Thursday's runs would be left (Friday's executes 7.4.)
    decision = domain.decide_payout(2375, accepted, tuesday, rules, execution_of=days)
    assert (decision.pay, decision.reason) == (True, domain.PAY_GUARANTEE)
    # without a calendar every day is a banking day: the release day (Saturday 4.4.) would pay it, too late
    assert not domain.decide_payout(2375, accepted, date(2026, 4, 3), rules).pay
    assert domain.decide_payout(2375, accepted, date(2026, 4, 4), rules).pay
    # an ordinary weekend changes nothing: due Monday 15.6., paid on its release day, Saturday 13.6.
    june = [at(date(2026, 6, 1))]
    assert not domain.decide_payout(2375, june, date(2026, 6, 12), rules, execution_of=days).pay
    assert domain.decide_payout(2375, june, date(2026, 6, 13), rules, execution_of=days).pay


# ------------------------------------------------------------------ the payment files, live
async def _run(live, provider: str, day: date, units: str, service_day: date) -> dict:  # noqa: ANN001
    """A voucher of the provider's charged ``units`` hours (25.00 EUR/h) on ``day``, and the daily run then."""
    live.clock.at = at(day)
    voucher = await live.voucher(provider, 1, "50")
    await live.charge(provider, voucher, f"visit-{day}", units, day=service_day)
    r = await live.client.post("/settlement-runs")
    assert r.status_code == 200, r.text
    return r.json()


async def _payment_file(live, run_id: str) -> etree._Element:  # noqa: ANN001
    r = await live.client.get(f"/settlement-runs/{run_id}/payment-file")
    assert r.status_code == 200, r.text
    doc = etree.fromstring(r.content)
    XSD.assertValid(doc)
    return doc


async def _provider_with_account(live, provider: str) -> None:  # noqa: ANN001
    await live.publish(ProviderRegistered(provider_id=provider, business_id="1572860-0", name=f"Hoiva {provider}",
                                          iban="FI2112345600000785", registered_at=at(date(2026, 1, 1))),
                       source="registry")


@pytest.mark.parametrize("day, service_day, expected", [
    (SUNDAY, date(2026, 6, 18), date(2026, 6, 22)),  # a Sunday run: paid on Monday
    (GOOD_FRIDAY, date(2026, 4, 2), date(2026, 4, 7)),  # Easter: Friday to Monday closed, paid on Tuesday
])
async def test_payment_file_of_a_closed_day_asks_for_the_next_banking_day(live, day, service_day, expected) -> None:  # noqa: ANN001
    provider = f"p-bd-{day:%m%d}"
    await _provider_with_account(live, provider)
    run = await _run(live, provider, day, "4", service_day)  # 100.00 EUR: over the minimum payout
    assert run["run_date"] == day.isoformat() and len(run["settlements"]) == 1
    doc = await _payment_file(live, run["id"])
    assert doc.findtext(f".//{PAIN}ReqdExctnDt") == expected.isoformat()
    assert doc.findtext(f".//{PAIN}CdtTrfTxInf/{PAIN}Amt/{PAIN}InstdAmt") == "95.00"


async def test_small_payout_due_on_easter_monday_is_paid_before_the_long_weekend(live) -> None:  # noqa: ANN001
    provider = "p-bd-easter"
    await _provider_with_account(live, provider)
    accepted_on = date(2026, 3, 23)  # deadline Easter Monday 6.4.
    run = await _run(live, provider, accepted_on, "1", accepted_on)  # 25.00 EUR: under the minimum
    assert run["settlements"] == [] and len(run["held_back"]) == 1
    live.clock.at = at(date(2026, 3, 30))  # Monday: three runs left whose files execute by the deadline: waits
    r = (await live.client.post("/settlement-runs")).json()
    assert r["settlements"] == [] and len(r["held_back"]) == 1
    live.clock.at = at(date(2026, 3, 31))  # Tuesday: waiting would leave one run fewer than the margin
    r = (await live.client.post("/settlement-runs")).json()
    assert [s["payout_reason"] for s in r["settlements"]] == ["guarantee_due"]
    doc = await _payment_file(live, r["id"])
    assert doc.findtext(f".//{PAIN}ReqdExctnDt") == "2026-03-31"
