"""Offline validation of Kubernetes manifests: built-in kinds against the schemas that the
``kubernetes-validate`` wheel carries for ``KUBERNETES_VERSION`` (strict: an unknown field is an error,
as ``kubectl apply`` has made it since 1.27), custom resources against the ``openAPIV3Schema`` of their
CRDs kept in ``deploy/kubernetes/crds/`` (``SOURCES.json`` says where each came from).

Neither needs the network: the wheel ships its schemas and the CRDs are in the repository. What a
schema cannot say is not checked here: the CEL rules (``x-kubernetes-validations``) of a CRD and what an
admission webhook would refuse."""
from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
CRD_DIR = ROOT / "deploy" / "kubernetes" / "crds"
#: the Kubernetes release the manifests are written for and validated against
KUBERNETES_VERSION = "1.30"


class ManifestInvalid(Exception):
    """A document that its schema refuses; the message names the document and the place."""


@dataclass(frozen=True)
class CrdSource:
    file: str
    repository: str
    tag: str
    commit: str
    path: str
    sha256: str

    def digest_now(self) -> str:
        return hashlib.sha256((CRD_DIR / self.file).read_bytes()).hexdigest()


def crd_sources() -> list[CrdSource]:
    data = json.loads((CRD_DIR / "SOURCES.json").read_text(encoding="utf-8"))
    return [CrdSource(**row) for row in data["crds"]]


def _strict(schema: dict) -> dict:
    """The schema with unknown fields refused wherever the API server would prune them: every object that
    lists its properties and neither keeps unknown fields nor describes further ones."""
    schema = copy.deepcopy(schema)

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    # metadata is the API server's ObjectMeta, which the CRD leaves open: checked by ``_check_metadata``
    schema.get("properties", {}).get("metadata", {}).pop("additionalProperties", None)
    return schema


@lru_cache(maxsize=1)
def crd_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> the strict schema of that version of the custom resource."""
    out: dict[tuple[str, str], dict] = {}
    for source in crd_sources():
        crd = yaml.safe_load((CRD_DIR / source.file).read_text(encoding="utf-8"))
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served", True):
                out[(f"{group}/{version['name']}", kind)] = _strict(version["schema"]["openAPIV3Schema"])
    return out


def _name(doc: dict) -> str:
    meta = doc.get("metadata") or {}
    return f"{doc.get('kind')}/{meta.get('name')}"


def _check_metadata(doc: dict) -> None:
    """What ObjectMeta requires of a namespaced object we write: a DNS-1123 name, string labels."""
    meta = doc.get("metadata") or {}
    name = meta.get("name", "")
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", name):
        raise ManifestInvalid(f"{_name(doc)}: metadata.name {name!r} is not a DNS-1123 subdomain")
    for field in ("labels", "annotations"):
        for key, value in (meta.get(field) or {}).items():
            if not isinstance(value, str):
                raise ManifestInvalid(f"{_name(doc)}: metadata.{field}.{key} must be a string")


def validate_custom(doc: dict) -> str:
    """Validate a custom resource against its CRD's schema; returns the CRD file it was checked with."""
    key = (doc.get("apiVersion"), doc.get("kind"))
    schema = crd_schemas().get(key)
    if schema is None:
        raise ManifestInvalid(f"{_name(doc)}: no CRD in {CRD_DIR.relative_to(ROOT)} for {key[0]} {key[1]}")
    _check_metadata(doc)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = ".".join(str(p) for p in first.absolute_path) or "(document)"
        raise ManifestInvalid(f"{_name(doc)}: {where}: {first.message}")
    return f"{key[0]} {key[1]}"


def is_builtin(doc: dict) -> bool:
    return (doc.get("apiVersion"), doc.get("kind")) not in crd_schemas()


def validate_builtin(doc: dict) -> str:
    """Validate a built-in kind with kubernetes-validate's schemas of ``KUBERNETES_VERSION`` (strict)."""
    _check_metadata(doc)
    try:
        return kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path) or "(document)"
        raise ManifestInvalid(f"{_name(doc)}: {where}: {exc.message}") from None
    except kubernetes_validate.SchemaNotFoundError as exc:
        raise ManifestInvalid(f"{_name(doc)}: {exc.message}") from None


def validate(doc: dict) -> str:
    """Validate one document, built-in or custom."""
    return validate_builtin(doc) if is_builtin(doc) else validate_custom(doc)


def validate_all(docs: list[dict]) -> None:
    for doc in docs:
        validate(doc)
