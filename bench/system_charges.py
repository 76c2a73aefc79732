"""Single ``POST /charges`` with the whole system running, against the raw charge endpoint in the same run.

1. **the system**: ``scripts/run_all.py`` (every service of the manifest and the portal, each with its consumers
   and outbox relay, as ``make run`` starts them) on fresh PostgreSQL databases (one per service) and a bus
   namespace of its own, on free ports. Seeded through the services' own APIs and the bus, as people would:
   the funder and ``--providers`` providers in the registry, their approvals, ``--vouchers`` vouchers issued
   in vouchers, each client logged in with the letter's codes choosing a provider; the run waits until
   payments has learnt every voucher and choice from the bus.
2. **the raw endpoint**: ``/work/shared/bench/raw_charge_app.py`` (or ``RAW_CHARGE_APP``) served by uvicorn as
   its header says, on a database of its own holding the same vouchers (``raw_voucher``): validate, lock the
   voucher, insert the charge and an outbox row, answer 201.
3. **rounds**: wrk (``--connections`` 16, ``--threads`` 1, ``--seconds`` each) with one Lua script posting
   distinct references against the vouchers with their chosen provider's token, alternately at payments and at
   the raw endpoint, ``--rounds`` times. After each payments round the bench waits until payments' outbox is
   sent and vouchers and reporting have folded every accepted charge, and the CPU every service process (and
   its children) used from the round's start until then (psutil ``cpu_times``) is divided by the charges
   accepted: CPU per accepted charge per service, summed. The raw endpoint's CPU per charge likewise.

Prints each round, the overall ratio (payments' accepted charges/s over the raw endpoint's), the median p99,
CPU per charge per service, and a final JSON line. Everything it made is removed at the end.

    .venv/bin/python bench/system_charges.py [--seconds 15] [--rounds 2] [--vouchers 1000] [--providers 20]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import urlparse

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import asyncpg  # noqa: E402
import httpx  # noqa: E402
import psutil  # noqa: E402
from seteli_shared.ports import free_port, free_port_base  # noqa: E402

ROOT = _HERE.parent
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
PG_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
RAW_APP = Path(os.environ.get("RAW_CHARGE_APP", "/work/shared/bench/raw_charge_app.py"))
SERVICES = ("registry", "vouchers", "payments", "reporting")
FUNDER, CATEGORY = "091", "home_care"
SERVICE_DAY = (date.today() - timedelta(days=1)).isoformat()
TARGET_RATIO, TARGET_P99_MS, TARGET_CPU_MS = 0.5, 50.0, 1.5


def database_url(name: str, driver: str | None = "asyncpg") -> str:
    u = urlparse(PG_URL)
    auth = f"{u.username or 'postgres'}{':' + u.password if u.password else ''}"
    return f"postgresql{'+' + driver if driver else ''}://{auth}@{u.hostname}:{u.port or 5432}/{name}"


def bearer(subject: str, roles: list[str], **claims) -> dict:  # noqa: ANN003
    from seteli_shared.auth import mint

    return {"Authorization": f"Bearer {mint(subject, roles, ttl=86400, **claims)}"}


# ------------------------------------------------------------------ the system and its processes
class Processes:
    """The service processes under run_all (each with its children), found by the port it serves."""

    def __init__(self, root: psutil.Process, ports: dict[str, int]):
        self.root, self.ports = root, ports

    def tops(self) -> dict[str, psutil.Process]:
        out = {}
        for child in self.root.children(recursive=False):
            try:
                cmd = child.cmdline()
            except psutil.Error:
                continue
            for name, port in self.ports.items():
                if "--port" in cmd and cmd[cmd.index("--port") + 1] == str(port):
                    out[name] = child
        return out

    def cpu(self) -> dict[str, float]:
        """User + system CPU seconds of each service's process tree so far."""
        out: dict[str, float] = {}
        for name, top in self.tops().items():
            total = 0.0
            for p in [top, *top.children(recursive=True)]:
                try:
                    t = p.cpu_times()
                    total += t.user + t.system
                except psutil.Error:
                    pass
            out[name] = total
        t = self.root.cpu_times()  # run_all itself: it reads every line the services log
        out["run_all"] = t.user + t.system
        return out


def tree_cpu(proc: psutil.Process) -> float:
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


