import argparse
import asyncio
import json

from seteli_shared.cli import service_main
from seteli_shared.db import make_engine, session_factory, upgrade_async
from seteli_shared.settings import ServiceSettings

from .app import SPEC
from .settings import ReportingSettings


def rebuild(settings: ServiceSettings) -> int:
    """``seteli-reporting rebuild``: fold the event archive again into new read models, which then replace
the live ones (``usecases.rebuild``)."""
    import uuid

    from seteli_shared.logging import bind_correlation

    from . import usecases

    job_id = str(uuid.uuid4())
    print(f"reporting: rebuilding, job {job_id} (follow it: seteli-ops follow {job_id} -s reporting)", flush=True)

    async def run() -> dict:
        bind_correlation(job_id)  # the job's id (progress.track): GET /jobs/{id} on any reporting instance
        await upgrade_async(SPEC.migrations_dir, settings.database_url)
        engine = make_engine(settings.database_url)
        try:
            return await usecases.rebuild(session_factory(engine))
        finally:
            await engine.dispose()

    done = asyncio.run(run())
    print(f"reporting: read models rebuilt from {done['events_folded']} archived events")
    return 0


def audit(settings: ServiceSettings, args: argparse.Namespace) -> int:
    """``seteli-reporting audit --funder 091 --period 2026-11`` (``--operator`` for the statistics across
    funders): the audit of the month's published figures as the endpoint gives it, a line per suppressed
    cell, then the narrowest interval; ``--json`` prints the endpoint's body. Exit 1 when it fails."""
    from . import usecases

    async def run() -> dict:
        engine = make_engine(settings.database_url)
        try:
            return await usecases.monthly_audit(session_factory(engine), None if args.operator else args.funder,
                                                args.period)
        finally:
            await engine.dispose()

    result = asyncio.run(run())
    if args.json:
        print(json.dumps(result, default=str, indent=2))
        return 0 if result["passed"] else 1
    for c in result["cells"]:
        where = " ".join(filter(None, [c["funder_id"], c["table"], *c["row"].values()]))
        upper = "no bound" if c["upper"] is None else c["upper"]
        print(f"{where:50s} {c['figure']:28s} {c['lower']:>14} .. {upper:>14}  {c['verdict']}")
    n = result["narrowest"]
    print(f"{'passed' if result['passed'] else 'FAILED'}: {len(result['cells'])} suppressed cells"
          + (f"; narrowest {n['table']} {' '.join(n['row'].values())} {n['figure']} {n['lower']} .. {n['upper']}"
             if n else ""))
    return 0 if result["passed"] else 1


def _audit_options(parser: argparse.ArgumentParser) -> None:
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--funder", help="the funder's id, e.g. 091")
    who.add_argument("--operator", action="store_true", help="the operator's statistics beside every funder's report")
    parser.add_argument("--period", required=True, help="the month, YYYY-MM")
    parser.add_argument("--json", action="store_true", help="print the audit as the endpoint answers it")


def main() -> None:
    service_main(SPEC, ReportingSettings, "reporting.app:create_app", extra_commands={
        "rebuild": ("fold the archive of received events again into new read models and swap them in", rebuild),
        "audit": ("audit a month's suppression: each suppressed cell's interval given everything published",
                  audit, _audit_options)})


if __name__ == "__main__":
    main()
