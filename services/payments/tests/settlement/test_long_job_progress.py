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