async def backend_cpu(admin: asyncpg.Connection, dbs: dict[str, str]) -> dict[str, float]:
    """User + system CPU seconds so far of PostgreSQL's backends serving each of ``dbs`` (label -> database):
    the database's share of a charge's work, which the services' own processes do not show. A backend that
    ends between two readings drops out of the second, so the pools' steady connections are what this sees."""
    rows = await admin.fetch("SELECT pid, datname FROM pg_stat_activity WHERE datname = ANY($1::text[])",
                             list(dbs.values()))
    label = {db: name for name, db in dbs.items()}
    out = dict.fromkeys(dbs, 0.0)
    for row in rows:
        try:
            t = psutil.Process(row["pid"]).cpu_times()
        except psutil.Error:
            continue
        out[label[row["datname"]]] += t.user + t.system
    return out


def machine_busy() -> tuple[float, float]:
    """(busy CPU seconds over all cores, wall seconds x cores) so far, from /proc/stat."""
    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0)
    return sum(t) - idle, sum(t)


async def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as c:
        while True:
            try:
                if (await c.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not become ready:\n{log.read_text(errors='replace')[-4000:]}")
            await asyncio.sleep(0.3)


async def until(what, timeout: float, step: float = 0.3):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while True:
        got = await what()
        if got:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f} s")
        await asyncio.sleep(step)


# ------------------------------------------------------------------ seeding through the services
async def seed(urls: dict[str, str], pg_payments: asyncpg.Connection, providers: int, vouchers: int,
               ) -> tuple[list[tuple[str, int]], list[str]]:
    """The funder, providers and approvals (registry), vouchers and the clients' choices (vouchers); returns
    (voucher id, provider index) and waits until payments knows every voucher's choice."""
    from seteli_shared.devtools import random_business_id

    operator = bearer("bench:operator", ["operator"])
    approver = bearer("bench:approver", ["funder_provider_approver"], funder_id=FUNDER)
    maker = bearer("bench:maker", ["funder_decision_maker"], funder_id=FUNDER)
    sem = asyncio.Semaphore(6)
    async with httpx.AsyncClient(base_url=urls["registry"], timeout=60, headers=operator) as reg:
        r = await reg.post("/funders", json={"funder_id": FUNDER, "name": "Kunta 091", "kind": "municipality"})
        assert r.status_code == 201, r.text
        r = await reg.post(f"/funders/{FUNDER}/rulebooks", headers=approver, json={
            "category": CATEGORY, "rulebook_version": "2026.1", "title": "Kotihoidon palveluseteli"})
        assert r.status_code == 201, r.text
        provider_ids: list[str] = []
        for i in range(providers):
            r = await reg.post("/providers", json={"business_id": random_business_id(), "name": f"Hoiva {i} Oy",
                                                    "iban": "FI2112345600000785"})
            assert r.status_code == 201, r.text
            provider_ids.append(r.json()["id"])
            r = await reg.post(f"/providers/{provider_ids[-1]}/approvals", json={"category": CATEGORY},
                               headers=approver)
            assert r.status_code == 201, r.text
    today = date.today()
    out: list[tuple[str, int]] = []
    async with httpx.AsyncClient(base_url=urls["vouchers"], timeout=60) as vc:
        async def one(i: int) -> None:
            async with sem:
                decision = {"funder_id": FUNDER, "decision_ref": f"BENCH-{i:07d}", "client_ref": f"asiakas-{i:07d}",
                            "category": CATEGORY, "units_per_period": "100", "period": "month",
                            "value_per_unit_cents": 2500, "valid_from": (today - timedelta(days=60)).isoformat(),
                            "valid_until": (today + timedelta(days=300)).isoformat()}

                async def issued():  # noqa: ANN202  (vouchers learns of the funder from the bus)
                    r = await vc.post("/vouchers", json=decision, headers=maker)
                    if r.status_code in (200, 201):
                        return r.json()
                    assert r.json()["error"]["reason"] == "unknown_funder", r.text
                    return None

                v = await until(issued, 120)
                login = await vc.post("/client-sessions", json={"voucher_code": v["voucher_code"],
                                                                "client_login_code": v["client_login_code"]})
                assert login.status_code == 200, login.text
                client = {"Authorization": f"Bearer {login.json()['access_token']}"}
                p = i % providers

                async def chosen():  # noqa: ANN202  (vouchers learns of the approval from the bus)
                    r = await vc.post(f"/vouchers/{v['id']}/provider", json={"provider_id": provider_ids[p]},
                                      headers=client)
                    return r.status_code == 200

                await until(chosen, 120)
                out.append((v["id"], p))
        await asyncio.gather(*(one(i) for i in range(vouchers)))

    async def payments_knows():  # noqa: ANN202
        return await pg_payments.fetchval(
            "SELECT count(*) FROM payments_provider_choice") >= vouchers or None

    await until(payments_knows, 300, 0.5)
    return out, provider_ids


