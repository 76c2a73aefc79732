"""A sample publisher for funders' case systems: publish one service decision to seteli and print the reply.

It does what an integration must do (see "Decisions from case systems" in the README and the
``fi.seteli.decision.v1`` contract in docs/asyncapi.yaml):

- connect as the funder's own broker user (``seteli-broker add-funder-system 091 --password ...``
  creates ``funder-091``);
- publish the decision as a CloudEvents 1.0 JSON envelope to ``<ns>.decisions`` with routing key
  ``decision.<funder_id>``, persistent, ``user_id`` = the broker user (the broker checks it), with
  publisher confirms and ``mandatory`` (an unroutable decision is an error, not a silent loss);
- wait for the answer on the funder's own reply queue ``<ns>.decision-replies.<funder_id>`` (a
  ``fi.seteli.decision.accepted.v1`` with the voucher and, for a new voucher, the client's one-time login
  code, or a ``fi.seteli.decision.rejected.v1`` with a reason code) and print it as JSON.

Example:

    .venv/bin/python scripts/publish_decision.py --amqp-url amqp://funder-091:secret@127.0.0.1:5672/ \\
        --decision-ref HKI-2026-1 --client-ref asiakas-1 --units 20 --value-cents 2500

Exit status: 0 accepted, 2 rejected, 1 when the decision could not be published or no answer came in time.
Replies to other decisions found on the queue are left there (not acknowledged).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from datetime import date, datetime, timedelta, timezone
from urllib.parse import unquote, urlparse

import aio_pika
from aio_pika import DeliveryMode, Message

# ids the privacy guard can never take for a personal identity code: a random UUID carries the shape of one
# (six digits, A-F, three digits, a check character) about once in 27,000, and such a decision is refused
from seteli_shared.ids import clean, new_id

DECISION_TYPE = "fi.seteli.decision.v1"
ACCEPTED_TYPE = "fi.seteli.decision.accepted.v1"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    today = date.today()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--amqp-url", default=os.environ.get("AMQP_URL", "amqp://funder-091:funder-091@127.0.0.1:5672/"),
                   help="the funder system's own broker user (env AMQP_URL)")
    p.add_argument("--namespace", default=os.environ.get("BUS_NAMESPACE", "seteli"))
    p.add_argument("--funder", default=None, help="funder id (default: from the user name funder-<id>)")
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


def decision_envelope(args: argparse.Namespace, funder: str) -> dict:
    data: dict = {"funder_id": funder, "decision_ref": args.decision_ref, "decision_version": args.version,
                  "action": args.action, "client_ref": args.client_ref}
    if args.action == "grant":
        data.update(category=args.category, units_per_period=args.units, period=args.period,
                    value_per_unit_cents=args.value_cents, valid_from=args.valid_from, valid_until=args.valid_until)
    if args.age_band:
        data["age_band"] = args.age_band
    if args.municipality:
        data["municipality_of_residence"] = args.municipality
    return {"specversion": "1.0", "id": new_id(), "source": f"/funder-{funder}/case-system",
            "type": DECISION_TYPE, "time": datetime.now(timezone.utc).isoformat(),
            "datacontenttype": "application/json", "subject": args.decision_ref, "data": data}


async def run(args: argparse.Namespace) -> int:
    user = unquote(urlparse(args.amqp_url).username or "")
    funder = args.funder or user.rpartition("funder-")[2]
    if not funder:
        print("cannot tell the funder: give --funder", file=sys.stderr)
        return 1
    args.decision_ref = args.decision_ref or clean(lambda: f"DEC-{new_id().replace('-', '')[:12]}")
    envelope = decision_envelope(args, funder)
    connection = await aio_pika.connect(args.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.get_exchange(f"{args.namespace}.decisions", ensure=False)
        message = Message(json.dumps(envelope).encode(), delivery_mode=DeliveryMode.PERSISTENT,
                          content_type="application/cloudevents+json; charset=utf-8", message_id=envelope["id"],
                          type=DECISION_TYPE, user_id=user, app_id=f"funder-{funder}-case-system")
        try:
            await exchange.publish(message, f"decision.{funder}", mandatory=True, timeout=10)
        except Exception as exc:  # noqa: BLE001  (unroutable, refused, no confirm)
            print(f"the decision was not published: {exc!r}", file=sys.stderr)
            return 1
        print(json.dumps({"published": {"id": envelope["id"], "decision_ref": args.decision_ref,
                                        "decision_version": args.version, "action": args.action}}), flush=True)

        replies = await connection.channel()
        await replies.set_qos(prefetch_count=100)
        queue = await replies.declare_queue(f"{args.namespace}.decision-replies.{funder}", passive=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + args.timeout
        while loop.time() < deadline:
            got = await queue.get(fail=False)
            if got is None:
                await asyncio.sleep(0.2)
                continue
            reply = json.loads(got.body)
            data = reply.get("data") or {}
            if reply.get("causationid") == envelope["id"] or (
                    data.get("decision_ref") == args.decision_ref and data.get("decision_version") == args.version):
                await got.ack()
                print(json.dumps({"reply": reply}, indent=2))
                return 0 if reply.get("type") == ACCEPTED_TYPE else 2
            # another decision's reply: left unacknowledged, back on the queue when we close
        print(f"no reply within {args.timeout:g} s", file=sys.stderr)
        return 1
    finally:
        await connection.close()


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
