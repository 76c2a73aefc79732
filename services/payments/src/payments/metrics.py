"""The payments service's own figures for Prometheus (``seteli_shared.metrics`` has the common ones).

Counted as they happen:

- ``seteli_charges_total{outcome, reason}``: charge lines answered by the charge engine (single, JSON bulk and
  CSV alike), ``accepted``, ``repeated`` (a retry answered with the earlier charge) or ``refused`` with the
  refusal's machine-readable reason (``voucher_expired``, ``units_exceeded``, ...); counted once the unit of
  work has committed;
- ``seteli_webhook_deliveries_total{outcome}``: webhook delivery attempts by outcome (``delivered``,
  ``retrying``, ``parked``, ``failed``).

Read at scrape time (``payments`` source, bounded statements on the unpaid charges and the parked notices):

- ``seteli_notices_parked{channel}``: notices nobody can receive yet (``queue`` and ``webhook``);
- ``seteli_unpaid_charge_oldest_age_seconds``: age of the oldest accepted charge not yet settled, beside
  ``seteli_payment_guarantee_seconds`` (the 14-day guarantee) and ``seteli_payment_guarantee_margin_seconds``;
- ``seteli_charges_at_risk``: unpaid accepted charges with at most ``SETTLEMENT_AT_RISK_DAYS`` to the deadline;
- ``seteli_unpaid_charges`` / ``seteli_unpaid_charges_cents``: accepted charges waiting for a settlement;
- ``seteli_payouts_below_minimum_cents`` / ``seteli_payouts_below_minimum_groups``: the money waiting in
  provider-funder groups whose payout is under the minimum (EUR 40; the net at the funder's fee rate on the
  group's total: per-charge rounding may differ by a cent a charge) and how many such groups."""
from __future__ import annotations

from datetime import datetime, time, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Iterable

from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import func, select

from seteli_shared.metrics import ServiceMetrics, metrics

CHARGES = "seteli_charges"
WEBHOOKS = "seteli_webhook_deliveries"


def count_charges(outcomes: Iterable) -> None:  # noqa: ANN001  (engine.Outcome)
    counter = metrics().counter(CHARGES, "Charge lines answered, by outcome (accepted, repeated, refused) and "
                                "refusal reason", ["outcome", "reason"])
    counts: dict[tuple[str, str], int] = {}
    for outcome in outcomes:  # a bulk's lines counted per label first: one increment per outcome and reason
        key = (outcome.status, outcome.reason or "")
        counts[key] = counts.get(key, 0) + 1
    for (status, reason), n in counts.items():
        child = _CHILDREN.get((counter, status, reason))
        if child is None:  # the labelled child found once per (counter, outcome, reason): a dict look-up after
            if len(_CHILDREN) >= 1024:
                _CHILDREN.clear()
            child = _CHILDREN[(counter, status, reason)] = counter.labels(status, reason)
        child.inc(n)


#: ``count_charges``' labelled children, by their counter (each app's registry has its own) and labels
_CHILDREN: dict[tuple, object] = {}


def count_webhook(outcome: str) -> None:
    metrics().counter(WEBHOOKS, "Webhook delivery attempts, by outcome (delivered, retrying, parked, failed)",
                      ["outcome"]).labels(outcome).inc()


def _gauge(name: str, documentation: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=labels or [])


