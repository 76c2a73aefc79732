"""Service categories (freedom-of-choice legislation) and their units. These codes are the contract
every service shares; ``CATALOGUE`` adds their names in Finnish, Swedish and English and whether
the category is on the legislation's core list (the registry serves it at ``GET /categories``)."""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Unit(StrEnum):
    HOUR = "hour"
    VISIT = "visit"
    DAY = "day"
    PACKAGE = "package"


CATEGORIES: dict[str, Unit] = {
    "social_rehabilitation": Unit.DAY,
    "home_care": Unit.HOUR,
    "housing_services": Unit.DAY,
    "work_activity": Unit.DAY,
    "home_nursing": Unit.VISIT,
    "medical_rehabilitation": Unit.VISIT,
    "dental_prosthetics": Unit.PACKAGE,
    "family_work": Unit.HOUR,
    "carers_leave": Unit.DAY,
    "personal_assistance": Unit.HOUR,
    "day_activities": Unit.DAY,
    "cleaning": Unit.HOUR,
    "maternity_clinic": Unit.VISIT,
    "outpatient_surgery": Unit.PACKAGE,
    "non_urgent_visits": Unit.VISIT,
    "examinations": Unit.PACKAGE,
    "orthodontics": Unit.PACKAGE,
}


@dataclass(frozen=True)
class CategoryInfo:
    code: str
    unit: Unit
    name_fi: str
    name_sv: str
    name_en: str
    #: on the legislation's core list of services offered with vouchers
    core: bool


_NAMES: dict[str, tuple[str, str, str, bool]] = {
    "social_rehabilitation": ("Sosiaalinen kuntoutus", "Social rehabilitering", "Social rehabilitation", True),
    "home_care": ("Kotihoito", "Hemvård", "Home care", True),
    "housing_services": ("Asumispalvelut", "Boendeservice", "Housing services", True),
    "work_activity": ("Vammaisten henkilöiden työtoiminta", "Arbetsverksamhet för personer med funktionsnedsättning",
                      "Work activity of disabled people", True),
    "home_nursing": ("Kotisairaanhoito", "Hemsjukvård", "Home nursing", True),
    "medical_rehabilitation": ("Lääkinnällisen kuntoutuksen käynnit", "Besök inom medicinsk rehabilitering",
                               "Medical rehabilitation visits", True),
    "dental_prosthetics": ("Hammasproteettiset palvelut", "Tandprotetiska tjänster", "Dental prosthetics", True),
    "family_work": ("Perhetyö", "Familjearbete", "Family work", False),
    "carers_leave": ("Omaishoitajan vapaa", "Närståendevårdarens ledighet", "Carer's leave", False),
    "personal_assistance": ("Henkilökohtainen apu", "Personlig assistans", "Personal assistance", False),
    "day_activities": ("Päivätoiminta", "Dagverksamhet", "Day activities", False),
    "cleaning": ("Siivous", "Städning", "Cleaning", False),
    "maternity_clinic": ("Äitiysneuvolapalvelut", "Mödrarådgivningstjänster", "Maternity clinic services", False),
    "outpatient_surgery": ("Kiireetön avo- ja päiväkirurgia", "Icke-brådskande öppen- och dagkirurgi",
                           "Outpatient and non-urgent surgery", False),
    "non_urgent_visits": ("Kiireettömät vastaanottokäynnit", "Icke-brådskande mottagningsbesök",
                          "Non-urgent visits", False),
    "examinations": ("Tutkimukset", "Undersökningar", "Examinations", False),
    "orthodontics": ("Oikomishoito", "Tandreglering", "Orthodontics", False),
}

#: every category with its names, in the order of ``CATEGORIES``
CATALOGUE: dict[str, CategoryInfo] = {
    code: CategoryInfo(code, unit, *_NAMES[code]) for code, unit in CATEGORIES.items()
}


class Period(StrEnum):
    """How often a voucher's units renew."""

    MONTH = "month"
    VALIDITY = "validity"  # the units are for the whole validity
