"""The portal's words in the register's three languages: Finnish (default), Swedish and English.

The language is chosen by ``?lang=`` (remembered in a cookie), else the cookie, else the browser's
``Accept-Language``, else Finnish. ``TEXTS`` maps each key to its (fi, sv, en) text; a test checks that
every key the templates use is here in all three."""
from __future__ import annotations

LANGUAGES = ("fi", "sv", "en")
DEFAULT = "fi"
LANGUAGE_NAMES = {"fi": "Suomeksi", "sv": "På svenska", "en": "In English"}

TEXTS: dict[str, tuple[str, str, str]] = {
    "site_name": ("Palveluseteli", "Servicesedel", "Service voucher"),
    "skip_to_content": ("Siirry sisältöön", "Hoppa till innehållet", "Skip to content"),
    "language": ("Kieli", "Språk", "Language"),
    "nav_main": ("Päävalikko", "Huvudmeny", "Main menu"),
    "home": ("Etusivu", "Startsida", "Home"),
    "compare": ("Vertaile palveluntuottajia", "Jämför serviceproducenter", "Compare providers"),
    "sign_in": ("Kirjaudu", "Logga in", "Sign in"),
    "sign_out": ("Kirjaudu ulos", "Logga ut", "Sign out"),
    "signed_in_as": ("Kirjautuneena", "Inloggad som", "Signed in as"),
    "intro": ("Palvelusetelillä valitset itse palveluntuottajan kuntasi tai hyvinvointialueesi hyväksymistä "
              "tuottajista. Vertaile hintoja ja omavastuita ilman kirjautumista.",
              "Med en servicesedel väljer du själv en serviceproducent bland dem som din kommun eller ditt "
              "välfärdsområde har godkänt. Jämför priser och självriskandelar utan att logga in.",
              "With a service voucher you choose your provider among those your municipality or wellbeing "
              "services county has approved. Compare prices and own shares without signing in."),
    "for_clients": ("Asiakkaalle", "För klienter", "For clients"),
    "for_clients_text": ("Kirjaudu setelisi koodilla ja päätöskirjeen kirjautumiskoodilla.",
                         "Logga in med sedelns kod och inloggningskoden i beslutsbrevet.",
                         "Sign in with your voucher's code and the login code in your decision letter."),
    "for_staff": ("Palveluntuottajille ja henkilöstölle", "För serviceproducenter och personal",
                  "For providers and staff"),
    "client_sign_in": ("Asiakkaan kirjautuminen", "Inloggning för klienter", "Client sign-in"),
    "staff_sign_in": ("Henkilöstön ja palveluntuottajien kirjautuminen", "Inloggning för personal och producenter",
                      "Staff and provider sign-in"),
    "voucher_code": ("Setelin koodi", "Sedelns kod", "Voucher code"),
    "client_login_code": ("Kirjautumiskoodi", "Inloggningskod", "Login code"),
    "sign_in_oidc": ("Kirjaudu organisaatiosi tunnuksilla", "Logga in med organisationens konto",
                     "Sign in with your organisation's account"),
    "dev_sign_in": ("Kehityskirjautuminen", "Inloggning för utveckling", "Development sign-in"),
    "dev_sign_in_text": ("Vain kehitysympäristössä: valitse rooli ja organisaatio, portaali luo kehitystunnisteen.",
                         "Endast i utvecklingsmiljö: välj roll och organisation, portalen skapar en utvecklingstoken.",
                         "Development only: pick a role and its organisation; the portal mints a development token."),
    "role": ("Rooli", "Roll", "Role"),
    "funder_id": ("Järjestäjän tunnus", "Anordnarens kod", "Funder id"),
    "provider_id": ("Palveluntuottajan tunnus", "Serviceproducentens id", "Provider id"),
    "no_sign_in_method": ("Kirjautumistapaa ei ole määritetty.", "Inget inloggningssätt har konfigurerats.",
                          "No sign-in method is configured."),
    # comparison
    "funder": ("Järjestäjä (kunta tai hyvinvointialue)", "Anordnare (kommun eller välfärdsområde)",
               "Funder (municipality or wellbeing services county)"),
    "category": ("Palvelu", "Tjänst", "Service"),
    "municipality": ("Kunta (koodi)", "Kommun (kod)", "Municipality (code)"),
    "language_of_service": ("Palvelukieli", "Servicespråk", "Language of service"),
    "any": ("Mikä tahansa", "Vilken som helst", "Any"),
    "sort_by": ("Järjestys", "Sortering", "Sort by"),
    "sort_price": ("Hinta", "Pris", "Price"),
    "sort_own_share": ("Oma osuus", "Egen andel", "Own share"),
    "voucher_value": ("Setelin arvo (€ / yksikkö)", "Sedelns värde (€ / enhet)", "Voucher value (€ per unit)"),
    "units_per_month": ("Yksiköitä kuukaudessa", "Enheter per månad", "Units per month"),
    "show": ("Näytä", "Visa", "Show"),
    "provider": ("Palveluntuottaja", "Serviceproducent", "Provider"),
    "price_per_unit": ("Hinta / yksikkö", "Pris / enhet", "Price per unit"),
    "own_share_per_unit": ("Oma osuus / yksikkö", "Egen andel / enhet", "Own share per unit"),
    "own_share_per_month": ("Oma osuus / kk", "Egen andel / mån", "Own share per month"),
    "languages": ("Kielet", "Språk", "Languages"),
    "no_price": ("ei hintaa", "inget pris", "no price"),
    "no_providers": ("Hakuehdoilla ei löytynyt hyväksyttyjä palveluntuottajia.",
                     "Inga godkända serviceproducenter hittades.", "No approved providers match."),
    "results": ("Tulokset", "Resultat", "Results"),
    "details": ("Tiedot", "Uppgifter", "Details"),
    "service_units": ("Toimipaikat", "Verksamhetsställen", "Service units"),
    "contact": ("Yhteystiedot", "Kontaktuppgifter", "Contact"),
    "price_in_force": ("Voimassa oleva hinta", "Gällande pris", "Price in force"),
    "not_found": ("Ei löytynyt", "Hittades inte", "Not found"),
    "back_to_comparison": ("Takaisin vertailuun", "Tillbaka till jämförelsen", "Back to the comparison"),
    # client
    "your_voucher": ("Palvelusetelisi", "Din servicesedel", "Your voucher"),
    "valid": ("Voimassa", "Giltig", "Valid"),
    "status": ("Tila", "Status", "Status"),
    "value_per_unit": ("Arvo / yksikkö", "Värde / enhet", "Value per unit"),
    "units_per_period": ("Yksiköitä jaksossa", "Enheter per period", "Units per period"),
    "units_used": ("Käytetty tässä jaksossa", "Använt denna period", "Used this period"),
    "units_left": ("Jäljellä tässä jaksossa", "Kvar denna period", "Left this period"),
    "chosen_provider": ("Valittu palveluntuottaja", "Vald serviceproducent", "Chosen provider"),
    "none_chosen": ("Et ole vielä valinnut palveluntuottajaa.", "Du har inte valt någon serviceproducent ännu.",
                    "You have not chosen a provider yet."),
    "choose": ("Valitse", "Välj", "Choose"),
    "switch_to": ("Vaihda tähän", "Byt till denna", "Switch to this one"),
    "chosen": ("Valittu", "Vald", "Chosen"),
    "provider_chosen": ("Palveluntuottaja valittu.", "Serviceproducenten har valts.", "Provider chosen."),
    "feedback": ("Anna palautetta", "Ge respons", "Give feedback"),
    "rating": ("Arvio (1 = huono, 5 = erinomainen)", "Betyg (1 = dåligt, 5 = utmärkt)",
               "Rating (1 = poor, 5 = excellent)"),
    "feedback_text": ("Vapaa palaute (valinnainen, älä kirjoita henkilötietoja)",
                      "Fritt formulerad respons (valfri, skriv inga personuppgifter)",
                      "Your words (optional; write no personal details)"),
    "send": ("Lähetä", "Skicka", "Send"),
    "feedback_thanks": ("Kiitos palautteestasi.", "Tack för din respons.", "Thank you for your feedback."),
    "feedback_unavailable": ("Palautetta ei voi juuri nyt antaa.", "Det går inte att ge respons just nu.",
                             "Feedback cannot be given right now."),
    # provider
    "provider_home": ("Palveluntuottaja", "Serviceproducent", "Provider"),
    "register_entry": ("Rekisteritiedot", "Registeruppgifter", "Register entry"),
    "business_id": ("Y-tunnus", "FO-nummer", "Business ID"),
    "name": ("Nimi", "Namn", "Name"),
    "approvals": ("Hyväksynnät", "Godkännanden", "Approvals"),
    "price_lists": ("Hinnastot", "Prislistor", "Price lists"),
    "effective_from": ("Voimassa alkaen", "Gäller från", "Effective from"),
    "apply": ("Hae järjestäjän hyväksyntää", "Ansök om godkännande", "Apply to a funder"),
    "rulebook": ("Sääntökirja", "Regelbok", "Rulebook"),
    "accept_rulebook": ("Hyväksyn sääntökirjan ehdot", "Jag godkänner regelbokens villkor",
                        "I accept the rulebook's terms"),
    "application_sent": ("Hakemus lähetetty.", "Ansökan har skickats.", "Application submitted."),
    "charge": ("Veloita seteliä", "Debitera sedel", "Charge a voucher"),
    "provider_reference": ("Oma viite (esim. käynnin tunnus)", "Egen referens (t.ex. besökets id)",
                           "Your reference (e.g. the visit's id)"),
    "service_date": ("Palvelupäivä", "Servicedag", "Service date"),
    "units": ("Yksiköt", "Enheter", "Units"),
    "unit_price_eur": ("Yksikköhinta € (valinnainen)", "Enhetspris € (valfritt)", "Unit price € (optional)"),
    "charge_accepted": ("Veloitus hyväksytty", "Debiteringen godkändes", "Charge accepted"),
    "amount": ("Summa", "Belopp", "Amount"),
    "own_share": ("Asiakkaan osuus", "Klientens andel", "Client's share"),
    "upload_csv": ("Lähetä kuukauden veloitukset CSV-tiedostona", "Skicka månadens debiteringar som CSV-fil",
                   "Upload the month's charges as a CSV file"),
    "csv_help": ("Sarakkeet: voucher_code, provider_reference, service_date, units (valinnaiset unit_price, tariff). "
                 "Puolipiste tai pilkku, desimaalipilkku käy.",
                 "Kolumner: voucher_code, provider_reference, service_date, units (valfria unit_price, tariff). "
                 "Semikolon eller komma, decimalkomma går bra.",
                 "Columns: voucher_code, provider_reference, service_date, units (optional unit_price, tariff). "
                 "Semicolons or commas, decimal commas are fine."),
    "csv_file": ("CSV-tiedosto", "CSV-fil", "CSV file"),
    "upload": ("Lähetä", "Skicka", "Upload"),
    "bulk_result": ("Tiedoston tulos rivi riviltä", "Filens resultat rad för rad", "The file's result line by line"),
    "line": ("Rivi", "Rad", "Line"),
    "result": ("Tulos", "Resultat", "Result"),
    "reason": ("Syy", "Orsak", "Reason"),
    "accepted": ("hyväksytty", "godkänd", "accepted"),
    "repeated": ("jo veloitettu", "redan debiterad", "already charged"),
    "refused": ("hylätty", "avvisad", "refused"),
    "summary_lines": ("Rivejä {lines}: hyväksytty {accepted}, jo veloitettu {repeated}, hylätty {refused}",
                      "Rader {lines}: godkända {accepted}, redan debiterade {repeated}, avvisade {refused}",
                      "Lines {lines}: accepted {accepted}, already charged {repeated}, refused {refused}"),
    "charges": ("Veloitukset", "Debiteringar", "Charges"),
    "no_charges": ("Ei veloituksia.", "Inga debiteringar.", "No charges."),
    "download_csv": ("Lataa CSV", "Ladda ner CSV", "Download CSV"),
    "settlements": ("Tilitykset", "Redovisningar", "Settlements"),
    "no_settlements": ("Ei tilityksiä.", "Inga redovisningar.", "No settlements."),
    "statement": ("Tilitysraportti", "Redovisningsrapport", "Statement"),
    "gross": ("Brutto", "Brutto", "Gross"),
    "fee": ("Palkkio", "Avgift", "Fee"),
    "net": ("Netto", "Netto", "Net"),
    "created": ("Luotu", "Skapad", "Created"),
    "date": ("Päivä", "Datum", "Date"),
    # funder
    "funder_home": ("Järjestäjä", "Anordnare", "Funder"),
    "applications": ("Hakemukset", "Ansökningar", "Applications"),
    "no_applications": ("Ei ratkaistavia hakemuksia.", "Inga ansökningar att avgöra.", "No applications to decide."),
    "approve": ("Hyväksy", "Godkänn", "Approve"),
    "reject": ("Hylkää", "Avslå", "Reject"),
    "reject_reason": ("Hylkäyksen peruste", "Grund för avslag", "Reason for rejection"),
    "decided": ("Ratkaistu.", "Avgjord.", "Decided."),
    "vouchers_issued": ("Myönnetyt setelit", "Beviljade sedlar", "Vouchers issued"),
    "no_vouchers": ("Ei seteleitä.", "Inga sedlar.", "No vouchers."),
    "report": ("Seurantaraportti", "Uppföljningsrapport", "Monitoring report"),
    "period": ("Kuukausi", "Månad", "Month"),
    "figures": ("Tunnusluvut", "Nyckeltal", "Figures"),
    "report_not_available": ("Raportti ei ole saatavilla.", "Rapporten är inte tillgänglig.",
                             "Report not available."),
    "chart_price": ("Hintakehitys", "Prisutveckling", "Price development"),
    "chart_volume": ("Veloitukset kuukausittain (€)", "Debiteringar per månad (€)", "Euros charged per month"),
    "chart_not_available": ("Kaavio ei ole saatavilla.", "Diagrammet är inte tillgängligt.", "Chart not available."),
    "feedback_received": ("Asiakaspalaute", "Klientrespons", "Client feedback"),
    "audit": ("Tapahtumaloki", "Händelselogg", "Audit trail"),
    "actor": ("Tekijä", "Aktör", "Actor"),
    "action": ("Toimenpide", "Åtgärd", "Action"),
    "service": ("Palvelu", "Tjänst", "Service"),
    "time": ("Aika", "Tid", "Time"),
    # operator
    "operator_home": ("Ylläpitäjä", "Operatör", "Operator"),
    "settlement_runs": ("Tilitysajot", "Redovisningskörningar", "Settlement runs"),
    "run_settlement": ("Aja tilitys nyt", "Kör redovisning nu", "Run settlement now"),
    "settlement_done": ("Tilitys ajettu: {n} tilitystä.", "Redovisningen kördes: {n} redovisningar.",
                        "Settlement run: {n} settlements."),
    "ledger_check": ("Kirjanpidon tarkistus", "Kontroll av bokföringen", "Ledger check"),
    "ledger_ok": ("Kirjanpito täsmää.", "Bokföringen stämmer.", "The ledger balances."),
    "ledger_not_ok": ("Kirjanpidossa on virhe!", "Bokföringen stämmer inte!", "The ledger does not balance!"),
    "dead_letters": ("Käsittelemättömät viestit", "Obehandlade meddelanden", "Dead-lettered messages"),
    "dead_letters_unavailable": ("Palvelut eivät vielä tarjoa rajapintaa käsittelemättömille viesteille; katso "
                                 "RabbitMQ:n hallinnasta jonot *.dlq.",
                                 "Tjänsterna har ännu inget gränssnitt för obehandlade meddelanden; se köerna "
                                 "*.dlq i RabbitMQ:s administration.",
                                 "The services offer no API for dead-lettered messages yet; see the *.dlq queues "
                                 "in RabbitMQ's management."),
    # errors
    "error": ("Virhe", "Fel", "Error"),
    "forbidden": ("Sinulla ei ole oikeutta tähän sivuun.", "Du har inte behörighet till denna sida.",
                  "You may not see this page."),
    "sign_in_needed": ("Kirjaudu ensin.", "Logga in först.", "Please sign in first."),
    "session_expired": ("Istunto on vanhentunut. Kirjaudu uudelleen.", "Sessionen har gått ut. Logga in igen.",
                        "Your session has expired. Please sign in again."),
    "csrf_failed": ("Lomake vanheni. Yritä uudelleen.", "Formuläret har gått ut. Försök igen.",
                    "The form expired. Please try again."),
    "service_unavailable": ("Palvelu ei juuri nyt vastaa. Yritä hetken päästä uudelleen.",
                            "Tjänsten svarar inte just nu. Försök igen om en stund.",
                            "The service is not answering right now. Please try again shortly."),
    "login_failed": ("Koodit eivät täsmää.", "Koderna stämmer inte.", "The codes do not match."),
    "too_many_attempts": ("Liian monta yritystä. Yritä myöhemmin uudelleen.", "För många försök. Försök igen senare.",
                          "Too many attempts. Please try again later."),
    "refused_because": ("Ei onnistunut", "Lyckades inte", "Not done"),
    "page_not_found": ("Sivua ei löytynyt.", "Sidan hittades inte.", "Page not found."),
}


def pick(query: str | None, cookie: str | None, accept_language: str | None) -> str:
    for candidate in (query, cookie):
        if candidate in LANGUAGES:
            return candidate
    for part in (accept_language or "").split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in LANGUAGES:
            return code
    return DEFAULT


def translator(lang: str):  # noqa: ANN201
    index = LANGUAGES.index(lang)

    def t(key: str, **kw: object) -> str:
        text = TEXTS[key][index] if key in TEXTS else key
        return text.format(**kw) if kw else text

    return t
