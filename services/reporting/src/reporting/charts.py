"""Charts of the reports, drawn with matplotlib (Agg, no display): price development and monthly
volume, as PNG or SVG (text kept as text, so the labels can be searched and read aloud).

Every word is in the reader's language (``lang``: fi, sv or en; ``texts.py``), numbers and euros in the
Finnish way (decimal comma, ``1 234 €``), months as ``10/2026``, and category names, not codes. The
y-axes start from zero, so a change of 27.47 to 27.13 looks like the 1 % it is. Suppressed figures are
not drawn: their months are marked. An SVG carries its look in presentation attributes only
(``fill="#1f77b4"``), never a ``style`` attribute or a ``<style>`` element, so it renders when opened on
its own under a Content-Security-Policy that allows no inline styles (the portal's)."""
from __future__ import annotations

import io
import re
from decimal import Decimal

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402  (no pyplot: no global figures kept)
from matplotlib.ticker import FuncFormatter  # noqa: E402

from .texts import category_name, euros_text, month_label, number_text, say  # noqa: E402

FORMATS = {"png": "image/png", "svg": "image/svg+xml"}
_RC = {"svg.fonttype": "none", "svg.hashsalt": "seteli", "font.size": 10}


def _render(fig: Figure, fmt: str) -> bytes:
    out = io.BytesIO()
    with matplotlib.rc_context(_RC):
        fig.savefig(out, format=fmt, dpi=100, bbox_inches="tight", metadata={"Date": None} if fmt == "svg" else None)
    data = out.getvalue()
    return presentation_attributes(data) if fmt == "svg" else data


def _euros(cents: int | None) -> float | None:
    return None if cents is None else float(Decimal(cents) / 100)


def _y_from_zero(ax, lang: str, money: bool) -> None:  # noqa: ANN001
    """The y-axis starts at zero (never at 27.10), its ticks in the reader's number format."""
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(FuncFormatter(
        lambda v, _pos: euros_text(v, lang, whole=float(v).is_integer()) if money else number_text(v, lang)))


def price_development(rows: list[dict], category: str | None, fmt: str, lang: str = "fi",
                      providers_by_period: dict[str, int] | None = None) -> bytes:
    """Average list price per unit (and the unit-weighted charged price) by month, per category.
    ``providers_by_period``: the providers with a price in force in any of the categories shown (a
    provider with prices in two categories is one provider)."""
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(8, 4.2))
        ax = fig.subplots()
        cats = sorted({r["category"] for r in rows})
        periods = sorted({r["period"] for r in rows})
        x = {p: i for i, p in enumerate(periods)}
        for cat in cats:
            mine = [r for r in rows if r["category"] == cat]
            name = category_name(cat, lang)
            latest = max(mine, key=lambda r: r["period"])["providers"] if mine else 0
            pts = [(x[r["period"]], _euros(r["average_price_cents"])) for r in mine if r["average_price_cents"]]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                        label=say("chart_average_list_price", lang, category=name, providers=latest))
                for px, py in pts:
                    ax.annotate(number_text(py, lang, places=2), (px, py), textcoords="offset points",
                                xytext=(0, 6), ha="center", fontsize=8)
            wpts = [(x[r["period"]], _euros(r["unit_weighted_price_cents"])) for r in mine
                    if r["unit_weighted_price_cents"] is not None]
            if wpts:
                ax.plot([p[0] for p in wpts], [p[1] for p in wpts], linestyle="--", marker="x",
                        label=say("chart_weighted_price", lang, category=name))
        ax.set_xticks(range(len(periods)), [month_label(p) for p in periods], rotation=45, ha="right")
        ax.set_ylabel(say("chart_eur_per_unit", lang))
        title = say("chart_price_title", lang)
        ax.set_title(f"{title}: {category_name(category, lang)}" if category else
                     f"{title}: {say('chart_all_categories', lang)}")
        _y_from_zero(ax, lang, money=False)
        if not rows:
            ax.text(0.5, 0.5, say("chart_no_prices", lang), transform=ax.transAxes, ha="center")
        else:
            counts = providers_by_period or {}
            shown = [p for p in periods[-6:] if p in counts]
            ax.set_xlabel(say("chart_price_xlabel", lang) + (": " + ", ".join(
                f"{month_label(p)} {counts[p]}" for p in shown) if shown else ""))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="lower left")
        ax.grid(alpha=0.3)
        return _render(fig, fmt)


