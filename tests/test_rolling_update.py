"""Rolling updates: one service is updated while the others still run the previous release, so this release's
events must be accepted by the previous release's consumers, and the previous release's events by this
release's consumers. Against the previous release's contract frozen in the repository
(docs/contract-releases/<release>.json, from scripts/freeze_contract.py), both ways, for every event type, with
every optional field given and with none; and, where the repository's history is there, against the previous
release's own pydantic models (``events.py`` at that commit). The order of a rollout: README, "Operations"."""
from __future__ import annotations

import warnings
from decimal import Decimal
from typing import Any

import jsonschema_rs
import pytest
from pydantic import ValidationError

from seteli_shared.events import ALL_EVENTS, Envelope, Event
from seteli_shared.manifest import NAMES

from .fleet import script

freeze_contract = script("freeze_contract")
PREVIOUS = freeze_contract.frozen()
#: an example for each pattern the contracts use (a new pattern must be given one here)
PATTERN_EXAMPLES = {r"^[a-z0-9][a-z0-9-]{0,39}$": "091", r"^[a-z_]{2,40}$": "home_care"}
FORMAT_EXAMPLES = {"date-time": "2026-11-25T03:00:00Z", "date": "2026-11-25"}


def example(schema: dict, defs: dict, full: bool) -> Any:  # noqa: ANN401
    """A value a JSON Schema of pydantic's accepts: every optional property given (``full``) or none."""
    if "$ref" in schema:
        return example(defs[schema["$ref"].rsplit("/", 1)[1]], defs, full)
    if "anyOf" in schema:
        options = [o for o in schema["anyOf"] if o.get("type") != "null"]
        if not full and len(options) < len(schema["anyOf"]):
            return None
        return example(options[0], defs, full)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        props, required = schema.get("properties", {}), set(schema.get("required", []))
        if not props:
            values = schema.get("additionalProperties")
            return {"weekday": example(values, defs, full)} if full and isinstance(values, dict) else {}
        return {k: example(v, defs, full) for k, v in props.items() if full or k in required}
    if kind == "array":
        return [example(schema["items"], defs, full)] if full or schema.get("minItems") else []
    if kind == "string":
        if isinstance(schema.get("default"), str):
            return schema["default"]  # what that release's producer put there (CloudEvents' specversion "1.0")
        if "format" in schema:
            return FORMAT_EXAMPLES[schema["format"]]
        if "pattern" in schema:
            assert schema["pattern"] in PATTERN_EXAMPLES, f"give the pattern {schema['pattern']} an example here"
            return PATTERN_EXAMPLES[schema["pattern"]]
        return "x" * max(1, schema.get("minLength", 1))
    if kind == "integer":
        return max(1, schema.get("minimum", 1), schema.get("exclusiveMinimum", 0) + 1)
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    raise AssertionError(f"no example for {schema}")


def sample(schema: dict, full: bool) -> dict:
    return example(schema, schema.get("$defs", {}), full)


def emitted(cls: type[Event], full: bool) -> dict:
    """The ``data`` this release's producer puts on the bus for such an event (every field, defaults included)."""
    return cls.model_validate(sample(cls.model_json_schema(), full)).model_dump(mode="json")


def rejected_by(schema: dict, data: dict) -> list[str]:
    """Why a consumer validating against ``schema`` refuses ``data`` (nothing: it accepts it)."""
    return [f"{'.'.join(map(str, e.instance_path)) or '(data)'}: {e.message}"
            for e in jsonschema_rs.validator_for(schema).iter_errors(data)]


def forward_breaks(previous: dict, cls: type[Event]) -> list[str]:
    """What in this release's ``cls`` events the previous release's consumers (``previous``: its schema) refuse."""
    return [f"{'full' if full else 'minimal'} {why}" for full in (True, False)
            for why in rejected_by(previous, emitted(cls, full))]


