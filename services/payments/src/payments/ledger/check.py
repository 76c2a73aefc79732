"""The ledger's invariants on the live database (``seteli-payments ledger-check``, ``GET /ledger/check``)."""
from __future__ import annotations

from datetime import date

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from seteli_shared import periods
from seteli_shared.money import from_hundredths

from ..charging import domain
from ..models import (BankTransaction, Charge, ChargeCorrection, LedgerEntry, Payout, RecoveryClaim, Settlement,
                      SettlementRun, VoucherView)
from . import postings


async def ledger_check(session: AsyncSession) -> dict:
    """The ledger's invariants on the live database (``seteli-payments ledger-check``, ``GET /ledger/check``):

    - the entries sum to zero and every ledger transaction balances;
    - no voucher is charged beyond its entitlement in any period: the units charged for services in a
      period (``seteli_shared.periods``, with what a month carries over when the funder's rule says so)
      are at most the projection's units per period; a personal budget's money at most its budget;
    - what is settled equals the accepted charges settled, minus their fees, net of corrections: each
      settlement's gross and fee are its charges' sums less those of the corrections it offset, its net
      gross less fee and never negative, and each settled charge's net is its amount less its fee;
    - corrections are of settled charges, never remove more than the charge had, and the charge's running
      totals are its corrections' sums;
    - each provider's payable is its open items: its accepted, unsettled charges owed to it, less the
      corrections neither offset by a settlement nor claimed back yet;
    - the bank side (``banking``): the bank account's balance is the bank transactions booked, each
      provider's payout_due the net of its payouts the bank has not executed, its recovery_due the net of
      its recovery claims not repaid, and each claim's figures its corrections' sums.
    """

    entries_total = (await session.execute(select(func.coalesce(func.sum(LedgerEntry.amount_cents), 0)))).scalar_one()
    unbalanced = (await session.execute(
        select(LedgerEntry.transaction_id).group_by(LedgerEntry.transaction_id)
        .having(func.sum(LedgerEntry.amount_cents) != 0))).scalars().all()
    settled = (await session.execute(select(
        func.coalesce(func.sum(Settlement.gross_cents), 0), func.coalesce(func.sum(Settlement.fee_cents), 0),
        func.coalesce(func.sum(Settlement.net_cents), 0)))).one()
    settled_charges = (await session.execute(select(
        func.coalesce(func.sum(Charge.amount_cents), 0), func.coalesce(func.sum(Charge.fee_cents), 0)).where(
        Charge.status == domain.SETTLED))).one()
    k = ChargeCorrection
    offset = (await session.execute(select(
        func.coalesce(func.sum(k.amount_cents), 0), func.coalesce(func.sum(k.fee_cents), 0)).where(
        k.offset_settlement_id.is_not(None)))).one()
    over = await _vouchers_over_entitlement(session)
    mismatched = await _settlements_not_matching_charges(session)
    bad_corrections = await _corrections_not_matching_charges(session)
    payables = await _payables_not_open_items(session)
    bank = await _bank_not_matching(session)
    checks = {
        "entries_sum_to_zero": entries_total == 0,
        "every_transaction_balanced": not unbalanced,
        "settled_equals_charges_minus_fees": settled[0] == settled_charges[0] - offset[0]
        and settled[1] == settled_charges[1] - offset[1] and settled[2] == settled[0] - settled[1] and not mismatched,
        "no_voucher_beyond_entitlement": not over,
        "corrections_within_settled_charges": not bad_corrections,
        "payables_equal_open_items": not payables,
        "bank_equals_bank_transactions": not bank["bank"],
        "payouts_due_equal_unexecuted_payouts": not bank["payouts_due"],
        "recoveries_due_equal_open_claims": not bank["recoveries"],
    }
    return {"ok": all(checks.values()), "checks": checks, "unbalanced_transactions": list(unbalanced)[:20],
            "vouchers_over_entitlement": over[:20], "settlements_not_matching_charges": mismatched[:20],
            "corrections_not_matching_charges": bad_corrections[:20], "payables_not_open_items": payables[:20], "bank_not_matching": {k: v[:20] for k, v in bank.items()}}


