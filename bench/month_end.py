"""A county's month end to end (``make month-end``): the four services as processes on PostgreSQL and
RabbitMQ, driven through their public HTTP APIs and the bus only, stage by stage, each beside a raw baseline
measured in the same run (issue 20).

1. **registry**: the funder (a wellbeing services county), its rulebooks for 5 categories, ``--providers``
   providers (200 at scale 1) registered, approved for the 5 categories, each with a published price list;
2. **decisions**: ``--vouchers`` (50,000) service decisions of three kinds (service voucher, client voucher,
   personal budget) published on ``<ns>.decisions`` by the funder's case system (``seteli_client.CaseSystem``,
   its own broker user) as a stream (``CaseSystem.decide_many``: ``--in-flight`` (1,000) published and not yet
   answered at a time) until every reply is back; raw: aio-pika publish+consume of the same envelopes;
3. **choices**: each client logs in with the codes of its decision letter and chooses a provider (HTTP);
4. **intake** (the month-end clock starts): ``--charges`` (1,000,000) charges, 20 one-unit charges a voucher, in
   one file per provider (CSV in the Finnish form for half of them, JSON for the others) uploaded
   ``--parallel`` (4) at a time to ``POST /charges/bulk``, with about 1 % of lines that are refused for real
   reasons (a 21st unit of a 20-unit month, a voucher code that does not exist, another provider's voucher, a
   service date in the future); raw: the good lines' charge, ledger and outbox rows by ``COPY``, a
   transaction a chunk, into empty copies of payments' tables with their indexes (``raw_copy``);
5. **accepted events**: until reporting's figures hold every accepted charge and vouchers' queue is empty;
   raw: aio-pika publish+consume of as many ``ChargeAccepted`` bodies (a sample: ``--raw-messages``);
6. **settlement**: ``POST /settlement-runs``; raw: the same work in SQL on the same charges (rolled back);
7. **settled events**: until reporting's figures hold every settled charge and vouchers' queue is empty;
8. **pain.001** files of the runs, **notices** (half the providers read their queue, half get a webhook to a
   local receiver that checks every signature), the funder's **invoice** of the month;
9. **reports**: the monthly report, the price development and the suppression audit read back, each beside a
   raw ``SELECT`` of its figures.

Then the final checks: the ledger check, every settlement's notice received (distinct ids: exactly one each),
the charges settled equal to the lines meant to be accepted and their total equal to the total of the files'
lines to the cent (settlements, reporting, the invoice and the pain.001 transfers), each refusal's reason.
It prints a table (items, s, items/s, raw items/s, ratio) and the plans (``EXPLAIN``) of the hot queries, and
writes the table (``bench/results/month-end*.md``), a timeline chart (PNG) and the figures (JSON).

``--faults`` runs on a RabbitMQ node and a PostgreSQL instance of its own (never the machine's): during the
peak it stops the broker for 60 s x scale (at least 5 s), kills each service with SIGKILL once at a random
moment and restarts it, and restarts PostgreSQL once (the moments are shares of the intake's lines answered:
the broker at 15-35 %, PostgreSQL at 50-65 %, each kill at 5-90 %, so they spread over the peak at any speed);
uploads and the settlement are retried as a client would. Afterwards every backlog must drain with nothing lost or doubled; it reports each recovery time.

    .venv/bin/python bench/month_end.py [--scale 1.0] [--faults] [--seed 1] [--setup-only | --decisions-only]

``BENCH_PORTS=20200-20299`` keeps the services' (and its own broker node's) ports in that range (a machine shared by several runs).

Exit 0 when every final check holds, 1 otherwise.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import io
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlparse

# this folder holds files named like the services' packages (payments.py, reporting.py): take it off the path
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import aio_pika  # noqa: E402
import asyncpg  # noqa: E402
import httpx  # noqa: E402

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402

from seteli_shared import broker  # noqa: E402
from seteli_shared.auth import mint  # noqa: E402
from seteli_shared.devtools import random_business_id  # noqa: E402
from seteli_shared.manifest import NAMES as SERVICES  # noqa: E402
from seteli_shared.ports import free_port  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)
ROOT = _HERE.parent
BIN = Path(sys.executable).parent
RESULTS = _HERE / "results"
FUNDER = "991"  # a test code of no real municipality or county
CATEGORIES = ("home_care", "cleaning", "home_nursing", "family_work", "personal_assistance")
KINDS = ("service_voucher", "client_voucher", "personal_budget")
VALUE = 2800  # a service voucher's value a unit
MAX_VALUE, CLIENT_FEE = 3200, 500  # a client voucher's maximum a unit, its fee a unit
BUDGET = 80_000  # a personal budget a month: 20 units at the dearest price fit
UNITS = 20  # a voucher's units a month: 20 one-unit charges use them up
TARGET_RATIO = 0.7


def _load(name: str):  # noqa: ANN202
    spec = importlib.util.spec_from_file_location(f"bench_{name}", _HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


charge_events = _load("charge_events")  # its raw aio-pika baseline and its consumers' plans
bench_payments = _load("payments")  # its raw-SQL settlement


#: the long stages' progress bars (drawn live on a terminal; on a pipe or in a log only the start and end lines
#: below are written, each with its counts)
PROGRESS = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    auto_refresh=True, transient=False)


def say(text: str) -> None:
    if PROGRESS.live.is_started:
        PROGRESS.console.print(text, markup=False, highlight=False)
    else:
        print(text, flush=True)


def price_of(p: int, c: int) -> int:
    """Provider p's price a unit in category c: 24.00-35.99 EUR."""
    return 2400 + (p * 37 + c * 113) % 1200


def amount_of(kind: str, price: int) -> int:
    """What the funder pays for one unit (payments' rules, written again here from docs: the check)."""
    if kind == "service_voucher":
        return min(price, VALUE)
    if kind == "client_voucher":
        return min(price, MAX_VALUE)
    return price


# ------------------------------------------------------------------ servers
class OwnPostgres:
    """A PostgreSQL instance of this run's own: initdb in a temporary directory, on a free port; stopped and
    removed at the end. Runs as the ``postgres`` user when started by root."""

    def __init__(self) -> None:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        if not found:
            raise RuntimeError("no PostgreSQL binaries under /usr/lib/postgresql/*/bin")
        self.bin = found[-1].parent
        self.dir = Path(tempfile.mkdtemp(prefix="seteli-month-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        self.start()

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        out = subprocess.run([*self.as_user, str(self.bin / tool), *args], capture_output=True, text=True,
                             timeout=180)
        if out.returncode != 0:
            raise RuntimeError(f"{tool} failed: {out.stderr.strip() or out.stdout.strip()}")

    def _ctl(self, action: str) -> None:
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200 "
                "-c fsync=on")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-o", opts, "-w", "-t", "120",
                  *(["-m", "fast"] if action in ("stop", "restart") else []), action)

    def start(self) -> None:
        self._ctl("start")

    def restart(self) -> None:
        self._ctl("restart")

    def remove(self) -> None:
        try:
            self._ctl("stop")
        except Exception:  # noqa: BLE001 (already stopped)
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


class Servers:
    """Where the run's databases and bus live: the machine's (normal run) or servers of its own (``--faults``)."""

    def __init__(self, faults: bool) -> None:
        self.faults = faults
        self.node = self.cluster = self.pg = None
        if faults:
            from seteli_shared import rabbitnodes

            why = rabbitnodes.available()
            if why:
                raise RuntimeError(f"--faults needs a RabbitMQ node of its own: {why}")
            self.pg = OwnPostgres()
            self.cluster = rabbitnodes.Cluster.start(1, label=f"me{os.getpid()}")
            self.node = self.cluster.nodes[0]
            self.amqp_url = self.cluster.urls[0]
            self.pg_dsn = self.pg.dsn
            node = self.node.nodename

            def ctl(*args: str, stdin: str | None = None) -> str:  # seteli-broker's commands, at our node
                r = subprocess.run(["rabbitmqctl", "-q", "-n", node, *args], input=stdin, capture_output=True,
                                   text=True, timeout=120)
                if r.returncode != 0:
                    raise RuntimeError(f"rabbitmqctl {args[0]} failed: {r.stderr.strip() or r.stdout.strip()}")
                return r.stdout

            broker._ctl = ctl
        else:
            self.amqp_url = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
            self.pg_dsn = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
        charge_events.AMQP_URL = self.amqp_url

    def remove(self) -> None:
        if self.cluster is not None:
            self.cluster.remove()
        if self.pg is not None:
            self.pg.remove()


