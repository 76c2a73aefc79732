"""Transactional outbox: ``add_event`` writes the event in the caller's transaction; the relay
publishes unsent rows with confirms and marks them sent.

On PostgreSQL the relay claims rows with ``FOR UPDATE SKIP LOCKED`` and keeps them locked until
they are marked sent, so several relays never publish the same row twice. A relay that dies after
publishing but before committing leaves the rows unsent; they are published again and the
consumers' inbox drops the duplicates (same message id). SQLite (the embedded default) runs one
relay per service.

A failed row is tried again with back-off. A message to an outside system's own queue (an exchange in
``park_exchanges``, e.g. payments' ``notices``) that the broker keeps returning unroutable is *parked*
after ``park_after`` attempts: nobody's queue is bound for it yet, and trying every half minute forever
would only fill the log. A parked row stays unsent with ``next_attempt_at = PARKED_UNTIL`` (and its
``last_error`` marked ``PARKED_MARK``), so the relay no longer claims it; it is logged once when parked
(``outbox.parked``) and once when at last delivered (``outbox.parked_delivered``). ``retry_parked`` makes
such rows due again (the service's operator action, its slow periodic retry); one still unroutable is
parked again without a further line.
"""
from __future__ import annotations

import asyncio
import importlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Sequence

from pydantic_core import to_json
from sqlalchemy import event as sa_event
from sqlalchemy import BigInteger, any_, bindparam, or_, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from .bus import Bus, Outgoing, PublishInDoubt, is_unroutable
from .contract import published as published_contract
from .events import TYPE_PREFIX, Envelope, Event, utcnow
from .ids import new_id
from .logging import causation_id_var, correlation_id_var, get_logger
from .messaging import OutboxMessage
from .tracing import current_traceparent

log = get_logger(__name__)
T = OutboxMessage.__table__
#: what wakes this process's relays after a commit: their events (or a child relay's pipe, ``relay.py``)
_relay_wakeups: set = set()


def _wake_relays(_session) -> None:  # noqa: ANN001
    for ev in list(_relay_wakeups):
        ev.set()


def add_wakeup(wakeup) -> None:  # noqa: ANN001  (anything with set())
    """Have ``wakeup.set()`` called after each commit that wrote the outbox in this process."""
    _relay_wakeups.add(wakeup)


def remove_wakeup(wakeup) -> None:  # noqa: ANN001
    _relay_wakeups.discard(wakeup)


def wake_relays() -> None:
    """Have this process's relays look at the outbox now (after a commit made without a session)."""
    _wake_relays(None)


_INSERT = T.insert()


#: a row for another exchange of the namespace than the domain events' keeps ``<exchange>/<routing key>``
#: in its ``routing_key`` column (event routing keys never hold a ``/``)
EXCHANGE_SEPARATOR = "/"


def _row(env: Envelope, routing_key: str | None = None) -> dict:
    return {"message_id": env.id, "routing_key": routing_key or env.routing_key, "body": env.model_dump_json(),
            "created_at": env.time, "attempts": 0, "traceparent": current_traceparent()}


def target_of(stored_key: str) -> tuple[str | None, str]:
    """(exchange after the namespace or None for the events exchange, routing key) of an outbox row."""
    exchange, sep, key = stored_key.partition(EXCHANGE_SEPARATOR)
    return (exchange, key) if sep else (None, stored_key)


def _hook(session: AsyncSession) -> None:
    if not session.info.get("outbox_hook"):
        session.info["outbox_hook"] = True
        sa_event.listen(session.sync_session, "after_commit", _wake_relays)


async def add_event(session: AsyncSession, event: Event, source: str) -> Envelope:
    """Record ``event`` for publishing, in the session's current transaction."""
    env = Envelope.wrap(event, source)
    await session.execute(_INSERT, _row(env))
    _hook(session)
    return env


async def add_message(session: AsyncSession, env: Envelope, exchange: str, routing_key: str) -> Envelope:
    """Record an envelope for another topic exchange of the namespace (``<ns>.<exchange>``, e.g. the
    replies to funders' case systems), in the session's current transaction; the relay publishes it
    like an event (confirms, ``mandatory``, retried with back-off)."""
    await session.execute(_INSERT, _row(env, f"{exchange}{EXCHANGE_SEPARATOR}{routing_key}"))
    _hook(session)
    return env


def message_row(env: Envelope, exchange: str, routing_key: str) -> dict:
    """The outbox row ``add_message`` inserts, for a caller that inserts many rows in one statement (it must
    then call ``wake_relay_on_commit(session)``)."""
    return _row(env, f"{exchange}{EXCHANGE_SEPARATOR}{routing_key}")


