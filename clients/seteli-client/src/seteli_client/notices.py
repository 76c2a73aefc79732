"""A provider's system reading its notices from its own queue (docs/outside-systems.md).

``ProviderSystem`` connects as the provider's broker user (``<BROKER_USER_PREFIX>provider-<provider_id>``,
made by the operator with ``seteli-broker add-provider-system``), which may read only its own queue
``<namespace>.notices.<provider_id>``: settlement notices (``fi.seteli.notice.settlement.v1``) and recovery
claims (``fi.seteli.notice.recovery-claim.v1``). Delivery is at least once: a notice may come twice, so
``notices()`` drops an envelope id it has already handed over in this process (keep the ids you have
booked to drop repeats across restarts too). A notice is acknowledged only after the body of the ``async
for`` that got it has finished, so one whose handling fails (an exception out of the loop) comes again; a
notice that fails 20 times goes to the dead-letter exchange.
"""
from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aio_pika

SETTLEMENT_TYPE = "fi.seteli.notice.settlement.v1"
CLAIM_TYPE = "fi.seteli.notice.recovery-claim.v1"


class ProviderSystem:
    def __init__(self, amqp_url: str, provider_id: str, namespace: str = "seteli"):
        self.amqp_url, self.provider_id, self.namespace = amqp_url, provider_id, namespace
        self.seen: set[str] = set()
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None

    @property
    def queue(self) -> str:
        return f"{self.namespace}.notices.{self.provider_id}"

    async def __aenter__(self) -> "ProviderSystem":
        self._connection = await aio_pika.connect_robust(self.amqp_url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._connection is not None:
            await self._connection.close()

    async def notices(self) -> AsyncIterator[dict]:
        """Each new notice's CloudEvents envelope, acknowledged when the loop asks for the next one."""
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=50)
        # the queue exists already (seteli-broker made it); a provider's user may not declare anything
        queue = await channel.get_queue(self.queue, ensure=False)
        async with queue.iterator() as messages:
            async for message in messages:
                async with message.process(requeue=True):
                    envelope = json.loads(message.body)
                    if envelope.get("id") in self.seen:
                        continue
                    yield envelope
                    self.seen.add(envelope.get("id"))
