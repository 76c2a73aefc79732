"""The bus contract is its own test: every message of docs/asyncapi.yaml has a schema an integrator can
validate with (Draft 2020-12, standalone, CloudEvents' required attributes required) and valid examples;
the document reads the same in YAML 1.1 and 1.2; its version has a changelog entry; and the check that
holds every message the services publish during the tests to it (``seteli_shared.contract``, wired into
the outbox relay) finds a broken one."""
from __future__ import annotations

import json
import re
from functools import lru_cache
from io import StringIO
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from ruamel.yaml import YAML

from seteli_shared import contract
from seteli_shared.decisions import REPLIES_TYPE, DecisionData, DecisionReplies, DecisionReply
from seteli_shared.events import ALL_EVENTS
from seteli_shared.privacy import find_in

ROOT = Path(__file__).resolve().parent.parent
DOCUMENT = ROOT / "docs" / "asyncapi.yaml"
CLOUDEVENTS_REQUIRED = {"specversion", "id", "source", "type"}


@lru_cache(maxsize=1)
def _document_text() -> str:
    return json.dumps(yaml.safe_load(DOCUMENT.read_text()))


def document() -> dict:
    """The published document, a fresh copy each time (tests change what they get)."""
    return json.loads(_document_text())


def messages() -> dict[str, dict]:
    return document()["components"]["messages"]


def validator(payload: dict) -> Draft202012Validator:
    return Draft202012Validator(payload, format_checker=Draft202012Validator.FORMAT_CHECKER)


