"""``seteli-broker`` from an outside system's first user to the namespace's removal, on the real broker
and through the command itself: the names come from the environment the services read
(``BUS_NAMESPACE``, ``BROKER_USER_PREFIX``), ``add-*-system`` says "ready" only with its binding on the
broker whether or not ``apply`` ran before, ``apply`` runs in any order and again, and removing a system or
the whole namespace leaves nothing of it in what ``rabbitmqctl`` lists (and nothing of another namespace is
touched)."""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import aio_pika
import pytest
from aiormq.exceptions import ChannelAccessRefused

from seteli_shared import broker
from seteli_shared.testing import delete_namespace

pytestmark = pytest.mark.skipif(shutil.which("rabbitmqctl") is None or "TEST_AMQP_URL" in os.environ,
                                reason="needs the local broker's rabbitmqctl")
BIN = Path(sys.executable).parent


def listed(ns: str) -> dict[str, set[str]]:
    """What ``rabbitmqctl`` lists of the namespace: users, queues, exchanges, policies, bindings."""
    def ctl(*args: str) -> list[list[str]]:
        out = subprocess.run(["rabbitmqctl", "-q", "--no-table-headers", *args], capture_output=True, text=True,
                             timeout=120, check=True).stdout
        return [line.split("\t") for line in out.splitlines() if line.strip()]

    def ours(name: str) -> bool:
        return name.startswith((f"{ns}.", f"{ns}-"))

    with ThreadPoolExecutor(5) as pool:  # each call starts an Erlang VM: side by side
        users, queues, exchanges, policies, bindings = pool.map(lambda args: ctl(*args), [
            ("list_users",), ("list_queues", "-p", "/", "name"), ("list_exchanges", "-p", "/", "name"),
            ("list_policies", "-p", "/"), ("list_bindings", "-p", "/", "source_name", "destination_name",
                                          "routing_key")])
    return {
        "users": {r[0] for r in users if ours(r[0])},
        "queues": {r[0] for r in queues if ours(r[0])},
        "exchanges": {r[0] for r in exchanges if ours(r[0])},
        "policies": {r[1] for r in policies if len(r) > 1 and ours(r[1])},
        "bindings": {f"{r[0]} -> {r[1]} [{r[2]}]" for r in bindings if ours(r[1]) and r[0]},
    }


