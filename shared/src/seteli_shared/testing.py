"""Helpers for the project's tests (real broker and databases; no mocks)."""
from __future__ import annotations

import asyncio
import shutil
from datetime import date, datetime, timedelta, timezone
from urllib.parse import urlparse

import aio_pika

from .approvals import APPROVED, ApprovalState, LifeCycleChange, apply_change
from .settings import ServiceSettings


def _extra_consumer_queues(namespace: str) -> list[str]:
    """The services' further consumers' queues (``ServiceSpec.extra_consumers``) in this namespace."""
    try:
        from .manifest import extra_subscriptions
    except ImportError:  # pragma: no cover
        return []
    return [f"{namespace}.{queue}" for extras in extra_subscriptions().values() for queue, _, _ in extras]


def _broker_tools_reach(amqp_url: str) -> bool:
    """Whether this machine's ``rabbitmqctl`` speaks to the broker at ``amqp_url`` (a local one)."""
    return shutil.which("rabbitmqctl") is not None and urlparse(amqp_url).hostname in ("127.0.0.1", "localhost", "::1")


async def delete_namespace(amqp_url: str, namespace: str, queues: list[str], *, listing: bool = True) -> None:
    """Remove the namespace from the broker: the given queues (and their dead-letter queues), the services'
    further consumers' queues and the namespace's exchanges; then, where this machine's ``rabbitmqctl``
    reaches the broker, everything else of it the broker lists (``sweep_namespaces``: outside systems' and
    services' users, their queues with their bindings, policies). ``listing=False`` leaves that to a later
    ``sweep_namespaces`` of many namespaces at once (one listing instead of one per test: a ``rabbitmqctl``
    call takes a second or more)."""
    await _delete_known(amqp_url, namespace, queues)
    if listing:
        await sweep_namespaces(amqp_url, [namespace])


async def sweep_namespaces(amqp_url: str, namespaces: list[str]) -> None:
    """Everything of these namespaces the broker lists, removed (``broker.remove_namespaces_async``); nothing
    where this machine's ``rabbitmqctl`` does not reach the broker (a broker in a container)."""
    if namespaces and _broker_tools_reach(amqp_url):
        from .broker import remove_namespaces_async

        await remove_namespaces_async(namespaces, "/", amqp_url)


async def _delete_known(amqp_url: str, namespace: str, queues: list[str]) -> None:
    queues = list(dict.fromkeys(queues + _extra_consumer_queues(namespace)))
    connection = await aio_pika.connect(amqp_url)
    try:
        for name in queues + [f"{q}.dlq" for q in queues]:
            channel = await connection.channel()
            try:
                await channel.queue_delete(name)
            except Exception:  # noqa: BLE001
                pass
        for ex in (f"{namespace}.events", f"{namespace}.dlx", f"{namespace}.decisions",
                   f"{namespace}.decision-replies", f"{namespace}.notices"):
            channel = await connection.channel()
            try:
                await channel.exchange_delete(ex)
            except Exception:  # noqa: BLE001
                pass
    finally:
        await connection.close()



def make_settings(cls=ServiceSettings, **kw) -> ServiceSettings:  # noqa: ANN001
    kw.setdefault("environment", "test")
    kw.setdefault("log_json", True)
    return cls(**kw)


