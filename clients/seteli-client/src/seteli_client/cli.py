"""The package's commands: ``seteli-publish-decision``, ``seteli-consume-notices``, ``seteli-verify-webhook``."""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from datetime import date, timedelta

from . import webhooks
from .decisions import CaseSystem, NotPublished, decision_envelope
from .ids import reference
from .notices import CLAIM_TYPE, ProviderSystem


def _decision_args(argv: list[str] | None) -> argparse.Namespace:
    today = date.today()
    p = argparse.ArgumentParser(prog="seteli-publish-decision", description=(
        "Publish one service decision as a funder's case system and print the reply (JSON). Exit status: 0 "
        "accepted, 2 refused (the reply's reason), 1 not published or no reply in time."))
    p.add_argument("--amqp-url", default=os.environ.get("AMQP_URL"), required="AMQP_URL" not in os.environ,
                   help="the funder system's own broker user, amqp://<prefix>funder-<id>:<password>@host:5672/")
    p.add_argument("--namespace", default=os.environ.get("BUS_NAMESPACE", "seteli"))
    p.add_argument("--funder", default=None, help="funder id (default: from the user name ...funder-<id>)")
    p.add_argument("--decision-ref", default=None, help="the decision's reference (default: a new one)")
    p.add_argument("--version", type=int, default=1, help="decision_version: 1, then higher to amend or revoke")
    p.add_argument("--action", choices=("grant", "revoke"), default="grant")
    p.add_argument("--client-ref", default="asiakas-1", help="pseudonymous client reference (never a HETU)")
    p.add_argument("--category", default="home_care")
    p.add_argument("--units", default="20", help="units per period (decimal)")
    p.add_argument("--period", default="month")
    p.add_argument("--value-cents", type=int, default=2500, help="value per unit in cents")
    p.add_argument("--valid-from", default=today.isoformat())
    p.add_argument("--valid-until", default=(today + timedelta(days=364)).isoformat())
    p.add_argument("--age-band", default=None, help='optional statistics, e.g. "65-74"')
    p.add_argument("--municipality", default=None, help="optional statistics: 3-digit municipality of residence")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the reply")
    return p.parse_args(argv)


def decision_data(args: argparse.Namespace) -> dict:
    data: dict = {"decision_ref": args.decision_ref, "decision_version": args.version, "action": args.action,
                  "client_ref": args.client_ref}
    if args.action == "grant":
        data.update(category=args.category, units_per_period=args.units, period=args.period,
                    value_per_unit_cents=args.value_cents, valid_from=args.valid_from, valid_until=args.valid_until)
    if args.age_band:
        data["age_band"] = args.age_band
    if args.municipality:
        data["municipality_of_residence"] = args.municipality
    return data


async def _publish(args: argparse.Namespace) -> int:
    args.decision_ref = args.decision_ref or reference()
    async with CaseSystem(args.amqp_url, args.funder, args.namespace) as case_system:
        envelope = decision_envelope(case_system.funder_id, decision_data(args))
        try:
            reply = await case_system.decide(envelope, args.timeout)
        except NotPublished as exc:
            print(f"the decision was not published: {exc}", file=sys.stderr)
            return 1
        except asyncio.TimeoutError:
            print(f"no reply within {args.timeout:g} s", file=sys.stderr)
            return 1
    print(json.dumps({"published": {"id": envelope["id"], "decision_ref": args.decision_ref,
                                    "decision_version": args.version, "action": args.action}}))
    print(json.dumps({"reply": reply.envelope}, indent=2))
    return 0 if reply.accepted else 2


def publish_decision(argv: list[str] | None = None) -> int:
    return asyncio.run(_publish(_decision_args(argv)))


async def _consume(amqp_url: str, namespace: str, provider_id: str, once: bool) -> int:
    async with ProviderSystem(amqp_url, provider_id, namespace) as provider:
        async for envelope in provider.notices():
            data = envelope["data"]
            if envelope["type"] == CLAIM_TYPE:  # to be paid back
                line = {k: data[k] for k in ("claim_id", "net_cents", "reference", "due_on", "claim_path")}
            else:
                line = {k: data[k] for k in ("settlement_id", "net_cents", "reference", "statement_path")}
            print(json.dumps({"id": envelope["id"], "type": envelope["type"], **line}), flush=True)
            if once:
                break
    return 0


def consume_notices(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="seteli-consume-notices", description=(
        "Read a provider's settlement notices and recovery claims from its own queue, one JSON line each, "
        "acknowledged after printing (a notice may come twice: deduplicate by its id)."))
    p.add_argument("--provider", required=True)
    p.add_argument("--amqp-url", default=os.environ.get("AMQP_URL"), required="AMQP_URL" not in os.environ,
                   help="the provider system's broker user, amqp://<prefix>provider-<id>:<password>@host:5672/")
    p.add_argument("--namespace", default=os.environ.get("BUS_NAMESPACE", "seteli"))
    p.add_argument("--once", action="store_true", help="stop after the first notice")
    args = p.parse_args(argv)
    return asyncio.run(_consume(args.amqp_url, args.namespace, args.provider, args.once))


def verify_webhook(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="seteli-verify-webhook", description=(
        "Check a webhook request: the body on standard input, the X-Seteli-Signature header and the secret(s) "
        "as arguments. Exit status 0 when it is the platform's and recent, 1 otherwise."))
    p.add_argument("--signature", required=True, help="the X-Seteli-Signature header's value")
    p.add_argument("--secret", action="append", required=True, help="a webhook secret (again for a second one)")
    p.add_argument("--tolerance", type=int, default=webhooks.TOLERANCE_SECONDS)
    p.add_argument("--now", type=float, default=None, help="unix time to check against (default: now)")
    args = p.parse_args(argv)
    ok = webhooks.verify(args.secret, args.signature, sys.stdin.buffer.read(), args.tolerance, args.now)
    print("valid" if ok else "not valid")
    return 0 if ok else 1
