"""Generated months for the suppression's tests and the bench: a funder's month as the reports read it (``Month``),
built from providers' clients, euros and units per category, without a database; and random months of
many categories and providers from a seed (deterministic)."""
from __future__ import annotations

import random

from .reports import Month, _month, _operator_raw, _Raw

#: category -> provider -> (clients, charged cents, units in hundredths)
Spec = dict[str, dict[str, tuple[int, int, int]]]


def month_of(spec: Spec, funder: str = "091", period: str = "2026-11", **options) -> Month:  # noqa: ANN003
    """The month as the fold would keep it (``raw_of``)."""
    return _month(funder, period, raw_of(spec, **options))


def operator_of(specs: dict[str, Spec], period: str = "2026-11",
                **options) -> tuple[Month, dict[str, Month]]:  # noqa: ANN003
    """Every funder's month added up (the operator's statistics), and each funder's."""
    raws = {f: raw_of(spec, **options) for f, spec in specs.items()}
    return _month(None, period, _operator_raw(raws.values())), {f: _month(f, period, r) for f, r in raws.items()}


def raw_of(spec: Spec, settled_share: float = 0.9, own_share_per_client: int = 0,
           switches: dict[str, tuple[int, int]] | None = None, clients_total: int | None = None) -> _Raw:
    """A client holds one voucher (of one category, with one provider), so the categories' clients add
    up to the total unless ``clients_total`` says otherwise; every client has two charges;
    ``settled_share`` of the euros are settled (5 % fee)."""
    raw = _Raw()
    for category, providers in spec.items():
        clients = sum(c for c, _, _ in providers.values())
        charged = sum(e for _, e, _ in providers.values())
        units = sum(u for _, _, u in providers.values())
        gross = int(charged * settled_share)
        fee = (gross * 5 + 50) // 100
        raw.sums[category] = {
            "clients_served": clients, "clients_settled": clients if gross else 0,
            "vouchers_issued": clients, "vouchers_active": clients, "vouchers_expired": 0, "vouchers_revoked": 0,
            "units_granted_x100": 2000 * clients, "charges": 2 * clients, "units_x100": units,
            "charged_cents": charged, "own_share_cents": own_share_per_client * clients,
            "priced_x100": charged * 100, "settled_charges": 2 * clients if gross else 0,
            "settled_gross_cents": gross, "fee_cents": fee, "net_cents": gross - fee,
            "settled_within_14_days": 2 * clients if gross else 0, "worst_delay_seconds": 86400 * 3}
        raw.providers[category] = [(p, c, e, u) for p, (c, e, u) in sorted(providers.items()) if c or e or u]
    total = sum(s["clients_served"] for s in raw.sums.values())
    raw.served = (total if clients_total is None else clients_total,
                  sum(s["clients_settled"] for s in raw.sums.values()))
    raw.switches = dict(switches or {})
    return raw


def issue_month() -> Month:
    """The issue's month: 3 clients in cleaning (18,000 cents, 6 units) and 240 in home care (47,536,666
    cents, 17,304.50 units), home care with four providers."""
    return month_of({
        "cleaning": {"siivous-oy": (3, 18000, 600)},
        "home_care": {"hoiva-a": (100, 19806944, 721020), "hoiva-b": (80, 15845555, 576817),
                      "hoiva-c": (40, 7922777, 288408), "hoiva-d": (20, 3961390, 144205)},
    })


def random_month(seed: int, categories: int = 10, providers: int = 200, small_share: float = 0.2) -> Month:
    """A month of ``categories`` x ``providers``: each provider's clients drawn so that about
    ``small_share`` of them have 1-4 clients (the rest 5 to a few hundred), euros and units by client
    with their own spread; a few categories small as a whole."""
    rng = random.Random(seed)
    spec: Spec = {}
    for c in range(categories):
        rows = {}
        count = providers if c % 4 else max(1, providers // 40)  # every fourth category a small one
        for p in range(count):
            clients = rng.randint(1, 4) if rng.random() < small_share else int(rng.lognormvariate(2.8, 1.0)) + 5
            hours = clients * rng.randint(4, 40) * 100 + rng.randint(0, 99)
            rows[f"p{c:02d}-{p:03d}"] = (clients, hours * rng.randint(2300, 3600) // 100, hours)
        spec[f"category_{c:02d}"] = rows
    bands = {}
    for b in ("65-74", "75-84", "85-89", "90+", "unknown"):
        k = rng.randint(0, 12)
        bands[b] = (k + rng.randint(0, 3) if k else 0, k)
    bands = {b: v for b, v in bands.items() if v[1]}
    bands["*"] = (sum(v[0] for v in bands.values()), sum(v[1] for v in bands.values()))
    return month_of(spec, switches=bands, own_share_per_client=rng.choice([0, 500, 1250]))
