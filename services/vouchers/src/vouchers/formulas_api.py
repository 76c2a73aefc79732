"""Value (formula) tables of income-related vouchers over HTTP: publish, read, preview a value. Routes
parse, authorise and call ``formulas.py``."""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from seteli_shared.auth import FUNDER_STAFF, Principal, Role, require
from seteli_shared.clock import ClockDep
from seteli_shared.schemas import BigCents, Cents, Count, Page, PageDep, Rate, RequestModel, Units
from seteli_shared.service import SessionsDep
from seteli_shared.web import created_or_repeated, error_responses

from . import formulas, value_engine
from .kinds import TableVersion
from .models import ValueTable
from .schemas import Category

router = APIRouter(tags=["value tables"])
PUBLISHERS = (Role.OPERATOR, Role.FUNDER_DECISION_MAKER)
READERS = (Role.OPERATOR, *FUNDER_STAFF, Role.FUNDER_CASE_SYSTEM)
CALCULATORS = (Role.OPERATOR, Role.FUNDER_DECISION_MAKER, Role.FUNDER_CASE_SYSTEM)
Percent = Annotated[Rate, Field(ge=0, le=100)]
IncomeCents = Annotated[BigCents, Field(ge=0, le=100_000_000)]


class ValueTableCreate(RequestModel):
    category: Category
    table_version: TableVersion = Field(description='e.g. "2026.1"; a published version never changes')
    max_value_per_unit_cents: Cents = Field(gt=0, le=10_000_000, description="e.g. at least 2700 for home care "
                                                                           "(the national guideline)")
    min_value_per_unit_cents: Cents = Field(ge=0, le=10_000_000, description="e.g. 700")
    income_limits_cents: list[IncomeCents] = Field(min_length=6, max_length=6,
                                             description="gross monthly income limit by household of 1..6 persons")
    percentages: list[Percent] = Field(min_length=6, max_length=6,
                                       description="percent of the income above the limit, households of 1..6")
    extra_person_limit_cents: IncomeCents = Field(description="added to the limit for each further person (e.g. 34200)")
    extra_person_points: Percent = Field(description="percentage points off for each further person (e.g. 1)")

    def content(self, funder_id: str) -> formulas.TableContent:
        return formulas.TableContent(funder_id, self.category, self.table_version, value_engine.ValueTable(
            self.max_value_per_unit_cents, self.min_value_per_unit_cents, tuple(self.income_limits_cents),
            tuple(self.percentages), self.extra_person_limit_cents, self.extra_person_points))


class ValueTablePublic(BaseModel):
    funder_id: str
    category: str
    table_version: str
    max_value_per_unit_cents: int
    min_value_per_unit_cents: int
    income_limits_cents: list[int]
    percentages: list[Decimal]
    extra_person_limit_cents: int
    extra_person_points: Decimal
    published_at: datetime

    @classmethod
    def of(cls, row: ValueTable) -> "ValueTablePublic":
        return cls(**row.model_dump())


class ValueCalculation(RequestModel):
    household_size: Count = Field(ge=1, le=value_engine.MAX_HOUSEHOLD)
    gross_monthly_income_cents: BigCents = Field(ge=0, le=100_000_000,
                                                 description="used for this answer only: never stored or logged")
    units_per_month: Units = Field(gt=0, le=100000)


class ValuePreview(BaseModel):
    """What a voucher issued on this table would be worth per unit (nothing of the income but the share)."""

    funder_id: str
    category: str
    table_version: str
    household_size: int
    value_per_unit_cents: int
    monthly_share_cents: int = Field(description="the client's monthly payment share, rounded down")
    income_limit_cents: int
    percentage: Decimal
    clamped: str | None = Field(description='"min" or "max" when the value is at the table\'s bound')


@router.post("/funders/{funder_id}/value-tables", status_code=201, response_model=ValueTablePublic,
             responses=created_or_repeated(ValueTablePublic, 409, 422))
async def publish_value_table(
    funder_id: str, body: ValueTableCreate, sessions: SessionsDep, clock: ClockDep, response: Response,
    principal: Annotated[Principal, require(*PUBLISHERS, scope="path")],
) -> ValueTablePublic:
    """Publish a version of the funder's formula table for income-related vouchers of a category
    (the funder's decision maker or operator staff). The same version with the same content again answers
    200; other content under it is refused (409 `value_table_version_exists`)."""
    row, new = await formulas.publish_table(sessions, clock, principal, body.content(funder_id))
    if not new:
        response.status_code = 200
    return ValueTablePublic.of(row)


@router.get("/funders/{funder_id}/value-tables", response_model=Page[ValueTablePublic])
async def list_value_tables(
    funder_id: str, sessions: SessionsDep, page: PageDep,
    principal: Annotated[Principal, require(*READERS, scope="path")], category: Category | None = None,
) -> Page[ValueTablePublic]:
    """The funder's value tables, by category and version."""
    rows, cursor = await formulas.tables_page(sessions, principal, funder_id, page, category)
    return Page(items=[ValueTablePublic.of(r) for r in rows], next_cursor=cursor)


@router.get("/funders/{funder_id}/value-tables/{category}/{table_version}", response_model=ValueTablePublic,
            responses=error_responses(404))
async def get_value_table(
    funder_id: str, category: str, table_version: str, sessions: SessionsDep,
    principal: Annotated[Principal, require(*READERS, scope="path")],
) -> ValueTablePublic:
    """One version of the funder's value table for a category."""
    return ValueTablePublic.of(await formulas.get_table(sessions, principal, funder_id, category, table_version))


@router.post("/funders/{funder_id}/value-tables/{category}/{table_version}/calculate",
             response_model=ValuePreview, responses=error_responses(404, 422))
async def calculate_value(
    funder_id: str, category: str, table_version: str, body: ValueCalculation, sessions: SessionsDep,
    principal: Annotated[Principal, require(*CALCULATORS, scope="path")],
) -> ValuePreview:
    """Preview an income-related voucher's value per unit for a household on this table (rounded up to the
    cent, within the table's minimum and maximum). The income is used for this answer only: it is not
    stored, audited or logged."""
    row, result = await formulas.calculate(sessions, principal, funder_id, category, table_version,
                                           body.household_size, body.gross_monthly_income_cents,
                                           body.units_per_month)
    return ValuePreview(funder_id=row.funder_id, category=row.category, table_version=row.table_version,
                        household_size=body.household_size, value_per_unit_cents=result.value_per_unit_cents,
                        monthly_share_cents=result.monthly_share_cents, income_limit_cents=result.income_limit_cents,
                        percentage=result.percentage, clamped=result.clamped)
