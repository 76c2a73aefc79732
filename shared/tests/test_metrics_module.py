"""seteli_shared.metrics on its own: routes as templates whatever the path, the status a client that left or a
failure gets, reasons as codes only, and a scrape-time source whose database is away (a real refused
connection) left out with ``seteli_metrics_source_up`` 0 while the rest is served."""
from __future__ import annotations

import time

import httpx
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from seteli_shared.db import make_engine
from seteli_shared.metrics import HttpMetrics, install_metrics, outbox_source, reason_label


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_reasons_become_codes_never_free_text():
    assert reason_label("bad_envelope: not JSON") == "bad_envelope"
    assert reason_label("contract_violation: data.units: Input should be a valid decimal") == "contract_violation"
    assert reason_label("failed 5 times: ValueError('voucher 3f2a... not found')") == "failed_repeatedly"
    assert reason_label("personal_identity_code") == "personal_identity_code"
    assert reason_label("Voucher 131052-308T is gone") == "other"
    assert reason_label(None) == "unknown"


async def test_http_requests_by_route_template_status_and_failures():
    app = FastAPI()
    registry = install_metrics(app, "t")

    @app.get("/vouchers/{voucher_id}")
    async def one(voucher_id: str) -> dict:
        return {"id": voucher_id}

    @app.get("/boom")
    async def boom() -> dict:
        raise RuntimeError("boom")

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                                 base_url="http://t") as c:
        for i in range(3):
            assert (await c.get(f"/vouchers/v-{i}-secret")).status_code == 200
        assert (await c.get("/nowhere/131052-308T")).status_code == 404
        assert (await c.get("/boom")).status_code == 500
        assert (await c.request("BREW", "/vouchers/x")).status_code == 405
        text = (await c.get("/metrics")).text
    got = samples(text)
    key = ("seteli_http_requests_total", frozenset({"method": "GET", "route": "/vouchers/{voucher_id}",
                                                    "status": "200"}.items()))
    assert got[key] == 3
    assert got[("seteli_http_requests_total", frozenset({"method": "GET", "route": "(unmatched)",
                                                         "status": "404"}.items()))] == 1
    assert got[("seteli_http_requests_total", frozenset({"method": "GET", "route": "/boom",
                                                         "status": "500"}.items()))] == 1
    assert got[("seteli_http_requests_total", frozenset({"method": "OTHER", "route": "/vouchers/{voucher_id}",
                                                         "status": "405"}.items()))] == 1
    assert got[("seteli_http_request_duration_seconds_count",
                frozenset({"method": "GET", "route": "/vouchers/{voucher_id}", "status": "2xx"}.items()))] == 3
    assert "secret" not in text and "131052" not in text and "BREW" not in text
    assert registry.http_requests._metrics  # (the app's own registry counted them)


async def test_a_client_that_leaves_before_the_answer_is_not_a_failure():
    app = FastAPI()
    registry = install_metrics(app, "t")

    async def receive():  # noqa: ANN202
        return {"type": "http.disconnect"}

    async def send(_message):  # noqa: ANN001, ANN202
        return None

    async def leaves(scope, receive_, send_):  # noqa: ANN001, ANN202  (as the guard answers a client gone)
        return None

    await HttpMetrics(leaves, registry=registry)({"type": "http", "method": "POST", "path": "/charges"}, receive, send)
    got = samples(registry.exposition().decode())
    assert got[("seteli_http_requests_total", frozenset({"method": "POST", "route": "(unmatched)",
                                                         "status": "499"}.items()))] == 1