async def _bank_not_matching(session: AsyncSession) -> dict[str, list[dict]]:
    """The bank side (``banking``): the bank account's balance is the bank transactions booked; each
    provider's payout_due is the net of its payouts the bank has not executed; its recovery_due the net of
    its claims not repaid; each claim's figures are its corrections' sums, and no correction is both
    offset and claimed."""
    def balances(pattern: str):  # noqa: ANN202
        return select(LedgerEntry.account, func.sum(LedgerEntry.amount_cents)).where(
            LedgerEntry.account.like(pattern)).group_by(LedgerEntry.account)

    out: dict[str, list[dict]] = {"bank": [], "payouts_due": [], "recoveries": []}
    ledger_bank = int((await session.execute(select(func.coalesce(func.sum(LedgerEntry.amount_cents), 0)).where(
        LedgerEntry.account == postings.BANK))).scalar_one())
    booked = int((await session.execute(select(func.coalesce(func.sum(BankTransaction.amount_cents), 0)))
                  ).scalar_one())
    if ledger_bank != booked:
        out["bank"].append({"ledger_cents": ledger_bank, "bank_transactions_cents": booked})
    due = dict((await session.execute(balances("provider:%:payout_due"))).all())
    unexecuted = dict((await session.execute(
        select(Settlement.provider_id, func.sum(Settlement.net_cents))
        .outerjoin(Payout, Payout.settlement_id == Settlement.id)
        .outerjoin(SettlementRun, SettlementRun.id == Payout.run_id)
        .where(SettlementRun.executed_at.is_(None)).group_by(Settlement.provider_id))).all())
    for p in sorted({a.split(":")[1] for a in due} | set(unexecuted)):
        got, want = int(due.get(postings.provider_payout_due(p)) or 0), -int(unexecuted.get(p) or 0)
        if got != want:
            out["payouts_due"].append({"provider_id": p, "payout_due_cents": got, "unexecuted_cents": want})
    owed = dict((await session.execute(balances("provider:%:recovery_due"))).all())
    claims = (await session.execute(select(RecoveryClaim))).scalars().all()
    open_net: dict[str, int] = {}
    for c in claims:
        open_net[c.provider_id] = open_net.get(c.provider_id, 0) + c.net_cents - c.repaid_cents
    for p in sorted({a.split(":")[1] for a in owed} | set(open_net)):
        got, want = int(owed.get(postings.provider_recovery_due(p)) or 0), open_net.get(p, 0)
        if got != want:
            out["recoveries"].append({"provider_id": p, "recovery_due_cents": got, "open_claims_cents": want})
    K = ChargeCorrection
    sums = dict((r[0], r[1:]) for r in (await session.execute(
        select(K.recovery_claim_id, func.count(), func.sum(K.amount_cents), func.sum(K.fee_cents))
        .where(K.recovery_claim_id.is_not(None)).group_by(K.recovery_claim_id))).all())
    for c in claims:
        n, amount, fee = sums.get(c.id, (0, 0, 0))
        if (int(n), int(amount or 0), int(fee or 0)) != (c.correction_count, c.amount_cents, c.fee_cents) \
                or c.net_cents != c.amount_cents - c.fee_cents or not 0 <= c.repaid_cents <= c.net_cents:
            out["recoveries"].append({"claim_id": c.id, "reason": "claim_not_its_corrections"})
    both = (await session.execute(select(K.id).where(K.recovery_claim_id.is_not(None),
                                                     K.offset_settlement_id.is_not(None)).limit(20))).scalars().all()
    out["recoveries"] += [{"correction_id": x, "reason": "offset_and_claimed"} for x in both]
    return out


