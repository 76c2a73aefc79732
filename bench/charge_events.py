"""The consumers of charge events through the real bus (``make bench-events``): how fast, and at what CPU,
the vouchers and reporting services take payments' ``ChargeAccepted`` and ``ChargeSettled`` events, beside
raw aio-pika publish+consume of the same bodies on the same broker, in one run.

1. **raw aio-pika**: the run's ``ChargeAccepted`` bodies published persistent with confirms (``--window`` in
   flight) to a durable quorum queue and consumed with manual acks (prefetch 256); first publish to last ack.
2. **the system**: fresh PostgreSQL databases for vouchers, reporting and payments' outbox, and a bus
   namespace of its own. vouchers and reporting run as processes (``seteli-<service> serve``, as
   ``tests/conftest.py``'s ``system`` fixture starts them); payments' relay runs as its own process
   (``python -m seteli_shared.relay``, payments' settings: the code and the properties payments publishes
   with). Seeded through events: ``FunderRegistered`` on the exchange as the registry publishes it, then
   ``--vouchers`` vouchers issued over HTTP (``POST /vouchers``), whose ``VoucherIssued`` reach reporting.
3. **accepted**: ``--charges`` ``ChargeAccepted`` rows committed to payments' outbox at once (bodies as
   payments writes them, ``Envelope.wrap``), the relay woken; timed from the commit until each stage is done:
   the relay (no unsent row), vouchers (its queue empty and a usage row per charge), reporting (its queue
   empty and every charge fact accepted). The CPU seconds each process used (``/proc/<pid>/stat``) until it was
   done, per event.
4. **settled**: half of the charges settled, one ``ChargeSettled`` (``charge.settled.v1``) each (vouchers is not
   bound to them; reporting folds them); **settled_v2**: the other half as ``ChargesSettled``
   (``charge.settled.v2``, ``--per-event`` charges an event), the coarser contract payments does not publish yet.
5. raw aio-pika again; the baseline is the mean of the two raw runs (messages/s of per-charge bodies). Each
   stage's rate in charges/s against it; the CPU per charge of each service with either kind of settlement.
6. the query plans of the consumers' hot statements (``EXPLAIN``) on the databases as the run left them, and
   when each hot table was last analysed (this machine's PostgreSQL runs without autovacuum: a plan must not
   depend on it).

It prints the figures as lines and a final JSON line; everything it creates is removed at the end.

    .venv/bin/python bench/charge_events.py [--charges 20000] [--vouchers 1000] [--window 256]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
import warnings
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlparse

import aio_pika
import asyncpg
import httpx
from aio_pika import DeliveryMode, Message

# this folder holds files named like the services' packages (payments.py, reporting.py): take it off the path
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from seteli_shared.auth import mint  # noqa: E402
from seteli_shared.bus import Bus, Outgoing  # noqa: E402
from seteli_shared.events import ChargeAccepted, ChargeSettled, Envelope, FunderRegistered  # noqa: E402

try:  # charge.settled.v2: not in the contracts before this benchmark (run against older code, its stage is skipped)
    from seteli_shared.events import ChargesSettled, SettledCharge  # noqa: E402
except ImportError:  # pragma: no cover
    ChargesSettled = SettledCharge = None
from seteli_shared.ids import new_id  # noqa: E402
from seteli_shared.settings import ServiceSettings  # noqa: E402
from seteli_shared.testing import delete_namespace  # noqa: E402
from seteli_shared.ports import free_port as _free_port  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
PG_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BIN = Path(sys.executable).parent
FUNDER, CATEGORY = "091", "home_care"
TARGET_RATIO = 0.7
TARGET_CPU_MS = 0.6  # vouchers + reporting per accepted charge (its acceptance and its settlement)
TARGET_SETTLED_PER_S = 10_000
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (``/proc/<pid>/stat`` fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def database_url(name: str, driver: str | None = "asyncpg") -> str:
    u = urlparse(PG_URL)
    auth = f"{u.username or 'postgres'}{':' + u.password if u.password else ''}"
    return f"postgresql{'+' + driver if driver else ''}://{auth}@{u.hostname}:{u.port or 5432}/{name}"


# ------------------------------------------------------------------ the events, as payments writes them
def charges(n: int, voucher_ids: list[str], provider_id: str) -> tuple[list[ChargeAccepted], list[ChargeSettled]]:
    today = date.today()
    day = today.replace(day=1) if today.day > 1 else today
    now = datetime.now(timezone.utc)
    settlement = new_id()  # payments' ids (a random uuid4 looks like an identity code once in 26,738)
    accepted, settled = [], []
    for i in range(n):
        units = Decimal(1 + i % 3)
        amount = int(units * 2500)
        cid, vid = new_id(), voucher_ids[i % len(voucher_ids)]
        accepted.append(ChargeAccepted(
            charge_id=cid, voucher_id=vid, funder_id=FUNDER, provider_id=provider_id, category=CATEGORY,
            service_date=day + timedelta(days=i % max(1, (today - day).days + 1)), units=units,
            unit_price_cents=2500, amount_cents=amount, own_share_cents=0, accepted_at=now, price_registered=True,
            registered_price_cents=2500, price_list_id="pl-bench"))
        fee = amount * 5 // 100
        settled.append(ChargeSettled(charge_id=cid, settlement_id=settlement, voucher_id=vid, funder_id=FUNDER,
                                     provider_id=provider_id, category=CATEGORY, gross_cents=amount, fee_cents=fee,
                                     net_cents=amount - fee, settled_at=now + timedelta(days=2)))
    return accepted, settled


def settled_v2(settled: list[ChargeSettled], per_event: int) -> list:
    """The same settlements as ``charge.settled.v2`` events of at most ``per_event`` charges each."""
    out = []
    for lo in range(0, len(settled), per_event):
        part = settled[lo:lo + per_event]
        out.append(ChargesSettled(settlement_id=part[0].settlement_id, funder_id=part[0].funder_id,
                                  provider_id=part[0].provider_id, settled_at=part[0].settled_at, charges=[
                                      SettledCharge(charge_id=e.charge_id, voucher_id=e.voucher_id,
                                                    category=e.category, gross_cents=e.gross_cents,
                                                    fee_cents=e.fee_cents, net_cents=e.net_cents) for e in part]))
    return out


def outbox_rows(events: list) -> list[tuple]:
    """Payments' outbox rows of these events (``outbox.add_events``' rows: the body ``Envelope.wrap`` makes)."""
    rows = []
    for e in events:
        env = Envelope.wrap(e, "payments")
        rows.append((env.id, env.routing_key, env.model_dump_json(), env.time, 0))
    return rows


# ------------------------------------------------------------------ raw aio-pika
async def run_raw(bodies: list[bytes], window: int, prefetch: int = 256) -> float:
    queue_name = f"bench-events-raw-{secrets.token_hex(6)}"
    pub = await aio_pika.connect(AMQP_URL)
    con = await aio_pika.connect(AMQP_URL)
    try:
        pch = await pub.channel(publisher_confirms=True, on_return_raises=True)
        await pch.declare_queue(queue_name, durable=True, arguments={"x-queue-type": "quorum"})
        cch = await con.channel()
        await cch.set_qos(prefetch_count=prefetch)
        queue = await cch.declare_queue(queue_name, durable=True, arguments={"x-queue-type": "quorum"})
        n, acked, done = len(bodies), 0, asyncio.Event()

        async def on_message(m) -> None:  # noqa: ANN001
            nonlocal acked
            await m.ack()
            acked += 1
            if acked >= n:
                done.set()

        tag = await queue.consume(on_message)
        start = time.perf_counter()
        for lo in range(0, n, window):
            await asyncio.gather(*(pch.default_exchange.publish(
                Message(b, delivery_mode=DeliveryMode.PERSISTENT, message_id=str(lo + i)), queue_name, mandatory=True,
                timeout=30) for i, b in enumerate(bodies[lo:lo + window])))
        await asyncio.wait_for(done.wait(), timeout=max(300, n / 50))
        elapsed = time.perf_counter() - start
        await queue.cancel(tag)
        return n / elapsed
    finally:
        ch = await pub.channel()
        await ch.queue_delete(queue_name)
        await con.close()
        await pub.close()


# ------------------------------------------------------------------ the system
class System:
    """vouchers and reporting as processes, payments' relay as a process, their databases and namespace."""

    def __init__(self, workdir: Path, consumer_env: dict[str, str]):
        self.ns = f"benchev{secrets.token_hex(4)}"
        self.dbs = {name: f"seteli_bench_ev_{name}_{secrets.token_hex(4)}" for name in ("vouchers", "reporting",
                                                                                         "payments")}
        self.workdir, self.consumer_env = workdir, consumer_env
        self.procs: dict[str, subprocess.Popen] = {}
        self.urls: dict[str, str] = {}
        self.pg: dict[str, asyncpg.Connection] = {}
        self.amqp: aio_pika.abc.AbstractConnection | None = None

    async def start(self) -> None:
        admin = await asyncpg.connect(PG_URL)
        for db in self.dbs.values():
            await admin.execute(f'CREATE DATABASE "{db}"')
        await admin.close()
        await self._payments_outbox()
        for name in ("vouchers", "reporting"):
            port = _free_port()
            env = dict(os.environ, DATABASE_URL=database_url(self.dbs[name]), AMQP_URL=AMQP_URL, BUS_NAMESPACE=self.ns,
                       ENVIRONMENT="test", DATA_DIR=str(self.workdir), EXPIRY_SCHEDULER="false",
                       **self.consumer_env)
            log = (self.workdir / f"{name}.log").open("wb")
            self.procs[name] = subprocess.Popen([str(BIN / f"seteli-{name}"), "serve", "--port", str(port)], env=env,
                                                stdout=log, stderr=subprocess.STDOUT)
            self.urls[name] = f"http://127.0.0.1:{port}"
        relay_settings = {"service_name": "payments", "environment": "test", "database_url":
                          database_url(self.dbs["payments"]), "amqp_url": AMQP_URL, "bus_namespace": self.ns,
                          "log_level": "WARNING"}
        self.procs["relay"] = subprocess.Popen(
            [sys.executable, "-m", "seteli_shared.relay"], stdin=subprocess.PIPE,
            env=dict(os.environ, SETELI_RELAY_SETTINGS=json.dumps(relay_settings)),
            stdout=(self.workdir / "relay.log").open("wb"), stderr=subprocess.STDOUT)
        await self._ready()
        for name in ("vouchers", "reporting", "payments"):
            self.pg[name] = await asyncpg.connect(database_url(self.dbs[name], None))
        self.amqp = await aio_pika.connect(AMQP_URL)

    async def _payments_outbox(self) -> None:
        """Payments' outbox table (the shared model's, with its partial index), nothing else of payments."""
        from seteli_shared.db import make_engine
        from seteli_shared.messaging import InboxMessage, OutboxMessage

        engine = make_engine(database_url(self.dbs["payments"]))
        async with engine.begin() as conn:
            await conn.run_sync(lambda c: OutboxMessage.metadata.create_all(
                c, tables=[OutboxMessage.__table__, InboxMessage.__table__]))
        await engine.dispose()

    async def _ready(self) -> None:
        deadline = time.monotonic() + 90
        async with httpx.AsyncClient(timeout=2) as c:
            for name, url in self.urls.items():
                while True:
                    try:
                        if (await c.get(f"{url}/health/ready")).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if self.procs[name].poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"{name} did not become ready: see {self.workdir / (name + '.log')}")
                    await asyncio.sleep(0.2)

    def wake_relay(self) -> None:
        self.procs["relay"].stdin.write(b"w")
        self.procs["relay"].stdin.flush()

    async def queue_depth(self, service: str) -> int:
        channel = await self.amqp.channel()
        try:
            q = await channel.declare_queue(f"{self.ns}.{service}", passive=True)
            return q.declaration_result.message_count
        finally:
            await channel.close()

    async def dead_letters(self) -> dict[str, int]:
        out = {}
        for service in ("vouchers", "reporting"):
            channel = await self.amqp.channel()
            try:
                q = await channel.declare_queue(f"{self.ns}.{service}.dlq", passive=True)
                out[service] = q.declaration_result.message_count
            finally:
                await channel.close()
        return out

    async def count(self, service: str, sql: str) -> int:
        return await self.pg[service].fetchval(sql)

    async def stop(self) -> None:
        if self.amqp is not None:
            await self.amqp.close()
        for c in self.pg.values():
            await c.close()
        for name, p in self.procs.items():
            if name == "relay" and p.stdin:
                p.stdin.close()
            p.terminate()
        for p in self.procs.values():
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        admin = await asyncpg.connect(PG_URL)
        for db in self.dbs.values():
            await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await admin.close()
        await delete_namespace(AMQP_URL, self.ns, [f"{self.ns}.vouchers", f"{self.ns}.reporting"])


