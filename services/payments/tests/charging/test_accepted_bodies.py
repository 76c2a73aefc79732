"""A bulk's ``charge.accepted.v2`` outbox bodies written from plain values (``rows.v2_rows``) are exactly what
``Envelope.wrap`` makes of the ``ChargesAccepted`` they stand for: one event per (funder, provider) and chunk of at
most ``per_event`` charges, in the order accepted, each listed charge's ``ChargeAccepted`` (``each()``) the one
``ChargeRows.event`` writes for version 1."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

from payments.charging import domain, engine
from payments.charging.rows import BULK, SINGLE, AcceptedEvents, ChargeRows, v2_rows
from seteli_shared.auth import Principal, Role
from seteli_shared.events import ChargesAccepted, Envelope

NOW = datetime(2026, 6, 20, 9, tzinfo=timezone.utc)


def charges(n: int) -> list[engine.NewCharge]:
    out = []
    for i in range(n):
        req = domain.ChargeRequest("p1", NOW.date() - timedelta(days=i % 9), 25 + 50 * (i % 4), None,
                                   "weekday" if i % 2 else None, None)
        amounts = domain.ChargeAmounts(2500, 2500 * req.units_x100 // 100, 100 * (i % 3), bool(i % 2),
                                       2500 if i % 2 else None, "pl-1" if i % 2 else None, 150 if i % 5 == 0 else None)
        out.append(engine.NewCharge(str(uuid.uuid4()), f"v-{i % 4}", "091" if i % 3 else "092", "home_care",
                                    f"ref-{i}", req, amounts, NOW + timedelta(microseconds=i)))
    return out


def test_v2_bodies_are_the_ordinary_envelopes_and_stand_for_the_v1_events():
    made = charges(11)
    rows = v2_rows(made, 3)
    events = []
    for message_id, key, body, created_at, attempts, _trace in rows:
        env = Envelope.model_validate_json(body)
        event = env.event()
        assert isinstance(event, ChargesAccepted) and key == "charge.accepted.v2" and env.id == message_id
        assert env.model_copy(update={"data": event.model_dump(mode="json")}).model_dump_json() == body
        events.append(event)
    # 092: charges 0, 3, 6, 9 (2 events); 091: 1, 2, 4, 5, 7, 8, 10 (3 events); in the order accepted
    assert [(e.funder_id, [c.charge_id for c in e.charges]) for e in events] == [
        ("092", [made[i].id for i in (0, 3, 6)]), ("092", [made[9].id]),
        ("091", [made[i].id for i in (1, 2, 4)]), ("091", [made[i].id for i in (5, 7, 8)]), ("091", [made[10].id])]
    v1 = {}
    for _mid, _key, body, *_ in (ChargeRows.event(c) for c in made):
        e = Envelope.model_validate_json(body).event()
        v1[e.charge_id] = e
    for event in events:
        for one in event.each():
            assert one.model_dump() == v1[one.charge_id].model_dump()


def test_what_a_batch_announces_follows_its_setting():
    principal = Principal(subject="t", roles=frozenset({Role.PROVIDER_CHARGER}), provider_id="p1")
    made = charges(5)
    keys = {name: [r[1] for r in ChargeRows(principal, made, events).outbox]
            for name, events in (("single", SINGLE), ("bulk", BULK), ("v1", AcceptedEvents("v1")),
                                 ("both", AcceptedEvents("both", 2)))}
    assert keys == {"single": ["charge.accepted.v1"] * 5, "bulk": ["charge.accepted.v2"] * 2,
                    "v1": ["charge.accepted.v1"] * 5,
                    "both": ["charge.accepted.v1"] * 5 + ["charge.accepted.v2"] * 3}
