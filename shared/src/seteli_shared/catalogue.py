"""Service categories (freedom-of-choice legislation) and their units. The registry will own a
richer catalogue; these codes are the contract every service shares."""
from __future__ import annotations

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
}


class Period(StrEnum):
    """How often a voucher's units renew."""

    MONTH = "month"
    VALIDITY = "validity"  # the units are for the whole validity
