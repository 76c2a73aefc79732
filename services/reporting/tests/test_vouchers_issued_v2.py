"""``voucher.issued.v2`` (``VouchersIssued``: one event listing the vouchers a run of decisions issued for one funder)
folds into the same read models (vouchers, figures, cells, clients) as the ``voucher.issued.v1`` events of the same
vouchers, a voucher heard in both versions (the vouchers service's ``ISSUED_EVENTS=both`` while consumers move over)
counts once, and a v2 event heard again (redelivered under a new id, or twice in one batch) changes nothing."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

from seteli_shared.events import AcceptedCharge, ChargesAccepted, IssuedVoucher, VoucherIssued, VouchersIssued

from .folding import one_each, read_models_after, sqlite

AT = datetime(2026, 11, 3, 9, 0, tzinfo=timezone.utc)


def v1() -> list[VoucherIssued]:
    """Vouchers of two funders, of three kinds, with and without statistical attributes, issued over two months."""
    out = []
    for i in range(11):
        kind = ("service_voucher", "client_voucher", "personal_budget")[i % 3]
        extra = ({"max_value_per_unit_cents": 3000, "client_fee_cents": 500} if kind == "client_voucher" else
                 {"budget_cents": 50_000, "categories": ["home_care", "cleaning"]} if kind == "personal_budget" else {})
        out.append(VoucherIssued(
            voucher_id=f"v{i}", funder_id="091" if i % 4 else "092", client_ref=f"asiakas-{i % 7}",
            decision_ref=f"D{i}", category="home_care" if i % 2 else "cleaning", unit="hour",
            units_per_period=Decimal("20") if i % 2 else Decimal("7.5"), period="month", value_per_unit_cents=2500,
            valid_from=date(2026, 10, 1), valid_until=date(2027, 3, 31), issued_at=AT - timedelta(days=20 * (i % 2)),
            kind=kind, voucher_code=f"CODE{i:04d}", carry_over=bool(i % 5 == 0),
            age_band="75-84" if i % 3 else None, municipality_of_residence="091" if i % 2 else None, **extra))
    return out


def v2(events: list[VoucherIssued]) -> list[VouchersIssued]:
    """The vouchers as a decision run lists them: one event per funder, in the order issued."""
    return [VouchersIssued(funder_id=funder, vouchers=[
        IssuedVoucher(**{k: v for k, v in e.model_dump().items() if k != "funder_id"})
        for e in events if e.funder_id == funder]) for funder in dict.fromkeys(e.funder_id for e in events)]


def charged() -> list[ChargesAccepted]:
    """Charges of some of the vouchers (folded before and after their issue)."""
    return [ChargesAccepted(funder_id="091", provider_id="p1", charges=[AcceptedCharge(
        charge_id=f"c{i}", voucher_id=f"v{i}", category="home_care" if i % 2 else "cleaning",
        service_date=date(2026, 11, 2), units=Decimal(2), unit_price_cents=2500, amount_cents=5000,
        own_share_cents=0, accepted_at=AT) for i in (1, 2, 3, 5)])]


async def test_a_run_in_v2_events_folds_as_its_v1_events_do(tmp_path):  # noqa: ANN001
    events = v1()
    charges = charged()
    expected = await read_models_after(sqlite(tmp_path, "v1"), one_each([*events, *charges]))
    assert len(expected["reporting_voucher"]) == len(events)
    got = await read_models_after(sqlite(tmp_path, "v2"), one_each([*v2(events[:6]), *v2(events[6:]), *charges]))
    assert got == expected
    # in one batch, the v2 events after the charges of their vouchers
    together = await read_models_after(sqlite(tmp_path, "together"), [[*charges, *v2(events)]])
    assert together == expected
    # and each v2 event's vouchers are the v1 events it stands for
    funders = list(dict.fromkeys(e.funder_id for e in events))
    assert [one for e in v2(events) for one in e.each()] == sorted(events, key=lambda e: funders.index(e.funder_id))


async def test_a_voucher_heard_in_both_versions_or_again_counts_once(tmp_path):  # noqa: ANN001
    events = v1()
    expected = await read_models_after(sqlite(tmp_path, "v1"), one_each(events))
    both = await read_models_after(sqlite(tmp_path, "both"), [
        events[:4], v2(events), *one_each(events[3:]), v2(events[:5]), [*v2(events), *v2(events)]])
    assert both == expected


async def test_on_postgresql_v2_folds_as_v1_on_sqlite(pg, tmp_path):  # noqa: ANN001
    events = v1()
    charges = charged()
    expected = await read_models_after(sqlite(tmp_path, "sqlite"), one_each([*events, *charges]))
    got = await read_models_after(await pg.create("reporting"),
                                  [[*v2(events[:7]), *charges], v2(events[5:]), v2(events)])
    assert got == expected
