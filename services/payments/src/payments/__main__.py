import asyncio
import json

from seteli_shared.cli import service_main

from .app import SPEC
from .settings import PaymentsSettings


def ledger_check(settings: PaymentsSettings) -> int:
    """``seteli-payments ledger-check``: the ledger's invariants (``ledger.check.ledger_check``) on the service's
    database; prints the result as JSON and exits 1 when one fails."""
    from seteli_shared.db import make_engine, session_factory

    from .ledger.check import ledger_check as check

    async def run() -> int:
        engine = make_engine(settings.database_url)
        try:
            async with session_factory(engine)() as session:
                result = await check(session)
        finally:
            await engine.dispose()
        print(json.dumps(result, indent=2, default=str))
        return 0 if result["ok"] else 1

    return asyncio.run(run())


def settle(settings: PaymentsSettings) -> int:
    """``seteli-payments settle``: the daily settlement run now (``settlement.runs.run_settlements``) on the
    service's database; its events and notices wait in the outbox for the service's relay."""
    from seteli_shared.clock import SystemClock
    from seteli_shared.db import make_engine, session_factory

    from .settlement.runs import JOB, run_settlements

    async def run() -> int:
        engine = make_engine(settings.database_url)
        try:
            result = await run_settlements(session_factory(engine), SystemClock(), JOB, settings, hold_back=True)
        finally:
            await engine.dispose()
        print(f"payments: run {result.run.id}: {len(result.settlements)} settled, {len(result.held_back)} held "
              f"back, net {result.run.net_cents} cents, {len(result.claims)} recovery claims")
        return 0

    return asyncio.run(run())


def main() -> None:
    service_main(SPEC, PaymentsSettings, "payments.app:create_app",
                 extra_commands={"ledger-check": ("check the ledger's invariants; exit 1 when one fails",
                                                  ledger_check),
                                 "settle": ("the daily settlement run now (payouts under the minimum wait)", settle)})


if __name__ == "__main__":
    main()
