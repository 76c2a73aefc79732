"""The relay's hook (``charging.coalesce``): single charges' ``charge.accepted.v1`` rows read in one relay batch
become ``charge.accepted.v2`` messages, one per funder and provider of a run (at most ``per_event`` charges, in the
rows' order), each valid as ``ChargesAccepted`` and standing for exactly the rows' v1 events; ids derived from the
rows; nothing moved across a row of another type; nothing coalesced unless ``ACCEPTED_EVENTS`` is ``v2``."""
from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from payments.charging import domain, engine
from payments.charging.coalesce import AcceptedCoalescer, accepted_coalescer
from payments.charging.rows import ChargeRows
from payments.settings import PaymentsSettings
from seteli_shared.events import ChargeAccepted, ChargeCancelled, ChargesAccepted, Envelope
from seteli_shared.outbox import Coalesced, event_row

NOW = datetime(2026, 6, 20, 9, tzinfo=timezone.utc)


def charge(i: int, funder: str = "091", provider: str = "p1") -> engine.NewCharge:
    req = domain.ChargeRequest(provider, NOW.date() - timedelta(days=i % 9), 25 + 50 * (i % 4), None,
                               "weekday" if i % 2 else None, None)
    amounts = domain.ChargeAmounts(2500, 2500 * req.units_x100 // 100, 100 * (i % 3), bool(i % 2),
                                   2500 if i % 2 else None, "pl-1" if i % 2 else None, 150 if i % 5 == 0 else None)
    return engine.NewCharge(str(uuid.uuid4()), f"v-{funder}-{provider}-{i % 2}", funder, "home_care", f"ref-{i}", req,
                            amounts, NOW + timedelta(microseconds=i))


def rows_of(items: list) -> list[SimpleNamespace]:
    """Outbox rows as the relay reads them (``seq`` in order): a ``NewCharge``'s v1 row, or an event's row."""
    out = []
    for seq, item in enumerate(items, start=1):
        if isinstance(item, engine.NewCharge):
            mid, key, body, _at, _attempts, trace = ChargeRows.event(item)
        else:
            env, row = event_row(item, "payments")
            mid, key, body, trace = row["message_id"], row["routing_key"], row["body"], None
        out.append(SimpleNamespace(seq=seq, message_id=mid, routing_key=key, body=body, traceparent=trace))
    return out


def cancel_of(c: engine.NewCharge) -> ChargeCancelled:
    return ChargeCancelled(charge_id=c.id, voucher_id=c.voucher_id, funder_id=c.funder_id,
                           provider_id=c.req.provider_id, category="home_care", service_date=c.req.service_date,
                           units=1, amount_cents=c.amounts.amount_cents, cancelled_at=NOW)


def seqs(unit) -> list[int]:  # noqa: ANN001
    return [r.seq for r in unit.rows] if isinstance(unit, Coalesced) else [unit.seq]


def v1_events(rows) -> list[dict]:  # noqa: ANN001
    return [Envelope.model_validate_json(r.body).event().model_dump() for r in rows]


def test_each_v2_message_is_a_valid_charges_accepted_standing_for_its_rows_field_for_field():
    made = [charge(i, "091" if i % 3 else "092", "p1" if i % 4 else "p2") for i in range(23)]
    rows = rows_of(made)
    units = AcceptedCoalescer(per_event=4)(rows)
    assert sorted(s for u in units for s in seqs(u)) == [r.seq for r in rows], "every row exactly once"
    assert len(units) < len(rows)
    for unit in units:
        if not isinstance(unit, Coalesced):
            assert unit.routing_key == "charge.accepted.v1"
            continue
        env = Envelope.model_validate_json(unit.body)
        event = env.event()
        assert isinstance(event, ChargesAccepted) and unit.routing_key == "charge.accepted.v2"
        assert env.id == unit.message_id and env.type == ChargesAccepted.event_type()
        assert env.source == "/seteli/payments"
        # the body is what the model itself writes of it
        assert env.model_copy(update={"data": event.model_dump(mode="json")}).model_dump_json() == json.dumps(
            json.loads(unit.body), separators=(",", ":"))
        assert [e.model_dump() for e in event.each()] == v1_events(unit.rows)
        assert 2 <= len(event.charges) <= 4
        assert len({(json.loads(r.body)["data"]["funder_id"], json.loads(r.body)["data"]["provider_id"])
                    for r in unit.rows}) == 1
        assert seqs(unit) == sorted(seqs(unit)), "the charges in the order their rows were written"


def test_groups_per_funder_and_provider_in_chunks_ordered_by_their_first_row():
    a, b = [charge(i, "091", "p1") for i in range(5)], [charge(i, "092", "p1") for i in range(2)]
    # rows: a0 b0 a1 a2 b1 a3 a4
    rows = rows_of([a[0], b[0], a[1], a[2], b[1], a[3], a[4]])
    units = AcceptedCoalescer(per_event=3)(rows)
    assert [seqs(u) for u in units] == [[1, 3, 4], [2, 5], [6, 7]]
    # a lone charge of its funder and provider stays its own v1 message
    units = AcceptedCoalescer(per_event=3)(rows_of([a[0], b[0], a[1]]))
    assert [seqs(u) for u in units] == [[1, 3], [2]] and not isinstance(units[1], Coalesced)
    # the size limit: at most per_event charges a message
    units = AcceptedCoalescer(per_event=1)(rows)
    assert [seqs(u) for u in units] == [[i] for i in range(1, 8)] and not any(isinstance(u, Coalesced) for u in units)


