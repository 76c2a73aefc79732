"""The consumer's cheap proofs that a message holds no personal identity code (``privacy.text_cannot_hold_code``
for its properties, ``privacy.json_strings_cannot_hold_code`` for its JSON body), by property: whatever the
text, a proof is never given where the full matcher (``find_in`` over the parsed body) finds a code or a NUL;
and the usual domain event, timestamps with microseconds and ids included, is proven clean without parsing."""
from __future__ import annotations

import json
from datetime import date, datetime, timezone
from decimal import Decimal

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from seteli_shared.events import ChargeAccepted, Envelope
from seteli_shared.ids import new_id
from seteli_shared.privacy import (CENTURY, CHECK_CHARACTERS, body_cannot_hold_code, contains_personal_identity_code,
                                   find_in, json_strings_cannot_hold_code, not_proven_clean, text_cannot_hold_code)

MANY = settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def codes(draw) -> str:  # noqa: ANN001
    """A valid code written with or without its sign, spaces and control characters strewn in, any case."""
    born = draw(st.dates(min_value=date(1800, 1, 1), max_value=date(2099, 12, 31)))
    sign = draw(st.sampled_from([s for s, c in CENTURY.items() if c == born.year // 100 * 100]))
    ddmmyy = born.strftime("%d%m") + f"{born.year % 100:02d}"
    number = f"{draw(st.integers(2, 999)):03d}"
    check = CHECK_CHARACTERS[int(ddmmyy + number) % 31]
    middle = draw(st.sampled_from([sign, "", " ", "_", ".", "/", " . "]))
    quiet = st.sampled_from(["", "", "", " ", "\t", "\x01", "\x7f", "\n"])
    text = "".join(c + draw(quiet) for c in ddmmyy) + middle + "".join(c + draw(quiet) for c in number) + check
    return text.lower() if draw(st.booleans()) else text


NEAR = st.text(alphabet="0123456789-+AaFfTtNnUuYyZz :.\t\n\x00\x01\x1f\x7f_/x\"\\é", max_size=40)
TEXTS = st.one_of(NEAR, st.text(max_size=30), codes(), st.tuples(NEAR, codes(), NEAR).map("".join))


@MANY
@given(TEXTS)
@example("131052-308T")
@example("1310 52 308T")
@example("2026-12-06T22:15:40.196587Z")
@example("0a728684-2135-4000")
def test_a_text_proven_clean_holds_no_code(text: str):
    if text_cannot_hold_code(text):
        assert find_in(text) is None, ascii(text)


@MANY
@given(st.dictionaries(TEXTS, st.one_of(TEXTS, st.integers(), st.lists(TEXTS, max_size=3),
                                        st.dictionaries(TEXTS, TEXTS, max_size=3)), max_size=5),
       st.booleans())
def test_a_json_body_proven_clean_holds_no_code_in_any_string(value: dict, ascii_only: bool):
    body = json.dumps(value, ensure_ascii=ascii_only).encode()
    if json_strings_cannot_hold_code(body):
        assert find_in(json.loads(body)) is None, body


@MANY
@given(st.dictionaries(TEXTS, st.one_of(TEXTS, st.integers(), st.integers(10**8, 10**11), st.lists(TEXTS, max_size=3),
                                        st.dictionaries(TEXTS, TEXTS, max_size=3)), max_size=5),
       st.booleans())
def test_a_body_proven_clean_holds_no_code_in_its_text_nor_in_any_string(value: dict, ascii_only: bool):
    """``body_cannot_hold_code``: the decisions consumer's proof for outside systems' messages, whose raw text
    (a code written as a JSON number, or over tokens) is searched as well as every string."""
    body = json.dumps(value, ensure_ascii=ascii_only).encode()
    if body_cannot_hold_code(body):
        assert find_in(json.loads(body)) is None and find_in(body.decode()) is None, body


def test_a_code_in_a_body_is_never_proven_clean_however_it_is_written():
    for written in ("131052-308T", "131052308T", "131052 308t", "x131052-308Ty", "1 3 1 0 5 2 - 3 0 8 T"):
        assert contains_personal_identity_code(written)
        for value in ({"a": written}, {written: 1}, {"a": [{"b": f"id-{written}-x"}]}):
            assert not json_strings_cannot_hold_code(json.dumps(value).encode()), value
            assert not body_cannot_hold_code(json.dumps(value).encode()), value
    # a code written as a JSON number is in the raw text only (the decisions consumer searches that too)
    assert contains_personal_identity_code("1310520040") and not body_cannot_hold_code(b'{"a": 1310520040}')
    # escaped or non-ASCII bodies are not proven here (the consumer parses them and walks every string)
    assert not json_strings_cannot_hold_code(json.dumps({"a": "131052\\u002d308T"}).encode())
    assert not json_strings_cannot_hold_code(json.dumps({"a": "é"}, ensure_ascii=False).encode())


def test_the_usual_charge_event_is_proven_clean_without_parsing():
    """Its timestamps have six digits together (microseconds), as do many ids, yet none has a code's shape."""
    proven = 0
    for _ in range(500):
        event = ChargeAccepted(
            charge_id=new_id(), voucher_id=new_id(), funder_id="091", provider_id=new_id(), category="home_care",
            service_date=date(2026, 11, 3), units=Decimal("2.5"), unit_price_cents=2500, amount_cents=6250,
            own_share_cents=0, accepted_at=datetime.now(timezone.utc), price_list_id=new_id())
        proven += json_strings_cannot_hold_code(Envelope.wrap(event, "payments").model_dump_json().encode())
    assert proven == 500
    assert all(body_cannot_hold_code(json.dumps({"specversion": "1.0", "id": new_id(), "type": "fi.seteli.decision.v1",
                                                 "time": datetime.now(timezone.utc).isoformat(),
                                                 "data": {"decision_ref": f"D-{i:07d}", "value_per_unit_cents": 2500,
                                                          "valid_from": "2026-12-01"}}).encode())
               for i in range(500))
    assert all(text_cannot_hold_code(v) or find_in(v) is None for v in (new_id() for _ in range(500)))


@MANY
@given(st.lists(st.one_of(TEXTS, st.just("131052-308T"), st.just(new_id())), max_size=8))
@example(["0a728684-2135-4000", "131052", "-308T"])
@example(["131052-308T,x", "é", "a\x00"])
def test_texts_checked_together_are_those_checked_one_by_one(texts: list):
    """``not_proven_clean`` (many drawn values checked in one pass) finds exactly the texts ``text_cannot_hold_code``
    does not prove clean, one by one: nothing is proven clean by being next to another text."""
    assert not_proven_clean(texts) == [i for i, t in enumerate(texts) if not text_cannot_hold_code(t)]
