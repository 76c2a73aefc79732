from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from payments import domain
from payments.domain import (APPROVED, REVOKED, SUSPENDED, ApprovalState, ChargeRequest, LifeCycleChange, PriceList,
                             VoucherTerms)
from seteli_shared.errors import DomainError

TODAY = date(2026, 11, 24)
TERMS = VoucherTerms(funder_id="091", category="home_care", units_per_period_x100=2000, period="month",
                     value_per_unit_cents=1500, valid_from=date(2026, 1, 1), valid_until=date(2026, 12, 31),
                     provider_id="p1")


T0 = datetime(2026, 1, 1, 9, 0, tzinfo=timezone.utc)
APPROVAL = ApprovalState(approval_id="a1", approved_at=T0)


def charge(**kw) -> ChargeRequest:
    base = dict(provider_id="p1", service_date=date(2026, 11, 20), units_x100=400, unit_price_cents=None)
    base.update(kw)
    return ChargeRequest(**base)


def reason(terms=TERMS, approved=True, used=0, req=None, approval=None, lists=(), deadline=None) -> str:  # noqa: ANN001
    with pytest.raises(DomainError) as e:
        domain.validate_charge(terms, approval or (APPROVAL if approved else None), used, req or charge(), TODAY,
                               list(lists), charge_deadline_days=deadline)
    return e.value.reason


def test_each_refusal_has_its_reason():
    assert reason(terms=None) == "voucher_not_found"
    assert reason(terms=VoucherTerms(**{**TERMS.__dict__, "provider_id": None})) == "provider_not_chosen"
    assert reason(req=charge(provider_id="p2")) == "not_chosen_provider"
    assert reason(approved=False) == "provider_not_approved"
    assert reason(req=charge(service_date=date(2026, 11, 25))) == "service_date_in_future"
    assert reason(terms=VoucherTerms(**{**TERMS.__dict__, "valid_from": date(2026, 11, 21)})) == \
        "service_date_outside_validity"
    assert reason(used=1700) == "units_exceeded"
    assert reason(req=charge(units_x100=0)) == "invalid_units"
    assert reason(req=charge(service_date=date(2026, 8, 25))) == "charge_deadline_passed"


def test_a_charge_is_on_time_until_the_funders_deadline_day_and_refused_after_it():
    # the default deadline: 90 days after the service date (2026-08-26 + 90 days = 2026-11-24, today)
    assert domain.validate_charge(TERMS, APPROVAL, 0, charge(service_date=date(2026, 8, 26)), TODAY).amount_cents
    with pytest.raises(DomainError) as e:
        domain.validate_charge(TERMS, APPROVAL, 0, charge(service_date=date(2026, 8, 25)), TODAY)
    assert (e.value.reason, e.value.details) == ("charge_deadline_passed",
                                                 {"deadline": "2026-11-23", "deadline_days": 90})
    # a funder's own term: 30 days
    assert domain.validate_charge(TERMS, APPROVAL, 0, charge(service_date=date(2026, 10, 25)), TODAY,
                                  charge_deadline_days=30).amount_cents
    assert reason(req=charge(service_date=date(2026, 10, 24)), deadline=30) == "charge_deadline_passed"


def test_unknown_voucher_answer_says_it_may_be_retried():
    with pytest.raises(DomainError) as e:
        domain.validate_charge(None, APPROVAL, 0, charge(), TODAY)
    assert e.value.status_code == 404 and e.value.details["retryable"] is True


def test_the_last_units_of_the_period_can_be_charged():
    assert domain.validate_charge(TERMS, APPROVAL, 1600, charge(), TODAY).amount_cents == 6000


def test_price_above_voucher_value_is_the_clients_own_share():
    # seed: price 25.00 EUR/h, voucher 15.00 EUR/h -> the client pays 10.00 EUR/h
    a = domain.validate_charge(TERMS, APPROVAL, 0, charge(units_x100=100, unit_price_cents=2500), TODAY)
    assert (a.amount_cents, a.own_share_cents) == (1500, 1000)
    cheaper = domain.validate_charge(TERMS, APPROVAL, 0, charge(units_x100=100, unit_price_cents=1200), TODAY)
    assert (cheaper.amount_cents, cheaper.own_share_cents) == (1200, 0)