class System:
    """The four services as processes (as ``tests/conftest.py``'s ``system`` starts them), their databases
    and the run's bus namespace; all removed by ``stop``."""

    def __init__(self, servers: Servers, workdir: Path, env: dict[str, str]) -> None:
        self.servers, self.workdir, self.extra = servers, workdir, env
        self.ns = f"month{secrets.token_hex(4)}"
        self.prefix = f"{self.ns}-"
        self.dbs = {name: f"seteli_month_{name}_{secrets.token_hex(4)}" for name in SERVICES}
        self.ports = {name: free_port() for name in SERVICES}
        self.urls = {name: f"http://127.0.0.1:{port}" for name, port in self.ports.items()}
        self.procs: dict[str, subprocess.Popen] = {}
        self.created = False

    def db_url(self, name: str, driver: str | None = "asyncpg") -> str:
        u = urlparse(self.servers.pg_dsn)
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://{u.username or 'postgres'}@{u.hostname}:{u.port or 5432}/{self.dbs[name]}"

    async def start(self) -> None:
        admin = await asyncpg.connect(self.servers.pg_dsn)
        for db in self.dbs.values():
            await admin.execute(f'CREATE DATABASE "{db}"')
        await admin.close()
        self.created = True
        for name in SERVICES:
            self.launch(name)
        await self.ready(list(SERVICES), 180)

    def launch(self, name: str) -> None:
        running = self.procs.get(name)
        if running is not None and running.poll() is None:
            return  # already started again by another recovery waiting at the same time (else one would be orphaned)
        env = dict(os.environ, DATABASE_URL=self.db_url(name), AMQP_URL=self.servers.amqp_url, BUS_NAMESPACE=self.ns,
                   BROKER_USER_PREFIX=self.prefix, ENVIRONMENT="test", DATA_DIR=str(self.workdir),
                   RELAY_IDLE_SECONDS="0.05", EXPIRY_SCHEDULER="false", WEBHOOK_ALLOW_HTTP="true",
                   WEBHOOK_ALLOW_LOOPBACK="true", TRUSTED_PROXIES="", **self.extra)
        log = (self.workdir / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen([str(BIN / f"seteli-{name}"), "serve", "--port", str(self.ports[name])],
                                            env=env, stdout=log, stderr=subprocess.STDOUT)

    async def ready(self, names: list[str], timeout: float, restart: bool = False) -> None:
        """Each service answering its readiness probe. ``restart``: a process that exits meanwhile is started
        again, as a kubelet's restart policy would (a service restarted while PostgreSQL restarts exits at
        startup, "the database system is shutting down")."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as c:
            for name in names:
                while True:
                    try:
                        if (await c.get(f"{self.urls[name]}/health/ready")).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if self.procs[name].poll() is not None:
                        if not restart:
                            raise RuntimeError(f"{name} stopped: see {self.workdir / (name + '.log')}")
                        say(f"  {name} exited (code {self.procs[name].returncode}) while recovering: started again")
                        await asyncio.sleep(1.0)
                        self.launch(name)
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{name} not ready after {timeout:.0f} s: see {self.workdir}/{name}.log")
                    await asyncio.sleep(0.2)

    def cpu(self, name: str) -> float:
        """CPU seconds the service's process has used so far (0 when it is not running)."""
        try:
            return charge_events.cpu_seconds(self.procs[name].pid)
        except (KeyError, OSError):
            return 0.0

    def drain_cpu(self) -> dict[str, float]:
        """CPU seconds so far of each service's process, of the PostgreSQL backends serving its database (by their
        process titles), of the broker's Erlang VM (the machine's node is shared with other runs: all its work) and of
        the whole machine (all cores, ``/proc/stat``): who is busy during a stage, who waits."""
        out = {name: self.cpu(name) for name in SERVICES}
        pg = {name: 0.0 for name in SERVICES}
        out["broker"] = 0.0
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ")
                if b"beam.smp" in cmd:
                    out["broker"] += charge_events.cpu_seconds(int(pid))
                elif cmd.startswith(b"postgres: "):
                    for name, db in self.dbs.items():
                        if db.encode() in cmd:
                            pg[name] += charge_events.cpu_seconds(int(pid))
            except OSError:
                continue
        out.update({f"postgres_{name}": v for name, v in pg.items()})
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:]
        out["machine_busy"] = (sum(int(x) for x in fields) - int(fields[3]) - int(fields[4])) / charge_events.CLOCK_TICKS
        return out

    def kill(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait()

    async def queue_depth(self, queue: str) -> int:
        conn = await aio_pika.connect(self.servers.amqp_url)
        try:
            channel = await conn.channel()
            q = await channel.declare_queue(queue, passive=True)
            return q.declaration_result.message_count
        finally:
            await conn.close()

    async def sql(self, name: str, query: str, *args):  # noqa: ANN002, ANN201
        conn = await asyncpg.connect(self.db_url(name, None))
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    async def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if self.created:
            admin = await asyncpg.connect(self.servers.pg_dsn)
            for db in self.dbs.values():
                await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            await admin.close()
        # every queue, exchange, policy and user of the run's namespace (the providers' notices queues too)
        await broker.remove_namespaces_async([self.ns], "/", self.servers.amqp_url)


# ------------------------------------------------------------------ the run's record
@dataclass
class Stage:
    name: str
    items: int
    start: float
    end: float
    raw: float | None = None  # the raw baseline's items/s
    unit: str = "items"
    note: str = ""

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def rate(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0

    @property
    def ratio(self) -> float | None:
        return self.rate / self.raw if self.raw else None


@dataclass
class Run:
    args: argparse.Namespace
    t0: float = field(default_factory=time.monotonic)
    stages: list[Stage] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)
    facts: dict = field(default_factory=dict)
    recoveries: list[dict] = field(default_factory=list)
    #: seconds spent measuring raw baselines between the first upload and the last report read: not the system's
    #: month-end (the settlement's raw SQL now runs after it, on a copy of the run's charges: none so far)
    raw_in_window: float = 0.0

    def now(self) -> float:
        return time.monotonic() - self.t0

    def stage(self, name: str, items: int, start: float, raw: float | None = None, unit: str = "items",
              note: str = "") -> Stage:
        s = Stage(name, items, start, self.now(), raw, unit, note)
        self.stages.append(s)
        ratio = f", raw {s.raw:,.0f}/s, ratio {s.ratio:.2f}" if s.raw else ""
        say(f"[{s.end:7.1f} s] {name}: {items:,} {unit} in {s.seconds:.1f} s = {s.rate:,.0f}/s{ratio}"
            + (f" ({note})" if note else ""))
        return s

    def begin(self, name: str, items: int, unit: str = "items") -> object:
        """A long stage starts: logged with what it expects, and a progress bar of its own."""
        say(f"[{self.now():7.1f} s] {name}: started, {items:,} {unit} expected")
        return PROGRESS.add_task(name, total=items)

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        self.checks[name] = bool(ok)
        say(f"  check {'OK  ' if ok else 'FAIL'} {name}" + (f": {detail}" if detail else ""))


def bearer(role: str, **claims) -> dict:  # noqa: ANN003
    return {"Authorization": f"Bearer {mint(f'month:{role}', [role], ttl=86400, **claims)}"}


OPERATOR = bearer("operator")


async def retrying(what: str, call, attempts: int = 60, ok=(200, 201), also=()):  # noqa: ANN001, ANN201
    """A call retried as a client retries: on a lost connection or a 5xx (a service restarting, a database
    coming back), a few seconds apart."""
    last = None
    for _ in range(attempts):
        try:
            r = await call()
            if r.status_code in ok:
                return r
            last = f"{r.status_code} {r.text[:300]}"
            if r.status_code < 500 and r.status_code not in (409, *also):
                break
        except (httpx.TransportError, httpx.TimeoutException) as exc:
            last = repr(exc)
        await asyncio.sleep(1.0)
    raise RuntimeError(f"{what}: {last}")


async def until(what: str, check, timeout: float, interval: float = 0.25):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = await check()
            if last is True or (last and not isinstance(last, (int, float))):
                return last
        except (httpx.HTTPError, OSError, asyncpg.PostgresError, aio_pika.exceptions.AMQPError,
                asyncio.TimeoutError, ConnectionError):
            pass
        await asyncio.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


# ------------------------------------------------------------------ 1. registry
async def setup_registry(run: Run, system: System, n_providers: int) -> list[dict]:
    t = run.now()
    approver = bearer("funder_provider_approver", funder_id=FUNDER)
    async with httpx.AsyncClient(base_url=system.urls["registry"], timeout=60, headers=OPERATOR) as reg:
        def post(path: str, body: dict, **kw):  # noqa: ANN003, ANN202  (a 503 while the database is busy: again)
            return retrying(f"POST {path}", lambda: reg.post(path, json=body, **kw))

        await post("/funders", {"funder_id": FUNDER, "name": "Testin hyvinvointialue",
                                "kind": "wellbeing_services_county"})
        for cat in CATEGORIES:
            await post(f"/funders/{FUNDER}/rulebooks", {"category": cat, "rulebook_version": "2026.1",
                                                        "title": f"Palveluseteli {cat}"}, headers=approver)
        providers: list[dict] = [{} for _ in range(n_providers)]
        sem = asyncio.Semaphore(8)
        today = date.today().isoformat()

        async def one(p: int) -> None:
            async with sem:
                r = await post("/providers", {"business_id": random_business_id(), "name": f"Hoivapalvelu {p} Oy",
                                              "iban": "FI2112345600000785"})
                pid = r.json()["id"]
                for c, cat in enumerate(CATEGORIES):
                    await post(f"/providers/{pid}/approvals", {"category": cat}, headers=approver)
                    r = await post(f"/providers/{pid}/price-lists", {
                        "funder_id": FUNDER, "category": cat, "unit_price_cents": price_of(p, c),
                        "effective_from": today})
                    assert r.json()["status"] == "published", r.text
                providers[p] = {"index": p, "id": pid, "channel": "queue" if p % 2 == 0 else "webhook"}

        await asyncio.gather(*(one(p) for p in range(n_providers)))
    run.stage("registry: providers approved for 5 categories, price lists", n_providers, t, unit="providers")
    return providers


# ------------------------------------------------------------------ 2. decisions through the bus
def decision(i: int, today: date) -> dict:
    kind, cat = KINDS[i % len(KINDS)], CATEGORIES[(i // len(KINDS)) % len(CATEGORIES)]
    data = {"decision_ref": f"ME-{i:07d}", "decision_version": 1, "action": "grant", "client_ref": f"as-{i:07d}x",
            "category": cat, "period": "month", "kind": kind,
            "valid_from": (today.replace(day=1) - timedelta(days=31)).isoformat(),
            "valid_until": (today + timedelta(days=300)).isoformat()}
    if kind == "service_voucher":
        data.update(units_per_period=str(UNITS), value_per_unit_cents=VALUE)
    elif kind == "client_voucher":
        data.update(units_per_period=str(UNITS), max_value_per_unit_cents=MAX_VALUE, client_fee_cents=CLIENT_FEE)
    else:
        data.update(budget_cents=BUDGET, categories=[cat])
    return data


async def decisions(run: Run, system: System, n: int, window: int, in_flight: int) -> list[dict]:
    from seteli_client import CaseSystem, decision_envelope

    conn = await aio_pika.connect(system.servers.amqp_url)
    ch = await conn.channel()
    await ch.declare_exchange(f"{system.ns}.decision-replies", aio_pika.ExchangeType.TOPIC, durable=True)
    await conn.close()
    password = secrets.token_hex(8)
    user = await asyncio.to_thread(broker.add_funder_system, FUNDER, password, system.ns, "/", system.prefix)
    system.broker_users = [user]
    u = urlparse(system.servers.amqp_url)
    url = f"amqp://{user}:{password}@{u.hostname}:{u.port or 5672}/"
    today = date.today()
    envelopes = [decision_envelope(FUNDER, decision(i, today)) for i in range(n)]

    # vouchers has heard of the funder (FunderRegistered) when a first decision is accepted
    async with CaseSystem(url, FUNDER, namespace=system.ns) as cs:
        async def first() -> bool:
            probe = decision_envelope(FUNDER, {**decision(0, today), "decision_ref": f"ME-PROBE-{secrets.token_hex(3)}",
                                               "client_ref": "as-probe-x"})
            return (await cs.decide(probe, timeout=30)).accepted
        await until("vouchers to hear of the funder", first, 120, 0.5)

    raw = await charge_events.run_raw([json.dumps(e).encode() for e in envelopes[:run.args.raw_messages]], window)
    held = (await system.sql("payments", "SELECT count(*) AS n FROM payments_voucher"))[0]["n"]
    folded = (await system.sql("reporting", "SELECT count(*) AS n FROM reporting_voucher"))[0]["n"]
    t, cpu, own = run.now(), {name: system.cpu(name) for name in SERVICES}, time.process_time()
    vouchers: list[dict] = []
    # a broker confirm can take over the client's default 10 s on a busy machine: a timed-out publish is not
    # known to be lost, and publishing it again would answer it `repeated`, without the client's login code
    async with CaseSystem(url, FUNDER, namespace=system.ns, reply_prefetch=min(in_flight, 1000),
                          publish_timeout=600) as cs:
        # a stream: up to ``in_flight`` decisions published and unanswered at once, replies collected as they come
        replies = await cs.decide_many(envelopes, in_flight=in_flight, timeout=600)
    for e, r in zip(envelopes, replies):
        if isinstance(r, Exception):
            raise RuntimeError(f"decision {e['data']['decision_ref']} got no reply: {r!r}")
        if not r.accepted:
            raise RuntimeError(f"decision {e['data']['decision_ref']} refused: {r.reason}")
        vouchers.append({"id": r.data["voucher_id"], "code": r.data["voucher_code"],
                         "login": r.data["client_login_code"], "kind": e["data"]["kind"],
                         "category": e["data"]["category"]})
    seconds = max(1e-9, run.now() - t)
    used = {name: system.cpu(name) - cpu[name] for name in SERVICES}
    used["case system"] = time.process_time() - own  # this process: the publisher and its replies
    run.stage("decisions through the bus (case system -> voucher -> reply)", n, t, raw, unit="decisions",
              note=f"{in_flight} in flight; CPU a decision: " + ", ".join(
                  f"{name} {1000 * c / max(1, n):.2f} ms ({100 * c / seconds:.0f} % of a core)"
                  for name, c in used.items() if c > 0.005))

    # payments' projection is not on the reply's path: its CPU until it holds every voucher (off the stage's clock)
    async def payments_has_all() -> bool:
        return (await system.sql("payments", "SELECT count(*) AS n FROM payments_voucher"))[0]["n"] >= held + n
    await until("payments to hold every voucher", payments_has_all, 600, 0.2)
    drained, payments_cpu = run.now() - t, system.cpu("payments") - cpu["payments"]
    say(f"  payments held every voucher {drained:.1f} s after the first decision; its CPU to then "
        f"{1000 * payments_cpu / max(1, n):.2f} ms a decision")

    # and reporting's fold of the vouchers: every process's CPU until both consumers hold them all (off the clock)
    async def reporting_has_all() -> bool:
        return (await system.sql("reporting", "SELECT count(*) AS n FROM reporting_voucher"))[0]["n"] >= folded + n
    await until("reporting to hold every voucher", reporting_has_all, 600, 0.2)
    done = run.now() - t
    used = {name: system.cpu(name) - cpu[name] for name in SERVICES}
    used["case system"] = time.process_time() - own
    say(f"  reporting held every voucher {done:.1f} s after the first decision; CPU a decision to then: "
        + ", ".join(f"{name} {1000 * c / max(1, n):.2f} ms" for name, c in used.items())
        + f"; in all {1000 * sum(used.values()) / max(1, n):.2f} ms")
    return vouchers


# ------------------------------------------------------------------ 3. providers chosen
async def choices(run: Run, system: System, vouchers: list[dict], providers: list[dict], workers: int = 16) -> None:
    """Each client logs in and chooses, ``workers`` at a time. Clients come from many addresses (vouchers
    counts login attempts per address, one after another): each worker calls from a loopback address of its
    own (127.0.1.<n>)."""
    for i, v in enumerate(vouchers):
        v["provider"] = (i * 7919) % len(providers)  # spread over the providers
    t, cpu = run.now(), system.cpu("vouchers")

    spent = {"login": 0.0, "choice": 0.0}

    async def one(c: httpx.AsyncClient, v: dict) -> None:
        t0 = time.perf_counter()
        login = await retrying("client login", lambda: c.post("/client-sessions", json={
            "voucher_code": v["code"], "client_login_code": v["login"]}))
        token = {"Authorization": f"Bearer {login.json()['access_token']}"}
        t1 = time.perf_counter()
        # vouchers learns of the approvals from the bus: the first choices may have to wait for them
        await retrying("provider choice", lambda: c.post(
            f"/vouchers/{v['id']}/provider", headers=token, json={"provider_id": providers[v["provider"]]["id"]}),
            attempts=120, ok=(200,), also=(422,))
        spent["login"] += t1 - t0
        spent["choice"] += time.perf_counter() - t1

    async def worker(k: int) -> None:
        transport = httpx.AsyncHTTPTransport(local_address=f"127.0.1.{k + 1}")
        async with httpx.AsyncClient(base_url=system.urls["vouchers"], timeout=60, transport=transport) as c:
            for v in vouchers[k::workers]:
                await one(c, v)

    await asyncio.gather(*(worker(k) for k in range(workers)))
    n = max(1, len(vouchers))
    run.stage("providers chosen (client login + choice, HTTP)", len(vouchers), t, unit="vouchers",
              note=f"{workers} clients at a time; a login {1000 * spent['login'] / n:.0f} ms, a choice "
                   f"{1000 * spent['choice'] / n:.0f} ms, retries included; vouchers' CPU "
                   f"{1000 * (system.cpu('vouchers') - cpu) / n:.2f} ms a voucher")


# ------------------------------------------------------------------ 4. the providers' files
@dataclass
class Line:
    voucher: dict
    ref: str
    day: date
    units: int
    price: int
    good: bool
    why: str = ""  # the refusal planned for a bad line


def files(vouchers: list[dict], providers: list[dict], n_charges: int, rng: random.Random) -> dict[int, list[Line]]:
    """Each provider's lines: ``n_charges`` good ones (one unit each, 20 a voucher at most) and about 1 %
    that payments must refuse, at the end of the file (after the units they exceed)."""
    today = date.today()
    days = [today.replace(day=d) for d in range(1, today.day + 1)]
    per_voucher = max(1, min(UNITS, n_charges // max(1, len(vouchers))))
    out: dict[int, list[Line]] = {p["index"]: [] for p in providers}
    cats = {c: i for i, c in enumerate(CATEGORIES)}
    made = 0
    for v in vouchers:
        p = v["provider"]
        for k in range(per_voucher):
            if made >= n_charges:
                break
            out[p].append(Line(v, f"m-{v['id'][:12]}-{k}", days[k % len(days)], 1,
                               price_of(p, cats[v["category"]]), True))
            made += 1
    bad_kinds = ("units_exceeded", "unknown_voucher", "not_chosen_provider", "future_date")
    for p, lines in out.items():
        mine = [ln.voucher for ln in lines[::per_voucher]]
        # (a personal budget may be charged by any provider approved for its categories: not one of these)
        others = [v for v in vouchers if v["provider"] != p and v["kind"] != "personal_budget"][:50]
        for j in range(max(1, round(len(lines) * 0.01)) if lines else 0):
            why = bad_kinds[(j + p) % len(bad_kinds)]
            v = rng.choice(mine)
            price = price_of(p, cats[v["category"]])
            if why == "units_exceeded" and v["kind"] != "personal_budget" and per_voucher == UNITS:
                lines.append(Line(v, f"m-bad-{p}-{j}", today, 1, price, False, why))
            elif why == "unknown_voucher" or why == "units_exceeded":
                lines.append(Line({**v, "id": "nosuch" + secrets.token_hex(8), "code": "ZZZZZZZZZZ"},
                                  f"m-bad-{p}-{j}", today, 1, price, False, "unknown_voucher"))
            elif why == "not_chosen_provider" and others:
                lines.append(Line(rng.choice(others), f"m-bad-{p}-{j}", today, 1, price, False, why))
            else:
                lines.append(Line(v, f"m-bad-{p}-{j}", today + timedelta(days=3), 1, price, False, "future_date"))
    return out


def as_csv(lines: list[Line]) -> bytes:
    """The Finnish spreadsheet form: semicolons, day.month.year, decimal commas, euros."""
    buf = io.StringIO()
    buf.write("voucher_code;provider_reference;service_date;units;unit_price\n")
    for ln in lines:
        buf.write(f"{ln.voucher['code']};{ln.ref};{ln.day.day}.{ln.day.month}.{ln.day.year};{ln.units},0;"
                  f"{ln.price // 100},{ln.price % 100:02d}\n")
    return buf.getvalue().encode()


def as_json(lines: list[Line]) -> bytes:
    return json.dumps([{"voucher_id": ln.voucher["id"], "provider_reference": ln.ref,
                        "service_date": ln.day.isoformat(), "units": str(ln.units), "unit_price_cents": ln.price}
                       for ln in lines]).encode()


#: lines a transaction of the raw intake baseline (payments' bulk rules and writes its lines in chunks too)
RAW_INTAKE_CHUNK = 2500
#: payments' tables the raw intake baseline writes into, each copied empty with its columns, defaults and indexes
RAW_INTAKE_TABLES = ("payments_charge", "payments_ledger_transaction", "payments_ledger_entry", "outbox")


async def raw_copy(system: System, by_provider: dict[int, list[Line]]) -> float:
    """The intake's raw baseline, lines a second: the good lines' minimal work by hand on one connection, in
    payments' database but on scratch copies of its tables (``LIKE ... INCLUDING ALL``: the same columns and
    indexes, empty, as payments' are before the month's files). Per chunk of ``RAW_INTAKE_CHUNK`` lines one
    transaction locks the chunk's vouchers (in order) and reads their terms, then writes by COPY a charge row, a
    ledger transaction and its two entries a line and one ``charge.accepted.v2``-like outbox row per funder. No
    rules beyond the voucher's price, no idempotency, audit, events' bodies or answer: what payments does beyond
    this is what the ratio measures. The copies are dropped afterwards."""
    import uuid

    good = [ln for lines in by_provider.values() for ln in lines if ln.good]
    conn = await asyncpg.connect(system.db_url("payments", None))
    tag = secrets.token_hex(4)
    copies = {t: f"raw_{tag}_{t}" for t in RAW_INTAKE_TABLES}
    voucher_copy = f"raw_{tag}_voucher"
    try:
        for table, copy in copies.items():
            await conn.execute(f"CREATE TABLE {copy} (LIKE {table} INCLUDING ALL)")
        await conn.execute(f"CREATE TABLE {voucher_copy} AS SELECT voucher_id, funder_id, provider_id, category, "
                           f"value_per_unit_cents FROM payments_voucher")
        await conn.execute(f"ALTER TABLE {voucher_copy} ADD PRIMARY KEY (voucher_id)")
        await conn.execute(f"ANALYZE {voucher_copy}")
        t0 = time.perf_counter()
        for c in range(0, len(good), RAW_INTAKE_CHUNK):
            chunk = good[c:c + RAW_INTAKE_CHUNK]
            async with conn.transaction():
                terms = {r["voucher_id"]: r for r in await conn.fetch(
                    f"SELECT voucher_id, funder_id, provider_id, category FROM {voucher_copy} "
                    "WHERE voucher_id = ANY($1::text[]) ORDER BY voucher_id FOR UPDATE",
                    sorted({ln.voucher["id"] for ln in chunk}))}
                now = datetime.now(timezone.utc)
                charges, txns, entries, listed = [], [], [], {}
                for ln in chunk:
                    v = terms[ln.voucher["id"]]
                    cid, tid, amount = uuid.uuid4().hex, uuid.uuid4().hex, ln.price * ln.units
                    charges.append((cid, ln.voucher["id"], v["funder_id"], v["provider_id"], v["category"], ln.ref,
                                    ln.day, ln.units * 100, ln.price, amount, 0, False, "accepted", now))
                    txns.append((tid, "charge", cid, now))
                    entries += [(tid, f"funder:{v['funder_id']}:voucher_spend", amount),
                                (tid, f"provider:{v['provider_id']}:payable", -amount)]
                    listed.setdefault(v["funder_id"], []).append({"charge_id": cid, "amount_cents": amount})
                outbox = [(uuid.uuid4().hex, "charge.accepted.v2", json.dumps({"funder_id": f, "charges": its}),
                           now, 0) for f, its in listed.items()]
                await conn.copy_records_to_table(copies["payments_charge"], records=charges, columns=(
                    "id", "voucher_id", "funder_id", "provider_id", "category", "provider_reference",
                    "service_date", "units_x100", "unit_price_cents", "amount_cents", "own_share_cents",
                    "price_registered", "status", "accepted_at"))
                await conn.copy_records_to_table(copies["payments_ledger_transaction"], records=txns,
                                                 columns=("id", "kind", "reference", "created_at"))
                await conn.copy_records_to_table(copies["payments_ledger_entry"], records=entries,
                                                 columns=("transaction_id", "account", "amount_cents"))
                await conn.copy_records_to_table(copies["outbox"], records=outbox, columns=(
                    "message_id", "routing_key", "body", "created_at", "attempts"))
        return len(good) / (time.perf_counter() - t0)
    finally:
        for copy in [*copies.values(), voucher_copy]:
            await conn.execute(f"DROP TABLE IF EXISTS {copy}")
        await conn.close()


async def intake(run: Run, system: System, providers: list[dict], by_provider: dict[int, list[Line]],
                 parallel: int, task: object = None, answered: dict | None = None) -> dict[str, str]:
    """Every provider's file uploaded, ``parallel`` at a time; a lost answer (a service or database restarting)
    is sent again, as a billing system would: the lines charged already come back ``repeated``."""
    outcome: dict[str, str] = {}  # provider reference -> accepted/repeated or the refusal's reason
    sem = asyncio.Semaphore(parallel)
    limits = httpx.Limits(max_connections=parallel, max_keepalive_connections=parallel)
    async with httpx.AsyncClient(base_url=system.urls["payments"], timeout=1800, limits=limits) as c:
        async def upload(p: dict) -> None:
            lines = by_provider[p["index"]]
            if not lines:
                return
            csv_form = p["index"] % 2 == 0
            body = as_csv(lines) if csv_form else as_json(lines)
            headers = {**bearer("provider_charger", provider_id=p["id"]),
                       "Content-Type": "text/csv; charset=utf-8" if csv_form else "application/json"}
            async with sem:
                r = await retrying(f"bulk upload of provider {p['index']}",
                                   lambda: c.post("/charges/bulk", content=body, headers=headers), attempts=300)
            for res in r.json()["results"]:
                outcome[res["provider_reference"]] = res["status"] if res["status"] != "refused" else res["reason"]
            if task is not None:
                PROGRESS.advance(task, len(lines))
            if answered is not None:
                answered["lines"] += len(lines)
        await asyncio.gather(*(upload(p) for p in providers))
    return outcome


# ------------------------------------------------------------------ waiting for the consumers
async def figures(system: System) -> dict:
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.get(f"{system.urls['reporting']}/funders/{FUNDER}/figures",
                        headers=bearer("funder_reporting", funder_id=FUNDER))
        r.raise_for_status()
        return r.json()


async def caught_up(system: System, key: str, wanted: int, task: object = None, marks: dict | None = None,
                    now: float = 0.0) -> bool:
    """Reporting's figures hold ``wanted`` and every queue of the events is empty. ``marks`` (with the run's
    ``now``) records when reporting first held them (``reporting``) and when vouchers' queue was then first
    empty (``vouchers``): which consumer the stage waited for."""
    f = await figures(system)
    if task is not None:
        PROGRESS.update(task, completed=min(f[key], wanted))
    if f[key] < wanted:
        return False
    if marks is not None:
        marks.setdefault("reporting", now)
    # (settlement notices to providers without a queue wait in the outbox, parked: not the events' backlog)
    unsent = (await system.sql("payments", "SELECT count(*) FROM outbox WHERE sent_at IS NULL "
                                           "AND routing_key NOT LIKE 'notices/%'"))[0][0]
    vouchers_empty = await system.queue_depth(f"{system.ns}.vouchers") == 0
    if marks is not None and vouchers_empty:
        marks.setdefault("vouchers", now)
    return unsent == 0 and vouchers_empty and await system.queue_depth(f"{system.ns}.reporting") == 0


# ------------------------------------------------------------------ 6. settlement
#: the tables the raw settlement reads or writes: copied (structure and indexes) into a schema of its own
RAW_SETTLEMENT_TABLES = ("payments_charge", "payments_settlement", "payments_ledger_transaction",
                         "payments_ledger_entry", "outbox")


async def raw_settlement_rate(system: System, settlement_ids: list[str], charges: int) -> float:
    """The settlement's raw-SQL baseline (``bench/payments.py``'s statements, with the ``charge.settled.v2``
    outbox rows payments writes too), measured **after** the real run, on a copy of its own: the run's charges
    as they were before it (accepted, unsettled) in a scratch schema beside empty copies of the other tables it
    writes, rolled back, then the schema dropped. The real run thus reads its charges first (no baseline
    warming its pages just before), and the month-end's clock does not hold the baseline."""
    conn = await asyncpg.connect(system.db_url("payments", None))
    schema = f"raw_settle_{uuid.uuid4().hex[:8]}"
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        for table in RAW_SETTLEMENT_TABLES:
            await conn.execute(f"CREATE TABLE {schema}.{table} (LIKE public.{table} INCLUDING ALL)")
        cols = [r[0] for r in await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' "
            "AND table_name = 'payments_charge' ORDER BY ordinal_position")]
        reset = {"status": "'accepted'", "settlement_id": "NULL", "fee_cents": "NULL", "net_cents": "NULL"}
        await conn.execute(
            f"INSERT INTO {schema}.payments_charge ({', '.join(cols)}) SELECT "
            f"{', '.join(reset.get(c, c) for c in cols)} FROM public.payments_charge WHERE settlement_id = ANY($1)",
            settlement_ids)
        await conn.execute(f"ANALYZE {schema}.payments_charge")
        copied = (await conn.fetchrow(f"SELECT count(*) FROM {schema}.payments_charge"))[0]
        assert copied == charges, f"raw settlement baseline: {copied} charges copied, {charges} settled"
        await conn.execute(f"SET search_path TO {schema}, public")
        tr = conn.transaction()
        await tr.start()
        t0 = time.perf_counter()
        for sql in bench_payments.raw_settlement_sql("v2", 1000):
            await conn.execute(sql)
        elapsed = time.perf_counter() - t0
        await tr.rollback()
        return charges / elapsed
    finally:
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await conn.close()


async def pages(c: httpx.AsyncClient, path: str, headers: dict) -> list[dict]:
    out, cursor = [], None
    while True:
        r = await retrying(f"GET {path}", lambda: c.get(path, headers=headers,
                                                        params={"limit": 500, **({"cursor": cursor} if cursor else {})}))
        body = r.json()
        out += body["items"]
        cursor = body.get("next_cursor")
        if not cursor:
            return out


# ------------------------------------------------------------------ notices: queues and the webhook receiver
class Receivers:
    """Half the providers read their notices queue (declared by the operator for them), half have a webhook to
    a local receiver that checks every request's signature. Counts what each receives."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.queue_deliveries: Counter = Counter()  # notice id -> times received on a queue
        self.webhook_deliveries: Counter = Counter()
        self.bad_signatures = 0
        self.by_provider: dict[str, set[str]] = {}
        self.secrets: dict[str, str] = {}
        self.port = free_port()
        self._server = None
        self._conn = None
        self._queues: list = []

    def _note(self, provider_id: str, envelope: dict, counter: Counter) -> None:
        counter[envelope["id"]] += 1
        self.by_provider.setdefault(provider_id, set()).add(envelope["data"].get("settlement_id")
                                                            or envelope["subject"] or "")

    async def start(self, providers: list[dict]) -> None:
        import uvicorn
        from starlette.applications import Starlette
        from starlette.responses import Response
        from starlette.routing import Route

        from seteli_client import webhooks

        async def hook(request) -> Response:  # noqa: ANN001
            pid = request.path_params["pid"]
            body = await request.body()
            if not webhooks.verify(self.secrets.get(pid, ""), request.headers.get("x-seteli-signature", ""), body):
                self.bad_signatures += 1
                return Response(status_code=401)
            self._note(pid, json.loads(body), self.webhook_deliveries)
            return Response(status_code=204)

        app = Starlette(routes=[Route("/hooks/{pid}", hook, methods=["POST"])])
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                     lifespan="off"))
        self._task = asyncio.create_task(self._server.serve())
        ns = self.system.ns
        self._conn = await aio_pika.connect_robust(self.system.servers.amqp_url)
        channel = await self._conn.channel()
        await channel.set_qos(prefetch_count=100)
        # as seteli-broker defines it (payments declares it when it first publishes a notice)
        exchange = await channel.declare_exchange(f"{ns}.notices", aio_pika.ExchangeType.TOPIC, durable=True)
        async with httpx.AsyncClient(base_url=self.system.urls["payments"], timeout=30, headers=OPERATOR) as c:
            for p in providers:
                pid = p["id"]
                if p["channel"] == "queue":
                    q = await channel.declare_queue(f"{ns}.notices.{pid}", durable=True,
                                                    arguments={"x-queue-type": "quorum"})
                    await q.bind(exchange, f"notice.{pid}.#")

                    async def on_message(m, pid=pid) -> None:  # noqa: ANN001
                        async with m.process():
                            self._note(pid, json.loads(m.body), self.queue_deliveries)
                    await q.consume(on_message)
                    self._queues.append(q)  # kept: a robust connection restores what it holds
                else:
                    r = await c.put(f"/providers/{pid}/webhook", json={"url": f"http://127.0.0.1:{self.port}/hooks/{pid}"})
                    assert r.status_code == 200, r.text
                    self.secrets[pid] = r.json()["secret"]

    async def stop(self) -> None:
        if self._conn is not None:
            ch = await self._conn.channel()
            for q in self._queues:
                try:
                    await ch.queue_delete(q.name)
                except Exception:  # noqa: BLE001
                    pass
            await self._conn.close()
        if self._server is not None:
            self._server.should_exit = True
            await self._task


# ------------------------------------------------------------------ faults
class Faults:
    """During the peak: the broker stopped for a while, each service killed (SIGKILL) at a random moment and
    restarted at once, PostgreSQL restarted once; how long each took to recover."""

    def __init__(self, run: Run, system: System, rng: random.Random, progress: Callable[[], float]) -> None:
        """``progress`` is the intake's share answered so far (0 to 1): each fault waits for its share of the
        uploads rather than for a time, so the faults spread over the peak however fast or slow the machine is."""
        self.run, self.system, self.rng, self.progress = run, system, rng, progress
        stop = run.args.broker_stop
        self.broker_seconds = stop if stop is not None else max(5.0, 60.0 * run.args.scale)

    async def _at(self, share: float) -> None:
        while self.progress() < share:
            await asyncio.sleep(0.1)

    async def _recovered(self, names: list[str]) -> None:
        await self.system.ready(names, 600, restart=True)

    async def kill(self, name: str, at: float) -> None:
        await self._at(at)
        t = self.run.now()
        await asyncio.to_thread(self.system.kill, name)
        self.system.launch(name)
        await self._recovered([name])
        self._record(f"{name} killed (SIGKILL) and restarted", t, t)

    async def broker(self, at: float) -> None:
        await self._at(at)
        node = self.system.servers.node
        t = self.run.now()
        await asyncio.to_thread(node.stop_app)
        await asyncio.sleep(self.broker_seconds)
        back = self.run.now()
        await asyncio.to_thread(node.start_app)
        await self._recovered(list(SERVICES))
        self._record(f"RabbitMQ stopped for {self.broker_seconds:.0f} s", t, back)

    async def postgres(self, at: float) -> None:
        await self._at(at)
        t = self.run.now()
        await asyncio.to_thread(self.system.servers.pg.restart)
        await self._recovered(list(SERVICES))
        self._record("PostgreSQL restarted", t, t)

    def _record(self, what: str, start: float, back: float) -> None:
        done = self.run.now()
        self.run.recoveries.append({"fault": what, "at_s": round(start, 1), "recovered_s": round(done - back, 1)})
        say(f"[{done:7.1f} s] fault: {what} at {start:.1f} s; ready again {done - back:.1f} s after (the service "
            "killed; for the broker and the database every service)")

    def tasks(self) -> list[asyncio.Task]:
        """The broker stopped when 15-35 % of the lines have their answers, PostgreSQL restarted at 50-65 %,
        each service killed at a random share between 5 and 90 %."""
        jobs = [self.broker(self.rng.uniform(0.15, 0.35)), self.postgres(self.rng.uniform(0.5, 0.65))]
        jobs += [self.kill(name, self.rng.uniform(0.05, 0.9)) for name in SERVICES]
        return [asyncio.create_task(j) for j in jobs]


# ------------------------------------------------------------------ reports
REPORT_RAW = {  # the figures each report shows, straight from reporting's tables
    "monthly report": "SELECT category, vouchers_issued, clients_served, charges, units_x100, charged_cents, "
                      "own_share_cents, settled_charges, settled_gross_cents, fee_cents, net_cents "
                      "FROM reporting_category_month WHERE funder_id = $1 AND period = $2 ORDER BY category",
    "price development": "SELECT category, count(*), avg(unit_price_cents) FROM reporting_price_list "
                         "WHERE funder_id = $1 AND effective_from <= now() GROUP BY category",
    "suppression audit": "SELECT m.category, m.charges, m.clients_served, count(c.*) FROM reporting_category_month m "
                         "LEFT JOIN reporting_client_month c ON (c.funder_id, c.period, c.category) = "
                         "(m.funder_id, m.period, m.category) WHERE m.funder_id = $1 AND m.period = $2 "
                         "GROUP BY 1, 2, 3",
}


async def read_reports(run: Run, system: System, reads: int) -> dict:
    viewer = bearer("funder_reporting", funder_id=FUNDER)
    paths = {"monthly report": f"/funders/{FUNDER}/reports/monthly",
             "price development": f"/funders/{FUNDER}/reports/prices",
             "suppression audit": f"/funders/{FUNDER}/reports/monthly/audit"}
    out = {}
    conn = await asyncpg.connect(system.db_url("reporting", None))
    try:
        async with httpx.AsyncClient(base_url=system.urls["reporting"], timeout=120, headers=viewer) as c:
            for label, path in paths.items():
                t = run.now()
                for _ in range(reads):
                    r = await c.get(path)
                    assert r.status_code == 200, r.text
                out[label] = r.json()
                sql = REPORT_RAW[label]
                params = (FUNDER, date.today().strftime("%Y-%m")) if "$2" in sql else (FUNDER,)
                t0 = time.perf_counter()
                for _ in range(reads):
                    await conn.fetch(sql, *params)
                raw = reads / (time.perf_counter() - t0)
                run.stage(f"report read back: {label}", reads, t, raw, unit="reads")
    finally:
        await conn.close()
    return out


async def hot_plans(system: System) -> dict:
    pg = {name: await asyncpg.connect(system.db_url(name, None)) for name in ("vouchers", "reporting", "payments")}
    try:
        out = await charge_events.plans(SimpleNamespace(pg=pg))
        for label, sql in {
            "payments: the charges a settlement run takes":
                "SELECT id FROM payments_charge WHERE status = 'accepted' AND settlement_id IS NULL",
            "payments: a voucher's units used this month (a bulk line's check)":
                "SELECT coalesce(sum(units_x100), 0) FROM payments_charge WHERE voucher_id = 'x' "
                "AND service_date >= current_date - 30",
            "reporting: a funder's monthly report rows":
                f"SELECT * FROM reporting_category_month WHERE funder_id = '{FUNDER}'",
        }.items():
            try:
                out[label] = [r[0] for r in await pg[label.split(":")[0]].fetch("EXPLAIN " + sql)]
            except asyncpg.PostgresError as exc:
                out[label] = [f"(no plan: {exc})"]
        return out
    finally:
        for c in pg.values():
            await c.close()


# ------------------------------------------------------------------ the month
async def month(run: Run, system: System, rng: random.Random) -> None:
    a = run.args
    n_providers = max(2, round(200 * a.scale))
    n_vouchers = max(n_providers, round(50_000 * a.scale))
    n_charges = max(n_vouchers, round(1_000_000 * a.scale))
    run.facts.update(providers=n_providers, vouchers=n_vouchers, charges=n_charges, scale=a.scale, faults=a.faults)
    say(f"month-end at scale {a.scale}: {n_providers} providers, {n_vouchers:,} vouchers, {n_charges:,} charges"
        + (" -- with faults on servers of its own" if a.faults else ""))

    raw_events = await charge_events.run_raw(
        [json.dumps({"type": "fi.seteli.charge.accepted.v1", "data": {"charge_id": uuid.uuid4().hex,
                                                                       "amount_cents": 2800}}).encode()
         for _ in range(min(a.raw_messages, n_charges))], 256)
    say(f"raw aio-pika publish+consume: {raw_events:,.0f} msg/s")

    providers = await setup_registry(run, system, n_providers)
    vouchers = await decisions(run, system, n_vouchers, a.window, a.in_flight)
    if a.decisions_only:
        run.check("every decision accepted", len(vouchers) == n_vouchers)
        return
    await choices(run, system, vouchers, providers)
    if a.setup_only:
        run.check("every decision accepted and every voucher chosen", len(vouchers) == n_vouchers)
        return
    receivers = Receivers(system)
    await receivers.start(providers)
    system.receivers = receivers

    # payments hears of every voucher and choice before the files come (else: unknown voucher, not chosen)
    async def chosen_in_payments() -> bool:
        rows = await system.sql("payments", "SELECT count(*) FROM payments_voucher WHERE provider_id IS NOT NULL")
        return rows[0][0] >= n_vouchers
    await until("payments to hear of every choice", chosen_in_payments, 600, 0.5)
    await until("payments' records of the choices", _payments_knows(system, n_vouchers), 600, 0.5)

    by_provider = files(vouchers, providers, n_charges, rng)
    good = [ln for lines in by_provider.values() for ln in lines if ln.good]
    bad = [ln for lines in by_provider.values() for ln in lines if not ln.good]
    expected_total = sum(amount_of(ln.voucher["kind"], ln.price) * ln.units for ln in good)
    raw_intake = await raw_copy(system, by_provider)
    run.facts.update(lines=len(good) + len(bad), good_lines=len(good), bad_lines=len(bad),
                     expected_total_cents=expected_total)

    # ---- the month-end proper: first upload to last report read
    start = run.now()
    fault_tasks: list[asyncio.Task] = []
    answered = {"lines": 0}  # lines whose uploads have their answers: the faults' clock
    if a.faults:
        n_lines = len(good) + len(bad)
        fault_tasks = Faults(run, system, rng, lambda: answered["lines"] / n_lines).tasks()
    outcome = await intake(run, system, providers, by_provider, a.parallel,
                           run.begin("intake: bulk CSV + JSON uploads", len(good) + len(bad), "lines"), answered)
    accepted_task = run.begin("accepted events: relay -> vouchers + reporting", len(good), "charges")
    run.stage("intake: bulk CSV + JSON uploads", len(good) + len(bad), start, raw_intake, unit="lines",
              note=f"{a.parallel} in parallel; raw = the good lines' charge, ledger and outbox rows by COPY on one "
                   "connection into copies of payments' tables, a transaction a chunk of 2,500")
    await until("reporting to hold every accepted charge", lambda: caught_up(system, "charges_accepted", len(good), accepted_task),
                a.timeout)
    run.stage("accepted events: relay -> vouchers + reporting", len(good), start, raw_events, unit="charges",
              note="from the first upload; raw = aio-pika publish+consume")
    for t in fault_tasks:
        await t  # every fault done, every service back

    # ---- settlement
    t = settle_start = run.now()  # its raw baseline is measured after the month-end, on a copy (raw_settlement_rate)
    settle_task = run.begin("settlement run (POST /settlement-runs)", len(good), "charges")
    async with httpx.AsyncClient(base_url=system.urls["payments"], timeout=3600, headers=OPERATOR) as c:
        job_id = str(uuid.uuid4())  # the X-Correlation-ID (a UUID) names the run's progress row

        async def follow() -> None:  # the run's progress resource (GET /jobs/{id}) while its request runs
            while True:
                await asyncio.sleep(1.0)
                try:
                    r = await c.get(f"/jobs/{job_id}")
                    if r.status_code == 200:
                        PROGRESS.update(settle_task, completed=r.json()["done"])
                except httpx.HTTPError:
                    pass
        follower = asyncio.create_task(follow())
        try:
            await retrying("settlement run", lambda: c.post("/settlement-runs", headers={"X-Correlation-ID": job_id}),
                           attempts=60)
        finally:
            follower.cancel()
        settlements = await pages(c, "/settlements", OPERATOR)
        PROGRESS.update(settle_task, completed=sum(s["charge_count"] for s in settlements))
    settled_count = sum(s["charge_count"] for s in settlements)
    run.stage("settlement run (POST /settlement-runs)", settled_count, t, None, unit="charges",
              note="raw = the same work in SQL on a copy of the charges, after the month-end, rolled back")
    settle_stage = run.stages[-1]
    settled_task = run.begin("settled events: relay -> vouchers + reporting", settled_count, "charges")
    answered, marks, cpu_before, load_before = run.now(), {}, system.drain_cpu(), os.getloadavg()[0]
    await until("reporting to hold every settled charge",
                lambda: caught_up(system, "charges_settled", len(good), settled_task, marks, run.now()),
                a.timeout)
    drained = run.now() - answered
    used = {k: v - cpu_before.get(k, 0.0) for k, v in system.drain_cpu().items()}
    run.facts["settled_drain_cpu_s"] = {k: round(v, 2) for k, v in used.items()}
    run.facts["settled_drain_s"] = round(drained, 2)
    run.facts["settled_drain_load"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    say(f"  CPU from the run's answer until drained ({drained:.1f} s, load {load_before:.2f} -> "
        f"{os.getloadavg()[0]:.2f}), share of one core: " + ", ".join(
            f"{k} {v / max(drained, 1e-9):.2f}" for k, v in used.items()))
    run.stage("settled events: relay -> vouchers + reporting", settled_count, t, raw_events, unit="charges",
              note="from the run's start; raw = aio-pika publish+consume")
    # the run is one transaction: its events leave payments' outbox only once it has answered. The stage above
    # holds the run itself; the folds alone are timed from its answer (the settled fold's own rate)
    for who in ("reporting", "vouchers"):
        took = marks.get(who, run.now()) - answered
        run.facts[f"settled_fold_{who}_after_run_s"] = round(took, 1)
        run.facts[f"settled_fold_{who}_per_s"] = round(settled_count / took) if took > 0 else None
    say(f"  settled events after the run answered: reporting held them all in "
        f"{run.facts['settled_fold_reporting_after_run_s']} s ({run.facts['settled_fold_reporting_per_s']}/s), "
        f"vouchers' queue empty after {run.facts['settled_fold_vouchers_after_run_s']} s "
        f"({run.facts['settled_fold_vouchers_per_s']}/s)")

    # ---- pain.001, notices, invoice
    t = run.now()
    transfers = 0
    transfer_cents = 0
    async with httpx.AsyncClient(base_url=system.urls["payments"], timeout=600, headers=OPERATOR) as c:
        runs_ = await pages(c, "/settlement-runs", OPERATOR)
        for r_ in runs_:
            r = await c.get(f"/settlement-runs/{r_['id']}/payment-file")
            if r.status_code == 409:
                continue
            assert r.status_code == 200, r.text
            root = ET.fromstring(r.content)
            for el in root.iter():
                if el.tag.endswith("InstdAmt"):
                    transfers += 1
                    transfer_cents += round(float(el.text) * 100)
    run.stage("pain.001 payment files", transfers, t, unit="transfers")
    t = settle_start
    ids = {s["id"] for s in settlements}
    await until("every settlement notice at its receiver", lambda: _notices_in(receivers, settlements), a.timeout)
    run.stage("settlement notices (queues + signed webhooks)", len(ids), t, unit="notices",
              note="from the run's start")
    t = run.now()
    month_ = date.today().strftime("%Y-%m")
    async with httpx.AsyncClient(base_url=system.urls["payments"], timeout=600) as c:
        inv = (await retrying("invoice", lambda: c.get(f"/funders/{FUNDER}/invoices/{month_}",
                                                        headers=bearer("funder_finance", funder_id=FUNDER)))).json()
    run.stage("funder invoice of the month", 1, t, unit="invoices")
    reports = await read_reports(run, system, a.reads)
    wall = run.now() - start
    run.facts["month_end_wall_seconds"] = round(wall, 1)
    run.facts["raw_baselines_in_window_seconds"] = round(run.raw_in_window, 1)
    run.facts["month_end_seconds"] = round(wall - run.raw_in_window, 1)
    say(f"month-end from the first upload to the last report read: {run.facts['month_end_seconds']:.1f} s "
        f"({wall:.1f} s on the clock, less {run.raw_in_window:.1f} s of raw baselines run in between)")
    settle_stage.raw = await raw_settlement_rate(system, sorted(s["id"] for s in settlements), settled_count)
    say(f"settlement's raw baseline (after the month-end, on a copy of the run's charges): "
        f"{settle_stage.raw:,.0f} charges/s; the run {settle_stage.rate:,.0f}/s = {settle_stage.rate / settle_stage.raw:.2f}")

    # ---- final checks
    async with httpx.AsyncClient(base_url=system.urls["payments"], timeout=600, headers=OPERATOR) as c:
        ledger = (await c.get("/ledger/check")).json()
    f = await figures(system)
    gross = sum(s["gross_cents"] for s in settlements)
    net = sum(s["net_cents"] for s in settlements)
    refused = Counter(v for ref, v in outcome.items() if v not in ("accepted", "repeated"))
    good_refs = {ln.ref for ln in good}
    run.check("ledger invariants (GET /ledger/check)", ledger.get("ok"), json.dumps(ledger)[:300])
    run.check("every good line charged, once", all(outcome.get(ref) in ("accepted", "repeated") for ref in good_refs)
              and settled_count == len(good), f"{settled_count:,} settled of {len(good):,} lines")
    planned = Counter(f"{ln.why} -> {outcome.get(ln.ref)}" for ln in bad)
    run.check("every bad line refused, for its reason", all(outcome.get(ln.ref) not in (None, "accepted", "repeated")
                                                            for ln in bad), f"{dict(planned)}")
    run.check("settled total == the files' total, to the cent", gross == expected_total,
              f"{gross} == {expected_total}")
    run.check("reporting's figures == the files' total", f["charges_settled"] == len(good)
              and f["settled_gross_cents"] == expected_total and f["charges_accepted"] == len(good),
              f"{f['charges_settled']:,} settled, {f['settled_gross_cents']} cents")
    inv_gross = inv["total"]["gross_cents"]
    run.check("the invoice's total == the files' total", inv_gross == expected_total, f"{inv_gross}")
    run.check("pain.001 transfers == the settlements' net", transfer_cents == net, f"{transfer_cents} == {net}")
    dup_q = sum(n - 1 for n in receivers.queue_deliveries.values())
    dup_w = sum(n - 1 for n in receivers.webhook_deliveries.values())
    got = {sid for pid, s in receivers.by_provider.items() for sid in s}
    run.check("each settlement's notice received (exactly once by id)", got == ids,
              f"{len(got & ids)} of {len(ids)}; repeats dropped by id: {dup_q} queue, {dup_w} webhook")
    run.check("every webhook signature valid", receivers.bad_signatures == 0, f"{receivers.bad_signatures} bad")
    dl = {q: await system.queue_depth(f"{system.ns}.{q}.dlq") for q in ("vouchers", "reporting", "payments")}
    run.check("nothing dead-lettered", not any(dl.values()), json.dumps(dl))
    run.facts.update(settled_gross_cents=gross, settled_net_cents=net, settlements=len(settlements),
                     refused=dict(refused), notices_queue=len(receivers.queue_deliveries),
                     notices_webhook=len(receivers.webhook_deliveries), repeats_queue=dup_q, repeats_webhook=dup_w,
                     report_categories=len(reports["monthly report"].get("categories", []) or []))
    say("\nplans of the hot queries (EXPLAIN, the run's data):")
    for label, lines in (await hot_plans(system)).items():
        say(f"- {label}")
        for line in lines:
            say(f"    {line}")
    run.facts["plans_printed"] = True


def _payments_knows(system: System, n: int):  # noqa: ANN202
    async def check() -> bool:
        rows = await system.sql("payments", "SELECT count(*) FROM payments_provider_choice")
        return rows[0][0] >= n
    return check


async def _notices_in(receivers: Receivers, settlements: list[dict]) -> bool:
    got = {sid for s in receivers.by_provider.values() for sid in s}
    return {s["id"] for s in settlements} <= got


# ------------------------------------------------------------------ output
def table(run: Run) -> str:
    lines = ["| stage | items | s | items/s | raw items/s | ratio |", "|---|---|---|---|---|---|"]
    for s in run.stages:
        raw = f"{s.raw:,.0f}" if s.raw else "-"
        ratio = f"{s.ratio:.2f}" if s.ratio is not None else "-"
        lines.append(f"| {s.name} | {s.items:,} {s.unit} | {s.seconds:.1f} | {s.rate:,.0f} | {raw} | {ratio} |")
    return "\n".join(lines)


def chart(run: Run, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 0.45 * len(run.stages) + 1.8))
    for i, s in enumerate(run.stages):
        ax.broken_barh([(s.start, max(s.seconds, 0.2))], (i - 0.35, 0.7), color="tab:blue" if s.raw else "tab:gray")
        ax.text(s.end + 1, i, f"{s.rate:,.0f}/s" + (f" ({s.ratio:.2f} of raw)" if s.ratio else ""), va="center",
                fontsize=8)
    for r in run.recoveries:
        ax.axvline(r["at_s"], color="tab:red", lw=0.8, ls="--")
    ax.set_yticks(range(len(run.stages)), [s.name for s in run.stages], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the run started")
    title = f"month-end, scale {run.args.scale}" + (" with faults (red: a fault)" if run.args.faults else "")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(run: Run, elapsed: float) -> None:
    results = run.args.results
    results.mkdir(parents=True, exist_ok=True)
    stem = run.args.out or ("month-end-faults" if run.args.faults else
                            "month-end-decisions" if run.args.decisions_only else
                            "month-end-setup" if run.args.setup_only else "month-end")
    md = [f"# month-end, scale {run.args.scale}{' with faults' if run.args.faults else ''} "
          f"({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, load average {os.getloadavg()[0]:.1f})", "",
          table(run), "", f"Month-end from the first upload to the last report read: "
          f"**{run.facts.get('month_end_seconds', '-')} s** ({run.facts.get('month_end_wall_seconds', '-')} s on the "
          f"clock, less {run.facts.get('raw_baselines_in_window_seconds', '-')} s of the raw settlement baseline "
          f"measured in between; the settlement's raw baseline runs after the month-end, on a copy of its charges); "
          f"the whole run {elapsed:.0f} s.", "",
          f"Settled events after the settlement run answered (one transaction: none leave before): reporting held "
          f"them all in {run.facts.get('settled_fold_reporting_after_run_s', '-')} s "
          f"({run.facts.get('settled_fold_reporting_per_s', '-')}/s); vouchers' queue empty after "
          f"{run.facts.get('settled_fold_vouchers_after_run_s', '-')} s "
          f"({run.facts.get('settled_fold_vouchers_per_s', '-')}/s).", ""]
    if run.recoveries:
        md += ["| fault | at s | ready again after s (the service killed; else every service) |", "|---|---|---|"]
        md += [f"| {r['fault']} | {r['at_s']} | {r['recovered_s']} |" for r in run.recoveries] + [""]
    md += ["| final check | |", "|---|---|"] + [f"| {k} | {'ok' if v else 'FAILED'} |" for k, v in run.checks.items()]
    (results / f"{stem}.md").write_text("\n".join(md) + "\n")
    chart(run, results / f"{stem}.png")
    (results / f"{stem}.json").write_text(json.dumps({
        "facts": run.facts, "checks": run.checks, "recoveries": run.recoveries,
        "stages": [{"name": s.name, "items": s.items, "seconds": round(s.seconds, 2), "start": round(s.start, 2),
                    "rate": round(s.rate, 1), "raw": round(s.raw, 1) if s.raw else None,
                    "ratio": round(s.ratio, 3) if s.ratio else None} for s in run.stages]}, indent=1))
    say(f"\nwritten: {results / (stem + '.md')}, {stem}.png, {stem}.json")


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=float(os.environ.get("MONTH_END_SCALE", "1.0")),
                        help="1.0 = 200 providers, 50,000 vouchers, 1,000,000 charges")
    parser.add_argument("--broker-stop", type=float, default=None, metavar="SECONDS",
                        help="with --faults: how long the broker stays stopped (default 60 s x scale, at least 5)")
    parser.add_argument("--faults", action="store_true", default=os.environ.get("FAULTS", "") not in ("", "0"),
                        help="own broker and PostgreSQL; broker stop, kills and a database restart at the peak")
    parser.add_argument("--parallel", type=int, default=4, help="uploads at a time")
    parser.add_argument("--window", type=int, default=256, help="raw baselines' messages in flight")
    parser.add_argument("--in-flight", type=int, default=1000,
                        help="decisions published and not yet answered at a time (CaseSystem.decide_many)")
    parser.add_argument("--raw-messages", type=int, default=20_000, help="raw aio-pika baseline's messages")
    parser.add_argument("--reads", type=int, default=20, help="reads of each report")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds a stage may wait for the consumers")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default=None, help="file name stem (default month-end, month-end-faults)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the table, chart and figures go")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for every service")
    parser.add_argument("--decisions-only", action="store_true",
                        help="stop after the registry and the decisions (file stem month-end-decisions)")
    parser.add_argument("--setup-only", action="store_true",
                        help="stop after the setup (registry, decisions, choices), timed apart (file stem month-end-setup)")
    args = parser.parse_args(argv)

    def stopped(*_: object) -> None:  # SIGTERM as Ctrl-C: what the run made is removed all the same
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stopped)
    rng = random.Random(args.seed)
    run = Run(args)
    servers = Servers(args.faults)
    workdir = Path(tempfile.mkdtemp(prefix="seteli-month-"))
    system = System(servers, workdir, dict(e.split("=", 1) for e in args.env))
    system.broker_users = []
    t0 = time.monotonic()
    failed = None
    try:
        await system.start()
        with PROGRESS:
            await month(run, system, rng)
    except Exception as exc:  # noqa: BLE001 (reported, then everything is removed)
        failed = exc
        import traceback

        traceback.print_exc()
        say(f"the run failed: {exc!r}; the services' logs: {workdir}")
    finally:
        receivers = getattr(system, "receivers", None)
        if receivers is not None:
            await receivers.stop()
        for user in system.broker_users:
            try:
                broker._ctl("delete_user", user)
            except Exception:  # noqa: BLE001
                pass
        await system.stop()
        servers.remove()
    elapsed = time.monotonic() - t0
    say("\n" + table(run))
    if run.recoveries:
        for r in run.recoveries:
            say(f"recovery: {r['fault']} at {r['at_s']} s: ready again {r['recovered_s']} s after")
    write(run, elapsed)
    ok = failed is None and run.checks and all(run.checks.values())
    say(json.dumps({"ok": bool(ok), "elapsed_s": round(elapsed, 1), **run.facts, "checks": run.checks,
                    "recoveries": run.recoveries}))
    if ok:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