async def eventually(predicate, timeout: float = 15.0, interval: float = 0.05):  # noqa: ANN001, ANN201
    """Await ``predicate()`` (sync or async) until truthy; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if loop.time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


async def inbox_took(sessions, ids: set[str], timeout: float = 15.0) -> None:  # noqa: ANN001
    """Wait until a service's consumer has taken these messages: its inbox (``sessions``, the service's
    session factory) holds every one of their ids."""
    from sqlalchemy import select

    from .messaging import InboxMessage

    async def all_in() -> bool:
        async with sessions() as session:
            seen = (await session.execute(select(InboxMessage.message_id).where(
                InboxMessage.message_id.in_(ids)))).scalars().all()
        return set(seen) == set(ids)

    await eventually(all_in, timeout=timeout)


#: when the approvals of the tests' histories (``approval_change``, ``approval_after``) were granted
APPROVAL_T0 = datetime(2026, 1, 1, 9, 0, tzinfo=timezone.utc)


def approval_change(status: str, hours: int, effective_from: date | None = date(2026, 11, 15),
                    approval_id: str = "a1") -> LifeCycleChange:
    """A life-cycle change of approval ``approval_id`` made ``hours`` after ``APPROVAL_T0``, in force from
    ``effective_from`` (none for a reinstatement), for a lapsed insurance."""
    return LifeCycleChange(status, approval_id, APPROVAL_T0 + timedelta(hours=hours),
                           effective_from if status != APPROVED else None, "insurance_lapsed")


def approval_after(*changes: LifeCycleChange, approval_id: str = "a1") -> ApprovalState:
    """The approval granted at ``APPROVAL_T0`` after these changes arrived in this order."""
    state = ApprovalState(approval_id=approval_id, approved_at=APPROVAL_T0)
    for c in changes:
        state = apply_change(state, c)
    return state


class TcpProxy:
    """A TCP proxy in front of a real server (PostgreSQL, RabbitMQ) that a test controls, to show what a
    service does when its database or broker fails, without touching the shared servers themselves:

    - ``forward()``: pass bytes both ways (the start; also ends a stall, the held bytes then flow on);
    - ``refuse()``: stop listening, so that new connections are refused (``accept()`` listens again on
      the same port);
    - ``drop()``: cut every open connection (both sides see it reset);
    - ``stall()``: accept connections but pass nothing on, either way, on new and open connections: a
      server that hangs (or a network that silently loses its packets).

    Run it in the event loop of the code under test (``await TcpProxy(host, port).start()``); point the
    service's ``DATABASE_URL`` / ``AMQP_URL`` at ``proxy.address``."""

    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self.host = host
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter | None]] = set()
        self._tasks: set[asyncio.Task] = set()
        self.connections = 0  # accepted so far

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> "TcpProxy":
        await self.accept()
        return self

    async def accept(self) -> None:
        """Listen (again, on the same port) for new connections."""
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, self.host, self.port, reuse_address=True)
            self.port = self._server.sockets[0].getsockname()[1]

    async def refuse(self) -> None:
        """New connections are refused (nothing listens on the port); open ones go on."""
        if self._server is not None:
            self._server.close()
            self._server = None

    def stall(self) -> None:
        self._flowing.clear()

    def forward(self) -> None:
        self._flowing.set()

    def drop(self) -> None:
        """Cut every open connection, on both sides."""
        for client, upstream in list(self._links):
            for writer in (client, upstream):
                if writer is not None:
                    writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        self._links.clear()

    async def down(self) -> None:
        """The server gone: open connections cut, new ones refused."""
        await self.refuse()
        self.drop()

    async def up(self) -> None:
        self.forward()
        await self.accept()

    async def close(self) -> None:
        await self.down()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        self.connections += 1
        link: tuple = (writer, None)
        self._links.add(link)
        try:
            await self._flowing.wait()  # a stalled server accepts, and then says nothing
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            self._links.discard(link)
            link = (writer, up_writer)
            self._links.add(link)
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._links.discard(link)
            for w in link:
                if w is not None:
                    w.transport.abort()
            self._tasks.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await self._flowing.wait()
            data = await reader.read(65536)
            if not data:
                writer.transport.abort()
                return
            await self._flowing.wait()  # bytes read just before a stall are held until it ends
            writer.write(data)
            await writer.drain()


def charges_announced(rows) -> list:  # noqa: ANN001  (an iterable of outbox (routing_key, body))
    """The ``ChargeAccepted`` that outbox rows of ``charge.accepted`` stand for, in the rows' order: a
    ``charge.accepted.v1`` its own event, a ``charge.accepted.v2`` the event of each charge it lists (``each()``);
    other rows are passed over."""
    from .events import ChargeAccepted, ChargesAccepted, Envelope

    out = []
    for key, body in rows:
        if key not in (ChargeAccepted.routing_key(), ChargesAccepted.routing_key()):
            continue
        event = Envelope.model_validate_json(body).event()
        out += event.each() if isinstance(event, ChargesAccepted) else [event]
    return out