def seteli_broker(ns: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, BUS_NAMESPACE=ns, BROKER_USER_PREFIX=f"{ns}-")
    return subprocess.run([str(BIN / "seteli-broker"), *args], capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture
async def ns(amqp_url):  # noqa: ANN001
    name = f"life{uuid.uuid4().hex[:8]}"
    yield name
    await delete_namespace(amqp_url, name, [])


async def test_a_funder_system_added_before_apply_is_ready_with_its_binding_and_apply_runs_in_any_order(
        ns, amqp_url):  # noqa: ANN001
    first = await asyncio.to_thread(seteli_broker, ns, "add-funder-system", "091", "--password", "pw-091")
    assert first.returncode == 0 and f"user {ns}-funder-091 ready" in first.stdout, first.stderr
    assert f"{ns}.decision-replies -> {ns}.decision-replies.091 [reply.091]" in listed(ns)["bindings"], \
        "ready means bound: a reply to 091 reaches its queue"
    for command in (("apply",), ("apply",), ("add-funder-system", "091", "--password", "pw-091"),
                    ("add-provider-system", "p1", "--password", "pw-p1"), ("apply",)):
        done = await asyncio.to_thread(seteli_broker, ns, *command)
        assert done.returncode == 0, (command, done.stdout, done.stderr)
    now = listed(ns)
    expected = broker.definitions(ns, "/", 5)["bindings"]
    assert {f"{b['source']} -> {b['destination']} [{b['routing_key']}]" for b in expected} <= now["bindings"]
    assert {f"{ns}.notices -> {ns}.notices.p1 [notice.p1.#]",
            f"{ns}.decision-replies -> {ns}.decision-replies.091 [reply.091]"} <= now["bindings"]
    assert now["users"] == {f"{ns}-funder-091", f"{ns}-provider-p1"}

    # a reply published the way the vouchers service publishes it is routed (mandatory) to the funder's queue
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    replies = await channel.get_exchange(f"{ns}.decision-replies", ensure=False)
    await replies.publish(aio_pika.Message(b"{}"), "reply.091", mandatory=True, timeout=10)
    await connection.close()


def test_a_binding_the_broker_does_not_hold_is_named_not_reported_ready():
    wanted = [{"source": "nowhere-exchange", "destination": "nowhere.queue", "routing_key": "reply.091"}]
    with pytest.raises(broker.MissingOnBroker, match="nowhere.queue to exchange nowhere-exchange for reply.091"):
        broker._check_bindings("/", wanted)


async def test_a_funders_case_system_may_publish_only_the_routing_key_a_queue_binds(ns, amqp_url):  # noqa: ANN001
    assert (await asyncio.to_thread(seteli_broker, ns, "apply")).returncode == 0
    assert (await asyncio.to_thread(seteli_broker, ns, "add-funder-system", "091", "--password", "pw-091")
            ).returncode == 0
    u = urlparse(amqp_url)
    case_system = await aio_pika.connect(f"amqp://{ns}-funder-091:pw-091@{u.hostname}:{u.port or 5672}/")
    channel = await case_system.channel(publisher_confirms=True, on_return_raises=True)
    decisions = await channel.get_exchange(f"{ns}.decisions", ensure=False)
    await decisions.publish(aio_pika.Message(b"{}", user_id=f"{ns}-funder-091"), "decision.091", mandatory=True,
                            timeout=10)  # routed to the vouchers service's queue
    with pytest.raises(ChannelAccessRefused):  # no queue binds it: the broker refuses it outright
        await decisions.publish(aio_pika.Message(b"{}"), "decision.091.x", timeout=10)
    await case_system.close()


async def test_removing_systems_and_the_namespace_leaves_nothing_of_them_and_touches_no_other(
        ns, amqp_url):  # noqa: ANN001
    other = f"{ns}x"  # a namespace whose name starts like this one's
    try:
        for space in (ns, other):
            for command in (("apply",), ("add-funder-system", "091", "--password", "pw"),
                            ("add-provider-system", "p1", "--password", "pw"), ("add-service", "vouchers",
                                                                                 "--password", "pw")):
                done = await asyncio.to_thread(seteli_broker, space, *command)
                assert done.returncode == 0, done.stderr
        before, other_before = listed(ns), listed(other)
        assert before["users"] == {f"{ns}-funder-091", f"{ns}-provider-p1", f"{ns}-svc-vouchers"}
        assert {f"{ns}.decision-replies.091", f"{ns}.notices.p1", f"{ns}.vouchers"} <= before["queues"]
        assert before["policies"] == {f"{ns}-notices", f"{ns}-decision-replies"} and before["exchanges"]

        done = await asyncio.to_thread(seteli_broker, ns, "remove-funder-system", "091")
        assert done.returncode == 0 and f"user {ns}-funder-091" in done.stdout, done.stderr
        after_funder = listed(ns)
        assert after_funder["users"] == before["users"] - {f"{ns}-funder-091"}
        assert after_funder["queues"] == before["queues"] - {f"{ns}.decision-replies.091"}
        assert not any("decision-replies.091" in b for b in after_funder["bindings"])

        done = await asyncio.to_thread(seteli_broker, ns, "remove-provider-system", "p1")
        assert done.returncode == 0, done.stderr
        after_provider = listed(ns)
        assert after_provider["users"] == {f"{ns}-svc-vouchers"}
        assert f"{ns}.notices.p1" not in after_provider["queues"]

        done = await asyncio.to_thread(seteli_broker, ns, "remove-namespace")
        assert done.returncode == 0, done.stderr
        assert listed(ns) == {"users": set(), "queues": set(), "exchanges": set(), "policies": set(),
                              "bindings": set()}
        assert listed(other) == other_before, "another namespace is not touched"
    finally:
        await delete_namespace(amqp_url, other, [])
    assert listed(other) == {"users": set(), "queues": set(), "exchanges": set(), "policies": set(),
                             "bindings": set()}, "delete_namespace removes users, queues, bindings and policies too"
