import asyncio
import json

from seteli_shared.cli import service_main

from .app import SPEC
from .settings import PaymentsSettings


def ledger_check(settings: PaymentsSettings) -> int:
    """``seteli-payments ledger-check``: the ledger's invariants (``usecases.ledger_check``) on the service's
    database; prints the result as JSON and exits 1 when one fails."""
    from seteli_shared.db import make_engine, session_factory

    from .usecases import ledger_check as check

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


def main() -> None:
    service_main(SPEC, PaymentsSettings, "payments.app:create_app",
                 extra_commands={"ledger-check": ("check the ledger's invariants; exit 1 when one fails",
                                                  ledger_check)})


if __name__ == "__main__":
    main()
