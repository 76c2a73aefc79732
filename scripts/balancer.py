"""A small TCP load balancer for several instances of each service on this machine (`make scale`): one
listening address per service, each new connection handed to the next of its instances in turn (round
robin). An instance that refuses the connection (stopped, restarting) is passed over for a few seconds and
the connection goes to the next one, so a client notices nothing while at least one instance runs. Bytes
are passed on as they come, both ways, with Nagle's algorithm off on both sides (a small HTTP answer is not
held back).

It balances connections, not requests: an HTTP client that keeps its connection open stays with one
instance until it closes it, a new connection goes to the next. The services keep nothing per client in
memory (portal sessions are rows in its database, tokens are signed), so no stickiness is needed. The
instances see the balancer's address as the client's: a service that counts per client address (the
vouchers service's login throttle) counts all clients of the balancer together on this development setup.

    .venv/bin/python scripts/balancer.py 127.0.0.1:8001=127.0.0.1:18001,127.0.0.1:18101 127.0.0.1:8002=...

Each argument is ``listen=instance,instance,...``. SIGTERM or Ctrl-C stops it.
"""
from __future__ import annotations

import asyncio
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

#: an instance that refused a connection is passed over this long
PASS_OVER_SECONDS = 2.0
CONNECT_TIMEOUT_SECONDS = 2.0


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


@dataclass
class Pool:
    """The instances behind one listening address, taken in turn."""

    listen: tuple[str, int]
    instances: list[tuple[str, int]]
    next: int = 0
    #: instance -> until when it is passed over (monotonic time)
    down_until: dict[tuple[str, int], float] = field(default_factory=dict)
    #: connections handed to each instance (what the balancer's log and tests read)
    handed: dict[tuple[str, int], int] = field(default_factory=dict)

    def candidates(self) -> list[tuple[str, int]]:
        """The instances in the order to try them: from the next in turn, those passed over last."""
        n = len(self.instances)
        order = [self.instances[(self.next + i) % n] for i in range(n)]
        self.next = (self.next + 1) % n
        now = time.monotonic()
        return [a for a in order if self.down_until.get(a, 0) <= now] + \
               [a for a in order if self.down_until.get(a, 0) > now]


def _no_delay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await writer.wait_closed()
    except (ConnectionError, OSError):
        pass


class Balancer:
    def __init__(self, pools: list[Pool]):
        self.pools = pools
        self.servers: list[asyncio.AbstractServer] = []
        self.connections: set[asyncio.Task] = set()  # the connections being passed on

    async def start(self) -> None:
        for pool in self.pools:
            server = await asyncio.start_server(lambda r, w, p=pool: self._serve(p, r, w), *pool.listen,
                                                reuse_address=True)
            self.servers.append(server)

    async def _connect(self, pool: Pool) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        for instance in pool.candidates():
            try:
                found = await asyncio.wait_for(asyncio.open_connection(*instance), CONNECT_TIMEOUT_SECONDS)
            except (OSError, asyncio.TimeoutError):
                pool.down_until[instance] = time.monotonic() + PASS_OVER_SECONDS
                continue
            pool.down_until.pop(instance, None)
            pool.handed[instance] = pool.handed.get(instance, 0) + 1
            return found
        return None

    async def _serve(self, pool: Pool, client_reader: asyncio.StreamReader,
                     client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self.connections.add(task)
        try:
            await self._pass_on(pool, client_reader, client_writer)
        finally:
            self.connections.discard(task)

    async def _pass_on(self, pool: Pool, client_reader: asyncio.StreamReader,
                       client_writer: asyncio.StreamWriter) -> None:
        upstream = await self._connect(pool)
        if upstream is None:  # no instance answers: the client sees the connection closed
            await _close(client_writer)
            return
        up_reader, up_writer = upstream
        _no_delay(client_writer)
        _no_delay(up_writer)
        try:
            await asyncio.gather(_pipe(client_reader, up_writer), _pipe(up_reader, client_writer))
        finally:
            await _close(up_writer)
            await _close(client_writer)

    async def close(self) -> None:
        """Stop listening and cut the connections still open."""
        for server in self.servers:
            server.close()
        for task in list(self.connections):
            task.cancel()
        await asyncio.gather(*self.connections, return_exceptions=True)
        for server in self.servers:
            await server.wait_closed()


def parse(args: list[str]) -> list[Pool]:
    pools = []
    for arg in args:
        listen, _, instances = arg.partition("=")
        if not instances:
            raise SystemExit(f"balancer: '{arg}' is not listen=instance,instance,...")
        pools.append(Pool(_address(listen), [_address(i) for i in instances.split(",") if i]))
    return pools


async def serve(pools: list[Pool]) -> None:
    balancer = Balancer(pools)
    await balancer.start()
    for pool in pools:
        print(f"balancer: {pool.listen[0]}:{pool.listen[1]} -> "
              + ", ".join(f"{h}:{p}" for h, p in pool.instances), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await balancer.close()


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    asyncio.run(serve(parse(sys.argv[1:])))
