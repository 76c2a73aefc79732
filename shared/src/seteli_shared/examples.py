"""One example of every domain event, made from the event models themselves, for the published contract
(``docs/asyncapi.yaml``, ``scripts/gen_contracts.py``).

The examples are instances of the models, not dictionaries written beside them: a field an event gains
without a value here, or a value its type refuses, stops the generation, so an example cannot drift from
its model; the contract's tests then validate each one against its published schema. They tell one
story, the README's first flow: funder ``091`` (Helsinki) approves Kotihoiva Oy for home care, grants a
client a voucher of 20 hours a month at 25.00 EUR/h, the client chooses the provider, the provider
charges 4 hours (100.00 EUR) and is settled 95.00 EUR after the 5 % fee. Every id is fixed and holds no
six digits in a row, so the privacy guard can never read one as a personal identity code.
"""
from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal

from . import events as ev

FUNDER = "091"
PROVIDER = "2d9f6a7b-8c1d-4e2f-9a3b-4c5d6e7f8a9b"
APPLICATION = "a1c3e5f7-9b2d-4f6a-8c1e-3d5f7a9b1c2e"
APPROVAL = "b7e2c4a6-8d1f-4a3c-9e5b-7f1d3b5a7c9e"
PRICE_LIST = "c9a1e3b5-7d2f-4c6e-8a1b-3e5d7f9b2a4c"
VOUCHER = "6f1d2c4e-3b7a-4f0e-9a51-7c2e8d9b0a11"
CHARGE = "e4b6d8f1-2a3c-4e5f-9b7d-1c3e5a7b9d2f"
SETTLEMENT = "0b7e7c1e-52a4-4d8e-9d55-2c7d3c1f9a10"
CORRECTION = "f2d4b6a8-1c3e-4a5f-8b7d-9e1f3a5c7b9d"
PREVIOUS_PROVIDER = "d3f5a7c9-1b2e-4d6f-8a3c-5e7b9d1f3a5c"


def _at(day: int, hour: int = 9, month: int = 3) -> datetime:
    return datetime(2026, month, day, hour, 15, tzinfo=timezone.utc)


def _registry() -> list[ev.Event]:
    return [
        ev.FunderRegistered(funder_id=FUNDER, name="Helsingin kaupunki", kind="municipality",
                            operator_fee_rate=Decimal("0.05"), registered_at=_at(2, 8), charge_deadline_days=90),
        ev.FunderTermsChanged(funder_id=FUNDER, operator_fee_rate=Decimal("0.045"), settlement_days=14,
                              charge_deadline_days=90, changed_at=_at(1, 8, month=6)),
        ev.ProviderRegistered(provider_id=PROVIDER, business_id="2617416-4", name="Kotihoiva Oy",
                              registered_at=_at(2, 10), iban="FI2112345600000785", bic="NDEAFIHH"),
        ev.ProviderUpdated(provider_id=PROVIDER, changed=["languages", "municipalities"], languages=["fi", "sv"],
                           municipalities=["091", "049"], updated_at=_at(3, 11)),
        ev.RulebookPublished(funder_id=FUNDER, category="home_care", rulebook_version="2026.1",
                             title="Kotihoidon palveluseteli", price_changes_need_approval=True,
                             published_at=_at(2, 9)),
        ev.ProviderApplied(application_id=APPLICATION, provider_id=PROVIDER, funder_id=FUNDER, categories=["home_care"],
                           rulebook_versions={"home_care": "2026.1"}, submitted_at=_at(3, 12)),
        ev.ProviderApproved(approval_id=APPROVAL, provider_id=PROVIDER, funder_id=FUNDER, category="home_care",
                            approved_at=_at(4, 13), application_id=APPLICATION, rulebook_version="2026.1"),
        ev.ProviderRejected(application_id="a2c4e6f8-1b3d-4f5a-9c7e-2d4f6a8b1c3e", provider_id=PROVIDER,
                            funder_id=FUNDER, categories=["cleaning"], reason="insurance_missing",
                            rejected_at=_at(4, 14)),
        ev.ProviderSuspended(approval_id=APPROVAL, provider_id=PROVIDER, funder_id=FUNDER, category="home_care",
                             reason="insurance_lapsed", effective_from=date(2026, 5, 1), suspended_at=_at(30, 6, 4)),
        ev.ProviderReinstated(approval_id=APPROVAL, provider_id=PROVIDER, funder_id=FUNDER, category="home_care",
                              reinstated_at=_at(5, 10, 5)),
        ev.ProviderRevoked(approval_id=APPROVAL, provider_id=PROVIDER, funder_id=FUNDER, category="home_care",
                           reason="funder_decision", effective_from=date(2026, 12, 1), revoked_at=_at(20, 10, 11)),
        ev.PriceListPublished(price_list_id=PRICE_LIST, provider_id=PROVIDER, funder_id=FUNDER, category="home_care",
                              unit="hour", unit_price_cents=2500, tariffs={"saturday": 3000, "sunday": 3500},
                              effective_from=date(2026, 3, 1), published_at=_at(4, 15)),
    ]


