"""The bus contract as JSON Schema, and the check that holds the services to it.

**Schemas.** Each message of ``docs/asyncapi.yaml`` has a payload schema that stands alone: JSON Schema
Draft 2020-12 (``$schema`` says so), the CloudEvents 1.0 envelope (``ReceivedEnvelope``: ``specversion``,
``id``, ``source``, ``type`` required, with ``data``; and ``time`` on what the platform publishes) around the
message's own model, with every ``$ref`` pydantic makes replaced by what it names (``inline_refs``). A
reference inside a payload would resolve against whatever document the reader holds: the payload alone
(a validator), or the whole AsyncAPI document (an AsyncAPI parser), and no one place can serve both, so
there is none.

**YAML.** ``dump_yaml`` writes the document so that YAML 1.1 readers (PyYAML) and YAML 1.2 readers
(ruamel.yaml, most others) read the same values: PyYAML quotes the strings that 1.1 would read as something
else (``yes``, ``2026-03-01``), and ``_dumper`` quotes those that only 1.2 would (``091``, ``1e3``, ``0o17``).

**The check** (``published``): with ``SETELI_CONTRACT_CHECK`` set to the path of ``docs/asyncapi.yaml``
(the tests' root conftest sets it for every process it starts), the outbox relay passes every message it
is about to publish through ``check``: the message is validated against the published schema of its
``type``, and a message that breaks it is written (its type, where and which rule, never a value) to the
file ``SETELI_CONTRACT_VIOLATIONS`` names, which fails the test run. Unset (production), ``published`` is
None and the relay does nothing more than look at it.
"""
from __future__ import annotations

import json
import os
import re
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from .events import ReceivedEnvelope
from .logging import get_logger

log = get_logger(__name__)

DIALECT = "https://json-schema.org/draft/2020-12/schema"
#: the ``schemaFormat`` of every message of the AsyncAPI document
SCHEMA_FORMAT = "application/schema+json;version=draft-2020-12"
CHECK_VARIABLE = "SETELI_CONTRACT_CHECK"
VIOLATIONS_VARIABLE = "SETELI_CONTRACT_VIOLATIONS"
COUNTS_VARIABLE = "SETELI_CONTRACT_COUNTS"
COUNTS_EVERY_SECONDS = 2.0


