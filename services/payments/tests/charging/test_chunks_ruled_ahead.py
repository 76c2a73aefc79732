"""A bulk's next chunk is ruled while the chunk before it is being written (``engine.rule_ahead``), on the state
that chunk's rules left; it is taken only if the chunk's own state, loaded under its vouchers' locks, gives the
rules the same inputs. On PostgreSQL and the real RabbitMQ (``live``, conftest.py): a line's answer does not
depend on the chunk size (random lines in chunks of two against one chunk), and a change between the chunks (a
charge of the chunk before cancelled) makes the chunk rule its lines again on what it loads."""
from __future__ import annotations

import itertools
from datetime import date, datetime, timezone
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from .ledgers import ledger_sums as _ledger
from payments.charging import engine, intake, store
from payments.models import Charge
from seteli_shared.auth import Principal, Role, mint
from seteli_shared.events import ProviderApproved, VoucherIssued, VoucherProviderChosen

JAN1 = datetime(2026, 1, 1, tzinfo=timezone.utc)
VOUCHERS = 3
_examples = itertools.count()


def _principal(provider_id: str) -> Principal:
    return Principal(subject="t:provider_charger", roles=frozenset({Role.PROVIDER_CHARGER}), provider_id=provider_id)


def _watch(monkeypatch) -> dict:  # noqa: ANN001
    """Counts the chunks that came ruled ahead and those that took it."""
    seen = {"given": 0, "taken": 0}
    original = engine.charge_lines

    async def charge_lines(uow, clock, principal, provider_id, lines, ahead=None, carry=None):  # noqa: ANN001, ANN202
        out = await original(uow, clock, principal, provider_id, lines, ahead, carry)
        seen["given"] += ahead is not None
        seen["taken"] += ahead is not None and out is ahead.outcomes
        return out

    monkeypatch.setattr(engine, "charge_lines", charge_lines)
    return seen


async def test_a_chunk_ruled_ahead_is_taken_only_while_what_its_rules_read_is_unchanged(live, monkeypatch):  # noqa: ANN001
    """Six one-hour lines on a five-hour voucher in chunks of three: the second chunk, ruled ahead on the first's
    state, accepts two lines and refuses the third (``units_exceeded``). When a charge of the first chunk is
    cancelled after it has committed and before the second loads its state, the second chunk's state differs
    from the one it was ruled on: its rules run again, and all three lines are accepted, as one chunk after the
    other would answer."""
    w = live
    seen = _watch(monkeypatch)
    p = "prov-ahead"
    (v1, _), (v2, _) = await w.provider_with_vouchers(p, 2, units="5")
    sessions = w.app.state.runtime.sessions

    def lines(voucher_id: str) -> list:
        return [intake.line_of(n, {"voucher_id": voucher_id, "provider_reference": f"{voucher_id}-{n}",
                                   "service_date": "2026-06-01", "units": "1"}) for n in range(1, 7)]

    answer = await intake.charge_bulk(sessions, w.clock, _principal(p), p, lines(v1), chunk_lines=3, max_chunk_lines=3)
    assert [(r["status"], r["reason"]) for r in answer["results"]] == [("accepted", None)] * 5 + [
        ("refused", "units_exceeded")]
    assert seen == {"given": 1, "taken": 1}

    original_load = store.SessionChargeStore.load
    cancelled = []

    async def load(self, provider_id, batch, known=None):  # noqa: ANN001, ANN202
        if batch[0].provider_reference == f"{v2}-4":  # the second chunk: the first's line 1 cancelled meanwhile
            async with sessions() as session:
                first = (await session.execute(select(Charge.id).where(
                    Charge.provider_reference == f"{v2}-1"))).scalar_one()
            r = await w.client.post(f"/charges/{first}/cancel", headers={
                "Authorization": f"Bearer {mint('t:c', ['provider_charger'], provider_id=p)}"})
            assert r.status_code == 200, r.text
            cancelled.append(first)
        return await original_load(self, provider_id, batch, known)

    monkeypatch.setattr(store.SessionChargeStore, "load", load)
    answer = await intake.charge_bulk(sessions, w.clock, _principal(p), p, lines(v2), chunk_lines=3, max_chunk_lines=3)
    assert cancelled
    assert [(r["status"], r["reason"]) for r in answer["results"]] == [("accepted", None)] * 6
    assert seen == {"given": 2, "taken": 1}, "the second chunk's rules ran again on the state it loaded"
    assert (await w.client.get("/ledger/check", headers={
        "Authorization": f"Bearer {mint('t:operator', ['operator'])}"})).json()["ok"]


