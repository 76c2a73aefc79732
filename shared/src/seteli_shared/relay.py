"""The outbox relay in a process of its own.

- ``seteli-<service> relay`` runs only the service's relay (its database, its broker user), for a
  service started with ``RELAY=off``: in a container or unit of its own beside the service. It has no
  way to hear the service's commits, so it looks at the outbox every ``RELAY_IDLE_SECONDS``.
- ``RELAY=process``: the service starts ``python -m seteli_shared.relay`` itself as its child
  (``RelayProcess``), with the service's settings, and writes a byte to its standard input after each
  commit that wrote the outbox (the wake-up the in-process relay gets from an event); the child ends
  when its standard input closes: the service stopping, or dying (even ``kill -9``), ends it. A child
  that ends while the service runs (no broker at its start, a crash) is started again.

Either way the relay publishes exactly as the in-process one does (``outbox.OutboxRelay``: rows claimed
``FOR UPDATE SKIP LOCKED`` on PostgreSQL, marked sent in the same transaction), so any number of them
may run against one PostgreSQL database. SQLite takes one relay per database: with ``RELAY=off`` run
exactly one ``relay`` command per service.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

from .bus import BrokerUnavailable, Bus
from .db import make_engine, outage_limits
from .logging import configure_logging, get_logger
from .outbox import OutboxRelay, add_wakeup, remove_wakeup
from .settings import ServiceSettings

log = get_logger(__name__)
#: the environment variable that hands the service's settings to its child relay (JSON)
SETTINGS_ENV = "SETELI_RELAY_SETTINGS"
#: the settings a relay uses, handed to the child as they are in the service (they may not come from the
#: environment: tests and the benchmarks build them in code)
_RELAY_FIELDS = ("service_name", "environment", "database_url", "amqp_url", "amqp_reconnect_seconds", "bus_namespace",
                 "publish_timeout_seconds",
                 "relay_batch_size", "relay_idle_seconds", "relay_linger_seconds", "db_pool_pre_ping", "db_pool_recycle_seconds",
                 "db_connect_timeout_seconds", "db_statement_timeout_seconds", "db_pool_timeout_seconds", "log_level",
                 "log_json", "jwks_url", "jwt_issuer", "jwt_audience", "outbox_park_exchanges",
                 "outbox_park_after_attempts", "relay_coalesce", "relay_coalesce_options")


async def run_relay(settings: ServiceSettings, *, wake_from_stdin: bool = False) -> int:
    """Relay the service's outbox until SIGTERM or SIGINT (or, ``wake_from_stdin``, until standard input
    closes; each byte read wakes the relay). Exit code 1 when the broker cannot be used at the start."""
    url = settings.database_url
    engine = make_engine(url, **({} if url.startswith("sqlite") else {
        "pool_size": 2, "max_overflow": 1, "pool_pre_ping": settings.db_pool_pre_ping,
        "pool_recycle": settings.db_pool_recycle_seconds,
        **outage_limits(settings.db_connect_timeout_seconds, settings.db_statement_timeout_seconds,
                        settings.db_pool_timeout_seconds)}))
    bus = Bus(settings)
    try:
        try:
            await bus.connect()
        except BrokerUnavailable as exc:
            log.error("relay.cannot_start", reason=exc.reason, error=str(exc))
            return 1
        relay = OutboxRelay.of(engine, bus, settings)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, relay.stop)
        reader = asyncio.create_task(_read_wakeups(relay)) if wake_from_stdin else None
        log.info("relay.started", database=engine.dialect.name, child=wake_from_stdin)
        try:
            await relay.run()
        finally:
            if reader is not None:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
        log.info("relay.stopped")
        return 0
    finally:
        await bus.close()
        await engine.dispose()


async def _read_wakeups(relay: OutboxRelay) -> None:
    """Wake the relay for each chunk read from standard input; stop it when the input closes."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while await reader.read(4096):
            relay.wake()
    finally:
        relay.stop()


class _PipeWakeup:
    """What a commit that wrote the outbox sets (as the in-process relay's event): one byte to the child,
    unless bytes it has not read yet are still waiting (one wake-up covers them all)."""

    def __init__(self, stdin: asyncio.StreamWriter):
        self.stdin = stdin

    def set(self) -> None:
        transport = self.stdin.transport
        if not transport.is_closing() and transport.get_write_buffer_size() == 0:
            try:
                self.stdin.write(b"w")
            except (ConnectionError, RuntimeError):  # the child is gone: stop() reports it
                pass


class RelayProcess:
    """The relay as a child of the service (``RELAY=process``). A child that ends while the service runs
    (it could not reach the broker at its start, or it crashed) is started again after ``restart_seconds``."""

    def __init__(self, settings: ServiceSettings, restart_seconds: float = 2.0):
        self.settings = settings
        self.restart_seconds = restart_seconds
        self.proc: asyncio.subprocess.Process | None = None
        self._wakeup: _PipeWakeup | None = None
        self._watch: asyncio.Task | None = None
        self._stopping = False

    async def start(self) -> None:
        await self._spawn()
        self._watch = asyncio.create_task(self._keep_running(), name="outbox-relay-process")

    async def _spawn(self) -> None:
        handed = {k: getattr(self.settings, k) for k in _RELAY_FIELDS}
        env = dict(os.environ, **{SETTINGS_ENV: json.dumps(handed, default=str)})
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "seteli_shared.relay", stdin=asyncio.subprocess.PIPE, env=env)
        if self._wakeup is not None:
            remove_wakeup(self._wakeup)
        self._wakeup = _PipeWakeup(self.proc.stdin)
        add_wakeup(self._wakeup)
        self._wakeup.set()  # rows left unsent before the start
        log.info("relay.process_started", pid=self.proc.pid)

    async def _keep_running(self) -> None:
        while not self._stopping:
            returncode = await self.proc.wait()
            if self._stopping:
                return
            log.warning("relay.process_exited", pid=self.proc.pid, returncode=returncode, restart=True)
            await asyncio.sleep(self.restart_seconds)
            if not self._stopping:
                await self._spawn()

    async def stop(self, timeout: float = 15.0) -> None:
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        if self.proc is None:
            return
        if self._wakeup is not None:
            remove_wakeup(self._wakeup)
        if self.proc.returncode is None:
            self.proc.stdin.close()  # end of input: the child finishes its batch and exits
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self.proc.returncode not in (0, None):
            log.warning("relay.process_exited", pid=self.proc.pid, returncode=self.proc.returncode)


def _child_settings() -> ServiceSettings:
    return ServiceSettings(**json.loads(os.environ[SETTINGS_ENV]))


def main() -> None:
    """``python -m seteli_shared.relay``: the child relay of a service with ``RELAY=process``."""
    settings = _child_settings()
    configure_logging(settings.service_name, settings.log_level, settings.log_json)
    sys.exit(asyncio.run(run_relay(settings, wake_from_stdin=True)))


if __name__ == "__main__":
    main()
