"""Vouchers use cases: each one transaction that changes state, writes its events to the outbox and
its audit record together. Routes call these; the rules they apply are in ``domain.py``; time comes
from the ``Clock`` passed in."""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import select

from seteli_shared import audit, outbox
from seteli_shared.addresses import address_group
from seteli_shared.auth import Principal, Role, TenantScope, ensure_visible
from seteli_shared.catalogue import CATEGORIES
from seteli_shared.clock import Clock
from seteli_shared.codes import new_code, normalise
from seteli_shared.db import once_more_on_conflict, unit_of_work
from seteli_shared.errors import Conflict, DomainError, NotFound
from seteli_shared.events import VoucherIssued, VoucherProviderChosen
from seteli_shared.ids import clean_derived, new_id
from seteli_shared.logging import get_logger
from seteli_shared.money import from_hundredths
from seteli_shared.outbox import add_event
from seteli_shared.schemas import PageParams, paginate

from . import domain, formulas, kinds
from .models import ApprovedProvider, Funder, LoginThrottle, Voucher, approval_state
from .schemas import VoucherCreate

SOURCE = "vouchers"
#: symbols of a client login code (5 bits each: 60 bits), plus a check symbol that catches typos
LOGIN_CODE_LENGTH = 12
log = get_logger(__name__)

Sessions = async_sessionmaker[AsyncSession]


# ------------------------------------------------------------------ issuing
def _same_terms(v: Voucher, body: VoucherCreate, terms: kinds.KindTerms) -> bool:
    return (v.client_ref, v.category, v.period, v.valid_from, v.valid_until) == (
        body.client_ref, body.category, body.period.value, body.valid_from, body.valid_until
    ) and kinds.same_terms(v, terms) and v.carry_over == body.carry_over


def _new_login_code(voucher: Voucher, clock: Clock) -> str:
    """Give the voucher a new client login code; only its salted hash is kept."""
    code = new_code(LOGIN_CODE_LENGTH)
    # a salt whose hash the privacy guard passes: a hex digest trips it about once in 2,800 (ids); the hash is made
    # once, with the check
    voucher.client_login_salt, voucher.client_login_hash = clean_derived(
        lambda: secrets.token_hex(16), lambda salt: domain.hash_login_code(code, salt))
    voucher.client_login_issued_at = clock.now()
    return code


async def issue_voucher(sessions: Sessions, principal: Principal, body: VoucherCreate,
                        clock: Clock) -> tuple[Voucher, str | None]:
    """Issue a voucher on a service decision of a known funder. The same decision sent again gives
    back the same voucher (without a login code: that is shown once); other terms for it: 409.
    Returns the voucher and its client login code when it is new."""

    async def issue() -> tuple[Voucher, str | None]:
        async with unit_of_work(sessions) as session:
            voucher, login_code = await issue_in(session, principal, body, clock)
        if login_code is not None:
            log.info("voucher.issued", voucher_id=voucher.id, funder_id=voucher.funder_id, category=voucher.category)
        return voucher, login_code

    return await once_more_on_conflict(issue)