async def test_lines_naming_vouchers_by_code_are_ruled_ahead_with_the_codes_the_chunk_before_found(
        live, monkeypatch):  # noqa: ANN001
    """A file naming its vouchers by the codes the clients gave: the second chunk is ruled ahead with the codes
    the first found (an unknown code is refused there as here) and taken."""
    w = live
    seen = _watch(monkeypatch)
    p = "prov-ahead-codes"
    [(_v, code)] = await w.provider_with_vouchers(p, 1, units="5")
    codes = [code, code, code, code, "ZZZZ-ZZZZ-ZZZZ", code, code]
    lines = [intake.line_of(n, {"voucher_code": c, "provider_reference": f"code-{n}", "service_date": "2026-06-01",
                                "units": "1"}) for n, c in enumerate(codes, start=1)]
    answer = await intake.charge_bulk(w.app.state.runtime.sessions, w.clock, _principal(p), p, lines, chunk_lines=3,
                                      max_chunk_lines=4)
    assert [(r["status"], r["reason"]) for r in answer["results"]] == [("accepted", None)] * 4 + [
        ("refused", "voucher_not_found"), ("accepted", None), ("refused", "units_exceeded")]
    assert seen == {"given": 1, "taken": 1}


async def test_a_chunk_takes_the_units_its_chunk_before_knew_unless_something_else_moved_the_voucher(
        live, monkeypatch):  # noqa: ANN001
    """Chunks of two one-hour lines on a five-hour voucher: only the first chunk reads the units used; the others take
    what the chunk before knew (the voucher's row moved only by their own locks). A single charge of the voucher
    committed between the first and second chunk moves its row: the second chunk reads the units again and counts
    it (two of its lines accepted, the third chunk's refused), as one chunk after the other would answer."""
    w = live
    p = "prov-known"
    (v1, _), (v2, _) = await w.provider_with_vouchers(p, 2, units="5")
    sessions = w.app.state.runtime.sessions
    reads = []
    original_used = store._Statements.used_per_day

    def used_per_day(self):  # noqa: ANN001, ANN202
        reads.append(1)
        return original_used(self)

    monkeypatch.setattr(store._Statements, "used_per_day", used_per_day)

    def lines(voucher_id: str) -> list:
        return [intake.line_of(n, {"voucher_id": voucher_id, "provider_reference": f"known-{voucher_id}-{n}",
                                   "service_date": "2026-06-01", "units": "1"}) for n in range(1, 7)]

    answer = await intake.charge_bulk(sessions, w.clock, _principal(p), p, lines(v1), chunk_lines=2, max_chunk_lines=2)
    assert [(r["status"], r["reason"]) for r in answer["results"]] == [("accepted", None)] * 5 + [
        ("refused", "units_exceeded")]
    assert len(reads) == 1, "the second and third chunks took the units the chunk before knew"

    reads.clear()
    original_load = store.SessionChargeStore.load
    single = []

    async def load(self, provider_id, batch, known=None):  # noqa: ANN001, ANN202
        if batch[0].provider_reference == f"known-{v2}-3" and not single:  # before the second chunk's lock
            r = await w.client.post("/charges", json={
                "voucher_id": v2, "provider_reference": f"known-single-{v2}", "service_date": "2026-06-02",
                "units": "1"}, headers={"Authorization": f"Bearer {mint('t:c', ['provider_charger'], provider_id=p)}"})
            assert r.status_code == 201, r.text
            single.append(r.json()["id"])
        return await original_load(self, provider_id, batch, known)

    monkeypatch.setattr(store.SessionChargeStore, "load", load)
    answer = await intake.charge_bulk(sessions, w.clock, _principal(p), p, lines(v2), chunk_lines=2, max_chunk_lines=2)
    assert single
    assert [(r["status"], r["reason"]) for r in answer["results"]] == [("accepted", None)] * 4 + [
        ("refused", "units_exceeded")] * 2
    assert len(reads) == 2, "the second chunk read the units again (the single charge moved the voucher)"
    assert (await w.client.get("/ledger/check", headers={
        "Authorization": f"Bearer {mint('t:operator', ['operator'])}"})).json()["ok"]