async def seed_raw(dsn: str, schema: str, vouchers: list[tuple[str, int]], provider_ids: list[str]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(schema)
        await conn.executemany(
            "INSERT INTO raw_voucher (voucher_id, funder_id, category, provider_id, value_per_unit_cents) "
            "VALUES ($1, $2, $3, $4, 2500)", [(vid, FUNDER, CATEGORY, provider_ids[p]) for vid, p in vouchers])
        await conn.execute("ANALYZE raw_voucher")
    finally:
        await conn.close()


# ------------------------------------------------------------------ wrk
LUA = """
local tokens = {%(tokens)s}
local vouchers = {%(vouchers)s}
local owners = {%(owners)s}
local counter = 0
local threads = 0
setup = function(thread) thread:set("tid", threads); threads = threads + 1 end
init = function(args) math.randomseed(os.time() + (tid or 0) * 7919) end
request = function()
  counter = counter + 1
  local v = math.random(1, #vouchers)
  local body = string.format('{"voucher_id":"%%s","provider_reference":"%(prefix)s-%%d-%%d","service_date":"%(day)s","units":"0.01"}',
                             vouchers[v], tid or 0, counter)
  return wrk.format("POST", "/charges", {["Content-Type"] = "application/json",
                                         ["Authorization"] = "Bearer " .. tokens[owners[v]]}, body)
end
"""

_LAT = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)


def lua_script(prefix: str, vouchers: list[tuple[str, int]], provider_ids: list[str], workdir: Path) -> Path:
    from seteli_shared.auth import mint

    tokens = ",".join(f'"{mint(f"bench:{pid}", ["provider_charger"], provider_id=pid, ttl=86400)}"'
                      for pid in provider_ids)
    path = workdir / f"{prefix}.lua"
    path.write_text(LUA % {"tokens": tokens, "vouchers": ",".join(f'"{v}"' for v, _ in vouchers),
                           "owners": ",".join(str(p + 1) for _, p in vouchers), "prefix": prefix, "day": SERVICE_DAY})
    return path


def wrk(url: str, script: Path, seconds: int, connections: int, threads: int) -> dict:
    out = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--latency",
                          "-s", str(script), url], capture_output=True, text=True, check=True).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    non_2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    lat = {}
    for pct, value, unit in _LAT.findall(out):
        lat[pct] = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    errors = m.group(0) if (m := re.search(r"Socket errors:.*", out)) else None
    return {"requests": requests, "non_2xx": non_2xx, "accepted": requests - non_2xx, "rps": requests / seconds,
            "accepted_rps": (requests - non_2xx) / seconds, "p50_ms": lat.get("50"), "p99_ms": lat.get("99"),
            "socket_errors": errors}