async def issue_in(session: AsyncSession, principal: Principal, body: VoucherCreate, clock: Clock, *,
                   channel: str = "http", decision_version: int = 1) -> tuple[Voucher, str | None]:
    """``issue_voucher``'s rules in the caller's transaction: the HTTP route's own unit of work, or a
    decision consumed from the bus (``decisions.py``, ``channel="bus"``)."""
    domain.check_funder_known(await session.get(Funder, body.funder_id) is not None)
    terms = await formulas.kind_terms(session, body)  # the voucher's kind (an income-related value from its table)
    existing = (await session.exec(select(Voucher).where(
        Voucher.funder_id == body.funder_id, Voucher.decision_ref == body.decision_ref))).first()
    if existing:
        if not _same_terms(existing, body, terms):
            raise Conflict("decision_conflict",
                           "this decision reference already has a voucher with other terms",
                           voucher_id=existing.id)
        return existing, None
    domain.check_validity(body.valid_from, body.valid_until, clock.today())
    voucher = Voucher(
        id=new_id(), funder_id=body.funder_id, decision_ref=body.decision_ref, client_ref=body.client_ref,
        category=body.category, unit=CATEGORIES[body.category].value, period=body.period.value,
        valid_from=body.valid_from, valid_until=body.valid_until, status=domain.ISSUED, issued_at=clock.now(),
        voucher_code=new_code(), decision_version=decision_version, **terms.columns(),
        carry_over=body.carry_over, age_band=body.age_band, municipality_of_residence=body.municipality_of_residence,
    )
    login_code = _new_login_code(voucher, clock)
    session.add(voucher)
    await session.flush()
    await add_event(session, VoucherIssued(
        voucher_id=voucher.id, funder_id=voucher.funder_id, client_ref=voucher.client_ref,
        decision_ref=voucher.decision_ref, category=voucher.category, unit=voucher.unit,
        units_per_period=from_hundredths(voucher.units_per_period_x100), period=voucher.period,
        value_per_unit_cents=voucher.value_per_unit_cents, valid_from=voucher.valid_from,
        valid_until=voucher.valid_until, issued_at=voucher.issued_at, **terms.event_fields(),
        carry_over=voucher.carry_over, voucher_code=voucher.voucher_code, age_band=voucher.age_band,
        municipality_of_residence=voucher.municipality_of_residence), SOURCE)
    await audit.record(session, principal, "voucher.issue", "voucher", voucher.id, voucher.funder_id, channel=channel)
    return voucher, login_code


async def issue_client_login_code(sessions: Sessions, principal: Principal, voucher_id: str,
                                  clock: Clock) -> tuple[Voucher, str]:
    """A new client login code for the voucher (for a new decision letter); the old one stops working."""
    async with unit_of_work(sessions) as session:
        voucher = await _visible(session, principal, voucher_id, lock=True)
        code = _new_login_code(voucher, clock)
        session.add(voucher)
        await audit.record(session, principal, "voucher.client_login_code.issue", "voucher", voucher.id,
                           voucher.funder_id)
    log.info("voucher.client_login_code_issued", voucher_id=voucher.id)
    return voucher, code


# ------------------------------------------------------------------ choosing a provider
async def choose_provider(sessions: Sessions, principal: Principal, voucher_id: str, provider_id: str,
                          clock: Clock) -> Voucher:
    """The client (or the funder's decision maker for the client) chooses or switches to a provider
    approved by the voucher's funder for its category, and neither suspended nor revoked today."""
    async with unit_of_work(sessions) as session:
        # the voucher (locked) and the provider's approval for its funder and category in one round trip
        found = (await session.execute(
            select(Voucher, ApprovedProvider).outerjoin(ApprovedProvider, sa.and_(
                ApprovedProvider.funder_id == Voucher.funder_id, ApprovedProvider.provider_id == provider_id,
                ApprovedProvider.category == Voucher.category)).where(Voucher.id == voucher_id)
            .with_for_update(of=Voucher.__table__))).first()
        if found is None:
            raise NotFound("voucher")
        voucher, approval = found
        ensure_visible(principal, "voucher", funder_id=voucher.funder_id, provider_id=voucher.provider_id,
                       voucher_id=voucher.id)
        today = clock.today()
        domain.check_choosable(voucher.status, voucher.valid_until, today)
        # choosing again the provider already chosen is refused too once its approval is not in force
        domain.check_provider_in_force(approval_state(approval), today)
        if voucher.provider_id == provider_id:
            return voucher
        # a switch: the units left stay the voucher's; services before today remain the previous provider's
        previous_provider_id = voucher.provider_id
        _env, event_row = outbox.event_row(VoucherProviderChosen(
            voucher_id=voucher.id, funder_id=voucher.funder_id, provider_id=provider_id,
            category=voucher.category, chosen_at=clock.now(), effective_from=today,
            previous_provider_id=previous_provider_id), SOURCE)
        audit_row = audit.row(principal, "voucher.choose_provider", "voucher", voucher.id, voucher.funder_id)
        change = {"provider_id": provider_id, "status": domain.PROVIDER_CHOSEN}
        if session.get_bind().dialect.name == "postgresql":
            # the voucher's change, its event and its audit row in one statement (one round trip, not three)
            chosen = sa.update(Voucher.__table__).where(Voucher.__table__.c.id == voucher.id).values(**change)
            audited = audit.T.insert().values(**audit_row)
            await session.execute(outbox.T.insert().values(**event_row)
                                  .add_cte(chosen.cte("chosen")).add_cte(audited.cte("audited")))
            for name, value in change.items():  # the row as written: nothing left for the session to flush
                set_committed_value(voucher, name, value)
        else:
            for name, value in change.items():
                setattr(voucher, name, value)
            session.add(voucher)
            await session.flush()
            await session.execute(outbox.T.insert().values(**event_row))
            await session.execute(audit.T.insert().values(**audit_row))
        outbox.wake_relay_on_commit(session)
    log.info("voucher.provider_chosen", voucher_id=voucher.id, provider_id=provider_id)
    return voucher


