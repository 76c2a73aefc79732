"""What the project takes from its libraries beyond their public APIs (``seteli_shared._internals``): only
``aiormq_batch`` (aiormq's channel internals, for the outbox relay's batch publishing). These tests fail,
saying what moved, when an upgrade of aiormq changes what that module relies on; and they check that no
other module of the project reaches into aiormq's channel or SQLAlchemy's private names again."""
from __future__ import annotations

import asyncio
import dataclasses
import importlib.metadata
import inspect
import re
from pathlib import Path

import pytest
from aiormq.abc import ChannelFrame
from aiormq.channel import Channel

from seteli_shared._internals import aiormq_batch
from seteli_shared.bus import Bus
from seteli_shared.testing import make_settings

ROOT = Path(__file__).resolve().parents[2]
PINNED = {"aiormq": (7, 2)}


def test_aiormq_is_the_minor_version_the_batch_publishing_was_tested_with():
    for name, (major, minor) in PINNED.items():
        version = importlib.metadata.version(name)
        assert tuple(int(x) for x in version.split(".")[:2]) == (major, minor), (
            f"{name} {version} is installed but _internals/aiormq_batch.py was written against {major}.{minor}: "
            "read aiormq's Channel.basic_publish in the new version, bring the module level with it, then move "
            "the pin in shared/pyproject.toml and here")


def test_channel_frames_still_carry_what_the_batch_writes():
    fields = {f.name for f in dataclasses.fields(ChannelFrame)} if dataclasses.is_dataclass(ChannelFrame) else set(
        inspect.signature(ChannelFrame).parameters)
    assert {"payload", "should_close", "drain_future"} <= fields, (
        f"aiormq.abc.ChannelFrame has changed its fields ({sorted(fields)}): _internals/aiormq_batch._write_batch "
        "builds one with payload, should_close and drain_future")


def test_basic_publish_still_works_the_way_the_batch_imitates():
    """The batch does for many messages what ``Channel.basic_publish`` does for one: the names it reads and
    writes must still be the ones ``basic_publish`` uses."""
    source = inspect.getsource(Channel.basic_publish)
    missing = [name for name in ("self.lock", "self.delivery_tag", "self.confirmations",
                                 "self.message_id_delivery_tag", "self.write_queue", "ChannelFrame")
               if name not in source]
    assert not missing, (f"aiormq's Channel.basic_publish no longer uses {missing}: _internals/aiormq_batch.py "
                         "imitates it and relies on them")


async def test_a_live_channel_has_every_attribute_the_batch_uses(amqp_url, namespace):  # noqa: ANN001
    bus = Bus(make_settings(service_name="test", bus_namespace=namespace, amqp_url=amqp_url,
                            database_url="sqlite+aiosqlite://"))
    await bus.connect()
    try:
        channel = await bus.channel.get_underlay_channel()
        missing = [a for a in aiormq_batch.USED if not hasattr(channel, a)]
        assert not missing, f"an aiormq channel has no {missing}: _internals/aiormq_batch.py relies on them"
        assert aiormq_batch.capable(channel), "publish_many would fall back to publishing one message at a time"
        assert hasattr(channel.lock, "__aenter__") and isinstance(channel.confirmations, dict)
        assert isinstance(channel.message_id_delivery_tag, dict) and isinstance(channel.delivery_tag, int)
        assert isinstance(channel.write_queue, asyncio.Queue)
    finally:
        await bus.close()


PRIVATE = [
    (r"\._bind_processors|_variant_mapping|construct_params\(_check", "SQLAlchemy's private compiler/type names"),
    (r"sqlalchemy\.util\b|greenlet_spawn|await_only", "SQLAlchemy's internal greenlet bridge"),
    (r"\.(confirmations|message_id_delivery_tag|write_queue)\b|ChannelFrame", "aiormq's channel internals"),
]


@pytest.mark.parametrize("pattern, what", PRIVATE)
def test_no_module_but_the_internals_one_reaches_into_them(pattern: str, what: str):
    found = []
    for src in [ROOT / "shared" / "src", *(ROOT / "services").glob("*/src")]:
        for path in src.rglob("*.py"):
            if "_internals" in path.parts:
                continue
            for n, text in enumerate(path.read_text().splitlines(), start=1):
                if re.search(pattern, text) and not text.lstrip().startswith("#"):
                    found.append(f"{path.relative_to(ROOT)}:{n}")
    assert not found, f"{what} used outside seteli_shared/_internals: {found}"
