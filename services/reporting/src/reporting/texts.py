"""What the reports say to people, in Finnish, Swedish and English: the charts' titles, axes and
legends, the spreadsheet CSVs' column headings, category names (``seteli_shared.catalogue``), and
numbers, euros and months written the Finnish way (Babel's ``fi_FI`` and ``sv_FI``; English as written
in Finland, ``en_FI``: decimal comma, ``1 234,50 €``). The machines' forms (JSON, the plain CSV) keep
their codes and plain numbers; these words are only for people."""
from __future__ import annotations

from decimal import Decimal

from babel.numbers import format_currency, format_decimal

from seteli_shared.catalogue import CATALOGUE

LANGUAGES = ("fi", "sv", "en")
LOCALES = {"fi": "fi_FI", "sv": "sv_FI", "en": "en_FI"}

TEXTS: dict[str, tuple[str, str, str]] = {
    "chart_price_title": ("Hintakehitys", "Prisutveckling", "Price development"),
    "chart_all_categories": ("kaikki palvelut", "alla tjänster", "all services"),
    "chart_average_list_price": ("{category}: hinnaston keskihinta ({providers} tuottajaa)",
                                 "{category}: prislistornas medelpris ({providers} producenter)",
                                 "{category}: average list price ({providers} providers)"),
    "chart_weighted_price": ("{category}: veloitettujen yksiköiden painottama", "{category}: vägt med debiterade enheter",
                             "{category}: weighted by units charged"),
    "chart_eur_per_unit": ("€ / yksikkö", "€ / enhet", "€ per unit"),
    "chart_price_xlabel": ("kuukausi (palveluntuottajia, joilla voimassa oleva hinta)",
                           "månad (producenter med gällande pris)", "month (providers with a price in force)"),
    "chart_no_prices": ("ei vielä hintoja", "inga priser ännu", "no prices yet"),
    "chart_volume_title": ("Veloitukset kuukausittain", "Debiteringar per månad", "Euros charged per month"),
    "chart_charged_to_funder": ("järjestäjältä veloitettu (€)", "debiterat av anordnaren (€)",
                                "charged to the funder (€)"),
    "chart_own_shares": ("asiakkaiden omavastuut (€)", "klienternas egna andelar (€)", "clients' own shares (€)"),
    "chart_suppressed": ("salattu\n(alle 5 asiakasta)", "skyddad\n(färre än 5 klienter)",
                         "suppressed\n(< 5 clients)"),
    "chart_eur": ("€", "€", "€"),
    "chart_month": ("kuukausi", "månad", "month"),
    "chart_no_charges": ("ei vielä veloituksia", "inga debiteringar ännu", "no charges yet"),
    "total": ("Yhteensä", "Totalt", "Total"),
    # the spreadsheet CSVs' headings
    "col_funder_id": ("Järjestäjä", "Anordnare", "Funder"),
    "col_period": ("Kuukausi", "Månad", "Month"),
    "col_category": ("Palvelu", "Tjänst", "Service"),
    "col_vouchers_issued": ("Myönnetyt setelit", "Beviljade sedlar", "Vouchers issued"),
    "col_vouchers_active": ("Voimassa olevat setelit", "Gällande sedlar", "Vouchers in force"),
    "col_vouchers_expired": ("Päättyneet setelit", "Utgångna sedlar", "Vouchers expired"),
    "col_vouchers_revoked": ("Perutut setelit", "Återkallade sedlar", "Vouchers revoked"),
    "col_clients_served": ("Palvellut asiakkaat", "Betjänade klienter", "Clients served"),
    "col_units_granted": ("Myönnetyt yksiköt", "Beviljade enheter", "Units granted"),
    "col_units_used": ("Käytetyt yksiköt", "Använda enheter", "Units used"),
    "col_utilisation": ("Käyttöaste", "Utnyttjandegrad", "Utilisation"),
    "col_charges": ("Veloitukset", "Debiteringar", "Charges"),
    "col_charged_cents": ("Veloitettu (€)", "Debiterat (€)", "Charged (€)"),
    "col_own_share_cents": ("Omavastuut (€)", "Egna andelar (€)", "Own shares (€)"),
    "col_volume_cents": ("Rahavolyymi (€)", "Penningvolym (€)", "Money volume (€)"),
    "col_average_charged_price_cents": ("Veloitettu keskihinta (€)", "Debiterat medelpris (€)",
                                        "Average charged price (€)"),
    "col_settled_charges": ("Tilitetyt veloitukset", "Redovisade debiteringar", "Charges settled"),
    "col_settled_gross_cents": ("Tilitetty brutto (€)", "Redovisat brutto (€)", "Settled gross (€)"),
    "col_fee_cents": ("Palkkiot (€)", "Avgifter (€)", "Fees (€)"),
    "col_net_cents": ("Tilitetty netto (€)", "Redovisat netto (€)", "Settled net (€)"),
    "col_settled_within_14_days_share": ("Tilitetty 14 päivässä", "Redovisat inom 14 dagar",
                                         "Settled within 14 days"),
    "col_worst_settlement_delay_days": ("Pisin tilitysviive (pv)", "Längsta redovisningsfördröjning (d)",
                                        "Longest settlement delay (days)"),
    "col_feedback_responses": ("Palautteet", "Responser", "Feedback responses"),
    "col_satisfied_share": ("Tyytyväisiä", "Nöjda", "Satisfied"),
    "col_response_rate": ("Vastausaste", "Svarsfrekvens", "Response rate"),
    "col_providers_approved": ("Hyväksytyt tuottajat", "Godkända producenter", "Providers approved"),
    "col_providers_suspended": ("Keskeytetyt tuottajat", "Avbrutna producenter", "Providers suspended"),
    "col_providers_with_prices": ("Tuottajat, joilla hinta", "Producenter med pris", "Providers with a price"),
    "col_average_list_price_cents": ("Hinnaston keskihinta (€)", "Prislistornas medelpris (€)",
                                     "Average list price (€)"),
    "col_suppressed": ("Salatut luvut", "Skyddade tal", "Suppressed figures"),
    "col_providers": ("Tuottajat, joilla hinta", "Producenter med pris", "Providers with a price"),
    "col_average_price_cents": ("Hinnaston keskihinta (€)", "Prislistornas medelpris (€)", "Average list price (€)"),
    "col_average_price_eur": ("Hinnaston keskihinta (€)", "Prislistornas medelpris (€)", "Average list price (€)"),
    "col_lowest_price_cents": ("Alin hinta (€)", "Lägsta pris (€)", "Lowest price (€)"),
    "col_highest_price_cents": ("Korkein hinta (€)", "Högsta pris (€)", "Highest price (€)"),
    "col_charged_units": ("Veloitetut yksiköt", "Debiterade enheter", "Units charged"),
    "col_unit_weighted_price_cents": ("Yksiköillä painotettu hinta (€)", "Pris vägt med enheter (€)",
                                      "Price weighted by units (€)"),
    "col_clients_charged": ("Asiakkaat, joilta veloitettu", "Debiterade klienter", "Clients charged"),
}


