"""Generate the published contracts from the code: docs/asyncapi.yaml (the bus),
docs/openapi/<service>.json (the HTTP APIs) and deploy/rabbitmq/definitions.json (the broker). `--check` fails when the committed files differ."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from seteli_shared.events import ALL_EVENTS, Envelope

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SERVICES = ("registry", "vouchers", "payments", "reporting")
PRODUCER = {"provider": "registry", "voucher": "vouchers", "charge": "payments", "settlement": "payments"}


def service_specs():  # noqa: ANN201
    import importlib

    return {name: importlib.import_module(f"{name}.app").SPEC for name in SERVICES}


def asyncapi() -> dict:
    specs = service_specs()
    channels, messages = {}, {}
    for ev in ALL_EVENTS:
        name = ev.__name__
        key = ev.routing_key()
        consumers = sorted(n for n, s in specs.items() if ev.event_type() in s.handlers)
        envelope = Envelope.model_json_schema()
        envelope["properties"]["type"] = {"const": ev.event_type(), "type": "string"}
        envelope["properties"]["data"] = ev.model_json_schema()
        messages[name] = {
            "name": name,
            "title": name,
            "summary": (ev.__doc__ or "").strip() or f"{name} ({ev.event_type()})",
            "contentType": "application/cloudevents+json",
            "payload": envelope,
            "bindings": {"amqp": {"deliveryMode": 2, "messageType": ev.event_type(), "bindingVersion": "0.2.0"}},
        }
        channels[key] = {
            "description": f"Published by {PRODUCER[ev.event_name.split('.')[0]]} through its outbox; "
                           f"consumed by {', '.join(consumers) or 'reporting (archive)'}.",
            "bindings": {"amqp": {"is": "routingKey", "exchange": {"name": "{namespace}.events", "type": "topic",
                                                                   "durable": True, "autoDelete": False},
                                  "bindingVersion": "0.2.0"}},
            "subscribe": {"operationId": f"on{name}", "message": {"$ref": f"#/components/messages/{name}"}},
        }
    return {
        "asyncapi": "2.6.0",
        "info": {
            "title": "seteli domain events",
            "version": "1.0.0",
            "description": (
                "Every domain event is a CloudEvents 1.0 JSON document (structured mode) as the body of a "
                "persistent AMQP message on the topic exchange `{namespace}.events` (namespace `seteli` by "
                "default), routing key = the event type without the `fi.seteli.` prefix. The `type` ends in a "
                "version: additive changes keep it, breaking ones add `.v2` and producers emit both for a while. "
                "Consumers must ignore unknown fields. Each consumer has its own durable quorum queue "
                "`{namespace}.<service>` with dead-letter queue `{namespace}.<service>.dlq` (header "
                "`x-seteli-reason` says why). `correlationid` and `causationid` link events to the request "
                "and event that caused them. Money is in integer cents; units are decimal strings."),
        },
        "defaultContentType": "application/cloudevents+json",
        "servers": {"local": {"url": "amqp://127.0.0.1:5672", "protocol": "amqp", "protocolVersion": "0.9.1"}},
        "channels": channels,
        "components": {"messages": messages},
    }


def openapi(name: str) -> dict:
    import importlib

    app = importlib.import_module(f"{name}.app").create_app()
    return app.openapi()


def render() -> dict[Path, str]:
    out = {DOCS / "asyncapi.yaml": yaml.safe_dump(asyncapi(), sort_keys=False, allow_unicode=True, width=110)}
    from seteli_shared.broker import USER_TEMPLATES, definitions

    out[ROOT / "deploy" / "rabbitmq" / "definitions.json"] = json.dumps(definitions(), indent=2) + "\n"
    out[ROOT / "deploy" / "rabbitmq" / "user-templates.json"] = json.dumps(USER_TEMPLATES, indent=2) + "\n"
    for name in SERVICES:
        out[DOCS / "openapi" / f"{name}.json"] = json.dumps(openapi(name), indent=2, ensure_ascii=False) + "\n"
    return out


def main() -> int:
    check = "--check" in sys.argv
    stale = []
    for path, text in render().items():
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path.relative_to(ROOT)))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print("contracts out of date (run: .venv/bin/python scripts/gen_contracts.py):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