# ------------------------------------------------------------------ reading
async def _visible(session: AsyncSession, principal: Principal, voucher_id: str, *, lock: bool = False) -> Voucher:
    """The voucher if it is the caller's tenant's (its funder's, its chosen provider's, its client's), else 404."""
    voucher = await session.get(Voucher, voucher_id, with_for_update=lock or None)
    if voucher is None:
        raise NotFound("voucher")
    ensure_visible(principal, "voucher", funder_id=voucher.funder_id, provider_id=voucher.provider_id,
                   voucher_id=voucher.id)
    return voucher


async def get_voucher(sessions: Sessions, principal: Principal, voucher_id: str) -> Voucher:
    async with sessions() as session:
        return await _visible(session, principal, voucher_id)


@dataclass(frozen=True)
class VoucherFilter:
    status: str | None = None
    category: str | None = None
    client_ref: str | None = None
    decision_ref: str | None = None


async def list_vouchers(sessions: Sessions, scope: TenantScope, where: VoucherFilter,
                        page: PageParams) -> tuple[list[Voucher], str | None]:
    """The caller's tenant's vouchers, oldest first: operator staff all, funder staff and case system
    their funder's, provider staff those chosen for their provider, the client its own."""
    if (where.client_ref or where.decision_ref) and domain.audience_of(scope.principal) != domain.Audience.FUNDER:
        raise DomainError("filter_not_allowed", "only the funder may look vouchers up by client or decision",
                          status_code=403)
    q = scope.restrict(select(Voucher), funder=Voucher.funder_id, provider=Voucher.provider_id, voucher=Voucher.id)
    for column, value in ((Voucher.status, where.status), (Voucher.category, where.category),
                          (Voucher.client_ref, where.client_ref), (Voucher.decision_ref, where.decision_ref)):
        if value is not None:
            q = q.where(column == value)
    async with sessions() as session:
        return await paginate(session, q, [Voucher.issued_at, Voucher.id], page)


# ------------------------------------------------------------------ the client's light login
class InvalidCredentials(DomainError):
    status_code = 401

    def __init__(self) -> None:
        # one answer for every wrong pair: it never says which part was wrong
        super().__init__("invalid_voucher_credentials", "the voucher code or the client login code is wrong")


class TooManyAttempts(DomainError):
    status_code = 429

    def __init__(self, retry_after: int) -> None:
        super().__init__("too_many_attempts", "too many failed logins; try again later",
                         retry_after_seconds=retry_after)
        self.retry_after = retry_after
        self.headers = {"Retry-After": str(retry_after)}


_DUMMY_SALT = "00" * 16