def test_monthly_units_renew_each_month_and_validity_units_do_not():
    assert domain.period_bounds(TERMS, date(2026, 2, 14)) == (date(2026, 2, 1), date(2026, 2, 28))
    whole = VoucherTerms(**{**TERMS.__dict__, "period": "validity"})
    assert domain.period_bounds(whole, date(2026, 2, 14)) == (date(2026, 1, 1), date(2026, 12, 31))


def test_settlement_of_100_euros_is_95_net_and_5_fee():
    s = domain.settle([10000], Decimal("0.05"))
    assert (s.gross_cents, s.fee_cents, s.net_cents, s.charge_fees) == (10000, 500, 9500, [500])


def test_settlement_fee_is_rounded_once_and_spread_over_charges_to_the_cent():
    s = domain.settle([333, 333, 334], Decimal("0.05"))
    assert s.fee_cents == 50 and sum(s.charge_fees) == 50 and s.net_cents == 950


def test_postings_balance():
    s = domain.settle([12345], Decimal("0.05"))
    assert sum(a for _, a in domain.settlement_postings("p1", s)) == 0
    assert sum(a for _, a in domain.charge_postings("091", "p1", 12345)) == 0
    with pytest.raises(AssertionError):
        domain.balanced([("a", 1), ("b", -2)])


def test_a_funders_contract_rate_wins_over_the_default():
    assert domain.fee_rate_for("0.03", Decimal("0.05")) == Decimal("0.03")
    assert domain.fee_rate_for("0", Decimal("0.05")) == Decimal("0")
    assert domain.fee_rate_for(None, Decimal("0.05")) == Decimal("0.05"), "a funder not heard of: the default"
    with pytest.raises(AssertionError):
        domain.fee_rate_for("1.2", Decimal("0.05"))


def test_fee_rate_range():
    assert domain.fee_rate_in_range(Decimal("0")) and domain.fee_rate_in_range(Decimal("0.9999"))
    assert not domain.fee_rate_in_range(Decimal("1")) and not domain.fee_rate_in_range(Decimal("-0.01"))
    assert not domain.fee_rate_in_range(Decimal("NaN"))


def test_settlement_at_a_3_percent_contract():
    s = domain.settle([10000, 2345], Decimal("0.03"))
    assert (s.gross_cents, s.fee_cents, s.net_cents) == (12345, 370, 11975)
    assert sum(s.charge_fees) == 370


# ------------------------------------------------------------------ the approval's life cycle
def change(status: str, hours: int, effective_from: date | None = date(2026, 11, 15)) -> LifeCycleChange:
    return LifeCycleChange(status, "a1", T0 + timedelta(hours=hours), effective_from if status != APPROVED else None,
                           "insurance_lapsed")


def fold(*changes: LifeCycleChange) -> ApprovalState:
    state = APPROVAL
    for c in changes:
        state = domain.apply_change(state, c)
    return state


def test_services_before_a_suspension_may_be_charged_and_those_from_its_date_not():
    suspended = fold(change(SUSPENDED, 1))
    assert domain.validate_charge(TERMS, suspended, 0, charge(service_date=date(2026, 11, 14)), TODAY).amount_cents
    assert reason(approval=suspended, req=charge(service_date=date(2026, 11, 15))) == "provider_suspended"
    assert reason(approval=suspended) == "provider_suspended"
    with pytest.raises(DomainError) as e:
        domain.check_approval_covers(suspended, date(2026, 11, 20))
    assert e.value.details == {"effective_from": "2026-11-15"}
    reinstated = fold(change(SUSPENDED, 1), change(APPROVED, 2))
    assert domain.validate_charge(TERMS, reinstated, 0, charge(), TODAY).amount_cents == 6000


