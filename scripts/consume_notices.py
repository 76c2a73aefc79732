"""A sample provider system reading its settlement notices from its own queue (as its broker user
``provider-<id>``, made by ``seteli-broker add-provider-system <id> --password ...``):

    .venv/bin/python scripts/consume_notices.py --provider <id> \\
        --amqp-url amqp://provider-<id>:<password>@127.0.0.1:5672/

It prints each notice (``fi.seteli.notice.settlement.v1`` and ``fi.seteli.notice.recovery-claim.v1``, contract
in docs/asyncapi.yaml) as one JSON line
and acknowledges it after printing; ``--once`` stops after the first. A notice may come twice (at least
once): deduplicate by the envelope's ``id``."""
from __future__ import annotations

import argparse
import asyncio
import json
import sys

import aio_pika


async def consume(amqp_url: str, namespace: str, provider_id: str, once: bool) -> int:
    connection = await aio_pika.connect_robust(amqp_url)
    seen: set[str] = set()
    async with connection:
        channel = await connection.channel()
        # the queue exists already (seteli-broker made it); a provider's user may not declare anything
        queue = await channel.get_queue(f"{namespace}.notices.{provider_id}", ensure=False)
        async with queue.iterator() as messages:
            async for message in messages:
                async with message.process():
                    envelope = json.loads(message.body)
                    if envelope["id"] in seen:
                        continue
                    seen.add(envelope["id"])
                    data = envelope["data"]
                    if envelope["type"] == "fi.seteli.notice.recovery-claim.v1":  # to be paid back
                        line = {"claim_id": data["claim_id"], "net_cents": data["net_cents"],
                                "reference": data["reference"], "due_on": data["due_on"],
                                "claim_path": data["claim_path"]}
                    else:
                        line = {"settlement_id": data["settlement_id"], "net_cents": data["net_cents"],
                                "reference": data["reference"], "statement_path": data["statement_path"]}
                    print(json.dumps({"type": envelope["type"], **line}), flush=True)
                if once:
                    return 0
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--provider", required=True)
    parser.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--namespace", default="seteli")
    parser.add_argument("--once", action="store_true")
    args = parser.parse_args()
    return asyncio.run(consume(args.amqp_url, args.namespace, args.provider, args.once))


if __name__ == "__main__":
    sys.exit(main())