async def client_login(sessions: Sessions, voucher_code: str, client_login_code: str, address: str,
                       clock: Clock, throttle: domain.LoginThrottle, secret: bytes) -> Voucher:
    """The voucher whose code and client login code these are. Raises ``TooManyAttempts`` while this
    address has to wait (its own failures with this voucher code or with any: ``domain.login_wait``),
    whether the pair is right or not; else ``InvalidCredentials`` for a wrong pair, whose failure is
    counted first. A right pair clears this address's failures with this voucher code."""
    now = clock.now()
    code, login_code = normalise(voucher_code), normalise(client_login_code)
    keys = domain.ThrottleKeys.of(code or voucher_code.strip().upper(), address_group(address), secret)
    outcome: DomainError | None = None
    async with unit_of_work(sessions) as session:
        voucher = None
        if session.get_bind().dialect.name == "postgresql":
            # attempts from one address (in any process) count one after another: the lock, and the voucher read
            # in the same round trip (the failures are read after it, by the next statement)
            lock = sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(keys.address)).label("locked")).subquery()
            voucher = (await session.exec(select(Voucher).join_from(
                lock, Voucher, Voucher.voucher_code == code if code is not None else sa.false(), isouter=True)
            )).first()
        elif code is not None:
            voucher = (await session.exec(select(Voucher).where(Voucher.voucher_code == code))).first()
        counted = await _failures(session, keys)
        wait = domain.login_wait(counted[keys.voucher_address], counted[keys.address], counted[keys.voucher],
                                 now, throttle)
        if wait is not None:
            outcome = TooManyAttempts(wait)
        elif voucher is not None and domain.login_code_matches(login_code, voucher.client_login_salt,
                                                                 voucher.client_login_hash):
            if counted[keys.voucher_address].count:  # a row to clear (none after no failure: no round trip)
                await session.execute(sa.delete(LoginThrottle).where(LoginThrottle.key == keys.voucher_address))
            await audit.record(session, Principal(f"client:{voucher.id}", frozenset({Role.CLIENT}),
                                                  voucher_id=voucher.id),
                               "client.login", "voucher", voucher.id, voucher.funder_id)
        else:
            if voucher is None:  # the same work as for a known voucher: timing does not tell codes apart
                domain.login_code_matches(login_code or "-", _DUMMY_SALT, "0" * 64)
            await _count_failure(session, keys, now, throttle)
            if counted[keys.voucher].current(now, throttle.memory).count + 1 == throttle.voucher_alarm:
                log.warning("client.login_alarm", voucher_id=voucher.id if voucher else None,
                            failures=throttle.voucher_alarm)
            outcome = InvalidCredentials()
    if outcome is not None:
        log.info("client.login_refused", reason=outcome.reason, voucher_id=voucher.id if voucher else None,
                 retry_after=getattr(outcome, "retry_after", None))
        raise outcome
    log.info("client.logged_in", voucher_id=voucher.id)
    return voucher


async def _failures(session: AsyncSession, keys: domain.ThrottleKeys) -> dict[str, domain.Failures]:
    rows = (await session.exec(select(LoginThrottle).where(
        LoginThrottle.key.in_([keys.voucher_address, keys.address, keys.voucher])))).all()
    found = {r.key: domain.Failures(r.failures, r.last_failure_at) for r in rows}
    return {k: found.get(k, domain.Failures()) for k in (keys.voucher_address, keys.address, keys.voucher)}


async def _count_failure(session: AsyncSession, keys: domain.ThrottleKeys, now: datetime,
                         throttle: domain.LoginThrottle) -> None:
    """One more failure under each key, in one statement that is safe against concurrent attempts from
    other addresses (the voucher code's key is shared by all of them); a key whose failures are past the
    memory starts again from one. Keys nobody has failed under for that long are deleted."""
    forgotten = now - throttle.memory
    table = LoginThrottle.__table__
    insert = (pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert)(table)
    rows = [{"key": k, "failures": 1, "last_failure_at": now}
            for k in (keys.voucher_address, keys.address, keys.voucher)]
    await session.execute(insert.values(rows).on_conflict_do_update(index_elements=[table.c.key], set_={
        "failures": sa.case((table.c.last_failure_at <= forgotten, 1), else_=table.c.failures + 1),
        "last_failure_at": now}))
    await session.execute(sa.delete(LoginThrottle).where(LoginThrottle.last_failure_at <= forgotten))


def login_throttle(settings) -> domain.LoginThrottle:  # noqa: ANN001
    return domain.LoginThrottle(
        free_per_voucher_address=settings.login_free_failures_per_voucher_address,
        free_per_address=settings.login_free_failures_per_address,
        voucher_alarm=settings.login_voucher_alarm_failures,
        first_delay=timedelta(seconds=settings.login_first_delay_seconds),
        longest_delay=timedelta(seconds=settings.login_longest_delay_seconds),
        memory=timedelta(seconds=settings.login_failure_memory_seconds))
