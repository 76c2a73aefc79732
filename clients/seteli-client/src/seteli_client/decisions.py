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

Batched replies: by default (``batched_replies=True``) each decision is published with the CloudEvents extension
attribute ``replymode: batched`` (unless its envelope names a ``replymode`` itself), so the platform answers the
decisions it takes together in one ``fi.seteli.decision.replies.v1`` message listing each decision's reply envelope
(contract 1.8.0); the client unpacks it and matches each listed reply as it matches a single one. Single replies
(a platform before 1.8.0, a refused message, ``batched_replies=False``) are read as before.

``decide()`` is both: publish, then wait for the reply. A decision may be published again with the same
envelope (same id) after a failure: the platform answers a repeated version ``repeated``.

``decide_many()`` does the same for many decisions as a stream: it keeps up to ``in_flight`` decisions
published and unanswered at once (their publishes and confirms overlap, replies are collected as they come) and
returns each decision's reply, or why it got none, in the order given. One decision awaited at a time costs a
round trip through the platform each; a bulk load (a month's decisions, a migration) wants many in flight.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote, urlparse

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import ChannelClosed, ChannelInvalidStateError, DeliveryError, PublishError

from .ids import message_id

DECISION_TYPE = "fi.seteli.decision.v1"
ACCEPTED_TYPE = "fi.seteli.decision.accepted.v1"
REJECTED_TYPE = "fi.seteli.decision.rejected.v1"
#: several replies in one message (contract 1.8.0), for a case system that asks for them (``replymode``)
REPLIES_TYPE = "fi.seteli.decision.replies.v1"
BATCHED = "batched"
CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
#: publishes a publishing channel takes at once (their confirms overlap; the others wait their turn untimed)
PUBLISHES_A_CHANNEL = 64


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


def _replies_in(envelope: Any) -> list[DecisionReply]:
    """The replies a message carries: itself, or each reply a ``fi.seteli.decision.replies.v1`` lists (``ValueError``
    for a message that is neither an envelope nor such a list of envelopes)."""
    if not isinstance(envelope, dict):
        raise ValueError("not a CloudEvents envelope")
    if envelope.get("type") != REPLIES_TYPE:
        return [DecisionReply(envelope)]
    listed = (envelope.get("data") or {}).get("replies")
    if not isinstance(listed, list) or not all(isinstance(e, dict) for e in listed):
        raise ValueError("a fi.seteli.decision.replies.v1 without its list of replies")
    return [DecisionReply(e) for e in listed]


def decision_envelope(funder_id: str, data: dict, *, source: str | None = None, envelope_id: str | None = None) -> dict:
    """A decision as the contract wants it: ``data`` (the ``DecisionData`` of docs/asyncapi.yaml) in a
    CloudEvents 1.0 envelope with a new id that holds no six digits in a row."""
    return {"specversion": "1.0", "id": envelope_id or message_id(),
            "source": source or f"/funder-{funder_id}/case-system", "type": DECISION_TYPE,
            "time": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
            "datacontenttype": "application/json", "subject": data.get("decision_ref"),
            "data": {"funder_id": funder_id, **data}}


def _expire(future: asyncio.Future) -> None:
    if not future.done():
        future.set_exception(asyncio.TimeoutError())


async def _within(future: asyncio.Future, timeout: float) -> Any:
    """The result of a reply's ``future`` within ``timeout`` seconds, else ``asyncio.TimeoutError`` (the future is
    then done: a late reply goes to ``unclaimed``). A timer on the future itself, not ``asyncio.wait_for``: that
    costs a waiter future and callbacks more for each of a stream's thousands of decisions."""
    timer = asyncio.get_running_loop().call_later(timeout, _expire, future)
    try:
        return await future
    finally:
        timer.cancel()


@dataclass
class _Waiting:
    by_id: dict[str, asyncio.Future] = field(default_factory=dict)
    by_ref: dict[tuple[Any, Any], asyncio.Future] = field(default_factory=dict)


class CaseSystem:
    """``async with CaseSystem(amqp_url, funder_id="091", namespace="seteli") as cs: reply = await cs.decide(...)``.
    ``funder_id`` defaults to what follows ``funder-`` in the broker user's name."""

    def __init__(self, amqp_url: str, funder_id: str | None = None, namespace: str = "seteli",
                 publish_timeout: float = 10.0, reply_prefetch: int = 256, publish_channels: int = 4,
                 batched_replies: bool = True):
        self.amqp_url, self.namespace, self.publish_timeout = amqp_url, namespace, publish_timeout
        #: ask for the replies in ``fi.seteli.decision.replies.v1`` messages (``replymode: batched``): one message
        #: for many decisions instead of one each (a platform before contract 1.8.0 ignores it and answers singly)
        self.batched_replies = batched_replies
        if publish_channels < 1:
            raise ValueError("publish_channels must be at least 1")
        #: channels publishes take turns on: a channel writes one publish at a time (aio-pika awaits each one's
        #: write before the next), so decisions published side by side (``decide_many``) go out several at once
        self.publish_channels = publish_channels
        #: replies the broker may hand over before they are acknowledged (more keeps a stream of replies flowing)
        self.reply_prefetch = reply_prefetch
        self.user = unquote(urlparse(amqp_url).username or "")
        self.funder_id = funder_id or self.user.rpartition("funder-")[2]
        if not self.funder_id:
            raise ValueError("cannot tell the funder from the broker user: give funder_id")
        self.unclaimed: list[DecisionReply] = []
        self._waiting = _Waiting()
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        #: per publishing channel: the channel and the decisions exchange on it (None until opened, or after it closed)
        self._channels: list[tuple[aio_pika.abc.AbstractChannel, aio_pika.abc.AbstractExchange] | None] = [
            None] * publish_channels
        self._turn = 0
        #: publishes handed to aio-pika and not yet confirmed, at most ``PUBLISHES_A_CHANNEL`` a channel: a channel
        #: writes one publish at a time, and ``publish_timeout`` counts from the hand-over, so a stream's thousand
        #: decisions queued on four channels timed out waiting for their turn on a busy machine, unsent
        self._publishing = asyncio.Semaphore(PUBLISHES_A_CHANNEL * publish_channels)
        self._opening = asyncio.Lock()
        self._replies: aio_pika.abc.AbstractQueue | None = None  # kept: a robust connection restores it
        self._to_ack: AbstractIncomingMessage | None = None  # the latest reply handed over and not yet acknowledged
        self._ack_soon = False
        self._acking: set[asyncio.Task] = set()

    @property
    def reply_queue(self) -> str:
        return f"{self.namespace}.decision-replies.{self.funder_id}"

    async def __aenter__(self) -> "CaseSystem":
        self._connection = await aio_pika.connect_robust(self.amqp_url)
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=self.reply_prefetch)
        # the queue exists already (the operator's seteli-broker made it): a case system may declare nothing
        self._replies = await channel.get_queue(self.reply_queue, ensure=False)
        await self._replies.consume(self._on_reply)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._acknowledge()
        if self._acking:
            await asyncio.gather(*self._acking, return_exceptions=True)
        if self._connection is not None:
            await self._connection.close()

    async def _decisions_exchange(self, slot: int) -> aio_pika.abc.AbstractExchange:
        """The decisions exchange on publishing channel ``slot`` (opened once for all the publishes that need it at
        the same moment)."""
        found = self._channels[slot]
        if found is not None and not found[0].is_closed:
            return found[1]
        async with self._opening:
            found = self._channels[slot]
            if found is None or found[0].is_closed:
                # a plain channel, not one the robust connection reopens by itself: a refused publish closes the
                # channel, and a robust one reopening under the publishes still under way got the whole
                # connection closed (CHANNEL_ERROR); the next publish opens a channel of its own instead
                channel = aio_pika.Channel(self._connection, publisher_confirms=True, on_return_raises=True)
                await channel
                found = (channel, await channel.get_exchange(f"{self.namespace}.decisions", ensure=False))
                self._channels[slot] = found
            return found[1]

    async def publish(self, envelope: dict) -> None:
        """Publish one decision and wait for the broker's confirm; ``Unroutable`` or ``Refused`` otherwise."""
        async with self._publishing:
            await self._publish(envelope)

    async def _publish(self, envelope: dict) -> None:
        slot = self._turn
        self._turn = (slot + 1) % self.publish_channels
        exchange = await self._decisions_exchange(slot)
        if self.batched_replies and "replymode" not in envelope:
            envelope = {**envelope, "replymode": BATCHED}
        message = aio_pika.Message(json.dumps(envelope).encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                   content_type=CONTENT_TYPE, message_id=envelope["id"], type=envelope["type"],
                                   user_id=self.user, app_id=f"funder-{self.funder_id}-case-system")
        try:
            await exchange.publish(message, f"decision.{self.funder_id}", mandatory=True, timeout=self.publish_timeout)
        except (DeliveryError, PublishError) as exc:
            raise Unroutable(f"the broker returned the decision: {exc}") from exc
        except ChannelInvalidStateError as exc:  # closed under it by another publish's refusal: not refused itself
            self._channels[slot] = None
            raise NotPublished(f"the channel closed before the decision went out: {exc}") from exc
        except ChannelClosed as exc:  # a refused publish closes the channel: the next publish opens another
            self._channels[slot] = None
            raise Refused(f"the broker refused the decision: {exc}") from exc

    def _expect(self, envelope: dict) -> asyncio.Future:
        """A future for the reply to ``envelope``, registered before it is published."""
        future = asyncio.get_running_loop().create_future()
        data = envelope.get("data") or {}
        self._waiting.by_id[envelope["id"]] = future
        self._waiting.by_ref[(data.get("decision_ref"), data.get("decision_version"))] = future
        return future

    def _forget(self, envelope: dict, future: asyncio.Future) -> None:
        """Stop waiting for ``envelope``'s reply (only the entries that are still this future's own)."""
        data = envelope.get("data") or {}
        for waiting, key in ((self._waiting.by_id, envelope["id"]),
                             (self._waiting.by_ref, (data.get("decision_ref"), data.get("decision_version")))):
            if waiting.get(key) is future:
                del waiting[key]

    async def reply_to(self, envelope: dict, timeout: float = 30.0) -> DecisionReply:
        """The reply to a decision published by this process (``asyncio.TimeoutError`` when none comes)."""
        future = self._expect(envelope)
        try:
            return await _within(future, timeout)
        finally:
            self._forget(envelope, future)

    async def decide(self, envelope: dict, timeout: float = 30.0) -> DecisionReply:
        """Publish a decision and wait for its reply."""
        future = self._expect(envelope)  # registered before the reply can come
        try:
            await self.publish(envelope)
            return await _within(future, timeout)
        finally:
            self._forget(envelope, future)

    async def decide_many(self, envelopes: Iterable[dict], *, in_flight: int = 1000, timeout: float = 60.0
                          ) -> list[DecisionReply | NotPublished | asyncio.TimeoutError]:
        """Publish many decisions, keeping up to ``in_flight`` of them published and not yet answered, and
        collect the replies as they come. Returns, in the order of ``envelopes``, each decision's reply, or
        the ``NotPublished`` (``Unroutable``, ``Refused``) of one that did not reach the platform, or the
        ``asyncio.TimeoutError`` of one whose reply did not come within ``timeout`` seconds of its publish:
        publish those again with the same envelope (the platform answers a version it has applied
        ``repeated``). Any other error (the connection lost for good) stops the whole call and is raised.

        The envelopes' ids must differ (a reply is matched to its decision by the id); so must their
        (``decision_ref``, ``decision_version``) pairs, as a refused message's reply may carry only those.
        A decision's later versions belong in a later call: within one call the decisions travel side by side
        and the platform may see them in any order. The first decision is published alone: when the broker
        refuses it, every decision of the call is answered ``Refused`` without being sent."""
        envelopes = list(envelopes)
        ids = {e["id"] for e in envelopes}
        refs = {((e.get("data") or {}).get("decision_ref"), (e.get("data") or {}).get("decision_version"))
                for e in envelopes}
        if len(ids) != len(envelopes) or len(refs) != len(envelopes):
            raise ValueError("decide_many: each envelope needs an id and a (decision_ref, decision_version) "
                             "of its own")
        if in_flight < 1:
            raise ValueError("decide_many: in_flight must be at least 1")
        results: list[DecisionReply | NotPublished | asyncio.TimeoutError | None] = [None] * len(envelopes)
        if not envelopes:
            return []

        async def answer(i: int, future: asyncio.Future) -> None:
            try:
                results[i] = await _within(future, timeout)
            except asyncio.TimeoutError as exc:
                results[i] = exc
            finally:
                self._forget(envelopes[i], future)

        todo = iter(enumerate(envelopes))

        async def sender() -> None:  # one decision at a time; ``in_flight`` senders side by side
            for i, envelope in todo:
                try:
                    results[i] = await self.decide(envelope, timeout)
                except (NotPublished, asyncio.TimeoutError) as exc:
                    results[i] = exc

        async with asyncio.TaskGroup() as group:
            # the first decision alone: a publish the broker refuses (a routing key or user that is not this case
            # system's) would refuse every decision of the call, and a refusal among many publishes under way
            # closes the whole connection (frames keep coming on the channel the broker closed)
            _, first = next(todo)
            future = self._expect(first)
            try:
                await self.publish(first)
            except NotPublished as exc:
                self._forget(first, future)
                if isinstance(exc, Refused):
                    return [exc] + [Refused(f"not sent: the broker refused the call's first decision ({exc})")
                                    for _ in envelopes[1:]]
                results[0] = exc
            else:
                group.create_task(answer(0, future))
            for _ in range(min(in_flight, len(envelopes) - 1)):
                group.create_task(sender())
        return results  # type: ignore[return-value]  (every item set)

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        try:
            replies = _replies_in(json.loads(message.body))
        except Exception:  # noqa: BLE001  (not a reply this client can read: back to the queue, as before)
            await self._acknowledge()
            await message.reject(requeue=True)
            return
        for reply in replies:
            self._hand_over(reply)
        # handed over: acknowledged with the replies that arrive with it, in one cumulative ack (a stream of
        # replies costs an ack frame per burst, not per reply)
        self._to_ack = message
        if not self._ack_soon:
            self._ack_soon = True
            asyncio.get_running_loop().call_soon(self._ack_later)

    def _hand_over(self, reply: DecisionReply) -> None:
        """To the decision waiting for it (by ``causationid``, else by reference and version), else ``unclaimed``."""
        data = reply.data
        future = (self._waiting.by_id.get(reply.envelope.get("causationid") or "")
                  or self._waiting.by_ref.get((data.get("decision_ref"), data.get("decision_version"))))
        if future is not None and not future.done():
            future.set_result(reply)
        else:
            self.unclaimed.append(reply)

    def _ack_later(self) -> None:
        task = asyncio.ensure_future(self._acknowledge())
        self._acking.add(task)
        task.add_done_callback(self._acking.discard)

    async def _acknowledge(self) -> None:
        """Acknowledge every reply handed over so far (the latest one's tag, ``multiple``: replies are handed
        over in the order they are delivered on the one channel)."""
        self._ack_soon = False
        message, self._to_ack = self._to_ack, None
        if message is not None:
            try:
                await message.ack(multiple=True)
            except Exception:  # noqa: BLE001,S110  (the channel went: the broker delivers them again, answered
                pass           # to nobody, to ``unclaimed``; a reply may be handed over twice, never lost)