def test_nothing_moves_across_a_row_of_another_type():
    cs = [charge(i) for i in range(6)]
    # c0 c1 cancel(c1) c2 c3 c4 -> [c0 c1] [cancel] [c2 c3 c4]: the cancellation still follows its acceptance
    rows = rows_of([cs[0], cs[1], cancel_of(cs[1]), cs[2], cs[3], cs[4]])
    units = AcceptedCoalescer()(rows)
    assert [seqs(u) for u in units] == [[1, 2], [3], [4, 5, 6]]
    assert units[1].routing_key == "charge.cancelled.v1"


def test_ids_are_derived_from_the_rows():
    rows = rows_of([charge(i) for i in range(6)])
    first, again = AcceptedCoalescer()(rows), AcceptedCoalescer()(rows)
    assert [u.message_id for u in first] == [u.message_id for u in again]
    assert first[0].body == again[0].body
    # other rows (or the same first row with fewer behind it) give another id
    fewer = AcceptedCoalescer()(rows[:5])
    assert fewer[0].message_id != first[0].message_id
    assert AcceptedCoalescer()(rows[1:])[0].message_id not in {first[0].message_id, fewer[0].message_id}
    assert len({r.message_id for r in rows} | {first[0].message_id}) == 7


def test_only_v2_coalesces_and_payments_settings_hand_the_options_on():
    assert accepted_coalescer("v1") is None and accepted_coalescer("both") is None
    assert isinstance(accepted_coalescer("v2", 7), AcceptedCoalescer)
    settings = PaymentsSettings(environment="test", accepted_events="v1", accepted_event_charges=7)
    assert settings.relay_coalesce == "payments.charging.coalesce:accepted_coalescer"
    assert settings.relay_coalesce_options == {"events": "v1", "per_event": 7}
    assert PaymentsSettings(environment="test").relay_coalesce_options == {"events": "v2", "per_event": 1000}
    with pytest.raises(ValueError):
        AcceptedCoalescer(0)


def test_a_body_the_check_refuses_turns_coalescing_off():
    """If the first message made differed from its rows (a model that changed), the rows go out as they are."""
    coalescer = AcceptedCoalescer()
    rows = rows_of([charge(i) for i in range(3)])
    for r in rows:  # a value the models refuse
        body = json.loads(r.body)
        body["data"]["amount_cents"] = "not cents"
        r.body = json.dumps(body)
    with pytest.raises(ValueError):
        coalescer(rows)
    assert coalescer(rows) == rows
    assert ChargeAccepted.routing_key() == "charge.accepted.v1"


def test_a_vouchers_charges_keep_their_order_when_its_provider_changes():
    """A voucher's charge for another provider than its earlier ones in the run (the client changed provider) ends
    the run: vouchers' usage folds a voucher's charges in order (which charge used it up)."""
    moved, other = "v-moved", "v-other"
    old, new = replace(charge(0, "091", "p1"), voucher_id=moved), replace(charge(0, "091", "p2"), voucher_id=moved)
    o, a, b = (replace(charge(i, "091", "p1"), voucher_id=other) for i in (1, 2, 3))
    # old(p1) o(p1) new(p2) a(p1) b(p1): without the break [old o a b] would go out before new
    rows = rows_of([old, o, new, a, b])
    units = AcceptedCoalescer()(rows)
    assert [seqs(u) for u in units] == [[1, 2], [3], [4, 5]]
    assert [json.loads(rows[s - 1].body)["data"]["voucher_id"] for u in units for s in seqs(u)] == [
        moved, other, moved, other, other]


def test_a_v2_message_carries_its_first_rows_trace_and_links_every_other_trace_once():
    rows = rows_of([charge(i, "091", "p1") for i in range(6)])
    traces = [f"00-{i:032x}-{i + 1:016x}-01" for i in (1, 2, 2, 3, 1, 4)]
    rows = [SimpleNamespace(**{**vars(r), "traceparent": trace}) for r, trace in zip(rows, traces)]
    rows[4].traceparent = None  # a row written while tracing was off
    [unit] = AcceptedCoalescer(per_event=10)(rows)
    assert isinstance(unit, Coalesced)
    assert unit.traceparent == traces[0]
    assert unit.tracelinks.split() == [traces[1], traces[3], traces[5]]
    untraced = [SimpleNamespace(**{**vars(r), "traceparent": None}) for r in rows]
    [unit] = AcceptedCoalescer(per_event=10)(untraced)
    assert unit.traceparent is None and unit.tracelinks is None