def test_services_before_a_revocation_may_be_charged_and_a_revocation_is_final():
    revoked = fold(change(REVOKED, 1))
    assert reason(approval=revoked) == "provider_revoked"
    assert domain.validate_charge(TERMS, revoked, 0, charge(service_date=date(2026, 11, 14)), TODAY).amount_cents
    assert fold(change(REVOKED, 1), change(APPROVED, 5)) == revoked
    late = fold(change(APPROVED, 5), change(REVOKED, 1))
    assert (late.status, late.not_in_force_from) == (REVOKED, date(2026, 11, 15)), "whatever order they came in"


def test_a_stale_reinstatement_changes_nothing_and_redeliveries_neither():
    assert fold(change(SUSPENDED, 2), change(APPROVED, 1)) == fold(change(SUSPENDED, 2))
    once = fold(change(SUSPENDED, 1), change(APPROVED, 2))
    assert fold(change(SUSPENDED, 1), change(SUSPENDED, 1), change(APPROVED, 2), change(SUSPENDED, 1),
                change(APPROVED, 2)) == once
    assert domain.apply_approved(once, "a1", T0) == once


def test_a_suspension_heard_of_before_its_approval_refuses_and_the_approval_fills_in():
    early = domain.apply_change(None, change(SUSPENDED, 1))
    assert early.approved_at is None
    assert reason(approval=early) == "provider_suspended"
    assert reason(approval=early, req=charge(service_date=date(2026, 11, 1))) == "provider_not_approved"
    assert domain.apply_approved(early, "a1", T0).approved_at == T0


# ------------------------------------------------------------------ registered prices
def price_list(pid: str, effective_from: date, cents: int, published_hours: int = 0, **tariffs: int) -> PriceList:
    return PriceList(pid, effective_from, T0 + timedelta(hours=published_hours), cents, tariffs)


LISTS = [price_list("june", date(2026, 6, 1), 2800), price_list("nov", date(2026, 11, 1), 3000, sunday=4500,
                                                                   weekday_evening=3500)]


def test_the_price_in_force_is_the_latest_to_take_effect_on_or_before_the_service_date():
    assert domain.price_in_force(LISTS, date(2026, 5, 31)) is None
    assert domain.price_in_force(LISTS, date(2026, 6, 1)).price_list_id == "june"
    assert domain.price_in_force(LISTS, date(2026, 10, 31)).price_list_id == "june"
    assert domain.price_in_force(LISTS, date(2026, 11, 1)).price_list_id == "nov"
    # the same day: the one published last, whatever order they are given in
    same_day = [price_list("a", date(2026, 11, 1), 3100, published_hours=5), LISTS[1]]
    assert domain.price_in_force(same_day, date(2026, 11, 2)).price_list_id == "a"
    assert domain.price_in_force(same_day[::-1], date(2026, 11, 2)).price_list_id == "a"


def test_the_registered_price_is_the_tariffs_when_the_list_has_it_else_the_base():
    assert domain.registered_price(LISTS[1], "sunday") == 4500
    assert domain.registered_price(LISTS[1], "saturday") == 3000
    assert domain.registered_price(LISTS[1], None) == 3000


def test_a_price_above_the_registered_price_is_refused_naming_it_and_a_lower_one_is_taken_as_sent():
    terms = TERMS  # voucher value 15.00 EUR/h
    with pytest.raises(DomainError) as e:
        domain.validate_charge(terms, APPROVAL, 0, charge(unit_price_cents=3001), TODAY, LISTS)
    assert (e.value.reason, e.value.details["registered_price_cents"], e.value.details["price_list_id"]) == (
        "price_above_registered_price", 3000, "nov")
    a = domain.validate_charge(terms, APPROVAL, 0, charge(units_x100=100, unit_price_cents=2900), TODAY, LISTS)
    assert (a.unit_price_cents, a.amount_cents, a.own_share_cents, a.price_registered, a.registered_price_cents) == (
        2900, 1500, 1400, True, 3000)
    assert reason(req=charge(unit_price_cents=4501, tariff="sunday"), lists=LISTS) == "price_above_registered_price"


