"""Outbox, relay, inbox and consumer against the real RabbitMQ and a real database.

The messaging core runs the same suite on PostgreSQL and on the embedded SQLite default.
"""
from __future__ import annotations

import asyncio
import json

import aio_pika
import pytest
import sqlalchemy as sa
from sqlalchemy import func, select

from seteli_shared.bus import Bus
from seteli_shared.consumer import DELIVERIES_HEADER, REASON_HEADER, Consumer
from seteli_shared.db import make_engine, session_factory
from seteli_shared.errors import PermanentMessageError
from seteli_shared.events import Envelope, Event
from seteli_shared.messaging import InboxMessage, OutboxMessage
from seteli_shared.outbox import OutboxRelay, add_event
from seteli_shared.testing import eventually, make_settings


class TestTick(Event):
    __test__ = False
    event_name = "test.tick"
    n: int


metadata = sa.MetaData()
effect = sa.Table("effect", metadata, sa.Column("n", sa.Integer, primary_key=True),
                  sa.Column("times", sa.Integer, nullable=False))


class World:
    """One service's database and bus, plus a consumer of ``test.tick`` that records an effect."""

    def __init__(self, engine, bus, namespace):  # noqa: ANN001
        self.engine, self.bus, self.namespace = engine, bus, namespace
        self.sessions = session_factory(engine)
        self.fail_for: set[int] = set()
        self.fail_once: set[int] = set()
        self.outages: dict[int, int] = {}  # tick -> how many more times its session's connection is cut
        self.calls: list[int] = []

    async def handler(self, session, _env, event: TestTick) -> None:  # noqa: ANN001
        self.calls.append(event.n)
        if event.n in self.fail_for:
            raise RuntimeError(f"handler fails for {event.n}")
        if event.n in self.fail_once:
            self.fail_once.discard(event.n)
            raise RuntimeError(f"handler fails once for {event.n}")
        if self.outages.get(event.n, 0) > 0:
            self.outages[event.n] -= 1  # the server ends this session, as a restart of the database does
            await session.execute(sa.text("SELECT pg_terminate_backend(pg_backend_pid())"))
        if event.n < 0:
            raise PermanentMessageError("negative ticks are refused")
        await session.execute(effect.insert().values(n=event.n, times=1))

    def consumer(self, **kw) -> Consumer:  # noqa: ANN003
        kw.setdefault("delivery_limit", 3)
        return Consumer(self.bus, self.sessions, f"{self.namespace}.test",
                        {TestTick.event_type(): self.handler}, **kw)

    async def emit(self, *ns: int) -> None:
        async with self.sessions() as s, s.begin():
            for n in ns:
                await add_event(s, TestTick(n=n), "test")

    async def effects(self) -> dict[int, int]:
        async with self.engine.connect() as c:
            return {r.n: r.times for r in (await c.execute(select(effect))).all()}

    async def unsent(self) -> int:
        t = OutboxMessage.__table__
        async with self.engine.connect() as c:
            return (await c.execute(select(func.count()).select_from(t).where(t.c.sent_at.is_(None)))).scalar_one()

    async def drain(self, relay: OutboxRelay) -> None:
        while await relay.relay_once():
            pass


@pytest.fixture(params=["postgresql", "sqlite"])
async def world(request, pg, namespace, amqp_url, tmp_path):  # noqa: ANN001
    if request.param == "postgresql":
        url = await pg.create("msg")
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'svc.db'}"
    engine = make_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: OutboxMessage.__table__.create(c))
        await conn.run_sync(lambda c: InboxMessage.__table__.create(c))
        await conn.run_sync(metadata.create_all)
    bus = Bus(make_settings(service_name="test", bus_namespace=namespace, amqp_url=amqp_url, database_url=url))
    await bus.connect()
    w = World(engine, bus, namespace)
    yield w
    await bus.close()
    await engine.dispose()


async def spy_queue(world: World, routing_key: str = "test.tick.v1"):  # noqa: ANN201
    """A plain queue bound like a consumer, counting every copy the broker routes."""
    channel = await world.bus.connection.channel()
    q = await channel.declare_queue(f"{world.namespace}.spy", durable=True, arguments={"x-queue-type": "quorum"})
    await q.bind(world.bus.settings.exchange_name, routing_key)
    return q