def backward_breaks(previous: dict, cls: type[Event]) -> list[str]:
    """What in the previous release's events (``previous``: its schema) this release's consumer ``cls`` refuses,
    an unknown field besides (a later release's addition) included."""
    problems = []
    for full in (True, False):
        data = {**sample(previous, full), "added_in_a_later_release": "ignored"}
        try:
            cls.model_validate(data)
        except ValidationError as exc:
            problems += [f"{'full' if full else 'minimal'} {'.'.join(map(str, e['loc']))}: {e['msg']}"
                         for e in exc.errors(include_input=False, include_url=False)]
    return problems


def test_the_frozen_previous_contract_is_what_its_release_gave():
    try:
        freeze_contract.events_module_at(freeze_contract.PREVIOUS_RELEASE)
    except LookupError as exc:
        pytest.skip(f"no git history here (a shallow clone): {exc}")
    assert freeze_contract.main(["--check"]) == 0


def test_every_event_type_of_the_previous_release_is_still_published():
    """A consumer of the previous release binds its queue to these types: an update must keep publishing each
    (a breaking change adds ``.v2`` beside ``.v1`` and publishes both until every consumer has moved)."""
    current = {cls.event_type(): cls for cls in ALL_EVENTS}
    assert set(PREVIOUS["events"]) <= set(current), set(PREVIOUS["events"]) - set(current)
    assert all(current[t].producer in NAMES for t in PREVIOUS["events"])


@pytest.mark.parametrize("event_type", sorted(PREVIOUS["events"]))
def test_this_releases_events_are_accepted_by_the_previous_releases_consumers(event_type):  # noqa: ANN001
    cls = Event.registry[event_type]
    assert forward_breaks(PREVIOUS["events"][event_type], cls) == []
    envelope = Envelope.wrap(cls.model_validate(sample(cls.model_json_schema(), True)), "test").model_dump(mode="json")
    assert rejected_by(PREVIOUS["envelope"], envelope) == []


@pytest.mark.parametrize("event_type", sorted(PREVIOUS["events"]))
def test_the_previous_releases_events_are_accepted_by_this_releases_consumers(event_type):  # noqa: ANN001
    assert backward_breaks(PREVIOUS["events"][event_type], Event.registry[event_type]) == []
    envelope = {**sample(PREVIOUS["envelope"], True), "type": event_type, "data": sample(
        PREVIOUS["events"][event_type], True), "traceparent": "an extension attribute of a later release"}
    assert Envelope.model_validate(envelope).event() is not None


def test_the_previous_releases_own_models_read_this_releases_events_and_the_reverse():
    """With the repository's history: ``events.py`` of the previous release imported as it was, its models
    validating this release's events, and this release's models its events."""
    try:
        old = freeze_contract.events_module_at(freeze_contract.PREVIOUS_RELEASE)
    except LookupError as exc:
        pytest.skip(f"no git history here (a shallow clone): {exc}")
    assert old.Event is not Event and old.Event.registry is not Event.registry
    for event_type, old_cls in old.Event.registry.items():
        cls = Event.registry[event_type]
        for full in (True, False):
            old_cls.model_validate(emitted(cls, full))  # this release's producer, the previous consumer
            theirs = old_cls.model_validate(sample(old_cls.model_json_schema(), full)).model_dump(mode="json")
            cls.model_validate(theirs)  # the previous producer, this release's consumer


class _Tick(Event):
    """A stand-in event for the checks' own test (no ``event_name``: it is not registered as an event type)."""

    tick_id: str
    amount_cents: int
    note: str | None = None


def test_the_checks_find_a_breaking_change():
    """The checks above can fail: a field the previous consumers require that this release no longer sends, a
    field this release requires that the previous producers do not send, a type changed under a name."""
    previous = _Tick.model_json_schema()

    class Dropped(Event):
        tick_id: str
        note: str | None = None

    class NewRequired(_Tick):
        reason: str

    class Retyped(Event):
        tick_id: str
        amount_cents: Decimal  # sent as a string: "1.5"

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert any("amount_cents" in p for p in forward_breaks(previous, Dropped))
        assert any("reason" in p for p in backward_breaks(previous, NewRequired))
        assert any("amount_cents" in p for p in forward_breaks(previous, Retyped))
    assert forward_breaks(previous, _Tick) == [] and backward_breaks(previous, _Tick) == []