def test_without_a_price_sent_the_registered_price_is_charged_and_the_own_share_follows():
    a = domain.validate_charge(TERMS, APPROVAL, 0, charge(units_x100=150, tariff="sunday"), TODAY, LISTS)
    # 1.5 h at 45.00: the voucher pays 1.5 x 15.00, the client 1.5 x 30.00
    assert (a.unit_price_cents, a.amount_cents, a.own_share_cents, a.price_list_id) == (4500, 2250, 4500, "nov")
    old = domain.validate_charge(TERMS, APPROVAL, 0, charge(units_x100=100, service_date=date(2026, 10, 31)), TODAY,
                                 LISTS)
    assert (old.unit_price_cents, old.own_share_cents, old.price_list_id) == (2800, 1300, "june")
    rounded = domain.validate_charge(TERMS, APPROVAL, 0, charge(units_x100=33, tariff="weekday_evening"), TODAY,
                                     LISTS)
    assert (rounded.amount_cents, rounded.own_share_cents) == (495, 660), "0.33 x 15.00 and 0.33 x 20.00"


def test_without_a_price_list_the_voucher_value_or_the_sent_price_and_no_tariff():
    a = domain.validate_charge(TERMS, APPROVAL, 0, charge(), TODAY)
    assert (a.unit_price_cents, a.price_registered, a.registered_price_cents, a.price_list_id) == (
        1500, False, None, None)
    sent = domain.validate_charge(TERMS, APPROVAL, 0, charge(unit_price_cents=99999), TODAY, LISTS[:0])
    assert (sent.unit_price_cents, sent.price_registered) == (99999, False)
    assert reason(req=charge(tariff="saturday")) == "tariff_not_available"
    assert reason(req=charge(tariff="saturday", service_date=date(2026, 5, 1)), lists=LISTS,
                  deadline=365) == "tariff_not_available"
    assert reason(req=charge(tariff="holiday"), lists=LISTS) == "unknown_tariff"


NOT_PUBLIC = [
    "127.0.0.1", "127.1.2.3", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
    "255.255.255.255", "240.0.0.1", "224.0.0.1", "239.255.255.250", "192.0.2.1", "198.18.0.1",
    "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "fec0::1", "ff02::1", "ff0e::1", "2001:db8::1",
    "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:8.8.8.8", "::7f00:1",  # IPv4-mapped, -compatible
    "2002:7f00:1::1", "2002:a9fe:a9fe::1", "2002:a00:1::1",  # 6to4 of 127.0.0.1, 169.254.169.254, 10.0.0.1
    "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b:1::1",  # NAT64 of private ones, local-use NAT64
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
]
PUBLIC = ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "2a00:1450:4010:c0e::65", "2002:808:808::1",
          "64:ff9b::808:808"]


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_loopback_private_link_local_multicast_reserved_and_their_ipv6_forms_are_not_public(address):  # noqa: ANN001
    import ipaddress

    from payments.egress import Policy, is_public

    assert not is_public(ipaddress.ip_address(address))
    development = Policy(allow_http=True, allow_loopback=True)
    assert development.allows(ipaddress.ip_address(address)) == (address in ("127.0.0.1", "127.1.2.3", "::1"))


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_public(address):  # noqa: ANN001
    import ipaddress

    from payments.egress import is_public

    assert is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("url, resolves_to, reason", [
    ("http://hooks.example.fi/n", ["93.184.216.34"], "webhook_not_https"),
    ("ftp://hooks.example.fi/n", ["93.184.216.34"], "webhook_not_https"),
    ("https://hooks.example.fi/n", [], "webhook_address_unresolvable"),
    ("https://hooks.example.fi/n", ["93.184.216.34", "10.0.0.7"], "webhook_address_not_public"),
    ("https://hooks.example.fi/n", ["::ffff:10.0.0.7"], "webhook_address_not_public"),
    ("https://hooks.example.fi/n", ["93.184.216.34", "2606:4700::1111"], None),
])
async def test_every_address_a_webhooks_host_resolves_to_must_be_public(url, resolves_to, reason):  # noqa: ANN001
    from payments.egress import Policy, WebhookRefused, check

    async def resolver(host: str, port: int) -> list[str]:
        assert (host, port) == ("hooks.example.fi", 443 if url.startswith("https") else 80)
        return resolves_to

    if reason is None:
        target = await check(url, Policy(), resolver)
        assert (target.address, target.host) == ("93.184.216.34", "hooks.example.fi")
        return
    with pytest.raises(WebhookRefused) as refused:
        await check(url, Policy(), resolver)
    assert refused.value.reason == reason