def monthly_volume(rows: list[dict], fmt: str, lang: str = "fi") -> bytes:
    """Euros charged per month: the funder's part and the clients' own shares, stacked."""
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(8, 4.2))
        ax = fig.subplots()
        periods = [month_label(r["period"]) for r in rows]
        charged = [_euros(r["charged_cents"]) or 0 for r in rows]
        own = [_euros(r["own_share_cents"]) or 0 for r in rows]
        ax.bar(periods, charged, label=say("chart_charged_to_funder", lang))
        ax.bar(periods, own, bottom=charged, label=say("chart_own_shares", lang))
        for i, r in enumerate(rows):
            if r["suppressed"]:
                ax.text(i, 0, say("chart_suppressed", lang), ha="center", va="bottom", fontsize=7, rotation=90)
        ax.set_ylabel(say("chart_eur", lang))
        ax.set_xlabel(say("chart_month", lang))
        ax.set_title(say("chart_volume_title", lang))
        ax.tick_params(axis="x", rotation=45)
        _y_from_zero(ax, lang, money=True)
        if not rows:
            ax.text(0.5, 0.5, say("chart_no_charges", lang), transform=ax.transAxes, ha="center")
        else:
            ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        return _render(fig, fmt)


# ------------------------------------------------------------------ SVG without inline styles
#: CSS properties matplotlib writes that SVG also takes as presentation attributes
_ATTRIBUTES = {"fill", "fill-opacity", "fill-rule", "stroke", "stroke-width", "stroke-linecap", "stroke-linejoin",
               "stroke-miterlimit", "stroke-dasharray", "stroke-dashoffset", "stroke-opacity", "opacity",
               "font-family", "font-size", "font-weight", "font-style", "font-stretch", "text-anchor",
               "dominant-baseline", "clip-path", "mask", "visibility", "display", "letter-spacing"}
_STYLE = re.compile(r'\sstyle="([^"]*)"')
_STYLE_ELEMENT = re.compile(r"<style[^>]*>(.*?)</style>\s*", re.S)
_FONT_WEIGHTS = {"normal", "bold", "bolder", "lighter", *(str(w) for w in range(100, 1000, 100))}


def _font(value: str) -> dict[str, str]:
    """The ``font`` shorthand as matplotlib writes it (``[style] [weight] 10px 'DejaVu Sans'``)."""
    out: dict[str, str] = {}
    size = re.search(r"(\d+(?:\.\d+)?)px", value)
    if size:
        out["font-size"] = size.group(1) + "px"
        family = value[size.end():].strip().replace("'", "").replace('"', "")
        if family:
            out["font-family"] = family
        for word in value[:size.start()].split():
            if word in _FONT_WEIGHTS:
                out["font-weight"] = word
            elif word in ("italic", "oblique"):
                out["font-style"] = word
    return out


def _attributes(style: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for declaration in style.split(";"):
        name, _, value = declaration.partition(":")
        name, value = name.strip().lower(), value.strip()
        if not name or not value:
            continue
        if name == "font":
            out.update(_font(value))
        elif name == "white-space" and value == "pre":
            out["xml:space"] = "preserve"
        elif name in _ATTRIBUTES:
            out[name] = value.replace('"', "'")
    return out


def presentation_attributes(svg: bytes) -> bytes:
    """The same drawing with every ``style="..."`` turned into presentation attributes and the
    ``<style>`` element's rules (matplotlib's ``*{stroke-linejoin: round; ...}``) put on the root,
    whence they are inherited: a Content-Security-Policy without ``'unsafe-inline'`` blocks inline styles,
    and an SVG styled only by them renders as black shapes when opened on its own."""
    text = svg.decode("utf-8")
    inherited: dict[str, str] = {}
    for css in _STYLE_ELEMENT.findall(text):
        for body in re.findall(r"\{([^}]*)\}", css):
            inherited.update(_attributes(body))
    text = _STYLE_ELEMENT.sub("", text)
    text = _STYLE.sub(lambda m: "".join(f' {k}="{v}"' for k, v in _attributes(m.group(1)).items()), text)
    if inherited:
        text = re.sub(r"<svg\b", "<svg" + "".join(f' {k}="{v}"' for k, v in inherited.items()), text, count=1)
    return text.encode("utf-8")
