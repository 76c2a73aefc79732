import asyncio

from seteli_shared.cli import service_main

from .app import SPEC
from .settings import VouchersSettings


def expire(settings: VouchersSettings) -> int:
    """``seteli-vouchers expire``: the daily expiry job (``lifecycle.expire_vouchers``) on the service's
    database; its ``VoucherExpired`` events wait in the outbox for the service's relay."""
    from seteli_shared.clock import SYSTEM_CLOCK
    from seteli_shared.db import make_engine, session_factory

    from .lifecycle import expire_vouchers

    async def run() -> int:
        engine = make_engine(settings.database_url)
        try:
            expired = await expire_vouchers(session_factory(engine), SYSTEM_CLOCK)
        finally:
            await engine.dispose()
        print(f"vouchers: {len(expired)} expired")
        return 0

    return asyncio.run(run())


def main() -> None:
    service_main(SPEC, VouchersSettings, "vouchers.app:create_app",
                 extra_commands={"expire": ("expire every voucher whose validity has passed (daily job)", expire)})


if __name__ == "__main__":
    main()
