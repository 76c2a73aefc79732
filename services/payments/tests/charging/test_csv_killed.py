"""A streamed CSV upload of several chunks (each later chunk ruled while the one before is written) to a real
``seteli-payments serve`` process killed (SIGKILL) in the middle: only whole chunks are left, and the same file
sent again after a restart charges every line exactly once (the lines already charged answer ``repeated``), with
the ledger whole."""
from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest

import payments.app
from seteli_shared.auth import mint
from seteli_shared.db import upgrade_async

from ..serving import start_payments

BIN = Path(sys.executable).parent
OPERATOR = {"Authorization": f"Bearer {mint('t:operator', ['operator'])}"}
LINES = 20_000  # chunks of 2,500, 5,000, 10,000 and 2,500 (intake.CHUNK_LINES doubling to MAX_CHUNK_LINES)
VOUCHERS = 40


@pytest.fixture
async def database(pg):  # noqa: ANN001
    url = await pg.create("payments")
    await upgrade_async(payments.app.SPEC.migrations_dir, url)
    return url


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def _seed(url: str) -> None:
    conn = await asyncpg.connect(_dsn(url))
    try:
        await conn.execute("INSERT INTO payments_funder (funder_id, operator_fee_rate, charge_deadline_days) "
                           "VALUES ('091', '0.05', 3650)")
        await conn.execute("INSERT INTO payments_approval (funder_id, provider_id, category, approved_at, approval_id, "
                           "status) VALUES ('091', 'p1', 'home_care', now() - interval '1 year', 'a1', 'approved')")
        await conn.execute("""
            INSERT INTO payments_voucher (voucher_id, funder_id, category, issued, units_per_period_x100, period,
                value_per_unit_cents, valid_from, valid_until, provider_id, carry_over, version, kind)
            SELECT 'v' || i, '091', 'home_care', true, 1000000000, 'validity', 2500, current_date - 300,
                current_date + 300, 'p1', false, 0, 'service_voucher' FROM generate_series(0, $1 - 1) i""", VOUCHERS)
        await conn.execute("""
            INSERT INTO payments_provider_choice (voucher_id, chosen_at, provider_id, effective_from)
            SELECT voucher_id, now() - interval '1 year', provider_id, current_date - 300 FROM payments_voucher""")
    finally:
        await conn.close()


def _start(url: str, amqp_url: str, namespace: str, log: Path) -> tuple[subprocess.Popen, str]:
    return start_payments(url, amqp_url, namespace, log)


def _file() -> bytes:
    day = date.today() - timedelta(days=1)
    return ("voucher_id;provider_reference;service_date;units;unit_price\n" + "".join(
        f"v{i % VOUCHERS};k-{i};{day.day}.{day.month}.{day.year};0,25;25,00\n" for i in range(LINES))).encode()


async def _charged(url: str) -> int:
    conn = await asyncpg.connect(_dsn(url))
    try:
        return await conn.fetchval("SELECT count(*) FROM payments_charge")
    finally:
        await conn.close()


async def test_a_csv_upload_killed_in_the_middle_and_sent_again_charges_every_line_once(
        database, amqp_url, namespace, tmp_path):  # noqa: ANN001
    url = database
    await _seed(url)
    body = _file()
    headers = {"Authorization": f"Bearer {mint('t:billing', ['provider_billing_system'], provider_id='p1')}",
               "content-type": "text/csv"}
    log = tmp_path / "payments.log"
    proc, base = _start(url, amqp_url, namespace, log)
    try:
        async with httpx.AsyncClient(base_url=base, timeout=300) as client:
            upload = asyncio.create_task(client.post("/charges/bulk", content=body, headers=headers))
            deadline = time.monotonic() + 240
            while await _charged(url) < 7_500:  # the first two chunks committed: the third is in flight
                assert not upload.done(), f"the upload ended before it was caught: {upload.result().text[:300]}"
                assert time.monotonic() < deadline, "the upload never reached its third chunk"
                await asyncio.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            try:
                await upload
            except httpx.HTTPError:
                pass
        left = await _charged(url)
        assert left in (7_500, 17_500, LINES), f"only whole chunks are left after the kill: {left}"

        proc, base = _start(url, amqp_url, namespace, log)
        async with httpx.AsyncClient(base_url=base, timeout=300) as client:
            r = await client.post("/charges/bulk", content=body, headers=headers)
            assert r.status_code == 200, r.text[:500]
            answer = r.json()
            assert (answer["lines"], answer["accepted"], answer["repeated"], answer["refused"]) == (
                LINES, LINES - left, left, 0)
            check = (await client.get("/ledger/check", headers=OPERATOR)).json()
        assert check["ok"], check
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
    conn = await asyncpg.connect(_dsn(url))
    try:
        assert await conn.fetchval("SELECT count(*) FROM payments_charge") == LINES
        assert await conn.fetchval("SELECT count(DISTINCT provider_reference) FROM payments_charge") == LINES
        assert await conn.fetchval("SELECT count(*) FROM payments_ledger_transaction WHERE kind = 'charge'") == LINES
        assert await conn.fetchval("SELECT sum(amount_cents) FROM payments_charge") == LINES * 625
    finally:
        await conn.close()
