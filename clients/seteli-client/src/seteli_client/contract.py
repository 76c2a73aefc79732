"""Validate a message against its schema in the published AsyncAPI document (extra ``validate``).

Each message of docs/asyncapi.yaml has a standalone JSON Schema Draft 2020-12 payload (the CloudEvents
envelope with its ``data``), keyed here by the envelope's ``type``: ``Contract.load(path).validate(message)``
raises ``jsonschema.ValidationError`` for one that breaks it. Formats (``date-time``, ``date``) are checked.
"""
from __future__ import annotations

from pathlib import Path


class Contract:
    def __init__(self, document: dict):
        from jsonschema import Draft202012Validator

        self.document = document
        self.validators = {}
        for message in document["components"]["messages"].values():
            payload = message["payload"]
            self.validators[payload["properties"]["type"]["const"]] = Draft202012Validator(
                payload, format_checker=Draft202012Validator.FORMAT_CHECKER)

    @classmethod
    def load(cls, path: str | Path) -> "Contract":
        import yaml

        return cls(yaml.safe_load(Path(path).read_text()))

    @property
    def types(self) -> set[str]:
        return set(self.validators)

    def validate(self, message: dict) -> None:
        """Raises ``KeyError`` for a type the document does not have, ``ValidationError`` for a broken message."""
        self.validators[message["type"]].validate(message)

    def examples(self) -> list[dict]:
        return [e["payload"] for m in self.document["components"]["messages"].values() for e in m.get("examples", [])]
