"""The ledger as the equivalence tests compare it: a provider's and a funder's accounts, summed and counted."""
from __future__ import annotations

from sqlalchemy import func, select

from payments.models import LedgerEntry


async def ledger_sums(w, provider: str, funder: str) -> dict:  # noqa: ANN001
    async with w.app.state.runtime.sessions() as session:
        rows = (await session.execute(select(LedgerEntry.account, func.sum(LedgerEntry.amount_cents), func.count())
                                      .where(LedgerEntry.account.in_([f"funder:{funder}:voucher_spend",
                                                                      f"provider:{provider}:payable"]))
                                      .group_by(LedgerEntry.account))).all()
    return {account.replace(provider, "P").replace(funder, "F"): (int(total), n) for account, total, n in rows}
