"""``charge.accepted.v2`` (``ChargesAccepted``: one event listing the charges a bulk intake accepted for one provider
with one funder) folds into the same read models as the ``charge.accepted.v1`` events of the same charges, a charge
heard in both versions (payments' ``ACCEPTED_EVENTS=both`` while consumers move over) counts once, and a v2 event
heard again (redelivered under a new id, or folded in the same batch twice) changes nothing."""
from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from seteli_shared.events import AcceptedCharge, ChargeAccepted, ChargeCancelled, ChargesAccepted, ChargeSettled

from .folding import AT, issued, one_each, read_models_after, sqlite

#: (charge, voucher, funder, amount)
CHARGES = [(f"c{i}", f"v{i % 3}", "091" if i % 4 else "092", 2500 * (1 + i % 2)) for i in range(9)]


def v1(charges: list) -> list[ChargeAccepted]:
    return [ChargeAccepted(charge_id=c, voucher_id=v, funder_id=f, provider_id="p1", category="home_care",
                           service_date=date(2026, 11, 20 - i % 3), units=Decimal(a // 2500), unit_price_cents=2500,
                           amount_cents=a, own_share_cents=a // 10, accepted_at=AT + timedelta(minutes=i),
                           tariff="weekday" if i % 2 else None, price_registered=bool(i % 2),
                           registered_price_cents=2500 if i % 2 else None, price_list_id="pl" if i % 2 else None,
                           client_fee_cents=100 if i == 3 else None)
            for i, (c, v, f, a) in enumerate(CHARGES) if (c, v, f, a) in charges]


def v2(charges: list) -> list[ChargesAccepted]:
    """The charges as payments' bulk lists them: one event per funder."""
    out = []
    for funder in sorted({f for _, _, f, _ in charges}):
        out.append(ChargesAccepted(funder_id=funder, provider_id="p1", charges=[AcceptedCharge(**{
            k: v for k, v in e.model_dump().items() if k not in ("funder_id", "provider_id")})
            for e in v1([x for x in charges if x[2] == funder])]))
    return out


def settled(charges: list) -> list[ChargeSettled]:
    return [ChargeSettled(charge_id=c, settlement_id="s1", voucher_id=v, funder_id=f, provider_id="p1",
                          category="home_care", gross_cents=a, fee_cents=a // 20, net_cents=a - a // 20, settled_at=AT)
            for c, v, f, a in charges]


async def test_a_bulk_in_v2_events_folds_as_its_v1_events_do(tmp_path):  # noqa: ANN001
    cancel = ChargeCancelled(charge_id="c5", voucher_id="v2", funder_id="091", provider_id="p1", category="home_care",
                             service_date=date(2026, 11, 18), units=Decimal(2), amount_cents=5000, cancelled_at=AT)
    expected = await read_models_after(sqlite(tmp_path, "v1"),
                                       one_each([*issued(), *v1(CHARGES), cancel, *settled(CHARGES[:4])]))
    got = await read_models_after(sqlite(tmp_path, "v2"),
                                  one_each([*issued(), *v2(CHARGES[:5]), *v2(CHARGES[5:]), cancel,
                                            *settled(CHARGES[:4])]))
    assert got == expected
    charges = expected["reporting_charge"]
    assert len(charges) == len(CHARGES)
    # in one batch, the v2 events before the vouchers' issue and the settlements
    together = await read_models_after(sqlite(tmp_path, "together"),
                                       [[*v2(CHARGES), *settled(CHARGES[:4]), cancel, *issued()]])
    assert together == expected


async def test_a_charge_heard_in_both_versions_or_again_counts_once(tmp_path):  # noqa: ANN001
    expected = await read_models_after(sqlite(tmp_path, "v1"), one_each([*issued(), *v1(CHARGES)]))
    both = await read_models_after(sqlite(tmp_path, "both"), [
        *one_each(issued()), v1(CHARGES[:4]), v2(CHARGES), *one_each(v1(CHARGES[2:])), v2(CHARGES[:6]),
        [*v2(CHARGES), *v2(CHARGES)]])
    assert both == expected


async def test_on_postgresql_v2_folds_as_v1_on_sqlite(pg, tmp_path):  # noqa: ANN001
    events = [*issued(), *v2(CHARGES[:6]), *v2(CHARGES[3:]), *v1(CHARGES[1:2]), *settled(CHARGES[2:7])]
    expected = await read_models_after(sqlite(tmp_path, "sqlite"),
                                       one_each([*issued(), *v1(CHARGES), *settled(CHARGES[2:7])]))
    got = await read_models_after(await pg.create("reporting"), one_each(events))
    assert got == expected