# ------------------------------------------------------------------ the run
async def run(args: argparse.Namespace) -> int:
    from seteli_shared.testing import delete_namespace

    if not shutil.which("wrk"):
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    if not RAW_APP.exists():
        print(f"the raw charge endpoint is not at {RAW_APP} (RAW_CHARGE_APP)", file=sys.stderr)
        return 2
    hex_ = secrets.token_hex(4)
    ns = f"benchsys{hex_}"
    dbs = {name: f"seteli_bench_sys_{name}_{hex_}" for name in SERVICES}
    raw_db = f"seteli_bench_sys_raw_{hex_}"
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-system-{hex_}-"))
    admin = await asyncpg.connect(PG_URL)
    for db in [*dbs.values(), raw_db]:
        await admin.execute(f'CREATE DATABASE "{db}"')
    procs: list[subprocess.Popen] = []
    pg: dict[str, asyncpg.Connection] = {}
    figures: dict = {"seconds": args.seconds, "rounds": args.rounds, "connections": args.connections,
                     "threads": args.threads, "vouchers": args.vouchers, "providers": args.providers,
                     "load_before": os.getloadavg()[0]}
    ok = True
    try:
        base = free_port_base(5)
        env = dict(os.environ, AMQP_URL=AMQP_URL, BUS_NAMESPACE=ns, BROKER_USER_PREFIX=f"{ns}-",
                   DATA_DIR=str(workdir), SETELI_PORT_BASE=str(base), **dict(args.env),
                   **{f"DATABASE_URL_{n.upper()}": database_url(db) for n, db in dbs.items()})
        log = workdir / "run_all.log"
        system = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "run_all.py")], env=env, cwd=ROOT,
                                  stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(system)
        from seteli_shared.manifest import EVERYTHING

        ports = {svc.name: base + i + 1 for i, svc in enumerate(EVERYTHING)}
        urls = {name: f"http://127.0.0.1:{ports[name]}" for name in SERVICES}
        for name in SERVICES:
            await wait_ready(f"{urls[name]}/health/ready", system, log)
        processes = Processes(psutil.Process(system.pid), {n: ports[n] for n in (*SERVICES, "portal")
                                                           if n in ports})
        for name in ("vouchers", "reporting", "payments"):
            pg[name] = await asyncpg.connect(database_url(dbs[name], None))
        t0 = time.perf_counter()
        vouchers, provider_ids = await seed(urls, pg["payments"], args.providers, args.vouchers)
        print(f"seeded through the services: {len(provider_ids)} approved providers, {len(vouchers)} vouchers "
              f"chosen, known to payments, in {time.perf_counter() - t0:.1f} s")

        # the raw endpoint, as its header says to serve it
        raw_ns: dict = {}
        exec(compile(RAW_APP.read_text(), str(RAW_APP), "exec"), raw_ns)  # noqa: S102 (its SCHEMA, not served here)
        await seed_raw(database_url(raw_db, None), raw_ns["SCHEMA"], vouchers, provider_ids)
        raw_port = free_port(after=base + len(EVERYTHING))
        raw_log = workdir / "raw.log"
        raw = subprocess.Popen([sys.executable, "-m", "uvicorn", "raw_charge_app:create_app", "--factory",
                                "--app-dir", str(RAW_APP.parent), "--host", "127.0.0.1", "--port", str(raw_port),
                                "--log-level", "warning", "--no-access-log"],
                               env=dict(os.environ, RAW_DATABASE_URL=database_url(raw_db, None)),
                               stdout=raw_log.open("wb"), stderr=subprocess.STDOUT)
        procs.append(raw)
        raw_url = f"http://127.0.0.1:{raw_port}"
        await wait_ready(f"{raw_url}/health/ready", raw, raw_log)
        raw_proc = psutil.Process(raw.pid)

        async def charged() -> int:
            return await pg["payments"].fetchval("SELECT count(*) FROM payments_charge")

        async def settled_down(wanted: int):  # noqa: ANN202
            """payments' outbox sent, vouchers and reporting folded every accepted charge."""
            if await pg["payments"].fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL"):
                return None
            if await pg["vouchers"].fetchval("SELECT count(*) FROM vouchers_usage") < wanted:
                return None
            if await pg["reporting"].fetchval(
                    "SELECT count(*) FROM reporting_charge WHERE accepted_at IS NOT NULL") < wanted:
                return None
            return True

        # warm-up, both
        for label, url in (("payments", urls["payments"]), ("raw", raw_url)):
            wrk(url, lua_script(f"warm{label}{hex_}", vouchers, provider_ids, workdir), 3, args.connections,
                args.threads)
        await until(lambda: settled_down(0), 600)
        wanted = await charged()
        await until(lambda: settled_down(wanted), 600, 0.5)

        # what the services use doing nothing (relays' and schedulers' looks at their databases, consumers' heartbeats)
        idle0, i0 = processes.cpu(), time.perf_counter()
        await asyncio.sleep(args.idle_seconds)
        idle1, took = processes.cpu(), time.perf_counter() - i0
        idle = {n: round((idle1[n] - idle0.get(n, 0)) * 1000 / took, 2) for n in idle1}
        figures["idle_cpu_ms_per_s"] = idle
        print(f"idle, CPU ms a second: {', '.join(f'{n} {v:.1f}' for n, v in idle.items())}, sum "
              f"{sum(idle.values()):.1f}")

        rounds: dict[str, list[dict]] = {"payments": [], "raw": []}
        cpu_rounds: list[dict[str, float]] = []
        raw_cpu: list[float] = []
        for r in range(args.rounds):
            for label in ("payments", "raw"):
                script = lua_script(f"{label}{hex_}r{r}", vouchers, provider_ids, workdir)
                if label == "payments":
                    before_rows = await charged()
                    spies = start_profilers(processes, args.py_spy, args.seconds, r) if args.py_spy else []
                    cpu0, w0 = processes.cpu(), time.perf_counter()
                    db0, m0 = await backend_cpu(admin, dbs), machine_busy()
                    result = wrk(urls["payments"], script, args.seconds, args.connections, args.threads)
                    db1, m1 = await backend_cpu(admin, dbs), machine_busy()
                    rows = await charged() - before_rows
                    await until(lambda: settled_down(before_rows + rows), 600, 0.25)
                    drained = time.perf_counter() - w0 - args.seconds
                    cpu1 = processes.cpu()
                    for spy in spies:
                        spy.wait()
                    per = {n: (cpu1[n] - cpu0.get(n, 0)) * 1000 / max(result["accepted"], 1) for n in cpu1}
                    n = max(result["accepted"], 1)
                    result.update(rows=rows, drain_s=round(drained, 2), cpu_ms=per,
                                  pg_cpu_ms={k: round((db1[k] - db0[k]) * 1000 / n, 3) for k in db1},
                                  machine_busy=round((m1[0] - m0[0]) / max(m1[1] - m0[1], 1e-9), 3),
                                  machine_cpu_ms=round((m1[0] - m0[0]) * 1000 / n, 3))
                    cpu_rounds.append(per)
                else:
                    c0 = tree_cpu(raw_proc)
                    rdb0, m0 = await backend_cpu(admin, {"raw": raw_db}), machine_busy()
                    result = wrk(raw_url, script, args.seconds, args.connections, args.threads)
                    rdb1, m1 = await backend_cpu(admin, {"raw": raw_db}), machine_busy()
                    n = max(result["accepted"], 1)
                    result["cpu_ms"] = (tree_cpu(raw_proc) - c0) * 1000 / n
                    result.update(pg_cpu_ms=round((rdb1["raw"] - rdb0["raw"]) * 1000 / n, 3),
                                  machine_busy=round((m1[0] - m0[0]) / max(m1[1] - m0[1], 1e-9), 3),
                                  machine_cpu_ms=round((m1[0] - m0[0]) * 1000 / n, 3))
                    raw_cpu.append(result["cpu_ms"])
                rounds[label].append(result)
                ok &= result["non_2xx"] == 0
            p, b = rounds["payments"][-1], rounds["raw"][-1]
            print(f"  round {r + 1}: payments {p['accepted_rps']:.0f}/s p99 {p['p99_ms']:.1f} ms "
                  f"(CPU a charge: {', '.join(f'{n} {v:.2f}' for n, v in p['cpu_ms'].items())}, sum "
                  f"{sum(p['cpu_ms'].values()):.2f} ms; consumers done {p['drain_s']:.1f} s after wrk) | raw "
                  f"{b['accepted_rps']:.0f}/s p99 {b['p99_ms']:.1f} ms, {b['cpu_ms']:.2f} ms CPU | ratio "
                  f"{p['accepted_rps'] / b['accepted_rps']:.2f}  (load {os.getloadavg()[0]:.1f})")
            print(f"    PostgreSQL's backends, CPU a charge: "
                  f"{', '.join(f'{n} {v:.2f}' for n, v in p['pg_cpu_ms'].items())} ms | raw {b['pg_cpu_ms']:.2f} ms; "
                  f"the machine busy {p['machine_busy']:.0%} ({p['machine_cpu_ms']:.2f} ms a charge over every "
                  f"process) | raw {b['machine_busy']:.0%} ({b['machine_cpu_ms']:.2f} ms)")

        def total(label: str) -> float:
            return sum(x["accepted"] for x in rounds[label]) / (args.seconds * args.rounds)

        ratio = total("payments") / total("raw")
        accepted = sum(x["accepted"] for x in rounds["payments"])
        cpu_per = {n: sum(x["cpu_ms"][n] * x["accepted"] for x in rounds["payments"]) / accepted
                   for n in rounds["payments"][0]["cpu_ms"]}
        p99 = statistics.median(x["p99_ms"] for x in rounds["payments"])
        figures.update(
            payments_rps=round(total("payments"), 1), raw_rps=round(total("raw"), 1), single_ratio=round(ratio, 3),
            payments_p99_ms=p99, payments_p50_ms=statistics.median(x["p50_ms"] for x in rounds["payments"]),
            raw_p99_ms=statistics.median(x["p99_ms"] for x in rounds["raw"]),
            cpu_ms_per_charge={n: round(v, 3) for n, v in cpu_per.items()},
            cpu_ms_per_charge_total=round(sum(cpu_per.values()), 3),
            raw_cpu_ms_per_charge=round(statistics.mean(raw_cpu), 3),
            round_ratios=[round(p["accepted_rps"] / b["accepted_rps"], 3)
                          for p, b in zip(rounds["payments"], rounds["raw"])],
            pg_cpu_ms_per_charge=[p["pg_cpu_ms"] for p in rounds["payments"]],
            raw_pg_cpu_ms_per_charge=[b["pg_cpu_ms"] for b in rounds["raw"]],
            machine_cpu_ms_per_charge=[p["machine_cpu_ms"] for p in rounds["payments"]],
            raw_machine_cpu_ms_per_charge=[b["machine_cpu_ms"] for b in rounds["raw"]],
            non_2xx=sum(x["non_2xx"] for v in rounds.values() for x in v), load_after=os.getloadavg()[0])
        print(f"single POST /charges, whole system: payments {total('payments'):,.0f}/s against the raw endpoint "
              f"{total('raw'):,.0f}/s: ratio {ratio:.2f} (target >= {TARGET_RATIO}); p99 {p99:.1f} ms (target < "
              f"{TARGET_P99_MS:.0f}); CPU per accepted charge {sum(cpu_per.values()):.2f} ms (target <= "
              f"{TARGET_CPU_MS}): " + ", ".join(f"{n} {v:.3f}" for n, v in cpu_per.items())
              + f"; raw endpoint {figures['raw_cpu_ms_per_charge']:.3f} ms")
        print(json.dumps(figures))
        return 0 if ok else 1
    finally:
        for c in pg.values():
            await c.close()
        for p in reversed(procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGINT) if p is procs[0] else p.terminate()
                    p.wait(40)
                except (subprocess.TimeoutExpired, ProcessLookupError):
                    p.kill()
        for db in [*dbs.values(), raw_db]:
            await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await admin.close()
        try:
            await delete_namespace(AMQP_URL, ns, [f"{ns}.{s}" for s in SERVICES])
        except Exception as exc:  # noqa: BLE001
            print(f"could not delete bus namespace {ns}: {exc}", file=sys.stderr)
        for _ in range(40):  # run_all's children (the portal writes its SQLite files) may outlive it by a moment
            try:
                os.killpg(procs[0].pid, 0) if procs else None
            except (ProcessLookupError, PermissionError):
                break
            time.sleep(0.5)
        for _ in range(20):
            shutil.rmtree(workdir, ignore_errors=True)
            if not workdir.exists():
                break
            time.sleep(0.5)


