"""Long jobs visible (``seteli_shared.progress``) on PostgreSQL: an operator's settlement run started with a chosen
``X-Correlation-Id`` is followed at ``GET /jobs/{id}`` (its charges counted as they are settled) and logs its start
and end with the counts; a bulk charge import the same; a job's row is readable from another connection while the
job runs, not only at its end."""
from __future__ import annotations

import asyncio
import uuid

from seteli_shared import progress

from ..conftest import charger


async def test_a_settlement_run_is_followed_by_its_correlation_id_and_logs_start_end_and_counts(live, log_lines):
    w = live
    vouchers = await w.provider_with_vouchers("p-progress", 3)
    for i, (voucher_id, _) in enumerate(vouchers):
        await w.charge("p-progress", voucher_id, f"prog-{i}", "2")
    job_id = str(uuid.uuid4())
    assert (await w.client.get(f"/jobs/{job_id}")).status_code == 404
    r = await w.client.post("/settlements/run", headers={"X-Correlation-ID": job_id})
    assert r.status_code == 200, r.text

    job = (await w.client.get(f"/jobs/{job_id}")).json()
    assert (job["kind"], job["outcome"], job["total"], job["done"]) == ("settlement_run", "ok", 3, 3)
    assert job["finished_at"] is not None and job["started_at"] <= job["finished_at"]
    started = log_lines.events("long_job.started")
    finished = log_lines.events("long_job.finished")
    assert [(e["kind"], e["job_id"]) for e in started] == [("settlement_run", job_id)]
    assert [(e["kind"], e["outcome"], e["done"], e["total"]) for e in finished] == [("settlement_run", "ok", 3, 3)]
    assert isinstance(finished[0]["duration_ms"], int)
    denied = await w.client.get(f"/jobs/{job_id}", headers=charger("p-progress"))
    assert denied.status_code == 403


async def test_a_bulk_import_counts_its_lines(live, log_lines):  # noqa: ANN001
    w = live
    vouchers = await w.provider_with_vouchers("p-bulk-progress", 2)
    lines = [{"voucher_id": v, "provider_reference": f"bulk-{i}", "service_date": "2026-06-19", "units": "1"}
             for i, (v, _) in enumerate(vouchers)]
    lines.append({"voucher_id": "v-nobody", "provider_reference": "bulk-x", "service_date": "2026-06-19",
                  "units": "1"})
    job_id = str(uuid.uuid4())
    r = await w.client.post("/charges/bulk", json=lines, headers={**charger("p-bulk-progress"),
                                                                  "X-Correlation-ID": job_id,
                                                                  "Idempotency-Key": f"k-{job_id}"})
    assert r.status_code in (200, 201, 207), r.text
    job = (await w.client.get(f"/jobs/{job_id}")).json()
    assert (job["kind"], job["outcome"], job["total"], job["done"]) == ("charges.bulk", "ok", 3, 3)
    assert [(e["kind"], e["done"]) for e in log_lines.events("long_job.finished")] == [("charges.bulk", 3)]


async def test_progress_is_readable_from_elsewhere_while_the_job_runs(live, monkeypatch):  # noqa: ANN001
    sessions = live.app.state.runtime.sessions
    monkeypatch.setattr(progress, "WRITE_EVERY_SECONDS", 0.0)
    job_id = f"test-{uuid.uuid4().hex[:8]}"
    async with progress.track(sessions, "test.job", total=10, job_id=job_id):
        for _ in range(4):
            await progress.advance()
        progress._running.pop(job_id)  # as another instance sees it: the row only
        async with sessions() as session:
            seen = await progress.read(session, job_id)
        assert (seen["outcome"], seen["done"], seen["total"]) == ("running", 4, 10)
        await asyncio.sleep(0)
    async with sessions() as session:
        done = await progress.read(session, job_id)
    assert (done["outcome"], done["done"]) == ("ok", 4)


async def test_seteli_ops_settle_runs_a_settlement_following_its_progress(live):  # noqa: ANN001
    import socket

    import uvicorn
    from typer.testing import CliRunner

    from seteli_shared.auth import mint
    from seteli_shared.ops_cli import app as cli
    from seteli_shared.testing import eventually

    w = live
    vouchers = await w.provider_with_vouchers("p-cli", 2)
    for i, (voucher_id, _) in enumerate(vouchers):
        await w.charge("p-cli", voucher_id, f"cli-{i}", "2")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(w.app, host="127.0.0.1", port=port, lifespan="off", log_level="warning"))
    serving = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started, timeout=10)
        env = {"SETELI_PAYMENTS_URL": f"http://127.0.0.1:{port}", "SETELI_TOKEN": mint("ops-cli", ["operator"]),
               "COLUMNS": "250"}
        result = await asyncio.to_thread(CliRunner().invoke, cli, ["settle", "--interval", "0.1"], env=env)
        assert result.exit_code == 0, result.output
        assert "settlement_run ok: 2 of 2 item(s)" in result.output
        assert "p-cli" in result.output and "95.00" in result.output  # 2 x 2 h x 25.00, less the 5 % fee
        job_id = result.output.split("(job ")[1].split(")")[0]
        followed = await asyncio.to_thread(CliRunner().invoke, cli, ["follow", job_id, "-s", "payments"], env=env)
        assert followed.exit_code == 0 and "settlement_run ok" in followed.output, followed.output
    finally:
        server.should_exit = True
        await serving