async def count_messages(q) -> list[aio_pika.abc.AbstractIncomingMessage]:  # noqa: ANN001
    got = []
    while (m := await q.get(fail=False, no_ack=True)) is not None:
        got.append(m)
    return got


async def test_committed_event_is_published_consumed_and_applied_once(world: World):
    consumer = world.consumer()
    await consumer.start()
    await world.emit(1, 2, 3)
    relay = OutboxRelay(world.engine, world.bus)
    await world.drain(relay)
    assert await world.unsent() == 0
    await eventually(lambda: world.effects())
    assert await eventually(lambda: _equals(world.effects(), {1: 1, 2: 1, 3: 1}))
    await consumer.stop()


async def _equals(coro, expected):  # noqa: ANN001, ANN202
    return (await coro) == expected


async def test_rolled_back_state_change_publishes_nothing(world: World):
    async with world.sessions() as s:
        async with s.begin():
            await add_event(s, TestTick(n=7), "test")
            await s.rollback()
    assert await world.unsent() == 0
    assert await OutboxRelay(world.engine, world.bus).relay_once() == 0


async def test_relay_killed_after_publishing_before_marking_sent_changes_nothing(world: World):
    spy = await spy_queue(world)
    consumer = world.consumer()
    await consumer.start()
    await world.emit(10, 11)

    class Killed(BaseException):
        pass

    class KilledAfterPublishing(OutboxRelay):
        """Dies between publishing (confirmed) and marking the rows sent."""

        async def _publish(self, rows):  # noqa: ANN001, ANN202
            await super()._publish(rows)
            raise Killed()

    doomed = KilledAfterPublishing(world.engine, world.bus)
    with pytest.raises(Killed):
        await doomed.relay_once()
    assert await world.unsent() == 2, "the rows were published but never marked sent"
    await eventually(lambda: _equals(world.effects(), {10: 1, 11: 1}))

    await world.drain(OutboxRelay(world.engine, world.bus))  # the relay's replacement publishes them again
    assert await world.unsent() == 0
    copies = await eventually(lambda: _at_least(spy, 4))
    assert sorted(json.loads(m.body)["data"]["n"] for m in copies) == [10, 10, 11, 11]
    await asyncio.sleep(0.5)
    assert await world.effects() == {10: 1, 11: 1}, "the redelivery changed nothing"
    async with world.engine.connect() as c:
        assert (await c.execute(select(func.count()).select_from(InboxMessage.__table__))).scalar_one() == 2
    await consumer.stop()


_seen: dict[int, list] = {}


async def _at_least(q, n: int):  # noqa: ANN001, ANN202
    bucket = _seen.setdefault(id(q), [])
    bucket.extend(await count_messages(q))
    return bucket if len(bucket) >= n else None


async def test_failing_handler_retries_then_dead_letters_while_others_flow(world: World):
    world.fail_for = {13}
    world.fail_once = {21}
    consumer = world.consumer(delivery_limit=3)
    await consumer.start()
    await world.emit(*range(1, 31))
    await world.drain(OutboxRelay(world.engine, world.bus))
    expected = {n: 1 for n in range(1, 31) if n != 13}
    await eventually(lambda: _equals(world.effects(), expected), timeout=20)
    assert world.calls.count(21) >= 2, "a transient failure is retried"

    channel = await world.bus.connection.channel()
    dlq = await channel.declare_queue(consumer.dead_letter_queue_name, passive=True)
    dead = await eventually(lambda: dlq.get(fail=False, no_ack=True), timeout=20)
    assert json.loads(dead.body)["data"]["n"] == 13
    assert "handler fails for 13" in dead.headers[REASON_HEADER]
    assert dead.headers[DELIVERIES_HEADER] == 3, "dead-lettered on its third (last allowed) delivery"
    assert 13 not in await world.effects()
    await consumer.stop()


