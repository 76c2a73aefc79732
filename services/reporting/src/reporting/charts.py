"""Charts of the reports, drawn with matplotlib (Agg, no display): price development and monthly
volume, as PNG or SVG (text kept as text, so the period labels can be searched and read aloud).
Suppressed figures are not drawn: their months are marked "suppressed (< 5 clients)"."""
from __future__ import annotations

import io
from decimal import Decimal

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402  (no pyplot: no global figures kept)

FORMATS = {"png": "image/png", "svg": "image/svg+xml"}
_RC = {"svg.fonttype": "none", "svg.hashsalt": "seteli", "font.size": 10}


def _render(fig: Figure, fmt: str) -> bytes:
    out = io.BytesIO()
    with matplotlib.rc_context(_RC):
        fig.savefig(out, format=fmt, dpi=100, bbox_inches="tight", metadata={"Date": None} if fmt == "svg" else None)
    return out.getvalue()


def _euros(cents: int | None) -> float | None:
    return None if cents is None else float(Decimal(cents) / 100)


def price_development(rows: list[dict], category: str | None, fmt: str) -> bytes:
    """Average list price per unit (and the unit-weighted charged price) by month, per category."""
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(8, 4.2))
        ax = fig.subplots()
        cats = sorted({r["category"] for r in rows})
        periods = sorted({r["period"] for r in rows})
        x = {p: i for i, p in enumerate(periods)}
        for cat in cats:
            mine = [r for r in rows if r["category"] == cat]
            pts = [(x[r["period"]], _euros(r["average_price_cents"])) for r in mine if r["average_price_cents"]]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{cat}: average list price")
                for px, py in pts:
                    ax.annotate(f"{py:.2f}", (px, py), textcoords="offset points", xytext=(0, 6), ha="center",
                                fontsize=8)
            wpts = [(x[r["period"]], _euros(r["unit_weighted_price_cents"])) for r in mine
                    if r["unit_weighted_price_cents"] is not None]
            if wpts:
                ax.plot([p[0] for p in wpts], [p[1] for p in wpts], linestyle="--", marker="x",
                        label=f"{cat}: weighted by units charged")
        ax.set_xticks(range(len(periods)), periods, rotation=45, ha="right")
        ax.set_ylabel("EUR per unit")
        ax.set_title(f"Price development{': ' + category if category else ''}")
        if not rows:
            ax.text(0.5, 0.5, "no prices yet", transform=ax.transAxes, ha="center")
        else:
            providers = {r["period"]: r["providers"] for r in rows}
            ax.set_xlabel("month (providers with a price in force: "
                          + ", ".join(f"{p} {providers[p]}" for p in periods[-6:]) + ")")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        return _render(fig, fmt)


def monthly_volume(rows: list[dict], fmt: str) -> bytes:
    """Euros charged per month: the funder's part and the clients' own shares, stacked."""
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(8, 4.2))
        ax = fig.subplots()
        periods = [r["period"] for r in rows]
        charged = [_euros(r["charged_cents"]) or 0 for r in rows]
        own = [_euros(r["own_share_cents"]) or 0 for r in rows]
        ax.bar(periods, charged, label="charged to the funder (EUR)")
        ax.bar(periods, own, bottom=charged, label="clients' own shares (EUR)")
        for i, r in enumerate(rows):
            if r["suppressed"]:
                ax.text(i, 0, "suppressed\n(< 5 clients)", ha="center", va="bottom", fontsize=7, rotation=90)
        ax.set_ylabel("EUR")
        ax.set_title("Monthly volume")
        ax.tick_params(axis="x", rotation=45)
        if not rows:
            ax.text(0.5, 0.5, "no charges yet", transform=ax.transAxes, ha="center")
        else:
            ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        return _render(fig, fmt)