def refs_in(node) -> list[str]:  # noqa: ANN001
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [r for v in node.values() for r in refs_in(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs_in(v)]
    return []


@pytest.mark.parametrize("name", sorted(messages()))
def test_each_message_schema_stands_alone_and_its_examples_are_valid(name):  # noqa: ANN001
    message = messages()[name]
    payload = message["payload"]
    assert payload["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert message["schemaFormat"] == "application/schema+json;version=draft-2020-12"
    Draft202012Validator.check_schema(payload)
    assert refs_in(payload) == [], "a reference in a payload resolves against whichever document the reader holds"
    assert CLOUDEVENTS_REQUIRED | {"data"} <= set(payload["required"])
    assert payload["properties"]["specversion"]["const"] == "1.0"
    assert message["examples"], f"{name} has no example"
    for example in message["examples"]:
        validator(payload).validate(example["payload"])  # raises with the path when it does not hold
        assert example["payload"]["type"] == payload["properties"]["type"]["const"]
        assert find_in(json.dumps(example["payload"])) is None, "the privacy guard would refuse the example"


@pytest.mark.parametrize("broken", [
    lambda m: m.pop("id"), lambda m: m.pop("specversion"), lambda m: m.pop("source"),
    lambda m: m.update(specversion="0.3"), lambda m: m.update(id=""), lambda m: m.update(type="fi.seteli.other.v1"),
    lambda m: m.update(time="2026-03-02T09:15:00"),  # no offset: not RFC 3339
    lambda m: m["data"].pop(next(iter(m["data"]))),
], ids=["no id", "no specversion", "no source", "specversion 0.3", "empty id", "another type", "time without offset",
        "data without its first field"])
def test_the_schemas_refuse_what_cloudevents_and_the_models_refuse(broken):  # noqa: ANN001
    for name in ("VoucherIssued", "ServiceDecision", "DecisionAccepted", "SettlementNotice"):
        message = messages()[name]
        example = json.loads(json.dumps(message["examples"][0]["payload"]))
        broken(example)
        with pytest.raises(ValidationError):
            validator(message["payload"]).validate(example)


def test_the_examples_are_what_the_consumers_accept():
    """Each example's data is taken by the model the platform reads it with (events, decisions, replies)."""
    by_type = {**{e.event_type(): e for e in ALL_EVENTS}, **DecisionReply.registry, REPLIES_TYPE: DecisionReplies}
    for name, message in messages().items():
        for example in message["examples"]:
            model = DecisionData if name == "ServiceDecision" else by_type.get(example["payload"]["type"])
            if model is not None:
                model.model_validate(example["payload"]["data"])


def test_every_event_and_decision_message_is_documented_with_an_example():
    names = set(messages())
    assert {e.__name__ for e in ALL_EVENTS} <= names
    assert {"ServiceDecision", "DecisionAccepted", "DecisionRejected", "DecisionReplies", "SettlementNotice",
            "RecoveryClaimNotice"} <= names
    assert all(m["examples"] for m in messages().values())
    assert len(names) == len(ALL_EVENTS) + 6


def test_every_message_type_carries_its_version():
    for message in messages().values():
        message_type = message["payload"]["properties"]["type"]["const"]
        assert re.fullmatch(r"fi\.seteli\.[a-z_.-]+\.v[0-9]+", message_type), message_type
        assert message["bindings"]["amqp"]["messageType"] == message_type, "the AMQP type property says it too"


def test_yaml_1_1_and_1_2_readers_read_the_same_document():
    text = DOCUMENT.read_text()
    yaml12 = YAML(typ="safe", pure=True)
    assert yaml12.load(StringIO(text)) == yaml.safe_load(text)
    examples = messages()["ServiceDecision"]["examples"][0]["payload"]["data"]
    assert examples["funder_id"] == "091" and examples["municipality_of_residence"] == "091"


@pytest.mark.parametrize("value", ["091", "0091", "1e3", "1.5", "0o17", "0x1F", "yes", "no", "on", "off", "null",
                                   "~", "true", "2026-03-01", "2026-03-01T09:15:00Z", ".inf", "-.inf", ".nan",
                                   "1_000", "12:30", "+1", "-0", "3.", "y", "n"])
def test_strings_that_a_reader_could_take_for_something_else_are_quoted(value):  # noqa: ANN001
    text = contract.dump_yaml({"value": value, "list": [value]})
    yaml12 = YAML(typ="safe", pure=True)
    assert yaml.safe_load(text) == {"value": value, "list": [value]}, text
    assert yaml12.load(StringIO(text)) == {"value": value, "list": [value]}, text


def test_the_contract_version_has_a_changelog_entry():
    version = document()["info"]["version"]
    changelog = (ROOT / "docs" / "CONTRACT-CHANGELOG.md").read_text()
    headings = re.findall(r"^## ([0-9]+\.[0-9]+\.[0-9]+)\b", changelog, re.MULTILINE)
    assert headings and headings[0] == version, "the newest changelog entry is the document's version"
    assert "personal_identity_code_refused" in changelog, "issue 18's rename of a reason is recorded"
    assert re.search(r"deprecat", changelog, re.IGNORECASE), "the deprecation rule is written down"


# ---------------------------------------------------------------- the check of what the services publish
def published_contract(tmp_path: Path) -> contract.PublishedContract:
    return contract.PublishedContract(DOCUMENT, tmp_path / "violations.jsonl", tmp_path / "counts.jsonl")


def counted(check: contract.PublishedContract, tmp_path: Path) -> dict[str, int]:
    """What the check counted: written out now and then, and what it holds yet."""
    check.write_counts()
    total: dict[str, int] = {}
    for line in (tmp_path / "counts.jsonl").read_text().splitlines():
        for message_type, n in json.loads(line)["checked"].items():
            total[message_type] = total.get(message_type, 0) + n
    return total


def test_the_check_passes_every_example_and_records_a_broken_message(tmp_path):  # noqa: ANN001
    check = published_contract(tmp_path)
    for message in messages().values():
        for example in message["examples"]:
            assert check.check(json.dumps(example["payload"]), None, "x") == []
    broken = json.loads(json.dumps(messages()["ChargeAccepted"]["examples"][0]["payload"]))
    broken["data"]["amount_cents"] = "a hundred euros"
    del broken["id"]
    problems = check.check(json.dumps(broken).encode(), None, "charge.accepted.v1")
    assert problems and any("amount_cents" in p for p in problems) and any("(envelope)" in p for p in problems)
    recorded = [json.loads(line) for line in (tmp_path / "violations.jsonl").read_text().splitlines()]
    assert [r["type"] for r in recorded] == ["fi.seteli.charge.accepted.v1"]
    assert "a hundred euros" not in (tmp_path / "violations.jsonl").read_text(), "never the value"
    counts = counted(check, tmp_path)
    assert counts["fi.seteli.charge.accepted.v1"] == 2 and sum(counts.values()) == 1 + sum(
        len(m["examples"]) for m in messages().values())


async def test_the_outbox_relay_checks_what_it_publishes(tmp_path, namespace, amqp_url, monkeypatch):  # noqa: ANN001
    """The check sits where every message leaves a service, whoever wrote its outbox row and however: a row
    written straight into the table (as bulk work does) is checked like one from ``add_event``."""
    from sqlalchemy import insert

    from seteli_shared.bus import Bus
    from seteli_shared.db import make_engine
    from seteli_shared.events import Envelope, VoucherExpired
    from seteli_shared.messaging import OutboxMessage
    from seteli_shared.outbox import OutboxRelay
    from seteli_shared.testing import make_settings

    check = published_contract(tmp_path)
    monkeypatch.setattr(contract, "published", lambda: check)
    monkeypatch.setattr("seteli_shared.outbox.published_contract", lambda: check)
    settings = make_settings(bus_namespace=namespace, amqp_url=amqp_url,
                             database_url=f"sqlite+aiosqlite:///{tmp_path / 'relay.db'}")
    engine = make_engine(settings.database_url)
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: OutboxMessage.__table__.create(c))
    good = Envelope.wrap(VoucherExpired(voucher_id="v-1", funder_id="091", category="home_care",
                                        valid_until="2027-02-28", expired_at="2027-03-01T00:15:00Z"), "vouchers")
    bad = good.model_dump(mode="json") | {"id": "m-bad", "time": "yesterday"}
    bad["data"] = {**bad["data"], "valid_until": "28.2.2027"}
    async with engine.begin() as conn:
        for message_id, body in (("m-good", good.model_dump_json()), ("m-bad", json.dumps(bad))):
            await conn.execute(insert(OutboxMessage.__table__).values(
                message_id=message_id, routing_key="voucher.expired.v1", body=body, created_at=good.time, attempts=0))
    bus = Bus(settings)
    await bus.connect()
    try:
        await OutboxRelay(engine, bus).relay_once()
    finally:
        await bus.close()
        await engine.dispose()
    recorded = [json.loads(line) for line in (tmp_path / "violations.jsonl").read_text().splitlines()]
    assert len(recorded) == 1 and recorded[0]["type"] == "fi.seteli.voucher.expired.v1"
    assert sorted(recorded[0]["problems"]) == ["data/valid_until: Format", "time: Format"]
    assert counted(check, tmp_path) == {"fi.seteli.voucher.expired.v1": 2}
