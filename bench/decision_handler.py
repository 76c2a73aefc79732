"""CPU of the decisions consumer's own work per decision, without the broker: each message parsed as the consumer
parses it (``Consumer._parse``: JSON, the privacy guard, the envelope and the contract) and applied a batch at a time
(``Consumer._apply``: the inbox claim and ``vouchers.decisions.on_decisions``) on a fresh PostgreSQL database,
removed afterwards. What ``bench/decisions.py`` measures end to end less the broker, the relay and the publisher.

    .venv/bin/python bench/decision_handler.py [--decisions 4000] [--batch 250] [--kinds] [--log-level INFO]
                                               [--profile] [--explain]

``--kinds`` mixes the month-end's three kinds (service voucher, client voucher, personal budget) over five
categories; ``--profile`` prints a cProfile of one more run; ``--explain`` the plans of the lookups by decision
reference and by voucher code (the client login's) and of the choice's row lock.
"""
from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import secrets
import sys
import time
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import asyncpg  # noqa: E402
import sqlalchemy as sa  # noqa: E402

import vouchers  # noqa: E402
from seteli_shared.consumer import Consumer  # noqa: E402
from seteli_shared.db import make_engine, session_factory, unit_of_work, upgrade_async  # noqa: E402
from seteli_shared.decisions import DECISION_TYPE  # noqa: E402
from seteli_shared.events import Envelope, FunderRegistered  # noqa: E402
from seteli_shared.ids import new_id  # noqa: E402
from seteli_shared.logging import configure_logging  # noqa: E402
from vouchers.decisions import DECISIONS_CONSUMER  # noqa: E402
from vouchers.handlers import on_funder_registered  # noqa: E402
from vouchers.settings import VouchersSettings  # noqa: E402

PG_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
CATEGORIES = ("home_care", "cleaning", "home_nursing", "family_work", "personal_assistance")
KINDS = ("service_voucher", "client_voucher", "personal_budget")


def bodies(n: int, tag: str, mixed: bool) -> list[bytes]:
    today, out = date.today(), []
    for i in range(n):
        kind = KINDS[i % 3] if mixed else KINDS[0]
        cat = CATEGORIES[(i // 3) % 5] if mixed else CATEGORIES[0]
        data = {"funder_id": "091", "decision_ref": f"HB{tag}-{i:07d}", "decision_version": 1, "action": "grant",
                "client_ref": f"asiakas-{i:07d}", "category": cat, "kind": kind, "period": "month",
                "valid_from": (today - timedelta(days=1)).isoformat(),
                "valid_until": (today + timedelta(days=300)).isoformat()}
        if kind == "service_voucher":
            data.update(units_per_period="20", value_per_unit_cents=2500)
        elif kind == "client_voucher":
            data.update(units_per_period="20", max_value_per_unit_cents=3200, client_fee_cents=500)
        else:
            data.update(budget_cents=80000, categories=[cat])
        out.append(json.dumps({"specversion": "1.0", "id": new_id(), "source": "/funder-091/case-system",
                               "type": DECISION_TYPE, "time": datetime.now(timezone.utc).isoformat(),
                               "data": data}).encode())
    return out


def message(body: bytes) -> SimpleNamespace:
    """What the consumer reads of an AMQP delivery from the funder's case system (``user_id`` as the broker
    vouches for it)."""
    return SimpleNamespace(body=body, user_id="funder-091", routing_key="decision.091", message_id=new_id(),
                           type=DECISION_TYPE, correlation_id=None, app_id=None, reply_to=None, headers={})


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--decisions", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--kinds", action="store_true")
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--explain", action="store_true")
    a = parser.parse_args()
    configure_logging("vouchers", a.log_level)
    db = f"seteli_bench_dech_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(PG_URL)
    await admin.execute(f'CREATE DATABASE "{db}"')
    await admin.close()
    base = PG_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    url = f"{base}/{db}"
    try:
        await upgrade_async(Path(vouchers.__file__).parent / "migrations", url,
                            VouchersSettings(environment="test", database_url=url))
        engine = make_engine(url)
        sessions = session_factory(engine)
        event = FunderRegistered(funder_id="091", name="Kunta 091", kind="municipality",
                                 operator_fee_rate=Decimal("0.05"), registered_at=datetime.now(timezone.utc))
        async with unit_of_work(sessions) as s:
            await on_funder_registered(s, Envelope.wrap(event, "registry"), event)
        bus = SimpleNamespace(settings=SimpleNamespace(broker_user_prefix=""))
        consumer = Consumer(bus, sessions, "bench.decisions", {}, bind_keys=["decision.*"],
                            batch_handlers=DECISIONS_CONSUMER.batch_handlers, contracts=DECISIONS_CONSUMER.contracts,
                            whole_message_privacy=True)

        async def run(tag: str, n: int) -> tuple[float, float, float]:
            msgs = [message(b) for b in bodies(n, tag, a.kinds)]
            cpu0, t0, parse = time.process_time(), time.perf_counter(), 0.0
            for lo in range(0, n, a.batch):
                p0 = time.process_time()
                parsed = [consumer._parse(m) for m in msgs[lo:lo + a.batch]]
                parse += time.process_time() - p0
                assert all(hasattr(p, "envelope") for p in parsed), "a decision was refused"
                await consumer._apply(parsed)
            return (time.process_time() - cpu0) * 1000 / n, parse * 1000 / n, n / (time.perf_counter() - t0)

        await run("warm", 500)
        if a.profile:
            profile = cProfile.Profile()
            profile.enable()
            await run("profiled", a.decisions)
            profile.disable()
            pstats.Stats(profile).sort_stats("cumulative").print_stats(40)
        for k in range(3):
            cpu, parse, rate = await run(f"r{k}", a.decisions)
            print(f"run {k + 1}: {cpu:.3f} ms CPU a decision (of which parsing {parse:.3f}), {rate:,.0f} decisions/s, "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
        if a.explain:
            async with sessions() as s:
                for q in ["SELECT funder_id, decision_ref FROM vouchers_voucher WHERE (funder_id, decision_ref) IN "
                          "(('091', 'HBr0-0000001'), ('091', 'HBr0-0000002'), ('091', 'HB-none'))",
                          "SELECT * FROM vouchers_voucher WHERE voucher_code = 'ABCDEFGHJK1'",
                          "SELECT * FROM vouchers_voucher WHERE id = 'x' FOR UPDATE"]:
                    print(q)
                    print("\n".join("   " + r[0] for r in (await s.execute(sa.text("EXPLAIN ANALYZE " + q))).all()))
        await engine.dispose()
    finally:
        admin = await asyncpg.connect(PG_URL)
        await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await admin.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
