"""The ledger over HTTP: every account's balance and the ledger's invariants (operator only)."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from seteli_shared.auth import Principal, Role, require
from seteli_shared.service import SessionsDep

from . import books, check

router = APIRouter()


@router.get("/ledger/balances", tags=["ledger"])
async def ledger_balances(
    sessions: SessionsDep, principal: Annotated[Principal, require(Role.OPERATOR, scope="none")],
) -> dict[str, int]:
    """Balance of every account in cents (debit positive)."""
    async with sessions() as session:
        return await books.balances(session)


@router.get("/ledger/check", tags=["ledger"])
async def ledger_check(
    sessions: SessionsDep, principal: Annotated[Principal, require(Role.OPERATOR, scope="none")],
) -> dict:
    """The ledger's invariants: entries sum to zero and every transaction balances, no voucher charged
    beyond its entitlement in any period, settled = charges minus fees (each settlement its charges' sums)."""
    async with sessions() as session:
        return await check.ledger_check(session)