async def test_a_source_whose_database_is_away_is_left_out_and_said_so():
    app = FastAPI()
    registry = install_metrics(app, "t")
    engine = make_engine("postgresql+asyncpg://postgres@127.0.0.1:1/nowhere")  # nobody listens on port 1
    registry.add_source("outbox", outbox_source(engine))

    async def fine():  # noqa: ANN202
        from prometheus_client.core import GaugeMetricFamily
        g = GaugeMetricFamily("seteli_test_figure", "a figure that answers")
        g.add_metric([], 7)
        return [g]

    registry.add_source("fine", fine)
    started = time.monotonic()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            r = await c.get("/metrics")
    finally:
        await engine.dispose()
    assert time.monotonic() - started < 5
    got = samples(r.text)
    assert got[("seteli_metrics_source_up", frozenset({"source": "outbox"}.items()))] == 0
    assert got[("seteli_metrics_source_up", frozenset({"source": "fine"}.items()))] == 1
    assert got[("seteli_test_figure", frozenset())] == 7
    assert ("seteli_outbox_depth", frozenset()) not in got


async def test_metrics_are_not_served_through_a_proxy():
    """The public Ingress forwards with X-Forwarded-For: /metrics is 404 there, served to a direct scrape."""
    app = FastAPI()
    install_metrics(app, "t")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.get("/metrics")).status_code == 200
        for header in ({"X-Forwarded-For": "203.0.113.7"}, {"Forwarded": "for=203.0.113.7"},
                       {"X-Real-IP": "203.0.113.7"}):
            r = await c.get("/metrics", headers=header)
            assert r.status_code == 404 and "seteli_" not in r.text, header


async def test_scheduled_job_runs_counted_by_job_and_outcome_and_read_from_the_database(pg):  # noqa: ANN001
    """A job that succeeds and one that fails, each run by a runner on a real PostgreSQL database under the app's
    registry: ``seteli_job_runs_total`` by job and outcome, and the jobs source reads their latest runs (the
    failed one's flag, the interval) from the database."""
    import asyncio

    from seteli_shared.jobs import Every, JobRunner, ScheduledJob
    from seteli_shared.metrics import current_metrics, jobs_source
    from seteli_shared.testing import eventually

    engine = make_engine(await pg.create("metricsjobs"))
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: ScheduledJob.__table__.create(c))
    app = FastAPI()
    registry = install_metrics(app, "t")
    registry.add_source("jobs", jobs_source(engine))
    current_metrics.set(registry)  # as a service's lifespan does: the runner's tasks count into it
    runner = JobRunner(engine, 0.9, instance="metrics-test")

    async def fine() -> int:
        return 1

    async def broken() -> int:
        raise RuntimeError("the bank's file server is away")

    tasks = [asyncio.create_task(runner.run("t.fine", Every(1), fine)),
             asyncio.create_task(runner.run("t.broken", Every(1), broken))]
    try:
        async def both_ran():  # noqa: ANN202
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
                got = samples((await c.get("/metrics")).text)
            ok = got.get(("seteli_job_runs_total", frozenset({"scheduled_job": "t.fine", "outcome": "ok"}.items())))
            failed = got.get(("seteli_job_runs_total",
                              frozenset({"scheduled_job": "t.broken", "outcome": "failed"}.items())))
            # (the latest run as the database has it: each second a new one starts, "running" for a moment)
            latest_failed = got.get(("seteli_job_last_run_failed", frozenset({"scheduled_job": "t.broken"}.items())))
            return got if ok and failed and latest_failed == 1 else None

        got = await eventually(both_ran, timeout=20)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await engine.dispose()
    assert got[("seteli_job_last_run_failed", frozenset({"scheduled_job": "t.broken"}.items()))] == 1
    assert got[("seteli_job_last_run_failed", frozenset({"scheduled_job": "t.fine"}.items()))] == 0
    assert got[("seteli_job_interval_seconds", frozenset({"scheduled_job": "t.fine"}.items()))] == 1
    assert time.time() - got[("seteli_job_last_due_timestamp_seconds",
                              frozenset({"scheduled_job": "t.fine"}.items()))] < 60
    assert ("seteli_job_runs_total", frozenset({"scheduled_job": "t.fine", "outcome": "failed"}.items())) not in got