async def test_a_database_outage_spends_no_delivery_and_dead_letters_nothing(world: World):
    """A database restart cuts the consumer's connection while it applies a batch, more times than the delivery
    limit allows for a poison message: the batch waits for the database and is applied once, nothing
    dead-lettered and nothing handed back to the broker."""
    if world.engine.dialect.name != "postgresql":
        pytest.skip("a server session to cut")
    world.outages = {5: 4}  # four cuts, the delivery limit three
    consumer = world.consumer(delivery_limit=3)
    await consumer.start()
    await world.emit(*range(1, 11))
    await world.drain(OutboxRelay(world.engine, world.bus))
    await eventually(lambda: _equals(world.effects(), {n: 1 for n in range(1, 11)}), timeout=60)
    assert world.outages[5] == 0 and world.calls.count(5) == 5, "applied again in place after each cut"
    channel = await world.bus.connection.channel()
    dlq = await channel.declare_queue(consumer.dead_letter_queue_name, passive=True)
    assert dlq.declaration_result.message_count == 0
    await consumer.stop()


async def test_a_refusal_recorded_through_a_database_outage_is_recorded_once(world: World):
    """A poison message's refusal is recorded (``on_refused``: the answer to its sender) in the database: cut
    there more times than the delivery limit, it is still recorded, once, and the message dead-lettered with its
    own reason, not the outage's."""
    if world.engine.dialect.name != "postgresql":
        pytest.skip("a server session to cut")
    cuts, recorded = [4], []

    async def on_refused(session, message, refused) -> None:  # noqa: ANN001
        if cuts[0] > 0:
            cuts[0] -= 1
            await session.execute(sa.text("SELECT pg_terminate_backend(pg_backend_pid())"))
        recorded.append(refused.reason)

    consumer = world.consumer(delivery_limit=3, on_refused=on_refused)
    await consumer.start()
    await world.bus.publish(b"{not json", "test.tick.v1", message_id="bad-1")
    channel = await world.bus.connection.channel()
    dlq = await channel.declare_queue(consumer.dead_letter_queue_name, passive=True)
    dead = await eventually(lambda: dlq.get(fail=False, no_ack=True), timeout=60)
    assert cuts == [0] and len(recorded) == 1, recorded
    assert "failed" not in dead.headers[REASON_HEADER], dead.headers[REASON_HEADER]
    await consumer.stop()


async def test_bad_messages_go_to_the_dead_letter_queue_with_the_reason(world: World):
    consumer = world.consumer()
    await consumer.start()
    good = Envelope.wrap(TestTick(n=5), "test")
    breaks_contract = Envelope.wrap(TestTick(n=6), "test").model_copy(update={"data": {"n": "six"}})
    refused = Envelope.wrap(TestTick(n=-1), "test")
    for i, body in enumerate([b"{not json", breaks_contract.model_dump_json().encode(),
                              refused.model_dump_json().encode(), good.model_dump_json().encode()]):
        await world.bus.publish(body, "test.tick.v1", message_id=f"m{i}")
    await eventually(lambda: _equals(world.effects(), {5: 1}))
    channel = await world.bus.connection.channel()
    dlq = await channel.declare_queue(consumer.dead_letter_queue_name, passive=True)
    reasons = []
    await eventually(lambda: _collect(dlq, reasons, 3))
    assert any(r.startswith("bad_envelope") for r in reasons)
    assert any(r.startswith("contract_violation") for r in reasons)
    assert "negative ticks are refused" in reasons
    await consumer.stop()


async def _collect(q, into: list, n: int):  # noqa: ANN001, ANN202
    for m in await count_messages(q):
        into.append(m.headers[REASON_HEADER])
    return len(into) >= n


async def test_unroutable_event_stays_in_the_outbox_with_the_error(world: World):
    await world.emit(99)  # nobody is bound to test.tick.v1 in this namespace
    relay = OutboxRelay(world.engine, world.bus)
    assert await relay.relay_once() == 1
    t = OutboxMessage.__table__
    async with world.engine.connect() as c:
        row = (await c.execute(select(t))).one()
    assert row.sent_at is None and row.attempts == 1 and "NO_ROUTE" in row.last_error
    assert await relay.relay_once() == 0, "it waits for its back-off before the next attempt"


