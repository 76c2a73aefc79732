"""The payments service: its rooms' routers mounted side by side, the events it consumes, and its background
jobs. Each room (a subpackage) holds one capability with its router, use cases and rules:

- ``charging``: charges (single, JSON bulk, streamed CSV) through one charge engine, Idempotency-Keys,
  cancellations, corrections after settlement;
- ``settlement``: settlement runs, payouts, the 14-day guarantee, payment files, statements;
- ``invoicing``: funders' monthly invoices;
- ``bank``: payment files executed, funders' payments, recovery claims and their repayments;
- ``notices``: notices to providers' systems (queues, webhooks and their egress checks, parked notices);
- ``projections``: what payments learns from the bus (vouchers, funders, providers, approvals, prices);
- ``ledger``: the double-entry postings, the balances and the ledger's invariants."""
from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

from fastapi import FastAPI

from seteli_shared.service import ServiceSpec, create_service_app

from .bank.router import router as bank_router
from . import metrics as payments_metrics
from .charging import idempotency
from .charging.router import BULK_PATH
from .charging.router import router as charging_router
from .charging import shortcut
from .invoicing.router import router as invoicing_router
from .ledger.router import router as ledger_router
from .notices import parked
from .notices.router import router as notices_router
from .notices.webhooks import WebhookWorker
from .projections.handlers import BATCH_HANDLERS, HANDLERS
from .settings import PaymentsSettings
from .settlement import runs
from .settlement.router import router as settlement_router


@asynccontextmanager
async def jobs(app: FastAPI) -> AsyncIterator[None]:
    """The service's background work: the webhook worker, the purge of expired Idempotency-Key records, the
    slow retry of parked notices and (not in tests) the daily settlement run, each with the app's clock."""
    runtime, settings, clock = app.state.runtime, app.state.settings, app.state.clock
    payments_metrics.install(app.state.metrics, runtime.sessions, clock, settings)
    worker = WebhookWorker(runtime.sessions, settings, runtime.engine.dialect.name == "postgresql",
                           # a test's own resolver and TLS trust (app.state, as its clock); else the system's
                           getattr(app.state, "webhook_resolver", None), getattr(app.state, "webhook_tls", True),
                           clock)
    tasks = [asyncio.create_task(worker.run(), name="webhook-worker"),
             asyncio.create_task(idempotency.purge_scheduler(runtime.sessions, clock, settings),
                                 name="idempotency-purge"),
             asyncio.create_task(parked.parked_retry_scheduler(runtime.sessions, settings), name="parked-retry")]
    if settings.settlement_scheduler and settings.environment != "test":
        tasks.append(asyncio.create_task(runs.scheduler(runtime.sessions, clock, settings),
                                         name="settlement-scheduler"))
    try:
        yield
    finally:
        worker.stop()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


SPEC = ServiceSpec(
    name="payments",
    migrations_dir=Path(__file__).parent / "migrations",
    # the rooms side by side (the settlement router has /settlements/at-risk before /settlements/{id})
    routers=[charging_router, settlement_router, invoicing_router, bank_router, notices_router, ledger_router],
    bulk_paths=(BULK_PATH,),
    streamed_bodies=((BULK_PATH, "text/csv"),),
    handlers=HANDLERS,
    batch_handlers=BATCH_HANDLERS,  # runs of VoucherIssued folded at once (projections.handlers)
    readiness_details=parked.readiness_details,
    jobs=jobs,
    title="seteli payments",
    description="Charges, the double-entry ledger, settlements, payouts and the bank side.",
)


def create_app(settings: PaymentsSettings | None = None) -> FastAPI:
    app = create_service_app(SPEC, settings or PaymentsSettings())
    shortcut.install(app)  # POST /charges without FastAPI's dependency resolution (the same answers)
    return app
