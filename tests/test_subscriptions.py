"""Subscriptions are written down once, in each service's ``ServiceSpec`` (handlers, batch handlers,
``bind_keys``); producers once, on each event (``Event.producer``). The broker definitions, the
consumers' own bindings and the contracts are derived from them; these tests hold them together."""
from __future__ import annotations

from seteli_shared import broker
from seteli_shared.consumer import Consumer
from seteli_shared.events import ALL_EVENTS, Event
from seteli_shared.manifest import NAMES, SERVICES, extra_subscriptions, producers, subscriptions


def test_every_consumed_event_type_is_a_known_domain_event():
    known = {ev.event_type() for ev in ALL_EVENTS}
    for s in SERVICES:
        unknown = set(s.spec().consumed_event_types) - known
        assert not unknown, f"{s.name} handles event types nobody defines: {sorted(unknown)}"


def test_every_event_has_one_producer_among_the_services():
    for ev in ALL_EVENTS:
        assert getattr(ev, "producer", None) in NAMES, f"{ev.__name__}.producer must name a service in the manifest"
    assert set(producers()) == {ev.event_type() for ev in ALL_EVENTS}


def test_no_service_consumes_its_own_events_by_name():
    for s in SERVICES:
        own = [t for t in s.spec().consumed_event_types if Event.registry[t].producer == s.name]
        assert not own, f"{s.name} handles its own events {own}"


def test_broker_bindings_are_the_specs_subscriptions():
    d = broker.definitions("ns", "/", 5)
    bound: dict[str, list[str]] = {}
    for b in d["bindings"]:
        if b["source"] == "ns.events":
            bound.setdefault(b["destination"].removeprefix("ns."), []).append(b["routing_key"])
    assert bound == subscriptions()
    queues = {q["name"] for q in d["queues"]}
    extra = [queue for extras in extra_subscriptions().values() for queue, _, _ in extras]
    assert queues == ({f"ns.{n}" for n in [*subscriptions(), *extra]}
                      | {f"ns.{n}.dlq" for n in [*subscriptions(), *extra]})


def test_further_consumers_are_bound_on_their_own_exchange_with_their_own_dead_letter_queue():
    """``ServiceSpec.extra_consumers`` (e.g. vouchers' decisions from funders' case systems) are derived
    into the broker definitions like the main subscriptions."""
    d = broker.definitions("ns", "/", 5)
    assert extra_subscriptions()["vouchers"] == [("vouchers.decisions", "decisions", ["decision.*"])]
    for service, extras in extra_subscriptions().items():
        spec = next(s.spec() for s in SERVICES if s.name == service)
        for (queue, exchange, keys), c in zip(extras, spec.extra_consumers):
            assert queue == c.queue("ns", service).removeprefix("ns.") and keys == c.bind_keys
            into = [b for b in d["bindings"] if b["destination"] == f"ns.{queue}"]
            # its own exchange's keys, and the operator's replay from the dead-letter exchange (seteli-ops)
            assert [b["routing_key"] for b in into if b["source"] == f"ns.{exchange}"] == keys
            assert [(b["source"], b["routing_key"]) for b in into if b["source"] != f"ns.{exchange}"] == \
                [("ns.dlx", f"replay.ns.{queue}")]
            assert {"source": "ns.dlx", "routing_key": f"ns.{queue}", "destination": f"ns.{queue}.dlq"}.items() <= \
                next(b for b in d["bindings"] if b["destination"] == f"ns.{queue}.dlq").items()
            consumer = Consumer(None, None, f"ns.{queue}", c.handlers, bind_keys=c.bind_keys,  # type: ignore[arg-type]
                                exchange=c.exchange, contracts=c.contracts)
            assert consumer.bind_keys == keys and consumer.dead_letter_queue_name == f"ns.{queue}.dlq"


def test_the_consumer_binds_what_the_spec_subscribes_to():
    for s in SERVICES:
        spec = s.spec()
        if not spec.consumes_events:
            continue
        consumer = Consumer(None, None, f"ns.{s.name}", spec.handlers, bind_keys=spec.bind_keys,  # type: ignore[arg-type]
                            fallback=spec.fallback, batch_handlers=spec.batch_handlers)
        assert consumer.bind_keys == subscriptions()[s.name]


def test_subscriptions_follow_the_handlers():
    """A new handler in a spec is a new binding, with nothing else to edit (e.g. ``FunderRegistered``)."""
    subs = subscriptions()
    for s in SERVICES:
        spec = s.spec()
        if spec.bind_keys:
            assert subs[s.name] == spec.bind_keys
        else:
            for t in spec.consumed_event_types:
                assert Event.registry[t].routing_key() in subs[s.name]
    assert subs["reporting"] == ["#"]


def test_batch_handlers_are_subscriptions_too():
    from pathlib import Path

    from seteli_shared.events import ProviderApproved
    from seteli_shared.service import ServiceSpec

    async def upsert_many(session, batch):  # noqa: ANN001, ANN202
        pass

    spec = ServiceSpec(name="x", migrations_dir=Path("."), routers=[],
                       batch_handlers={ProviderApproved.event_type(): upsert_many})
    assert spec.consumes_events and spec.consumed_event_types == [ProviderApproved.event_type()]
    assert spec.routing_keys == ["provider.approved.v1"]