def pick(lang: str | None) -> str:
    return lang if lang in LANGUAGES else "fi"


def say(key: str, lang: str, **values: object) -> str:
    text = TEXTS[key][LANGUAGES.index(pick(lang))]
    return text.format(**values) if values else text


def category_name(code: str, lang: str) -> str:
    """A category's name in ``lang`` (the catalogue's); ``total`` is the total row; an unknown code as is."""
    if code == "total":
        return say("total", lang)
    info = CATALOGUE.get(code)
    return getattr(info, f"name_{pick(lang)}") if info else code


def column_heading(name: str, lang: str) -> str:
    key = f"col_{name}"
    return say(key, lang) if key in TEXTS else name


def number_text(value: float | Decimal, lang: str, places: int | None = None) -> str:
    """A number as written in Finland: decimal comma, thousands grouped by a no-break space."""
    fmt = None if places is None else "#,##0." + "0" * places
    return format_decimal(value, format=fmt, locale=LOCALES[pick(lang)])


def euros_text(euros: float | Decimal, lang: str, whole: bool = False) -> str:
    """Euros as written in Finland: ``1 234,50 €`` (``whole``: ``1 234 €``, for an axis)."""
    return format_currency(euros, "EUR", format="#,##0 ¤" if whole else None, locale=LOCALES[pick(lang)],
                           currency_digits=not whole)


def month_label(period: str) -> str:
    """``2026-10`` as ``10/2026``: how a month is written in Finnish and Swedish alike."""
    year, _, month = period.partition("-")
    return f"{int(month)}/{year}" if month.isdigit() else period
