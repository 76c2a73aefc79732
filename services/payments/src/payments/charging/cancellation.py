"""A provider cancels its charge while it is unsettled: the ledger entry reversed, ``ChargeCancelled``."""
from __future__ import annotations

from sqlalchemy import select, update

from seteli_shared import audit
from seteli_shared.auth import Principal
from seteli_shared.clock import Clock
from seteli_shared.errors import Conflict, NotFound
from seteli_shared.events import ChargeCancelled
from seteli_shared.logging import get_logger
from seteli_shared.money import from_hundredths
from seteli_shared.outbox import add_event
from seteli_shared.uow import SessionUnitOfWork

from ..ledger.books import post
from ..ledger.postings import balanced, charge_postings
from ..models import SOURCE, Charge, VoucherView
from . import domain

log = get_logger(__name__)


def voucher_moved(voucher_id: str):  # noqa: ANN201
    """The voucher's row moved to a new version: every change of the units or money its charges use does this
    in its own transaction (a charge or a batch's lock, a cancellation, a correction), so that a bulk's next
    chunk may take what its chunk before knew of the voucher while the row is where that chunk left it
    (``store.SessionChargeStore.load``), and a single charge read without a lock is decided again
    (``fast_path``)."""
    t = VoucherView.__table__
    return update(t).where(t.c.voucher_id == voucher_id).values(version=t.c.version + 1)


async def cancel_charge(uow: SessionUnitOfWork, clock: Clock, principal: Principal,
                        charge_id: str) -> tuple[Charge, bool]:
    """The charge's provider cancels it while it is unsettled: the ledger entry reversed, ``ChargeCancelled``.
    Returns the charge and whether it was cancelled now (False: it had been already)."""
    async with uow:
        session = uow.session
        charge = (await session.execute(select(Charge).where(Charge.id == charge_id).with_for_update())).scalar_one_or_none()
        if charge is None or (not principal.is_operator and charge.provider_id != principal.provider_id):
            raise NotFound("charge")
        if charge.status == domain.CANCELLED:
            await uow.commit()  # nothing changed: the row's lock given back, the charge kept as read
            return charge, False
        if charge.status == domain.SETTLED or charge.settlement_id is not None:
            raise Conflict("charge_settled", "the charge is settled already: a correction after settlement goes "
                           "through the settlement's correction", settlement_id=charge.settlement_id)
        now = clock.now()
        charge.status, charge.cancelled_at = domain.CANCELLED, now
        session.add(charge)
        await session.flush()
        await session.execute(voucher_moved(charge.voucher_id))
        reverse = [(account, -amount) for account, amount in
                   charge_postings(charge.funder_id, charge.provider_id, charge.amount_cents)]
        await post(session, "charge_cancellation", charge.id, balanced(reverse), now)
        await add_event(session, ChargeCancelled(
            charge_id=charge.id, voucher_id=charge.voucher_id, funder_id=charge.funder_id,
            provider_id=charge.provider_id, category=charge.category, service_date=charge.service_date,
            units=from_hundredths(charge.units_x100), amount_cents=charge.amount_cents, cancelled_at=now),
            SOURCE)
        await audit.record(session, principal, "charge.cancel", "charge", charge.id, charge.funder_id)
        await uow.commit()
    log.info("charge.cancelled", charge_id=charge.id, amount_cents=charge.amount_cents)
    return charge, True