def install(registry: ServiceMetrics, sessions, clock, settings) -> None:  # noqa: ANN001
    """The payments figures read at each scrape."""
    from seteli_shared import outbox
    from seteli_shared.messaging import OutboxMessage

    from .charging import domain  # (here: the charge engine imports this module)
    from .models import Charge, WebhookDelivery
    from .notices.notices import EXCHANGE, PARKED
    from .settlement.figures import fee_rate_for
    from .settlement.runs import fee_rates, rules_of

    # the counters exist (at zero) before their first event, so that rates and alerts see them from the start
    registry.counter(CHARGES, "Charge lines answered, by outcome (accepted, repeated, refused) and refusal reason",
                     ["outcome", "reason"])
    registry.counter(WEBHOOKS, "Webhook delivery attempts, by outcome (delivered, retrying, parked, failed)",
                     ["outcome"])
    unpaid = (Charge.status == domain.ACCEPTED) & Charge.settlement_id.is_(None)
    O = OutboxMessage.__table__  # noqa: N806

    async def read() -> list[Metric]:
        rules, today, now = rules_of(settings), clock.today(), clock.now()
        at_risk_from = datetime.combine(today - timedelta(days=rules.guarantee_days - settings.settlement_at_risk_days),
                                        time.max, tzinfo=timezone.utc)
        async with sessions() as session:
            queued = (await session.execute(select(func.count()).select_from(O).where(
                outbox.parked(EXCHANGE)))).scalar_one()
            posted = (await session.execute(select(func.count()).select_from(WebhookDelivery).where(
                WebhookDelivery.status == PARKED))).scalar_one()
            # one pass over the unpaid charges: per provider-funder group its count, gross, oldest and those at risk
            groups = (await session.execute(
                select(Charge.funder_id, func.count(), func.sum(Charge.amount_cents), func.min(Charge.accepted_at),
                       func.count().filter(Charge.accepted_at <= at_risk_from))
                .where(unpaid).group_by(Charge.funder_id, Charge.provider_id))).all()
            rates = await fee_rates(session, {g[0] for g in groups})
        at_risk = sum(g[4] for g in groups)
        parked = _gauge("seteli_notices_parked", "Notices to providers' systems that nobody can receive yet",
                        ["channel"])
        parked.add_metric(["queue"], queued)
        parked.add_metric(["webhook"], posted)
        oldest = min((g[3] for g in groups), default=None)
        age = _gauge("seteli_unpaid_charge_oldest_age_seconds", "Age of the oldest accepted charge not yet settled "
                     "(0 when none waits)")
        if oldest is not None and oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=timezone.utc)
        age.add_metric([], 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds()))
        guarantee = _gauge("seteli_payment_guarantee_seconds", "The payment guarantee: an accepted charge is paid "
                           "within this")
        guarantee.add_metric([], rules.guarantee_days * 86400.0)
        margin = _gauge("seteli_payment_guarantee_margin_seconds", "How long before the guarantee's deadline the "
                        "daily run pays a charge whatever its payout's size")
        margin.add_metric([], min(rules.margin_days, rules.guarantee_days) * 86400.0)
        risk = _gauge("seteli_charges_at_risk", "Unpaid accepted charges with at most SETTLEMENT_AT_RISK_DAYS left "
                      "to the guarantee's deadline")
        risk.add_metric([], at_risk)
        count = _gauge("seteli_unpaid_charges", "Accepted charges waiting for a settlement")
        count.add_metric([], sum(g[1] for g in groups))
        cents = _gauge("seteli_unpaid_charges_cents", "Gross of the accepted charges waiting for a settlement")
        cents.add_metric([], sum(int(g[2] or 0) for g in groups))
        below_cents, below_groups = 0, 0
        for funder_id, _n, gross, _oldest, _at_risk in groups:
            gross = int(gross or 0)
            rate = fee_rate_for(rates.get(funder_id), settings.operator_fee_rate)
            net = gross - int((Decimal(gross) * rate).quantize(Decimal(1), rounding=ROUND_HALF_UP))
            if net < rules.min_payout_cents:
                below_cents += net
                below_groups += 1
        below = _gauge("seteli_payouts_below_minimum_cents", "Net waiting in provider-funder groups whose payout is "
                       "under the minimum payout")
        below.add_metric([], below_cents)
        groups_below = _gauge("seteli_payouts_below_minimum_groups", "Provider-funder groups whose payout is under "
                              "the minimum payout")
        groups_below.add_metric([], below_groups)
        minimum = _gauge("seteli_payout_minimum_cents", "The minimum payout")
        minimum.add_metric([], rules.min_payout_cents)
        return [parked, age, guarantee, margin, risk, count, cents, below, groups_below, minimum]

    registry.add_source("payments", read)