def _vouchers() -> list[ev.Event]:
    return [
        ev.VoucherIssued(voucher_id=VOUCHER, funder_id=FUNDER, client_ref="asiakas-8f3a21",
                         decision_ref="HKI-2026-000123", category="home_care", unit="hour",
                         units_per_period=Decimal("20"), period="month", value_per_unit_cents=2500,
                         valid_from=date(2026, 3, 1), valid_until=date(2027, 2, 28), issued_at=_at(5, 9),
                         kind="service_voucher", voucher_code="7KQ2M9XH4DW", age_band="75-84",
                         municipality_of_residence="091"),
        ev.VouchersIssued(funder_id=FUNDER, vouchers=[ev.IssuedVoucher(
            voucher_id=VOUCHER, client_ref="asiakas-8f3a21", decision_ref="HKI-2026-000123", category="home_care",
            unit="hour", units_per_period=Decimal("20"), period="month", value_per_unit_cents=2500,
            valid_from=date(2026, 3, 1), valid_until=date(2027, 2, 28), issued_at=_at(5, 9), kind="service_voucher",
            voucher_code="7KQ2M9XH4DW", age_band="75-84", municipality_of_residence="091")]),
        ev.VoucherProviderChosen(voucher_id=VOUCHER, funder_id=FUNDER, provider_id=PROVIDER, category="home_care",
                                 chosen_at=_at(6, 16), effective_from=date(2026, 3, 6),
                                 previous_provider_id=PREVIOUS_PROVIDER),
        ev.VoucherAmended(voucher_id=VOUCHER, funder_id=FUNDER, decision_ref="HKI-2026-000123", decision_version=2,
                          category="home_care", units_per_period=Decimal("30"), period="month",
                          value_per_unit_cents=2500, valid_from=date(2026, 3, 1), valid_until=date(2027, 2, 28),
                          amended_at=_at(2, 9, 4)),
        ev.VoucherRevoked(voucher_id=VOUCHER, funder_id=FUNDER, decision_ref="HKI-2026-000123", decision_version=3,
                          category="home_care", effective_from=date(2026, 6, 1), revoked_at=_at(28, 9, 5)),
        ev.VoucherExpired(voucher_id=VOUCHER, funder_id=FUNDER, category="home_care", valid_until=date(2027, 2, 28),
                          expired_at=datetime(2027, 3, 1, 0, 15, tzinfo=timezone.utc)),
        ev.VoucherExhausted(voucher_id=VOUCHER, funder_id=FUNDER, category="home_care", units_used=Decimal("20"),
                            exhausted_at=_at(27, 17)),
    ]


def _payments() -> list[ev.Event]:
    charge = dict(charge_id=CHARGE, voucher_id=VOUCHER, funder_id=FUNDER, provider_id=PROVIDER, category="home_care")
    return [
        ev.ChargeAccepted(**charge, service_date=date(2026, 3, 9), units=Decimal("4"), unit_price_cents=2500,
                          amount_cents=10000, own_share_cents=0, accepted_at=_at(9, 18), tariff="weekday",
                          price_registered=True, registered_price_cents=2500, price_list_id=PRICE_LIST),
        ev.ChargesAccepted(funder_id=FUNDER, provider_id=PROVIDER, charges=[ev.AcceptedCharge(
            charge_id=CHARGE, voucher_id=VOUCHER, category="home_care", service_date=date(2026, 3, 9),
            units=Decimal("4"), unit_price_cents=2500, amount_cents=10000, own_share_cents=0, accepted_at=_at(9, 18),
            tariff="weekday", price_registered=True, registered_price_cents=2500, price_list_id=PRICE_LIST)]),
        ev.ChargeSettled(**charge, settlement_id=SETTLEMENT, gross_cents=10000, fee_cents=500, net_cents=9500,
                         settled_at=_at(20, 3)),
        ev.ChargesSettled(settlement_id=SETTLEMENT, funder_id=FUNDER, provider_id=PROVIDER, settled_at=_at(20, 3),
                          charges=[ev.SettledCharge(charge_id=CHARGE, voucher_id=VOUCHER, category="home_care",
                                                    gross_cents=10000, fee_cents=500, net_cents=9500)]),
        ev.ChargeCancelled(**charge, service_date=date(2026, 3, 9), units=Decimal("4"), amount_cents=10000,
                           cancelled_at=_at(10, 8)),
        ev.ChargeCorrected(**charge, correction_id=CORRECTION, service_date=date(2026, 3, 9), kind="partial",
                           reason="fewer_units_delivered", units=Decimal("1"), amount_cents=2500, own_share_cents=0,
                           fee_cents=125, net_cents=2375, units_after=Decimal("3"), amount_cents_after=7500,
                           own_share_cents_after=0, settlement_id=SETTLEMENT, corrected_at=_at(2, 10, 4)),
        ev.SettlementCreated(settlement_id=SETTLEMENT, funder_id=FUNDER, provider_id=PROVIDER, charge_count=1,
                             gross_cents=10000, fee_cents=500, net_cents=9500, fee_rate=Decimal("0.05"),
                             created_at=_at(20, 3)),
    ]


def event_examples() -> dict[type[ev.Event], ev.Event]:
    """Every domain event's example, by its class; ``KeyError``-free for every class in ``ALL_EVENTS``
    (the contract's tests check that none is missing)."""
    return {type(e): e for e in (*_registry(), *_vouchers(), *_payments())}


def envelope_of(event: ev.Event, message_id: str, correlation_id: str, causation_id: str | None = None) -> dict:
    """The example as it travels: the CloudEvents envelope the producer's outbox writes (``Envelope.wrap``),
    with fixed ids and the event's own time (an event listing charges or vouchers: its first one's)."""
    when = next((v for k, v in event if k.endswith("_at") and isinstance(v, datetime)), None)
    if when is None:
        when = next((v for c in (*getattr(event, "charges", ()), *getattr(event, "vouchers", ())) for k, v in c
                     if k.endswith("_at") and isinstance(v, datetime)), None)
    envelope = ev.Envelope(id=message_id, source=f"/seteli/{event.producer}", type=event.event_type(),
                           time=when, subject=event.subject(), data=event.model_dump(mode="json"),
                           correlationid=correlation_id, causationid=causation_id)
    return envelope.model_dump(mode="json")