async def add_events(session: AsyncSession, events: list[Event], source: str) -> list[Envelope]:
    """Record many events in one statement (bulk work: a settlement run, a batch of charges)."""
    envs = [Envelope.wrap(e, source) for e in events]
    if envs:
        await session.execute(_INSERT, [_row(env) for env in envs])
        _hook(session)
    return envs


def event_row(event: Event, source: str) -> tuple[Envelope, dict]:
    """The envelope of ``event`` and its outbox row, for a caller that inserts the row itself (in one
    statement with other rows); it must then call ``wake_relay_on_commit(session)``."""
    env = Envelope.wrap(event, source)
    return env, _row(env)


class DirectEventRows:
    """Outbox rows of many events of one type (bulk work), each body the JSON ``Envelope.wrap(event,
    source).model_dump_json()`` makes, written by pydantic-core (``to_json``) straight from the field values:
    no event and envelope models validated and dumped per event (a third of a bulk charge's Python).

    ``values`` are the event's fields as validation leaves them (the caller's own ids, numbers, dates and
    datetimes, ``Decimal`` quantities; funder ids and categories from its projections, which took them from
    validated events). The first row of each instance is made the ordinary way too and the bodies compared:
    if they differ (a pydantic that serialises otherwise, a value validation would change), every row of
    the instance is made the ordinary way (``event_row``)."""

    def __init__(self, cls: type[Event], source: str):
        self.cls, self.source = cls, source
        self.defaults = {name: field.default for name, field in cls.model_fields.items()}
        self.required = {name for name, field in cls.model_fields.items() if field.is_required()}
        self.type, self.key, self.where = cls.event_type(), cls.routing_key(), f"/seteli/{source}"
        self.direct: bool | None = None  # None: not compared yet

    def row(self, values: dict) -> dict:
        if not self.required <= values.keys() <= self.defaults.keys():  # as the model would take it (or refuse)
            return event_row(self.cls(**values), self.source)[1]
        if self.direct is None:
            env, row = event_row(self.cls(**values), self.source)
            self.direct = self._body(values, env.id, env.time, env.correlationid, env.causationid) == row["body"]
            if not self.direct:
                log.warning("outbox.direct_body_differs", event_type=self.type)
            return row
        if not self.direct:
            return event_row(self.cls(**values), self.source)[1]
        eid, now = new_id(), utcnow()
        return {"message_id": eid, "routing_key": self.key, "created_at": now, "attempts": 0,
                "traceparent": current_traceparent(), "body": self._body(values, eid, now, correlation_id_var.get() or eid, causation_id_var.get())}

    def _body(self, values: dict, eid: str, at: datetime, correlation: str | None, causation: str | None) -> str:
        data = dict(self.defaults)  # the fields in the model's order, each its default until given
        data.update(values)
        return to_json({"specversion": "1.0", "id": eid, "source": self.where, "type": self.type, "time": at,
                        "subject": self.cls.subject(_Fields(data)), "datacontenttype": "application/json",
                        "data": data, "correlationid": correlation, "causationid": causation}).decode()


class _Fields:
    """An event's field values as attributes (for its ``subject()``)."""

    def __init__(self, values: dict):
        self.__dict__.update(values)


def wake_relay_on_commit(session: AsyncSession) -> None:
    """Have this process's relays look at the outbox as soon as the session commits."""
    _hook(session)


def _backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(30.0, 0.5 * 2 ** min(attempts, 6)))


#: ``next_attempt_at`` of a parked row: never due until ``retry_parked``
PARKED_UNTIL = datetime(9999, 12, 31, tzinfo=timezone.utc)
#: the start of a parked row's ``last_error`` (kept when it is tried again, so its delivery is noticed)
PARKED_MARK = "parked: "


def parked(exchange: str):  # noqa: ANN201
    """The SQL condition of the parked rows for ``exchange`` (a further exchange of the namespace)."""
    return (T.c.sent_at.is_(None) & (T.c.next_attempt_at >= PARKED_UNTIL)
            & T.c.routing_key.startswith(f"{exchange}{EXCHANGE_SEPARATOR}", autoescape=True))


