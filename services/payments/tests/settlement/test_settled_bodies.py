"""A settlement's ``charge.settled.v2`` outbox bodies written from plain values (``SettlementBatch._v2_rows``) are
the envelopes ``Envelope.wrap`` makes of the same events: every chunk's body parses to the ordinary envelope of a
``ChargesSettled`` holding exactly that chunk's charges, in order, with the same keys in the same order."""
import json
from datetime import datetime, timedelta, timezone

from payments.models import SOURCE
from payments.settlement.batch import Charges, SettlementBatch, ToSettle
from seteli_shared.events import ChargesSettled, Envelope, SettledCharge
from seteli_shared.outbox import event_row


def test_v2_bodies_from_values_are_the_ordinary_envelopes():
    now = datetime(2026, 6, 30, 12, 0, tzinfo=timezone.utc)
    charges = [ToSettle(f"c-{i}", f"v-{i % 4}", "home_care", 2500 + i, now - timedelta(days=1, seconds=i))
               for i in range(11)]
    fees = [125 + (i % 2) for i in range(11)]
    batch = SettlementBatch(None, now, events="v2", per_event=4)  # noqa: the rows need no session
    rows = batch._v2_rows("s-1", "091", "p-1", Charges.of(charges), fees, None)
    assert batch._direct is True, "the first event's body, made both ways, was the same"
    assert [len(json.loads(r[2])["data"]["charges"]) for r in rows] == [4, 4, 3]
    for n, (message_id, key, body, created_at, attempts, _tp) in enumerate(rows):
        part = list(zip(charges[4 * n:4 * n + 4], fees[4 * n:4 * n + 4]))
        event = ChargesSettled(settlement_id="s-1", funder_id="091", provider_id="p-1", settled_at=now, charges=[
            SettledCharge(charge_id=c.id, voucher_id=c.voucher_id, category=c.category, gross_cents=c.amount_cents,
                          fee_cents=f, net_cents=c.amount_cents - f) for c, f in part])
        env, ordinary = event_row(event, SOURCE)
        got, want = json.loads(body), json.loads(ordinary["body"])
        assert list(got) == list(want) and list(got["data"]) == list(want["data"])
        for k in ("id", "time", "correlationid"):  # each event its own id and time
            got.pop(k), want.pop(k)
        assert got == want
        assert (key, attempts) == (ordinary["routing_key"], 0) and message_id == json.loads(body)["id"]
        assert Envelope.model_validate_json(body).event() == event
        assert isinstance(created_at, datetime)