async def test_a_message_nobody_can_receive_yet_is_parked_logged_once_and_delivered_once_retried(world: World):
    """A notice to an outside system's queue that is not bound yet: parked after 3 attempts (not tried every
    half minute for ever), one warning; a retry while still unbound parks it again quietly; once a queue is
    bound, a retry delivers it exactly once. A domain event that is unroutable is never parked."""
    from structlog.testing import capture_logs

    from seteli_shared.events import utcnow
    from seteli_shared.outbox import PARKED_UNTIL, add_message, retry_parked

    relay = OutboxRelay(world.engine, world.bus, park_exchanges=("notices",), park_after=3)
    env = Envelope.wrap(TestTick(n=7), "test")
    async with world.sessions() as s, s.begin():
        await add_message(s, env, "notices", "notice.p-1.settlement")
    await world.emit(8)  # test.tick.v1: nobody bound either, but events are not parked
    t = OutboxMessage.__table__

    async def rows() -> dict:
        async with world.engine.connect() as c:
            return {r.message_id == env.id and "notice" or "event": r for r in (await c.execute(select(t))).all()}

    async def attempt() -> int:
        async with world.engine.begin() as c:  # as if the back-off had passed
            await c.execute(t.update().where(t.c.next_attempt_at < PARKED_UNTIL).values(next_attempt_at=utcnow()))
        return await relay.relay_once()

    with capture_logs() as logs:
        for _ in range(3):
            assert await attempt() == 2
        notice, event = (await rows())["notice"], (await rows())["event"]
        assert (notice.attempts, notice.next_attempt_at, notice.sent_at) == (3, PARKED_UNTIL, None)
        assert event.attempts == 3 and event.next_attempt_at < PARKED_UNTIL, "a domain event is not parked"
        assert await attempt() == 1, "the parked notice is no longer claimed"
        async with world.sessions() as s, s.begin():
            assert await retry_parked(s, "notices", "notice.p-2.") == 0, "another system's prefix"
            assert await retry_parked(s, "notices", "notice.p-1.") == 1
        assert await attempt() == 2
        assert (await rows())["notice"].next_attempt_at == PARKED_UNTIL, "still unbound: parked again"

        channel = await world.bus.connection.channel()
        exchange = await channel.declare_exchange(f"{world.namespace}.notices", aio_pika.ExchangeType.TOPIC,
                                                  durable=True)
        queue = await channel.declare_queue(f"{world.namespace}.notices.p-1", durable=True,
                                            arguments={"x-queue-type": "quorum"})
        try:
            await queue.bind(exchange, "notice.p-1.#")
            async with world.sessions() as s, s.begin():
                assert await retry_parked(s, "notices") == 1
            assert await attempt() == 2
            assert (await rows())["notice"].sent_at is not None
            await asyncio.sleep(0.3)
            assert [json.loads(m.body)["id"] for m in await count_messages(queue)] == [env.id], "exactly once"
        finally:
            await queue.delete(if_unused=False, if_empty=False)
    notice_lines = [e for e in logs if e.get("message_id") == env.id]
    assert [(e["event"], e["log_level"]) for e in notice_lines if e["log_level"] != "debug"] == [
        ("outbox.parked", "warning"), ("outbox.parked_delivered", "info")]
    assert [e["log_level"] for e in logs if e.get("message_id") != env.id and e["event"] == "outbox.publish_failed"
            ] == ["warning"] * 6, "other failures are warned of as before"


async def test_batch_handler_gets_runs_of_events_applies_each_once_and_isolates_a_failure(world: World):
    runs: list[list[int]] = []

    async def ticks(session, batch):  # noqa: ANN001, ANN202
        ns = [e.n for _, e in batch]
        runs.append(ns)
        if 7 in ns:
            raise RuntimeError("7 is refused")
        await session.execute(effect.insert(), [{"n": n, "times": 1} for n in ns])

    consumer = Consumer(world.bus, world.sessions, f"{world.namespace}.test", {},
                        batch_handlers={TestTick.event_type(): ticks}, delivery_limit=2)
    await consumer.start()
    async with world.sessions() as s, s.begin():
        from seteli_shared.outbox import add_events

        await add_events(s, [TestTick(n=n) for n in range(20)], "test")
    relay = OutboxRelay(world.engine, world.bus)
    await world.drain(relay)
    expected = {n: 1 for n in range(20) if n != 7}
    await eventually(lambda: _equals(world.effects(), expected))
    assert any(len(r) > 1 for r in runs), "events arrive at the handler in runs"
    # the same events published again (a relay that died before marking them sent) change nothing
    async with world.engine.begin() as c:
        await c.execute(OutboxMessage.__table__.update().values(sent_at=None))
    await world.drain(relay)
    await asyncio.sleep(1.0)
    assert await world.effects() == expected
    await consumer.stop()