async def seed(system: System, vouchers: int) -> list[str]:
    """The funder (its event, as the registry publishes it) and the vouchers (over HTTP, as a funder's decision
    maker issues them: their ``VoucherIssued`` reach reporting); waits until both services have folded them."""
    settings = ServiceSettings(service_name="registry", environment="test", amqp_url=AMQP_URL,
                               bus_namespace=system.ns, database_url="sqlite+aiosqlite:///:memory:")
    bus = Bus(settings)
    await bus.connect()
    event = FunderRegistered(funder_id=FUNDER, name="Kunta 091", kind="municipality",
                             operator_fee_rate=Decimal("0.05"), registered_at=datetime.now(timezone.utc))
    env = Envelope.wrap(event, "registry")
    [failed] = await bus.publish_many([Outgoing(env.model_dump_json().encode(), env.routing_key, env.id, env.type)])
    await bus.close()
    if failed is not None:
        raise RuntimeError(f"FunderRegistered not published: {failed!r}")
    await _until(lambda: system.count("vouchers", "SELECT count(*) FROM vouchers_funder"), 1, 60)
    token = mint("bench:decision-maker", ["funder_decision_maker"], funder_id=FUNDER)
    today = date.today()
    ids: list[str] = []
    sem = asyncio.Semaphore(8)
    async with httpx.AsyncClient(base_url=system.urls["vouchers"], timeout=30,
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        async def issue(i: int) -> None:
            async with sem:
                r = await client.post("/vouchers", json={
                    "decision_ref": f"BENCH-{i:07d}", "client_ref": f"asiakas-{i:07d}", "category": CATEGORY,
                    "units_per_period": "20", "value_per_unit_cents": 2500,
                    "valid_from": (today - timedelta(days=40)).isoformat(),
                    "valid_until": (today + timedelta(days=300)).isoformat()})
                if r.status_code != 201:
                    raise RuntimeError(f"voucher {i}: {r.status_code} {r.text[:300]}")
                ids.append(r.json()["id"])
        await asyncio.gather(*(issue(i) for i in range(vouchers)))
    await _until(lambda: system.count("reporting", "SELECT count(*) FROM reporting_voucher WHERE issued_on IS NOT "
                                                   "NULL"), vouchers, 300)
    return ids


async def _until(count, wanted: int, timeout: float) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while (got := await count()) < wanted:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {got} of {wanted} after {timeout:.0f} s")
        await asyncio.sleep(0.1)


# ------------------------------------------------------------------ one stage
ACCEPTED = "SELECT count(*) FROM reporting_charge WHERE accepted_at IS NOT NULL"
SETTLED = "SELECT count(*) FROM reporting_charge WHERE settled_at IS NOT NULL"


async def run_stage(system: System, rows: list[tuple], charges: int, done_when: dict[str, tuple[str, int]],
                    timeout: float) -> dict:
    """Commit the rows to payments' outbox at once, wake its relay, and time each consumer until its queue is
    empty and its read model holds what ``done_when`` says (service -> (count query, count)); the relay until no
    row is unsent. Rates and CPU (``/proc``) per charge, each process's CPU until it was done."""
    pg = system.pg["payments"]
    pids = {s: system.procs[s].pid for s in ("relay", "vouchers", "reporting")}
    cpu0 = {s: cpu_seconds(p) for s, p in pids.items()}
    async with pg.transaction():
        await pg.copy_records_to_table("outbox", records=rows, columns=[
            "message_id", "routing_key", "body", "created_at", "attempts"])
    start = time.perf_counter()
    system.wake_relay()
    waiting = {"relay": ("SELECT count(*) FROM outbox WHERE sent_at IS NULL", 0), **done_when}
    done: dict[str, dict] = {}
    deadline = start + timeout
    while len(done) < len(waiting):
        for stage, (sql, wanted) in waiting.items():
            if stage in done:
                continue
            if stage == "relay":
                finished = await system.count("payments", sql) == 0
            else:
                finished = await system.queue_depth(stage) == 0 and await system.count(stage, sql) >= wanted
            if finished:
                seconds = time.perf_counter() - start
                cpu = cpu_seconds(pids[stage]) - cpu0[stage]
                done[stage] = {"seconds": round(seconds, 3), "charges_per_second": round(charges / seconds, 1),
                               "cpu_seconds": round(cpu, 3), "cpu_ms_per_charge": round(1000 * cpu / charges, 4)}
        if any((dead := await system.dead_letters()).values()):
            raise RuntimeError(f"dead-lettered: {dead} (see the services' logs)")
        if time.perf_counter() > deadline:
            raise RuntimeError(f"not done after {timeout:.0f} s: {sorted(set(waiting) - set(done))}")
        await asyncio.sleep(0.05)
    # CPU until the slowest is done, too: a consumer may still work (acks, logs) after its effect shows
    end_cpu = {s: round(cpu_seconds(p) - cpu0[s], 3) for s, p in pids.items()}
    return {"messages": len(rows), "charges": charges, "stages": done, "cpu_seconds_until_all_done": end_cpu}


# ------------------------------------------------------------------ query plans
#: (label, the statement as the consumer runs it, a query giving its parameters from the run's own rows)
INBOX_CLAIM = ("the inbox claim (conflicts found by the primary key)",
               "INSERT INTO inbox (consumer, message_id, received_at) SELECT * FROM unnest($1::varchar[], "
               "$2::varchar[], $3::timestamptz[]) ON CONFLICT (consumer, message_id) DO NOTHING RETURNING message_id",
               "SELECT array_agg(consumer), array_agg(message_id || '-x'), array_agg(received_at) FROM "
               "(SELECT * FROM inbox LIMIT 1000) x")
PLANS = {
    "vouchers": [
        ("a run of acceptances' usage rows (conflicts found by the primary key)",
         "INSERT INTO vouchers_usage (charge_id, voucher_id, provider_id, service_date, units_x100, amount_cents, "
         "own_share_cents, accepted_at) SELECT * FROM unnest($1::varchar[], $2::varchar[], $3::varchar[], $4::date[], "
         "$5::int[], $6::bigint[], $7::bigint[], $8::timestamptz[]) ON CONFLICT (charge_id) DO NOTHING "
         "RETURNING charge_id",
         "SELECT array_agg(charge_id), array_agg(voucher_id), array_agg(provider_id), array_agg(service_date), "
         "array_agg(units_x100), array_agg(amount_cents), array_agg(own_share_cents), array_agg(accepted_at) FROM "
         "(SELECT * FROM vouchers_usage LIMIT 500) x"),
        ("the whole-validity vouchers of a batch's charges, locked",
         "SELECT id FROM vouchers_voucher WHERE id = ANY($1::text[]) AND period = 'validity' "
         "AND units_per_period_x100 IS NOT NULL FOR UPDATE",
         "SELECT array_agg(DISTINCT voucher_id) FROM (SELECT voucher_id FROM vouchers_usage LIMIT 500) x"),
        ("a voucher's units used in a period",
         "SELECT coalesce(sum(units_x100), 0) FROM vouchers_usage WHERE voucher_id = $1 AND service_date >= $2 "
         "AND service_date <= $3",
         "SELECT voucher_id, current_date - 40, current_date FROM vouchers_usage LIMIT 1"),
        INBOX_CLAIM,
    ],
    "reporting": [
        # a batch's charge facts are read and written back in parts of 2,000 (handlers.FACTS_PER_STATEMENT)
        ("charge facts of a batch (a part)", "SELECT * FROM reporting_charge WHERE charge_id = ANY($1::text[])",
         "SELECT array_agg(charge_id) FROM (SELECT charge_id FROM reporting_charge LIMIT 2000) x"),
        ("settled charge facts written back (a part)",
         "UPDATE reporting_charge t SET settled_at = x.s, gross_cents = x.g, fee_cents = x.f, net_cents = x.n "
         "FROM unnest($1::text[], $2::timestamptz[], $3::bigint[], $4::bigint[], $5::bigint[]) AS x(charge_id, s, g, "
         "f, n) WHERE t.charge_id = x.charge_id",
         "SELECT array_agg(charge_id), array_agg(now()), array_agg(0::bigint), array_agg(0::bigint), "
         "array_agg(0::bigint) FROM (SELECT charge_id FROM reporting_charge LIMIT 2000) x"),
        ("voucher facts of a batch", "SELECT * FROM reporting_voucher WHERE voucher_id = ANY($1::text[])",
         "SELECT array_agg(voucher_id) FROM (SELECT voucher_id FROM reporting_voucher LIMIT 1000) x"),
        ("clients' month rows at zero, deleted", "SELECT t.* FROM reporting_client_month t JOIN unnest($1::text[], "
         "$2::text[], $3::text[], $4::text[]) AS x(f, p, c, k) ON t.funder_id = x.f AND t.period = x.p AND "
         "t.category = x.c AND t.client_key = x.k",
         "SELECT array_agg(funder_id), array_agg(period), array_agg(category), array_agg(client_key) FROM "
         "(SELECT * FROM reporting_client_month LIMIT 200) x"),
        INBOX_CLAIM,
    ],
}
HOT_TABLES = {"vouchers": ["vouchers_usage", "vouchers_voucher", "inbox", "audit_log"],
              "reporting": ["reporting_charge", "reporting_voucher", "reporting_client_month",
                            "reporting_voucher_month", "reporting_event", "inbox", "audit_log"]}


async def plans(system: System) -> dict:
    out: dict = {}
    for service, statements in PLANS.items():
        pg = system.pg[service]
        for label, sql, params in statements:
            args = list(await pg.fetchrow(params))
            async with pg.transaction():  # FOR UPDATE: nothing stays locked
                lines = [r[0] for r in await pg.fetch("EXPLAIN " + sql, *args)]
            out[f"{service}: {label}"] = [line if len(line) < 160 else line[:150] + " ..." for line in lines]
        stats = await pg.fetch("SELECT relname, n_live_tup, n_mod_since_analyze, last_analyze, last_autoanalyze "
                               "FROM pg_stat_user_tables WHERE relname = ANY($1::text[]) ORDER BY relname",
                               HOT_TABLES[service])
        out[f"{service}: analysed"] = [
            f"{r['relname']}: {r['n_live_tup']} rows, {r['n_mod_since_analyze']} changed since its last analyse "
            f"({r['last_analyze'] or r['last_autoanalyze'] or 'never analysed'})" for r in stats]
    return out


# ------------------------------------------------------------------ profiles
def start_profilers(system: System, folder: str) -> list[subprocess.Popen]:
    import shutil

    spy = shutil.which("py-spy") or str(Path.home() / ".local/bin/py-spy")
    Path(folder).mkdir(parents=True, exist_ok=True)
    return [subprocess.Popen([spy, "record", "--pid", str(system.procs[s].pid), "--rate", "200", "--nonblocking",
                              "--gil", "--format", "raw",
                              "--output", str(Path(folder) / f"{s}.txt")], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL) for s in ("vouchers", "reporting")]


def stop_profilers(profilers: list[subprocess.Popen]) -> None:
    import signal

    for p in profilers:
        p.send_signal(signal.SIGINT)
    for p in profilers:
        p.wait(60)


# ------------------------------------------------------------------ main
async def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--charges", type=int, default=20000, help="charges (each accepted, then settled)")
    p.add_argument("--vouchers", type=int, default=0, help="vouchers issued (default: one per 20 charges)")
    p.add_argument("--window", type=int, default=256, help="raw publisher: messages in flight")
    p.add_argument("--per-event", type=int, default=1000, help="charges per charge.settled.v2 event")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="a setting for vouchers and reporting (e.g. CONSUMER_BATCH_SIZE=500), repeatable")
    p.add_argument("--keep-logs", action="store_true", help="print where the services' logs are and keep them")
    p.add_argument("--py-spy", metavar="DIR", help="profile vouchers and reporting with py-spy during the stages "
                   "(collapsed stacks in DIR/<service>.txt; py-spy on PATH or in ~/.local/bin)")
    args = p.parse_args(argv)
    n = args.charges
    vouchers = args.vouchers or max(10, n // 20)
    consumer_env = dict(kv.split("=", 1) for kv in args.env)
    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix="bench-events-"))
    broker = urlparse(AMQP_URL).netloc.split("@")[-1]
    print(f"charge events benchmark: {n} charges on {vouchers} vouchers; RabbitMQ {broker}, "
          f"PostgreSQL {urlparse(PG_URL).hostname}:{urlparse(PG_URL).port}; settings {consumer_env or 'default'}",
          flush=True)
    system = System(workdir, consumer_env)
    result: dict = {"charges": n, "vouchers": vouchers, "settings": consumer_env}
    ok = True
    try:
        await system.start()
        voucher_ids = await seed(system, vouchers)
        accepted, settled = charges(n, voucher_ids, new_id())
        half = n // 2 if ChargesSettled is not None else n  # the first half settled one event per charge (v1)
        plan_of_stages = {
            "accepted": (outbox_rows(accepted), n, {"vouchers": ("SELECT count(*) FROM vouchers_usage", n),
                                                    "reporting": (ACCEPTED, n)}),
            "settled": (outbox_rows(settled[:half]), half, {"reporting": (SETTLED, half)}),
        }
        if ChargesSettled is not None:  # the second half in v2 events
            plan_of_stages["settled_v2"] = (outbox_rows(settled_v2(settled[half:], args.per_event)), n - half,
                                            {"reporting": (SETTLED, n)})
        bodies = [r[2].encode() for r in plan_of_stages["accepted"][0]]
        raw1 = await run_raw(bodies, args.window)
        print(f"raw aio-pika publish+consume (1st): {raw1:9,.0f} msg/s", flush=True)
        profilers = start_profilers(system, args.py_spy) if args.py_spy else []
        stages = {}
        for name, (rows, count, done_when) in plan_of_stages.items():
            stages[name] = await run_stage(system, rows, count, done_when, timeout=max(600, n / 20))
            for stage, f in stages[name]["stages"].items():
                print(f"{name:<10} {stage:<9} {count:>7} charges in {len(rows):>7} messages, done after "
                      f"{f['seconds']:7.2f} s: {f['charges_per_second']:9,.0f} charges/s, "
                      f"CPU {f['cpu_ms_per_charge']:.3f} "
                      f"ms a charge", flush=True)
        stop_profilers(profilers)
        raw2 = await run_raw(bodies, args.window)
        print(f"raw aio-pika publish+consume (2nd): {raw2:9,.0f} msg/s", flush=True)
        raw = (raw1 + raw2) / 2
        print(f"raw aio-pika (mean):                {raw:9,.0f} msg/s (one message per charge)")
        ratios = {f"{name}.{stage}": round(f["charges_per_second"] / raw, 3)
                  for name, st in stages.items() for stage, f in st["stages"].items()}
        for key, r in ratios.items():
            print(f"  {key:<21} {r:6.2f} of raw  (target {TARGET_RATIO}: {'met' if r >= TARGET_RATIO else 'NOT met'})")

        def per_charge(stage: str, service: str) -> float:  # CPU until every consumer of the stage was done
            return 1000 * stages[stage]["cpu_seconds_until_all_done"][service] / stages[stage]["charges"]

        cpu = {}
        settles = [name for name in ("settled", "settled_v2") if name in stages]
        for settle in settles:
            cpu[settle] = {s: round(per_charge("accepted", s) + per_charge(settle, s), 4)
                           for s in ("vouchers", "reporting", "relay")}
            consumers = cpu[settle]["vouchers"] + cpu[settle]["reporting"]
            cpu[settle]["vouchers+reporting"] = round(consumers, 4)
            how = "settled one event a charge" if settle == "settled" else "settled in v2 events"
            print(f"  CPU per charge (accepted, then {how}):"
                  f" vouchers {cpu[settle]['vouchers']:.3f} ms, reporting {cpu[settle]['reporting']:.3f} ms, relay "
                  f"{cpu[settle]['relay']:.3f} ms; vouchers + reporting {consumers:.3f} ms (target <= {TARGET_CPU_MS}: "
                  f"{'met' if consumers <= TARGET_CPU_MS else 'NOT met'})")
        for settle in settles:
            rate = stages[settle]["stages"]["reporting"]["charges_per_second"]
            print(f"  reporting's fold of settled charges ({settle}): {rate:,.0f}/s "
                  f"(target >= {TARGET_SETTLED_PER_S:,}: "
                  f"{'met' if rate >= TARGET_SETTLED_PER_S else 'NOT met'})")
        vouchers_late = stages["accepted"]["stages"]["vouchers"]["seconds"] - \
            stages["accepted"]["stages"]["reporting"]["seconds"]
        print(f"  vouchers done {vouchers_late:+.2f} s after reporting (accepted)")
        result.update(raw_1_msg_per_s=round(raw1, 1), raw_2_msg_per_s=round(raw2, 1), raw_mean_msg_per_s=round(raw, 1),
                      per_event=args.per_event, stages=stages, ratios=ratios, cpu_ms_per_charge=cpu,
                      vouchers_after_reporting_seconds=round(vouchers_late, 3))
        plan = await plans(system)
        print("query plans of the hot statements (EXPLAIN, the databases as the run left them):")
        for label, lines in plan.items():
            print(f"  {label}:")
            for line in lines:
                print(f"      {line}")
        result["plans"] = plan
    except Exception as exc:  # noqa: BLE001
        ok = False
        print(f"FAILED: {exc!r} (logs in {workdir})", file=sys.stderr)
        result["error"] = repr(exc)
    finally:
        await system.stop()
    if args.keep_logs or not ok:
        print(f"logs: {workdir}")
    else:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(result, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