def start_profilers(processes: Processes, folder: str, seconds: int, round_: int) -> list[subprocess.Popen]:
    """py-spy on every service's processes during a round (collapsed stacks, ``<folder>/<service>-<pid>.txt``),
    only samples holding the GIL (``--gil``): where Python spends CPU, not where it waits on a busy machine."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    spies = []
    for name, top in processes.tops().items():
        if name == "portal":
            continue
        for proc in [top, *top.children(recursive=True)]:
            spies.append(subprocess.Popen(
                [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(proc.pid), "--duration",
                 str(seconds), "--rate", "100", "--format", "raw", "--nonblocking", "--gil", "--output",
                 f"{folder}/{name}-{proc.pid}-r{round_}.txt"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return spies


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=int, default=15, help="wrk duration per server and round")
    p.add_argument("--rounds", type=int, default=2, help="wrk runs per server, alternated")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--providers", type=int, default=20)
    p.add_argument("--vouchers", type=int, default=400, help="vouchers issued and chosen through the services")
    p.add_argument("--idle-seconds", type=float, default=5.0, help="the services' CPU measured idle this long first")
    p.add_argument("--py-spy", metavar="DIR", help="profile every service during the payments rounds into DIR")
    p.add_argument("--env", action="append", default=[], type=lambda s: tuple(s.split("=", 1)),
                   help="NAME=VALUE for every service (e.g. LOG_LEVEL=warning)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