lines_strategy = st.lists(st.tuples(
    st.integers(min_value=0, max_value=VOUCHERS),        # the voucher (the last one unknown)
    st.sampled_from([f"r{i}" for i in range(6)]),        # references repeat: repeated and duplicate lines
    st.integers(min_value=1, max_value=22),              # a day of June (after the 20th: in the future)
    st.sampled_from(["0.25", "0.5", "1", "1.5", "3"]),   # units
    st.sampled_from([None, 2000, 2500, 3000]),           # the price sent
), min_size=1, max_size=14)


async def _side(w, side: str, n: int) -> tuple[str, str]:  # noqa: ANN001
    """A provider and funder of this example's side, with its vouchers (2, 4 and 6 hours a month)."""
    provider, funder = f"ra{side}{n}", f"fa{side}{n}"
    events = [VoucherIssued(voucher_id=f"va{side}{n}-{i}", funder_id=funder, client_ref="c", decision_ref=f"D{i}",
                            category="home_care", unit="hour", units_per_period=Decimal(2 * (i + 1)), period="month",
                            value_per_unit_cents=2500, valid_from=JAN1.date(), valid_until=date(2026, 12, 31),
                            issued_at=JAN1)
              for i in range(VOUCHERS)]
    events += [VoucherProviderChosen(voucher_id=f"va{side}{n}-{i}", funder_id=funder, provider_id=provider,
                                     category="home_care", chosen_at=JAN1) for i in range(VOUCHERS)]
    await w.publish(ProviderApproved(approval_id=f"aa{side}{n}", provider_id=provider, funder_id=funder,
                                     category="home_care", approved_at=JAN1), source="registry")
    await w.publish(*events, source="vouchers")
    return provider, funder


def _lines(drawn: list, side: str, n: int) -> list:
    out = []
    for i, (voucher, ref, day, units, price) in enumerate(drawn, start=1):
        body = {"voucher_id": f"va{side}{n}-{voucher}", "provider_reference": ref, "service_date": f"2026-06-{day:02d}",
                "units": units}
        if price is not None:
            body["unit_price_cents"] = price
        out.append(intake.line_of(i, body))
    return out


def _answers(results: list[dict]) -> list[tuple]:
    """(outcome, reason, for a repeated line the line whose charge it repeats)."""
    made = {r["charge_id"]: i for i, r in enumerate(results) if r["status"] == "accepted"}
    return [(r["status"], r["reason"], made.get(r["charge_id"]) if r["status"] == "repeated" else None)
            for r in results]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drawn=lines_strategy, size=st.integers(min_value=1, max_value=3))
async def test_chunks_ruled_ahead_answer_as_one_chunk_and_leave_the_same_ledger(live, drawn, size):  # noqa: ANN001
    w, n = live, next(_examples)
    (pa, fa), (pb, fb) = await _side(w, "a", n), await _side(w, "b", n)
    sessions = w.app.state.runtime.sessions
    in_chunks = await intake.charge_bulk(sessions, w.clock, _principal(pa), pa, _lines(drawn, "a", n),
                                         chunk_lines=size, max_chunk_lines=size)
    at_once = await intake.charge_bulk(sessions, w.clock, _principal(pb), pb, _lines(drawn, "b", n))
    assert _answers(in_chunks["results"]) == _answers(at_once["results"])
    assert await _ledger(w, pa, fa) == await _ledger(w, pb, fb)