async def _corrections_not_matching_charges(session: AsyncSession) -> list[dict]:
    """Corrected charges whose corrections remove more than they had, that are not settled, or whose running
    totals are not their corrections' sums."""
    K = ChargeCorrection
    c = Charge.__table__
    sums = (select(K.charge_id, func.sum(K.units_x100).label("units"), func.sum(K.amount_cents).label("amount"),
                   func.sum(K.fee_cents).label("fee")).group_by(K.charge_id).subquery())
    rows = (await session.execute(
        select(c.c.id, c.c.status, c.c.units_x100, c.c.amount_cents, c.c.fee_cents, c.c.corrected_units_x100,
               c.c.corrected_amount_cents, sums.c.units, sums.c.amount, sums.c.fee)
        .select_from(c.outerjoin(sums, sums.c.charge_id == c.c.id))
        .where((sums.c.charge_id.is_not(None)) | (c.c.corrected_units_x100 != 0) | (c.c.corrected_amount_cents != 0))
    )).all()
    found = []
    for r in rows:
        units, amount, fee = int(r.units or 0), int(r.amount or 0), int(r.fee or 0)
        if (r.status != domain.SETTLED or units > r.units_x100 or amount > r.amount_cents or fee > (r.fee_cents or 0)
                or (units, amount) != (r.corrected_units_x100, r.corrected_amount_cents)):
            found.append({"charge_id": r.id, "status": r.status, "corrected_cents": amount,
                          "amount_cents": r.amount_cents})
    return found


async def _payables_not_open_items(session: AsyncSession) -> list[dict]:
    """Providers whose payable balance is not minus their accepted, unsettled charges plus their corrections
    not yet offset (the payable is a credit: what is owed to the provider)."""
    K = ChargeCorrection
    balance = dict((await session.execute(
        select(LedgerEntry.account, func.sum(LedgerEntry.amount_cents))
        .where(LedgerEntry.account.like("provider:%:payable")).group_by(LedgerEntry.account))).all())
    owed = dict((await session.execute(
        select(Charge.provider_id, func.sum(Charge.amount_cents)).where(Charge.status == domain.ACCEPTED)
        .group_by(Charge.provider_id))).all())
    owes = dict((await session.execute(
        select(K.provider_id, func.sum(K.amount_cents)).where(K.offset_settlement_id.is_(None),
                                                              K.recovery_claim_id.is_(None))
        .group_by(K.provider_id))).all())
    providers = {a.split(":", 1)[1].rsplit(":", 1)[0] for a in balance} | set(owed) | set(owes)
    found = []
    for p in sorted(providers):
        want = -int(owed.get(p) or 0) + int(owes.get(p) or 0)
        got = int(balance.get(postings.provider_payable(p)) or 0)
        if got != want:
            found.append({"provider_id": p, "payable_cents": got, "open_items_cents": want})
    return found


async def _vouchers_over_entitlement(session: AsyncSession) -> list[dict]:
    """Every (voucher, period) whose charged units exceed the projection's units for the period (with
    what the previous month carried in), or a personal budget's money its budget."""
    v = VoucherView.__table__
    per_day = (await session.execute(
        select(Charge.voucher_id, Charge.service_date, func.sum(Charge.units_x100 - Charge.corrected_units_x100),
               func.sum(Charge.amount_cents - Charge.corrected_amount_cents))
        .where(Charge.status != domain.CANCELLED).group_by(Charge.voucher_id, Charge.service_date))).all()
    by_voucher: dict[str, list] = {}
    for voucher_id, day, units, amount in per_day:
        by_voucher.setdefault(voucher_id, []).append((day, int(units), int(amount)))
    views = {r.voucher_id: r for r in (await session.execute(select(
        v.c.voucher_id, v.c.issued, v.c.kind, v.c.units_per_period_x100, v.c.period, v.c.valid_from, v.c.valid_until,
        v.c.carry_over, v.c.budget_cents))).all()}
    found = []
    for voucher_id, days in by_voucher.items():
        view = views.get(voucher_id)
        if view is None or not view.issued or view.period is None:
            found.append({"voucher_id": voucher_id, "reason": "charged_without_issued_voucher"})
            continue
        used: dict[tuple[date, date], list[int]] = {}
        for day, units, amount in days:
            bounds = periods.period_bounds(view.period, view.valid_from, view.valid_until, day)
            sums = used.setdefault(bounds, [0, 0])
            sums[0] += units
            sums[1] += amount
        for (start, end), (units, amount) in sorted(used.items()):
            if view.kind == domain.PERSONAL_BUDGET:
                if amount > (view.budget_cents or 0):
                    found.append({"voucher_id": voucher_id, "period": [start.isoformat(), end.isoformat()],
                                  "reason": "budget_exceeded", "charged_cents": amount,
                                  "budget_cents": view.budget_cents})
                continue
            previous = periods.previous_period(view.period, view.valid_from, view.valid_until, start)
            previous_used = None if previous is None else used.get(previous, [0, 0])[0]
            units_in = periods.period_units(
                units_per_period_x100=view.units_per_period_x100 or 0, period=view.period,
                carry_over=bool(view.carry_over), valid_from=view.valid_from, valid_until=view.valid_until, day=start,
                used_x100=units, previous_used_x100=previous_used)
            if units > units_in.available_x100:
                found.append({"voucher_id": voucher_id, "period": [start.isoformat(), end.isoformat()],
                              "reason": "units_exceeded", "charged": str(from_hundredths(units)),
                              "available": str(from_hundredths(units_in.available_x100))})
    return found