async def retry_parked(session: AsyncSession, exchange: str, routing_key_prefix: str = "") -> int:
    """Make the parked rows for ``exchange`` (whose routing key starts with ``routing_key_prefix``) due now,
    in the caller's transaction; the relays look at them once it commits. Returns how many."""
    condition = parked(exchange)
    if routing_key_prefix:
        condition &= T.c.routing_key.startswith(f"{exchange}{EXCHANGE_SEPARATOR}{routing_key_prefix}",
                                                autoescape=True)
    result = await session.execute(update(T).where(condition).values(next_attempt_at=utcnow()))
    _hook(session)
    return result.rowcount or 0


@dataclass(frozen=True)
class Coalesced:
    """One message the relay publishes in place of several outbox rows (a service's ``coalesce`` hook makes it):
    the rows are marked sent once the broker has confirmed it, and all tried again if it fails. Its id should be
    derived from its rows (the same rows give the same id), so that a repeat after a crash between the publish
    and the mark is dropped by the consumers' inbox."""

    rows: tuple  # the outbox rows it carries
    message_id: str
    routing_key: str  # as an outbox row stores it
    body: str
    traceparent: str | None = None
    #: the other rows' traceparents (space-separated): the consumer's span links to them
    tracelinks: str | None = None


#: a relay's hook: the unsent rows of one batch (in the order they were written, none published yet) -> what to
#: publish for them, in the order to publish it: each row itself, or a ``Coalesced`` message carrying several;
#: every row exactly once
Coalescer = Callable[[Sequence[Any]], list]


def load_coalescer(path: str, options: dict | None = None) -> Coalescer | None:
    """The hook a service names in its settings (``RELAY_COALESCE``, ``module:factory``): ``factory(**options)``
    gives the coalescer, or None (nothing to coalesce with these options)."""
    if not path:
        return None
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)(**(options or {}))