async def test_an_event_carrying_a_personal_identity_code_is_dead_lettered_without_it(world: World):
    from seteli_shared.consumer import PRIVACY_REASON

    consumer = world.consumer()
    await consumer.start()
    carrier = Envelope.wrap(TestTick(n=7), "test").model_copy(update={"data": {"n": 7, "note": "asiakas 131052‐308t"}})
    await world.bus.publish(carrier.model_dump_json().encode(), "test.tick.v1", message_id=carrier.id)
    good = Envelope.wrap(TestTick(n=8), "test")
    await world.bus.publish(good.model_dump_json().encode(), "test.tick.v1", message_id=good.id)
    await eventually(lambda: _equals(world.effects(), {8: 1}))
    channel = await world.bus.connection.channel()
    dlq = await channel.declare_queue(consumer.dead_letter_queue_name, passive=True)
    dead = await eventually(lambda: dlq.get(fail=False, no_ack=True), timeout=20)
    assert dead.headers[REASON_HEADER] == PRIVACY_REASON
    assert b"131052" not in dead.body and json.loads(dead.body)["message_id"] == carrier.id
    assert 7 not in await world.effects()
    await consumer.stop()


async def test_a_dead_letter_reason_names_fields_and_rules_never_values(world: World):
    consumer = world.consumer()
    await consumer.start()
    bad = {"specversion": "1.0", "id": "m-bad", "source": "/x", "type": "fi.seteli.test.tick.v1",
           "time": "asiakas Matti Meikäläinen", "data": {"n": 1}}
    await world.bus.publish(json.dumps(bad).encode(), "test.tick.v1", message_id="m-bad")
    channel = await world.bus.connection.channel()
    dlq = await channel.declare_queue(consumer.dead_letter_queue_name, passive=True)
    dead = await eventually(lambda: dlq.get(fail=False, no_ack=True), timeout=20)
    reason = dead.headers[REASON_HEADER]
    assert reason.startswith("bad_envelope: time:") and "Meik" not in reason
    await consumer.stop()


@pytest.mark.parametrize("where", ["body", "header", "correlation_id", "message_id", "type"])
async def test_a_code_in_any_spelling_anywhere_in_an_event_is_dead_lettered_without_it(world: World, where: str):
    """Body (any string, escapes undone), AMQP headers and properties of a domain event: the issue's spellings
    (a space or no-break space for the sign, glued to letters, no sign at all) are found there too."""
    from seteli_shared.consumer import PRIVACY_REASON

    consumer = world.consumer()
    await consumer.start()
    spellings = {"body": "HETU131052308T", "header": "131052\u00a0308T", "correlation_id": "x131052-308Ty",
                 "message_id": "131052 308T", "type": "010101a123n"}
    code = spellings[where]
    env = Envelope.wrap(TestTick(n=3), "test")
    body = env.model_dump_json().encode()
    if where == "body":  # written with a JSON escape, as a producer may
        body = json.dumps({**json.loads(body), "data": {"n": 3, "note": code}}, ensure_ascii=True).replace(
            "HETU", "\\u0048ETU").encode()
    await world.bus.publish(body, "test.tick.v1", message_id=code if where == "message_id" else env.id,
                            type_=code if where == "type" else None,
                            correlation_id=code if where == "correlation_id" else None,
                            headers={"x-note": code} if where == "header" else None)
    channel = await world.bus.connection.channel()
    dlq = await channel.declare_queue(consumer.dead_letter_queue_name, passive=True)
    dead = await eventually(lambda: dlq.get(fail=False, no_ack=True), timeout=20)
    assert dead.headers[REASON_HEADER] == PRIVACY_REASON == "personal_identity_code"
    kept = json.dumps([dead.body.decode(), dead.message_id, dead.type, dead.correlation_id,
                       {k: str(v) for k, v in (dead.headers or {}).items()}], ensure_ascii=False)
    assert "131052" not in kept and "010101" not in kept
    assert 3 not in await world.effects()
    await consumer.stop()