# ------------------------------------------------------------------ schemas
def inline_refs(schema: Any, defs: dict | None = None) -> Any:
    """``schema`` with every ``{"$ref": "#/$defs/X", ...}`` replaced by ``X`` (its siblings kept) and the
    ``$defs`` gone. Pydantic's models here are not recursive, so this ends."""
    if defs is None and isinstance(schema, dict):
        defs = schema.get("$defs", {})
    if isinstance(schema, list):
        return [inline_refs(item, defs) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key == "$defs":
            continue
        if key == "$ref" and isinstance(value, str) and value.startswith("#/$defs/"):
            out.update(inline_refs(defs[value.removeprefix("#/$defs/")], defs))
            continue
        out[key] = inline_refs(value, defs)
    return out


def message_schema(message_type: str, data: type[BaseModel] | dict, *, published: bool = True,
                   envelope_model: type[ReceivedEnvelope] = ReceivedEnvelope) -> dict:
    """The standalone payload schema of one message type: the CloudEvents envelope whose ``type`` is
    ``message_type`` and whose ``data`` is ``data`` (a model, or a schema already made). ``published``:
    the platform sends it, and always with its ``time``. ``envelope_model``: the envelope's model, when the
    message may carry extension attributes of its own (a decision's ``replymode``)."""
    envelope = envelope_model.model_json_schema()
    envelope["title"] = f"{message_type} (CloudEvents 1.0)"
    envelope["description"] = ("A CloudEvents 1.0 envelope (JSON format, structured mode): the AMQP message's body. "
                               "An attribute whose value is null is absent (CloudEvents' JSON format).")
    props = envelope["properties"]
    props["type"] = {"const": message_type, "type": "string", "description": "the message type and its version"}
    props["source"]["format"] = "uri-reference"
    props["time"]["format"] = "date-time"
    props["data"] = data.model_json_schema() if isinstance(data, type) else data
    required = ["specversion", "id", "source", "type", *(["time"] if published else []), "data"]
    envelope["required"] = required
    return {"$schema": DIALECT, **inline_refs(envelope, props["data"].get("$defs", {}))}


# ------------------------------------------------------------------ YAML both 1.1 and 1.2 readers agree on
#: what a YAML 1.2 reader (core schema) takes for something other than a string, when unquoted
_YAML12_NOT_A_STRING = re.compile(r"""^(?:
    ~|null|Null|NULL|true|True|TRUE|false|False|FALSE
  | [-+]?[0-9]+ | 0o[0-7]+ | 0x[0-9a-fA-F]+
  | [-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?
  | [-+]?\.(?:inf|Inf|INF) | \.(?:nan|NaN|NAN)
)$""", re.VERBOSE)


@lru_cache(maxsize=1)
def _dumper() -> type:
    """PyYAML's safe dumper, quoting also the strings a YAML 1.2 reader would read as numbers or nulls
    (made on first use: PyYAML is a tool of the generator and the tests, not of the services)."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        if _YAML12_NOT_A_STRING.match(value):
            return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="'")
        return dumper.represent_str(value)

    Dumper.add_representer(str, represent_str)
    return Dumper


def dump_yaml(document: Any) -> str:
    import yaml

    return yaml.dump(document, Dumper=_dumper(), sort_keys=False, allow_unicode=True, width=110)


# ------------------------------------------------------------------ the check of what the services publish
class PublishedContract:
    """The published document's schemas by message type, compiled once per process (``jsonschema_rs``, a
    few microseconds a message), and where broken messages are written."""

    def __init__(self, document: Path, violations: Path | None, counts: Path | None):
        import jsonschema_rs  # test-time dependencies only: production never gets here
        import yaml

        doc = yaml.safe_load(document.read_text())
        self.validators = {}
        for message in doc["components"]["messages"].values():
            payload = message["payload"]
            self.validators[payload["properties"]["type"]["const"]] = jsonschema_rs.validator_for(
                payload, validate_formats=True)
        self.violations, self.counts = violations, counts
        self.checked: dict[str, int] = {}
        self._written_at = time.monotonic()

    def check(self, body: bytes | str, exchange: str | None, routing_key: str) -> list[str]:
        """What is wrong with one message about to be published (empty: nothing), recorded when not empty."""
        problems = self._problems(body)
        message_type = self._type_of(body)
        self.checked[message_type] = self.checked.get(message_type, 0) + 1
        if time.monotonic() - self._written_at > COUNTS_EVERY_SECONDS:
            self.write_counts()  # now and then: a service ended by a signal runs no exit handler
        if problems:
            self._record({"type": message_type, "exchange": exchange or "events", "routing_key": routing_key,
                          "problems": problems, "pid": os.getpid()})
        return problems

    def _problems(self, body: bytes | str) -> list[str]:
        try:
            message = json.loads(body)
        except ValueError:
            return ["the body is not JSON"]
        message_type = message.get("type") if isinstance(message, dict) else None
        validator = self.validators.get(message_type)
        if validator is None:
            if _a_tests_own(message_type, message.get("source")):
                return []
            return [f"no published schema for type {message_type!r}"]
        # where and which rule, never the value (it could be anything a producer got wrong)
        return [f"{'/'.join(str(p) for p in e.instance_path) or '(envelope)'}: {type(e.kind).__name__}"
                for e in validator.iter_errors(message)][:20]

    @staticmethod
    def _type_of(body: bytes | str) -> str:
        try:
            return str(json.loads(body).get("type"))
        except (ValueError, AttributeError):
            return "(not JSON)"

    def _record(self, violation: dict) -> None:
        log.error("contract.violated", **{k: v for k, v in violation.items() if k != "pid"})
        if self.violations is not None:
            with self.violations.open("a") as f:
                f.write(json.dumps(violation) + "\n")

    def write_counts(self) -> None:
        """Add this process's counts of checked messages since the last time to the counts file."""
        self._written_at = time.monotonic()
        if self.counts is not None and self.checked:
            with self.counts.open("a") as f:
                f.write(json.dumps({"pid": os.getpid(), "checked": self.checked}) + "\n")
            self.checked = {}


def _a_tests_own(message_type: object, source: object) -> bool:
    """An event type a test defines for itself (``test.tick``): the machinery's tests publish it, no service
    does, and the contract does not describe it. Known by its class outside the library where the test's module
    is loaded, and by its source (``/seteli/<publisher>``) naming no service of the platform where it is not (a
    test's relay running as a child process)."""
    from .events import Event
    from .manifest import NAMES

    cls = Event.registry.get(message_type) if isinstance(message_type, str) else None
    if cls is not None:
        return not cls.__module__.startswith("seteli_shared.")
    publisher = source.rsplit("/", 1)[-1] if isinstance(source, str) and source.startswith("/seteli/") else None
    return publisher is not None and publisher not in NAMES


@lru_cache(maxsize=1)
def published() -> PublishedContract | None:
    """The check of this process, or None when ``SETELI_CONTRACT_CHECK`` is not set."""
    document = os.environ.get(CHECK_VARIABLE)
    if not document:
        return None
    import atexit

    paths = [Path(p) if (p := os.environ.get(v)) else None for v in (VIOLATIONS_VARIABLE, COUNTS_VARIABLE)]
    contract = PublishedContract(Path(document), *paths)
    atexit.register(contract.write_counts)
    return contract