# ------------------------------------------------------------------ corrections after settlement
SETTLED = domain.ChargeFigures(units_x100=400, amount_cents=10000, own_share_cents=2000, client_fee_cents=None,
                               fee_cents=500)


def test_a_partial_correction_takes_units_amount_own_share_and_fee_in_proportion():
    fix = domain.correct(SETTLED, SETTLED, reversal=False, units_x100=300)
    assert fix.kind == domain.PARTIAL
    assert fix.removed == domain.ChargeFigures(100, 2500, 500, None, 125) and fix.net_cents == 2375
    assert fix.after == domain.ChargeFigures(300, 7500, 1500, None, 375)
    # a second one starts from what the first left; a lower amount alone keeps the units
    again = domain.correct(SETTLED, fix.after, reversal=False, amount_cents=5000)
    assert (again.removed.units_x100, again.removed.amount_cents, again.removed.fee_cents) == (0, 2500, 125)
    # a reversal takes what is left, whatever was corrected before: the fee all given back
    rest = domain.correct(SETTLED, again.after, reversal=True)
    assert rest.kind == domain.REVERSAL and rest.after == domain.ChargeFigures(0, 0, 0, None, 0)
    total = [fix.removed, again.removed, rest.removed]
    assert (sum(x.amount_cents for x in total), sum(x.fee_cents for x in total)) == (10000, 500)


@pytest.mark.parametrize("kw, reason", [
    ({"units_x100": 500}, "correction_increases_charge"),
    ({"amount_cents": 10001}, "correction_increases_charge"),
    ({"units_x100": 200, "amount_cents": 6000}, "correction_increases_charge"),  # 2 h give 50.00 at most
    ({"units_x100": 400}, "correction_changes_nothing"),
    ({}, "invalid_request"),
])
def test_a_correction_never_raises_a_charge(kw, reason):  # noqa: ANN001
    with pytest.raises(DomainError) as e:
        domain.correct(SETTLED, SETTLED, reversal=False, **kw)
    assert e.value.reason == reason


def test_a_charge_reversed_cannot_be_corrected_again():
    gone = domain.correct(SETTLED, SETTLED, reversal=True).after
    with pytest.raises(DomainError) as e:
        domain.correct(SETTLED, gone, reversal=True)
    assert (e.value.reason, e.value.status_code) == ("charge_already_reversed", 409)


def test_corrections_offset_the_next_settlement_in_order_while_its_net_stays_at_or_above_zero():
    a, b, c = (domain.PendingCorrection("a", 2500, 125), domain.PendingCorrection("b", 10000, 500),
               domain.PendingCorrection("c", 1000, 50))
    # 100.00 of charges, net 95.00: a (23.75) fits, b (95.00) would make it negative: b and c wait
    offset = domain.settle_with_corrections([10000], Decimal("0.05"), [a, b, c])
    assert [x.id for x in offset.offset] == ["a"]
    f = offset.figures
    assert (f.gross_cents, f.fee_cents, f.net_cents, f.charge_fees) == (7500, 375, 7125, [500])
    # exactly used up: a payout of nothing, never below
    exact = domain.settle_with_corrections([10000], Decimal("0.05"), [b])
    assert (exact.figures.net_cents, [x.id for x in exact.offset]) == (0, ["b"])
    assert domain.settle_with_corrections([2500], Decimal("0.05"), [b]).figures.net_cents == 2375
    postings = domain.settlement_postings("p1", f)
    assert sum(x for _, x in postings) == 0 and dict(postings)["provider:p1:payout_due"] == -7125
