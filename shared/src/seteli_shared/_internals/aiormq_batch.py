"""aiormq's channel internals, in this one module: ``Bus.publish_many`` writes a whole batch of publishes to a
channel in one frame write and waits for their confirms together, which neither aio-pika nor aiormq offers
publicly (``Channel.basic_publish`` writes and awaits one message at a time: ~0.15 ms of Python each, which
capped the outbox relay at 2,000-3,000 messages/s). It does what ``basic_publish`` does for each message --
under the channel's publish ``lock``, take the next ``delivery_tag``, register a confirm future in
``confirmations`` and the message id in ``message_id_delivery_tag``, put the frames on the ``write_queue`` as
a ``ChannelFrame`` and await its drain -- for all of them at once.

Nothing else in the project touches these attributes. aiormq is pinned to the minor version tested
(``shared/pyproject.toml``); ``shared/tests/test_private_internals.py`` fails, naming what changed, when an
upgrade moves any of them; without them (``capable`` is False) ``Bus.publish_many`` publishes one by one
through aio-pika's public API."""
from __future__ import annotations

import asyncio
from typing import Any

from aiormq.abc import ChannelFrame
from aiormq.exceptions import ChannelInvalidStateError

#: the attributes of an aiormq channel this module uses
USED = ("lock", "delivery_tag", "confirmations", "message_id_delivery_tag", "write_queue", "number",
        "max_content_size", "create_future", "publisher_confirms")


def capable(channel: Any) -> bool:
    """aiormq's channel internals ``publish_many`` relies on are there (else it publishes one by one)."""
    return all(hasattr(channel, a) for a in USED) and channel.publisher_confirms


def frame_limits(channel: Any) -> tuple[int, int]:
    """The channel's number and the largest body frame it takes (what the frames are encoded for)."""
    return channel.number, channel.max_content_size


async def publish_frames(channel: Any, parts: list[bytes], message_ids: list[str],
                         timeout: float) -> list[BaseException | asyncio.Future | None]:
    """Write each message's frames (``parts``, one mandatory publish each) to the channel in one write and wait
    at most ``timeout`` for their confirms. Per message: None (confirmed), the exception that failed it, or (a
    timeout after its frames went out) its confirm still open, which the broker may yet settle."""
    results: list[BaseException | asyncio.Future | None] = [None] * len(parts)
    confirms: dict[int, asyncio.Future] = {}
    registered: list[tuple[int, str]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    # one future of the channel's own per batch: aiormq rejects it when the channel or its connection
    # closes, and that rejects the batch's confirms (plain futures: cheaper than one of its own each)
    closed = channel.create_future()
    closed.add_done_callback(_rejecter(confirms))
    in_doubt = False
    try:
        async with asyncio.timeout_at(deadline):
            await _write_batch(channel, loop, message_ids, parts, confirms, registered)
            for fut in list(confirms.values()):  # the broker confirms in order: few of these wait
                if not fut.done():
                    try:  # shielded: a timeout must leave the confirm open (in doubt), not cancel it
                        await asyncio.shield(fut)
                    except Exception:  # noqa: BLE001  (read below)
                        pass
    except BaseException as exc:
        # on a timeout the frames written may still reach the broker: their confirms stay open (in doubt)
        in_doubt = isinstance(exc, TimeoutError) and any(not fut.done() for fut in confirms.values())
        if not in_doubt:
            for fut in confirms.values():
                if not fut.done():
                    fut.cancel()
        if not isinstance(exc, Exception):
            _retrieve(confirms.values())
            raise
        for i in range(len(parts)):
            if i not in confirms:
                results[i] = exc
    finally:
        if in_doubt:
            _await_late_confirms(channel, closed, confirms, dict(enumerate(registered)))
        else:
            closed.cancel()
            for tag, message_id in registered:  # as basic_publish forgets each message id once confirmed
                if channel.message_id_delivery_tag.get(message_id) == tag:
                    channel.message_id_delivery_tag.pop(message_id)
    for i in range(len(parts)):
        fut = confirms.get(i)
        if fut is None:
            continue
        if fut.cancelled():
            results[i] = results[i] or asyncio.TimeoutError("no confirm from the broker in time")
        elif not fut.done():
            results[i] = fut  # in doubt: the caller waits for it
        elif fut.exception() is not None:
            results[i] = fut.exception()
    return results


async def _write_batch(channel: Any, loop: asyncio.AbstractEventLoop, message_ids: list[str],
                       parts: list[bytes], confirms: dict[int, asyncio.Future],
                       registered: list[tuple[int, str]]) -> None:
    """Under the channel's publish lock (as aiormq's ``basic_publish``): a delivery tag and a confirm
    future each, in the order of the frames, then the frames in one write."""
    async with channel.lock:
        if channel.is_closed:
            raise ChannelInvalidStateError(f"{channel!r} closed")
        first = channel.delivery_tag + 1
        try:
            for n, message_id in enumerate(message_ids):
                tag = first + n
                fut = loop.create_future()
                channel.confirmations[tag] = fut
                channel.message_id_delivery_tag[message_id] = tag
                confirms[n] = fut
                registered.append((tag, message_id))
            channel.delivery_tag += len(message_ids)
            drained = channel.create_future()
            await channel.write_queue.put(ChannelFrame(payload=b"".join(parts), should_close=False,
                                                       drain_future=drained))
        except BaseException:
            # nothing reached the broker: give the delivery tags back, as basic_publish does
            channel.delivery_tag = first - 1
            for tag, _message_id in registered:
                channel.confirmations.pop(tag, None)
            for fut in confirms.values():
                fut.cancel()
            confirms.clear()
            raise
        await drained


def _rejecter(confirms: dict[int, asyncio.Future]):  # noqa: ANN202
    """Fail the batch's pending confirms with the reason the channel closed."""
    def reject(closed: asyncio.Future) -> None:
        if closed.cancelled():
            return
        reason = closed.exception() or ConnectionError("the channel closed")
        for fut in confirms.values():
            if not fut.done():
                fut.set_exception(reason)
    return reject


def _await_late_confirms(channel: Any, closed: asyncio.Future, confirms: dict[int, asyncio.Future],
                         tags: dict[int, tuple[int, str]]) -> None:
    """Keep a timed-out batch's open confirms answerable: a late ack or nack (or a return, found by message id)
    settles each, the channel closing fails the rest (``closed`` stays until every one is done); each message
    id is forgotten once its confirm is in, as ``basic_publish`` does."""
    pending = {i: fut for i, fut in confirms.items() if not fut.done()}
    for i, (tag, message_id) in tags.items():
        if i not in pending and channel.message_id_delivery_tag.get(message_id) == tag:
            channel.message_id_delivery_tag.pop(message_id)

    def done(i: int, fut: asyncio.Future) -> None:
        if not fut.cancelled():
            fut.exception()  # read: nobody may ever ask (another relay may have published the row meanwhile)
        tag, message_id = tags[i]
        if channel.message_id_delivery_tag.get(message_id) == tag:
            channel.message_id_delivery_tag.pop(message_id)
        pending.pop(i, None)
        if not pending:
            closed.cancel()

    for i, fut in list(pending.items()):
        fut.add_done_callback(lambda f, i=i: done(i, f))


def _retrieve(futures: Any) -> None:
    """Read the exceptions of finished futures (else asyncio logs them as never retrieved)."""
    for fut in futures:
        if fut.done() and not fut.cancelled():
            fut.exception()
