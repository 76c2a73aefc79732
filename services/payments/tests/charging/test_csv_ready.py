"""A CSV line or a JSON bulk's line read without the line model (``intake.ready_values``, the bulk's fast reading) is
taken only when
``ChargeLine`` takes it too, and then as the very request the model gives the engine: every other line goes
through the model, which gives its refusal its reason. Property-based over values near every bound (and any JSON
value), and the whole file path (``csv_lines``) over a file mixing good and bad lines, and a JSON bulk's
(``json_lines``) against the model's answers."""
from __future__ import annotations

from pydantic import ValidationError
from hypothesis import given, settings
from hypothesis import strategies as st

from payments.charging import intake
from payments.charging.csv_format import rows

TEXTS = st.one_of(st.sampled_from(["v1", "x" * 32, "x" * 33, "y" * 64, "y" * 65, "r" * 100, "r" * 101, " v1", "v1 ",
                                   "", "\t", "a\u00a0", "7KQ2M9XH4D="]), st.text(max_size=4))
UNITS = st.one_of(st.sampled_from(["0", "0.00", "0.01", "1", "1.5", "1.50", "1.500", "1.005", "10000", "10000.00",
                                   "10000.01", "99999", "100000", "00001.25", "1e2", "-1", "1,5", " 1", "1.", ".5",
                                   "\u0661"]), st.text(max_size=4), st.integers(-2, 3))
DAYS = st.one_of(st.sampled_from(["2026-06-01", "2026-02-30", "1899-12-31", "1900-01-01", "2199-12-31",
                                  "2200-01-01", "2026-6-1", "20260601", " 2026-06-01", "2026-06-01T00:00"]),
                 st.text(max_size=3), st.dates().map(str))
PRICES = st.one_of(st.none(), st.integers(-1, 3), st.sampled_from([10_000_000, 10_000_001, 2750]), st.just("2750"),
                   st.just(True))
TARIFFS = st.one_of(st.none(), st.sampled_from(["weekday", "sunday", "Sunday", "holiday", " weekday"]))
CATEGORIES = st.one_of(st.none(), st.sampled_from(["home_care", "cleaning", "HOME_CARE", "no_such", "meals", "x", "a" * 41, "home-care"]))


JSON_VALUES = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=False),
                                     st.text(max_size=3)),
                           lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=2), inner,
                                                                                      max_size=2), max_leaves=4)


@st.composite
def values(draw):  # noqa: ANN001, ANN201
    out: dict = {}
    for key, strategy in (("voucher_id", TEXTS), ("voucher_code", TEXTS), ("provider_reference", TEXTS),
                          ("service_date", DAYS), ("units", UNITS), ("unit_price_cents", PRICES),
                          ("tariff", TARIFFS), ("category", CATEGORIES)):
        if draw(st.booleans()) or key in ("provider_reference", "service_date", "units"):
            value = draw(strategy)
            if value is not None or draw(st.booleans()):
                out[key] = value
    if draw(st.integers(0, 20)) == 0:
        out["note"] = "extra"
    if draw(st.integers(0, 6)) == 0:  # a JSON bulk's line may hold any JSON value anywhere
        out[draw(st.sampled_from(sorted(intake.ChargeLine.model_fields)))] = draw(JSON_VALUES)
    return out


def _model_request(v: dict) -> tuple | None:
    try:
        c = intake.ChargeLine.model_validate(v)
    except ValidationError:
        return None
    line = intake.engine_line(0, c, "p1")
    return (line.voucher_id, line.voucher_code, line.provider_reference, line.req)


@settings(max_examples=600, deadline=None)
@given(v=values())
def test_read_without_the_model_only_what_the_model_takes_and_the_same_request(v):
    ready = intake.ready_values(v)
    if ready is None:
        return  # the model reads it (and answers its refusal)
    line = intake.ready_line(0, ready, "p1")
    assert _model_request(v) == (line.voucher_id, line.voucher_code, line.provider_reference, line.req), v


def test_plain_lines_are_read_without_the_model():
    v = {"voucher_id": "v1", "provider_reference": "ref-1", "service_date": "2026-06-01", "units": "1.5",
         "unit_price_cents": 2750, "tariff": "sunday", "category": "home_care"}
    assert intake.ready_values(v) is not None
    assert _model_request(v) is not None


def test_a_file_answers_the_same_lines_and_reasons_either_way():
    body = ("voucher_id;provider_reference;service_date;units;unit_price;tariff\n"
            "v1;a;1.6.2026;1,5;27,50;\n"          # plain: read without the model
            "v1;b;1.6.2026;1,500;27,50;\n"        # three decimals written: the model reads it (and takes it)
            "v1;c;1.6.2026;0;27,50;\n"            # no units: refused by the model
            "v1;d;1.6.2026;10 001;27,50;\n"       # too many units
            "v1;e;1.6.2026;1;27,50;holiday\n"     # no such tariff
            + "v1;" + "f" * 101 + ";1.6.2026;1;27,50;\n"  # reference too long
            "v1;g;1.6.2026;2;;sunday\n")
    got = list(intake.csv_lines(rows([body.encode()])))
    assert [line.ready is not None for line in got] == [True, False, False, False, False, False, True]
    assert [line.reason for line in got] == [None, None, "invalid_request", "invalid_request", "invalid_request",
                                             "invalid_request", None]
    assert [line.provider_reference for line in got] == ["a", "b", "c", "d", "e", "f" * 100, "g"]
    by_model = [intake.engine_line(0, intake.line_of(line.line, r.values).charge, "p1").req
                for line, r in zip(got, rows([body.encode()])) if line.reason is None]
    fast = [intake.ready_line(0, line.ready, "p1").req if line.ready else intake.engine_line(0, line.charge, "p1").req
            for line in got if line.reason is None]
    assert fast == by_model


@settings(max_examples=200, deadline=None)
@given(items=st.lists(st.one_of(values(), JSON_VALUES), max_size=6))
def test_a_json_bulk_gives_the_engine_what_the_model_gives_it(items):
    """``json_lines`` (each line read without the model when it may be) against every line through the model:
    the same lines, each the same request to the engine or refused for the same reason."""
    def through_model(n, raw):  # noqa: ANN001, ANN202
        line = intake.line_of(n, raw)
        if line.reason is not None:
            return (line.line, line.provider_reference, line.reason, line.details)
        e = intake.engine_line(0, line.charge, "p1")
        return (line.line, line.provider_reference, e.voucher_id, e.voucher_code, e.provider_reference, e.req)

    def as_read(line):  # noqa: ANN001, ANN202
        if line.reason is not None:
            return (line.line, line.provider_reference, line.reason, line.details)
        e = (intake.engine_line(0, line.charge, "p1") if line.ready is None else intake.ready_line(0, line.ready, "p1"))
        return (line.line, line.provider_reference, e.voucher_id, e.voucher_code, e.provider_reference, e.req)

    assert [as_read(x) for x in intake.json_lines(items)] == [through_model(n, raw)
                                                               for n, raw in enumerate(items, start=1)]