async def _settlements_not_matching_charges(session: AsyncSession) -> list[dict]:
    """Settlements whose figures are not their charges' (and settled charges whose net is not amount - fee)."""
    s, c, k = Settlement.__table__, Charge.__table__, ChargeCorrection.__table__
    sums = (select(c.c.settlement_id, func.count().label("n"), func.sum(c.c.amount_cents).label("gross"),
                   func.sum(c.c.fee_cents).label("fee"), func.sum(c.c.net_cents).label("net"),
                   func.sum(case((c.c.net_cents != c.c.amount_cents - c.c.fee_cents, 1), else_=0)).label("bad_net"),
                   func.sum(case((c.c.status != domain.SETTLED, 1), else_=0)).label("not_settled"))
            .where(c.c.settlement_id.is_not(None)).group_by(c.c.settlement_id).subquery())
    less = (select(k.c.offset_settlement_id, func.count().label("kn"), func.sum(k.c.amount_cents).label("kgross"),
                   func.sum(k.c.fee_cents).label("kfee"), func.sum(k.c.net_cents).label("knet"))
            .where(k.c.offset_settlement_id.is_not(None)).group_by(k.c.offset_settlement_id).subquery())
    rows = (await session.execute(
        select(s.c.id, s.c.charge_count, s.c.correction_count, s.c.gross_cents, s.c.fee_cents, s.c.net_cents,
               sums.c.n, sums.c.gross, sums.c.fee, sums.c.net, sums.c.bad_net, sums.c.not_settled,
               less.c.kn, less.c.kgross, less.c.kfee, less.c.knet)
        .select_from(s.outerjoin(sums, sums.c.settlement_id == s.c.id)
                     .outerjoin(less, less.c.offset_settlement_id == s.c.id)))).all()
    found = [{"settlement_id": r.id, "charge_count": r.charge_count, "charges": int(r.n or 0)}
             for r in rows if (r.charge_count, r.correction_count, r.gross_cents, r.fee_cents, r.net_cents, 0, 0) != (
                 int(r.n or 0), int(r.kn or 0), int(r.gross or 0) - int(r.kgross or 0),
                 int(r.fee or 0) - int(r.kfee or 0), int(r.net or 0) - int(r.knet or 0), int(r.bad_net or 0),
                 int(r.not_settled or 0)) or r.net_cents != r.gross_cents - r.fee_cents or r.net_cents < 0]
    orphans = (await session.execute(select(Charge.id).where(
        Charge.status == domain.SETTLED, Charge.settlement_id.is_(None)).limit(20))).scalars().all()
    return found + [{"charge_id": cid, "reason": "settled_without_settlement"} for cid in orphans]

