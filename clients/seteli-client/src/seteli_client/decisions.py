"""A funder's case system on the bus: publish service decisions, read the replies (docs/outside-systems.md).

``CaseSystem`` connects as the funder's own broker user (``<BROKER_USER_PREFIX>funder-<funder_id>``, made by
the operator with ``seteli-broker add-funder-system``) and:

- publishes each decision as a CloudEvents 1.0 JSON envelope of type ``fi.seteli.decision.v1`` to the topic
  exchange ``<namespace>.decisions`` with routing key ``decision.<funder_id>``: persistent, ``user_id`` = its
  broker user (the broker checks it), ``message_id`` = the envelope's id, with publisher confirms and
  ``mandatory``, so that a decision nobody would receive raises ``Unroutable`` (the broker returned it,
  ``NO_ROUTE``) and one the broker refuses raises ``Refused`` (a routing key or ``user_id`` not its own),
  instead of vanishing;
- reads the replies from its own queue ``<namespace>.decision-replies.<funder_id>`` (a consumer from
  ``__aenter__`` on): a reply is matched to its decision by ``causationid`` (the decision envelope's id) or,
  when a refused message's id could not be repeated, by ``decision_ref`` and ``decision_version``; a reply
  to no decision this process is waiting for goes to ``unclaimed``. A reply is acknowledged once handed
  over: the broker redelivers it to the next consumer otherwise.

``decide()`` is both: publish, then wait for the reply. A decision may be published again with the same
envelope (same id) after a failure: the platform answers a repeated version ``repeated``.
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote, urlparse

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import ChannelClosed, DeliveryError, PublishError

from .ids import message_id

DECISION_TYPE = "fi.seteli.decision.v1"
ACCEPTED_TYPE = "fi.seteli.decision.accepted.v1"
REJECTED_TYPE = "fi.seteli.decision.rejected.v1"
CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"


class NotPublished(Exception):
    """The decision did not reach the platform; publish it again (the same envelope) when the cause is gone."""


class Unroutable(NotPublished):
    """The broker returned the decision: no queue is bound for its routing key (``NO_ROUTE``)."""


class Refused(NotPublished):
    """The broker refused the publish (``ACCESS_REFUSED``: a routing key not the funder's own;
    ``PRECONDITION_FAILED``: a ``user_id`` that is not the connection's user)."""


@dataclass
class DecisionReply:
    """A reply: ``accepted`` with the voucher (and for a new one the client's one-time login code), or
    refused with a ``reason`` code. ``envelope`` is the whole CloudEvents message."""

    envelope: dict

    @property
    def data(self) -> dict:
        return self.envelope.get("data") or {}

    @property
    def accepted(self) -> bool:
        return self.envelope.get("type") == ACCEPTED_TYPE

    @property
    def reason(self) -> str | None:
        return None if self.accepted else self.data.get("reason")


def decision_envelope(funder_id: str, data: dict, *, source: str | None = None, envelope_id: str | None = None) -> dict:
    """A decision as the contract wants it: ``data`` (the ``DecisionData`` of docs/asyncapi.yaml) in a
    CloudEvents 1.0 envelope with a new id that holds no six digits in a row."""
    return {"specversion": "1.0", "id": envelope_id or message_id(),
            "source": source or f"/funder-{funder_id}/case-system", "type": DECISION_TYPE,
            "time": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
            "datacontenttype": "application/json", "subject": data.get("decision_ref"),
            "data": {"funder_id": funder_id, **data}}


@dataclass
class _Waiting:
    by_id: dict[str, asyncio.Future] = field(default_factory=dict)
    by_ref: dict[tuple[Any, Any], asyncio.Future] = field(default_factory=dict)


class CaseSystem:
    """``async with CaseSystem(amqp_url, funder_id="091", namespace="seteli") as cs: reply = await cs.decide(...)``.
    ``funder_id`` defaults to what follows ``funder-`` in the broker user's name."""

    def __init__(self, amqp_url: str, funder_id: str | None = None, namespace: str = "seteli",
                 publish_timeout: float = 10.0):
        self.amqp_url, self.namespace, self.publish_timeout = amqp_url, namespace, publish_timeout
        self.user = unquote(urlparse(amqp_url).username or "")
        self.funder_id = funder_id or self.user.rpartition("funder-")[2]
        if not self.funder_id:
            raise ValueError("cannot tell the funder from the broker user: give funder_id")
        self.unclaimed: list[DecisionReply] = []
        self._waiting = _Waiting()
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._replies: aio_pika.abc.AbstractQueue | None = None  # kept: a robust connection restores it

    @property
    def reply_queue(self) -> str:
        return f"{self.namespace}.decision-replies.{self.funder_id}"

    async def __aenter__(self) -> "CaseSystem":
        self._connection = await aio_pika.connect_robust(self.amqp_url)
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=100)
        # the queue exists already (the operator's seteli-broker made it): a case system may declare nothing
        self._replies = await channel.get_queue(self.reply_queue, ensure=False)
        await self._replies.consume(self._on_reply)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._connection is not None:
            await self._connection.close()

    async def _publishing_channel(self) -> aio_pika.abc.AbstractChannel:
        if self._channel is None or self._channel.is_closed:
            self._channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        return self._channel

    async def publish(self, envelope: dict) -> None:
        """Publish one decision and wait for the broker's confirm; ``Unroutable`` or ``Refused`` otherwise."""
        channel = await self._publishing_channel()
        exchange = await channel.get_exchange(f"{self.namespace}.decisions", ensure=False)
        message = aio_pika.Message(json.dumps(envelope).encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                   content_type=CONTENT_TYPE, message_id=envelope["id"], type=envelope["type"],
                                   user_id=self.user, app_id=f"funder-{self.funder_id}-case-system")
        try:
            await exchange.publish(message, f"decision.{self.funder_id}", mandatory=True, timeout=self.publish_timeout)
        except (DeliveryError, PublishError) as exc:
            raise Unroutable(f"the broker returned the decision: {exc}") from exc
        except ChannelClosed as exc:  # a refused publish closes the channel: the next publish opens another
            self._channel = None
            raise Refused(f"the broker refused the decision: {exc}") from exc

    async def reply_to(self, envelope: dict, timeout: float = 30.0) -> DecisionReply:
        """The reply to a decision published by this process (``asyncio.TimeoutError`` when none comes)."""
        future = asyncio.get_running_loop().create_future()
        data = envelope.get("data") or {}
        self._waiting.by_id[envelope["id"]] = future
        self._waiting.by_ref[(data.get("decision_ref"), data.get("decision_version"))] = future
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._waiting.by_id.pop(envelope["id"], None)
            self._waiting.by_ref.pop((data.get("decision_ref"), data.get("decision_version")), None)

    async def decide(self, envelope: dict, timeout: float = 30.0) -> DecisionReply:
        """Publish a decision and wait for its reply."""
        waiting = asyncio.ensure_future(self.reply_to(envelope, timeout))
        await asyncio.sleep(0)  # registered before the reply can come
        try:
            await self.publish(envelope)
        except NotPublished:
            waiting.cancel()
            raise
        return await waiting

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        async with message.process(requeue=True):
            reply = DecisionReply(json.loads(message.body))
            data = reply.data
            future = (self._waiting.by_id.get(reply.envelope.get("causationid") or "")
                      or self._waiting.by_ref.get((data.get("decision_ref"), data.get("decision_version"))))
            if future is not None and not future.done():
                future.set_result(reply)
            else:
                self.unclaimed.append(reply)