class OutboxRelay:
    def __init__(self, engine: AsyncEngine, bus: Bus, batch_size: int = 500, idle_seconds: float = 0.2,
                 park_exchanges: tuple[str, ...] = (), park_after: int = 8, linger_seconds: float = 0.0,
                 coalesce: Coalescer | None = None):
        self.engine = engine
        self.bus = bus
        self.batch_size = batch_size
        self.idle_seconds = idle_seconds
        #: after a wake-up by a commit, or a look that found fewer rows than a batch, wait this long before the
        #: next look, so that single commits are published many at a time (``RELAY_LINGER_SECONDS``)
        self.linger_seconds = linger_seconds
        self.park_exchanges, self.park_after = frozenset(park_exchanges), park_after
        #: the service's hook that may publish several rows as one message (``Coalesced``); None: a message a row
        self.coalesce = coalesce
        self.postgres = engine.dialect.name == "postgresql"
        self._wakeup = asyncio.Event()
        self._stopping = False
        # one statement whatever the batch's size (an expanding IN is rendered again for every size)
        seqs = (T.c.seq == any_(bindparam("seqs", type_=ARRAY(BigInteger))) if self.postgres
                else T.c.seq.in_(bindparam("seqs", expanding=True)))
        self._mark_sent = update(T).where(seqs).values(sent_at=bindparam("now"))
        #: message id -> (the open confirm of a publish that timed out after its frames went out, loop time):
        #: the broker may have it; a late confirm marks the row sent without publishing it again
        self._in_doubt: dict[str, tuple[asyncio.Future, float]] = {}

    @classmethod
    def of(cls, engine: AsyncEngine, bus: Bus, settings) -> "OutboxRelay":  # noqa: ANN001
        """The relay a service's settings describe."""
        return cls(engine, bus, settings.relay_batch_size, settings.relay_idle_seconds,
                   tuple(settings.outbox_park_exchanges), settings.outbox_park_after_attempts,
                   settings.relay_linger_seconds,
                   load_coalescer(settings.relay_coalesce, settings.relay_coalesce_options))

    def _claim_query(self, now: datetime):
        q = (
            select(T.c.seq, T.c.message_id, T.c.routing_key, T.c.body, T.c.attempts, T.c.last_error,
                   T.c.traceparent)
            .where(T.c.sent_at.is_(None))
            .where(or_(T.c.next_attempt_at.is_(None), T.c.next_attempt_at <= now))
            .order_by(T.c.seq)
            .limit(self.batch_size)
        )
        return q.with_for_update(skip_locked=True) if self.postgres else q

    def _doubt(self, message_id: str) -> BaseException | None | bool:
        """What became of an earlier publish of this message that got no confirm in time: None (confirmed
        late: it is published), the ``PublishInDoubt`` again (no answer yet), or False (none, or it failed:
        publish it)."""
        entry = self._in_doubt.get(message_id)
        if entry is None:
            return False
        confirm = entry[0]
        if not confirm.done():
            return PublishInDoubt(confirm)
        del self._in_doubt[message_id]
        return None if not confirm.cancelled() and confirm.exception() is None else False

    async def _publish(self, rows) -> list[BaseException | None]:  # noqa: ANN001
        """The rows' messages, all at once (``Bus.publish_many``); per row None or why it failed. A row whose
        earlier publish is still in doubt is not published again (``_doubt``). The others go through the
        ``coalesce`` hook, if any: a ``Coalesced`` message's result is each of its rows' result."""
        results: dict[int, BaseException | None] = {}
        fresh = []
        for row in rows:
            doubt = self._doubt(row.message_id)
            if doubt is not False:
                results[row.seq] = doubt
            else:
                fresh.append(row)
        units = self._plan(fresh)
        messages: list[Outgoing | BaseException] = []
        contract = published_contract()  # None unless the tests hold every message to the published contract
        for unit in units:
            try:
                exchange, key = target_of(unit.routing_key)
                type_ = TYPE_PREFIX + key if exchange is None else json.loads(unit.body).get("type")
                if contract is not None:
                    contract.check(unit.body, exchange, key)
                messages.append(Outgoing(unit.body.encode(), key, unit.message_id, type_, exchange, unit.traceparent,
                                         getattr(unit, "tracelinks", None)))
            except Exception as exc:  # noqa: BLE001  (a row that cannot be read fails alone)
                messages.append(exc)
        ready = [m for m in messages if isinstance(m, Outgoing)]
        published = iter(await self.bus.publish_many(ready))
        for unit, m in zip(units, messages):
            res = next(published) if isinstance(m, Outgoing) else m
            for row in (unit.rows if isinstance(unit, Coalesced) else (unit,)):
                results[row.seq] = res
        out = [results[row.seq] for row in rows]
        self._note_doubts(rows, out)
        return out

    def _plan(self, rows) -> list:  # noqa: ANN001
        """What to publish for ``rows``: the ``coalesce`` hook's answer, or each row itself (no hook, or one
        that failed or did not carry every row exactly once)."""
        if self.coalesce is None or len(rows) < 2:
            return list(rows)
        try:
            units = self.coalesce(rows)
            carried = [r.seq for u in units for r in (u.rows if isinstance(u, Coalesced) else (u,))]
            if sorted(carried) != sorted(r.seq for r in rows) or len(set(carried)) != len(carried):
                raise ValueError("the coalesced messages do not carry every row exactly once")
            return units
        except Exception as exc:  # noqa: BLE001  (a broken hook costs batching, never a message)
            log.warning("outbox.coalesce_failed", error=repr(exc))
            return list(rows)

    def _note_doubts(self, rows, results: list) -> None:  # noqa: ANN001
        """Remember the open confirms of rows whose publish timed out after they went out (``_doubt``); the
        relay wakes when one is answered (``_settle_doubts``)."""
        now = asyncio.get_running_loop().time()
        for row, res in zip(rows, results):
            if isinstance(res, PublishInDoubt) and row.message_id not in self._in_doubt:
                self._in_doubt[row.message_id] = (res.confirm, now)
                res.confirm.add_done_callback(lambda _confirm: self._wakeup.set())

    async def _mark(self, conn, rows, results) -> None:  # noqa: ANN001
        now = datetime.now(timezone.utc)
        sent = [r.seq for r, res in zip(rows, results) if res is None]
        if sent:
            await conn.execute(self._mark_sent, {"seqs": sent, "now": now})
        for row, res in zip(rows, results):
            was_parked = (row.last_error or "").startswith(PARKED_MARK)
            if res is None:
                if was_parked:
                    log.info("outbox.parked_delivered", message_id=row.message_id, routing_key=row.routing_key,
                             attempts=row.attempts + 1)
                continue
            parks, waits = self._parks(row, res), self._may_park(row, res)
            self._log_failure(row, res, parks and not was_parked, quiet=waits or was_parked)
            await conn.execute(
                update(T).where(T.c.seq == row.seq).values(
                    attempts=row.attempts + 1,
                    next_attempt_at=PARKED_UNTIL if parks else now + _backoff(row.attempts),
                    last_error=(PARKED_MARK if parks or was_parked else "") + repr(res)[:1000],
                )
            )

    def _may_park(self, row, error: BaseException) -> bool:  # noqa: ANN001
        """An unroutable message to an outside system's queue: parked once it has been tried enough."""
        return is_unroutable(error) and target_of(row.routing_key)[0] in self.park_exchanges

    def _parks(self, row, error: BaseException) -> bool:  # noqa: ANN001
        return self._may_park(row, error) and row.attempts + 1 >= self.park_after

    @staticmethod
    def _log_failure(row, error: BaseException, parks_now: bool, quiet: bool) -> None:  # noqa: ANN001
        """One warning when a row is parked; the attempts before (and after a retry) only at debug level;
        any other failure a warning each time, as before."""
        facts = dict(message_id=row.message_id, routing_key=row.routing_key, attempts=row.attempts + 1,
                     error=repr(error))
        if parks_now:
            log.warning("outbox.parked", reason="unroutable: no queue is bound for it yet", **facts)
        elif quiet:
            log.debug("outbox.publish_failed", **facts)
        else:
            log.warning("outbox.publish_failed", **facts)

    async def _settle_doubts(self, conn) -> int:  # noqa: ANN001
        """Rows whose doubtful publish the broker has answered since: confirmed late, they are sent; refused or
        lost with the channel, they are due again at once. Returns how many rows it settled."""
        answered = [(mid, confirm) for mid, (confirm, _since) in self._in_doubt.items() if confirm.done()]
        if not answered:
            return 0
        for message_id, _confirm in answered:
            del self._in_doubt[message_id]
        confirmed = [mid for mid, c in answered if not c.cancelled() and c.exception() is None]
        failed = [mid for mid, c in answered if c.cancelled() or c.exception() is not None]
        unsent = T.c.sent_at.is_(None)
        if confirmed:
            await conn.execute(update(T).where(T.c.message_id.in_(confirmed), unsent)
                               .values(sent_at=datetime.now(timezone.utc)))
        if failed:
            await conn.execute(update(T).where(T.c.message_id.in_(failed), unsent).values(next_attempt_at=None))
        log.info("outbox.confirms_settled_late", confirmed=len(confirmed), to_publish_again=len(failed))
        return len(answered)

    def _forget_old_doubts(self, older_than: float = 600.0) -> None:
        """Drop the doubts of rows this relay never saw again (another relay published them)."""
        if len(self._in_doubt) > 1000:
            horizon = asyncio.get_running_loop().time() - older_than
            for message_id, (_confirm, since) in list(self._in_doubt.items()):
                if since < horizon:
                    del self._in_doubt[message_id]

    async def relay_once(self) -> int:
        """Publish one batch; returns how many rows it handled. While the broker confirms nothing in time
        (``Bus.unconfirmed_since``), a probe must come through first (``BrokerStalled`` otherwise): publishing
        into a stalled connection would only pile up copies that all arrive when it comes back."""
        if self.bus.unconfirmed_since is not None:
            await self.bus.probe(min(self.bus.settings.publish_timeout_seconds, 5.0))
        self._forget_old_doubts()
        async with self.engine.connect() as conn:
            if self._in_doubt:
                async with conn.begin():
                    settled = await self._settle_doubts(conn)
                if settled:
                    return settled
            async with conn.begin():
                rows = (await conn.execute(self._claim_query(datetime.now(timezone.utc)))).all()
                if not rows:
                    return 0
                if self.postgres:  # the rows stay locked (SKIP LOCKED) until marked, in this transaction
                    await self._mark(conn, rows, await self._publish(rows))
                    return len(rows)
            # SQLite (one relay per database): publish outside the read transaction, then mark
            results = await self._publish(rows)
            async with conn.begin():
                await self._mark(conn, rows, results)
        return len(rows)

    async def run(self) -> None:
        _relay_wakeups.add(self._wakeup)
        try:
            while not self._stopping:
                try:
                    handled = await self.relay_once()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001  (database or broker down: keep trying)
                    log.warning("outbox.relay_error", error=repr(exc))
                    handled = 0
                    await asyncio.sleep(1.0)
                if handled == 0:
                    self._wakeup.clear()
                    try:
                        await asyncio.wait_for(self._wakeup.wait(), self.idle_seconds)
                    except asyncio.TimeoutError:
                        continue
                    if self.linger_seconds and not self._stopping:  # woken by a commit: let more commits come
                        await asyncio.sleep(self.linger_seconds)
                elif handled < self.batch_size and self.linger_seconds and not self._stopping:
                    await asyncio.sleep(self.linger_seconds)  # a part batch: the next look after more commits
        finally:
            _relay_wakeups.discard(self._wakeup)

    def wake(self) -> None:
        """Look at the outbox now (rows were committed)."""
        self._wakeup.set()

    def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()

