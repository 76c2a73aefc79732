"""Generate the published contracts and deployment files from the code: docs/asyncapi.yaml (the bus),
docs/openapi/<service>.json (the HTTP APIs), deploy/rabbitmq/definitions.json (the broker) and
deploy/postgres/init-databases.sql (one database per service). The services come from
``seteli_shared.manifest``, each event's producer from ``Event.producer``, its consumers from the
services' ``ServiceSpec``s. `--check` fails when the committed files differ."""
from __future__ import annotations

import json
import re
import sys
import uuid
from pathlib import Path

from seteli_shared.contract import SCHEMA_FORMAT, dump_yaml, message_schema
from seteli_shared.events import ALL_EVENTS
from seteli_shared.examples import envelope_of, event_examples
from seteli_shared.manifest import SERVICES, WITH_DATABASE
from seteli_shared.schemas import place_bounds

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: ``*`` is exactly one word, ``#`` zero or more."""
    p, k = pattern.split("."), key.split(".")

    def match(i: int, j: int) -> bool:
        if i == len(p):
            return j == len(k)
        if p[i] == "#":
            return any(match(i + 1, jj) for jj in range(j, len(k) + 1))
        return j < len(k) and p[i] in ("*", k[j]) and match(i + 1, j + 1)

    return match(0, 0)


def service_specs():  # noqa: ANN201
    return {s.name: s.spec() for s in SERVICES}


#: the version of the whole contract (docs/CONTRACT-CHANGELOG.md has an entry for each)
CONTRACT_VERSION = "1.8.0"


def example_id(label: str) -> str:
    """A fixed id for an example (the same on every generation) with no six digits in a row, so that the
    privacy guard cannot take it for a personal identity code."""
    for n in range(100):
        value = str(uuid.uuid5(uuid.NAMESPACE_URL, f"seteli-example:{label}:{n}"))
        if not re.search(r"[0-9]{6}", value):
            return value
    raise AssertionError("no clean id")  # pragma: no cover


def message(name: str, message_type: str, data, summary: str, examples: list[dict], *,  # noqa: ANN001
            published: bool = True, description: str | None = None, envelope_model=None) -> dict:  # noqa: ANN001
    """One message of the document: its standalone schema (``contract.message_schema``) and examples."""
    out = {"name": name, "title": name, "summary": summary}
    if description:
        out["description"] = description
    return {**out, "contentType": "application/cloudevents+json", "schemaFormat": SCHEMA_FORMAT,
            "payload": message_schema(message_type, data, published=published,
                                      **({"envelope_model": envelope_model} if envelope_model else {})),
            "bindings": {"amqp": {"deliveryMode": 2, "messageType": message_type, "bindingVersion": "0.2.0"}},
            "examples": examples}


def event_message(ev, example) -> dict:  # noqa: ANN001
    env = envelope_of(example, example_id(ev.event_type()), example_id(f"{ev.event_type()}:correlation"))
    summary = " ".join((ev.__doc__ or "").split()) or f"{ev.__name__} ({ev.event_type()})"
    return message(ev.__name__, ev.event_type(), ev, summary, [{"name": ev.__name__, "payload": env}])


def asyncapi() -> dict:
    specs = service_specs()
    channels, messages = {}, {}
    examples = event_examples()
    for ev in ALL_EVENTS:
        name = ev.__name__
        key = ev.routing_key()
        consumers = [n if ev.event_type() in s.consumed_event_types else f"{n} ({s.fallback.__name__})"
                     for n, s in specs.items() if any(topic_matches(k, key) for k in s.routing_keys)]
        messages[name] = event_message(ev, examples[ev])
        channels[key] = {
            "description": f"Published by {ev.producer} through its outbox; "
                           f"consumed by {', '.join(consumers) or 'nobody'}.",
            "bindings": {"amqp": {"is": "routingKey", "exchange": {"name": "{namespace}.events", "type": "topic",
                                                                   "durable": True, "autoDelete": False},
                                  "bindingVersion": "0.2.0"}},
            "subscribe": {"operationId": f"on{name}", "message": {"$ref": f"#/components/messages/{name}"}},
        }
    decision_channels(channels, messages)
    notice_channels(channels, messages)
    return {
        "asyncapi": "2.6.0",
        "info": {
            "title": "seteli domain events",
            "version": CONTRACT_VERSION,
            "description": (
                "What changed in each version, and how long a previous version of a message is still sent and "
                "accepted: docs/CONTRACT-CHANGELOG.md. How an outside system connects, names its broker user, "
                "reads its replies and notices and verifies webhooks: docs/outside-systems.md, docs/webhooks.md "
                "and the sample client in clients/seteli-client. Every message's schema below stands alone (JSON "
                "Schema Draft 2020-12, no references) and has an example.\n\n"
                "Every domain event is a CloudEvents 1.0 JSON document (structured mode) as the body of a "
                "persistent AMQP message on the topic exchange `{namespace}.events` (namespace `seteli` by "
                "default), routing key = the event type without the `fi.seteli.` prefix. The `type` ends in a "
                "version: additive changes keep it, breaking ones add `.v2` and producers emit both for a while. "
                "Consumers must ignore unknown fields. Each consumer has its own durable quorum queue "
                "`{namespace}.<service>` with dead-letter queue `{namespace}.<service>.dlq` (header "
                "`x-seteli-reason` says why). `correlationid` and `causationid` link events to the request "
                "and event that caused them. Money is in integer cents; units are decimal strings. A message "
                "published while the platform records traces carries the W3C trace context of the request or "
                "message that caused it in the AMQP header `traceparent` (the CloudEvents distributed tracing "
                "extension); it is optional: consumers may continue the trace from it and must not require it. A message "
                "that stands for several writes (a `charge.accepted.v2` the relay made of single charges' rows) "
                "carries the first one's in `traceparent` and the others', space-separated (at most 128), in the "
                "optional header `tracelinks`; a consumer may link its span to them.\n\n"
                "Funders' case systems publish service decisions (`fi.seteli.decision.v1`) to the topic exchange "
                "`{namespace}.decisions` with routing key `decision.<funder_id>`, as their own broker user "
                "`funder-<funder_id>` with `user_id` set (the broker validates it), persistent, with publisher "
                "confirms and `mandatory`. The vouchers service answers each on `{namespace}.decision-replies` "
                "with routing key `reply.<funder_id>`; a funder's system reads only its own queue "
                "`{namespace}.decision-replies.<funder_id>`: an accepted grant carries the client's one-time "
                "login code, which no one else may read. Decisions are idempotent by (funder, decision_ref, "
                "decision_version): the same version again changes nothing, a higher one amends or revokes, a "
                "lower one is answered `stale_version`. Unknown fields are refused; a decision carrying a "
                "personal identity code anywhere is answered `personal_identity_code` and kept nowhere. A case "
                "system that sets the decision envelope's extension attribute `replymode` to `batched` gets its "
                "replies listed in `fi.seteli.decision.replies.v1` messages, one per run of decisions taken together "
                "(1.8.0).\n\n"
                "Payments sends each provider a settlement notice (`fi.seteli.notice.settlement.v1`) through its "
                "outbox on `{namespace}.notices` with routing key `notice.<provider_id>.settlement` (and a recovery "
                "claim, `fi.seteli.notice.recovery-claim.v1`, on `notice.<provider_id>.recovery-claim`); a provider's "
                "system reads only its own queue `{namespace}.notices.<provider_id>` (bound to `notice.<provider_id>.#`) "
                "as its broker user `provider-<provider_id>`. Providers without AMQP get the same body POSTed to their "
                "webhook, signed `X-Seteli-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of \"<t>.\" + body>` "
                "(docs/webhooks.md: the headers, retries, giving up, the test vector, rotating the secret)."),
        },
        "defaultContentType": "application/cloudevents+json",
        "servers": {"local": {"url": "amqp://127.0.0.1:5672", "protocol": "amqp", "protocolVersion": "0.9.1"}},
        "channels": channels,
        "components": {"messages": messages},
    }


def decision_channels(channels: dict, messages: dict) -> None:
    """The decisions funders' case systems publish and the replies they read (``seteli_shared.decisions``)."""
    from seteli_shared.decisions import (DECISION_TYPE, EXAMPLE_ACCEPTED, EXAMPLE_DECISION, EXAMPLES_REJECTED,
                                         REPLIES_TYPE, DecisionAccepted, DecisionData, DecisionEnvelope,
                                         DecisionRejected, DecisionReplies)

    funder = {"description": "the funder's id, e.g. the municipality code `091`",
              "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,39}$"}}
    decision = {**EXAMPLE_DECISION, "id": example_id("decision:grant")}
    messages["ServiceDecision"] = message(
        "ServiceDecision", DECISION_TYPE, DecisionData,
        "A funder's service decision: grant (issue or amend a voucher) or revoke. Fields not in the contract are "
        "refused; clients only by pseudonymous reference. The envelope's id must be new for each decision "
        "published (a redelivery keeps it); it must hold no six digits in a row.",
        [{"name": "grant", "summary": "a new home-care voucher, 20 h a month at 25.00 EUR/h", "payload": decision},
         {"name": "amend", "summary": "version 2 of the same decision: 30 h a month",
          "payload": {**decision, "id": example_id("decision:amend"),
                      "data": {**EXAMPLE_DECISION["data"], "decision_version": 2, "units_per_period": "30"}}},
         {"name": "revoke", "summary": "version 3: the voucher ends",
          "payload": {**decision, "id": example_id("decision:revoke"),
                      "data": {"funder_id": "091", "decision_ref": "HKI-2026-000123", "decision_version": 3,
                               "action": "revoke", "client_ref": "asiakas-8f3a21", "effective_from": "2026-06-01"}}},
         {"name": "grant with batched replies", "summary": "a grant whose case system asks for its reply in one "
          "fi.seteli.decision.replies.v1 message with the other decisions taken in the same run (replymode)",
          "payload": {**decision, "id": example_id("decision:batched"), "replymode": "batched",
                      "data": {**EXAMPLE_DECISION["data"], "decision_ref": "HKI-2026-000127"}}}],
        published=False, description=(DecisionData.__doc__ or "").strip(), envelope_model=DecisionEnvelope)
    replies = []
    for cls, examples in ((DecisionAccepted, [EXAMPLE_ACCEPTED]), (DecisionRejected, EXAMPLES_REJECTED)):
        name = cls.__name__
        payloads = [{"name": example.get("reason", example.get("outcome")), "payload": {
            "specversion": "1.0", "id": example_id(f"{name}:{i}"), "source": "/seteli/vouchers",
            "type": cls.reply_type(), "time": example["answered_at"], "subject": example["decision_ref"],
            "datacontenttype": "application/json", "data": example,
            "correlationid": decision["id"], "causationid": decision["id"]}} for i, example in enumerate(examples)]
        messages[name] = message(name, cls.reply_type(), cls, " ".join((cls.__doc__ or "").split()), payloads)
        replies.append({"$ref": f"#/components/messages/{name}"})
    listed = json.loads(json.dumps([messages["DecisionAccepted"]["examples"][0]["payload"],
                                    messages["DecisionRejected"]["examples"][0]["payload"]]))  # copies: no YAML aliases
    batched_id = example_id("decision:batched")
    listed = [{**listed[0], "id": example_id("DecisionReplies:accepted"), "subject": "HKI-2026-000127",
               "data": {**listed[0]["data"], "decision_ref": "HKI-2026-000127"},
               "correlationid": batched_id, "causationid": batched_id}, listed[1]]
    messages["DecisionReplies"] = message(
        "DecisionReplies", REPLIES_TYPE, DecisionReplies, " ".join((DecisionReplies.__doc__ or "").split()),
        [{"name": "two replies", "summary": "a run's replies to two decisions of funder 091 that asked for "
          "batched replies: one accepted, one refused",
          "payload": {"specversion": "1.0", "id": example_id("DecisionReplies:0"), "source": "/seteli/vouchers",
                      "type": REPLIES_TYPE, "time": EXAMPLE_ACCEPTED["answered_at"], "subject": "091",
                      "datacontenttype": "application/json", "data": {"funder_id": "091", "replies": listed},
                      "correlationid": batched_id}}])
    replies.append({"$ref": "#/components/messages/DecisionReplies"})
    channels["decision.{funder_id}"] = {
        "description": "Service decisions from a funder's case system, published as its own broker user "
                       "`funder-<funder_id>` (only this routing key is allowed to it) with `user_id` set, persistent, "
                       "`mandatory`, with publisher confirms; consumed by vouchers from its queue "
                       "`{namespace}.vouchers.decisions` (dead letters: `{namespace}.vouchers.decisions.dlq`).",
        "parameters": {"funder_id": funder},
        "bindings": {"amqp": {"is": "routingKey", "exchange": {"name": "{namespace}.decisions", "type": "topic",
                                                               "durable": True, "autoDelete": False},
                              "bindingVersion": "0.2.0"}},
        "publish": {"operationId": "sendServiceDecision", "message": {"$ref": "#/components/messages/ServiceDecision"}},
    }
    channels["reply.{funder_id}"] = {
        "description": "The answer to each decision, published by vouchers through its outbox; read by the funder's "
                       "case system, and only by it, from its queue `{namespace}.decision-replies.<funder_id>` "
                       "(an accepted grant carries the client's one-time login code). A decision whose envelope "
                       "carries `replymode: batched` is answered inside a `fi.seteli.decision.replies.v1` listing "
                       "the replies to that funder's decisions taken in the same run (at most "
                       "`DECISION_REPLIES_PER_MESSAGE` a message); any other decision, and a message refused before "
                       "it could be read as a decision, gets its own reply.",
        "parameters": {"funder_id": funder},
        "bindings": {"amqp": {"is": "routingKey", "exchange": {"name": "{namespace}.decision-replies", "type": "topic",
                                                               "durable": True, "autoDelete": False},
                              "bindingVersion": "0.2.0"}},
        "subscribe": {"operationId": "onDecisionReply", "message": {"oneOf": replies}},
    }


def notice_channels(channels: dict, messages: dict) -> None:
    """The notices payments sends to providers' systems (``payments.notices.notices``): settlements, recovery
    claims."""
    from payments.notices.notices import (CLAIM_NOTICE_TYPE, EXAMPLE_CLAIM_NOTICE, EXAMPLE_NOTICE, NOTICE_TYPE,
                                          RecoveryClaimNotice, SettlementNotice)

    messages["SettlementNotice"] = message(
        "SettlementNotice", NOTICE_TYPE, SettlementNotice, " ".join((SettlementNotice.__doc__ or "").split()),
        [{"name": "settlement", "payload": {
            "specversion": "1.0", "id": example_id("notice:settlement"), "source": "/seteli/payments",
            "type": NOTICE_TYPE, "time": EXAMPLE_NOTICE["created_at"], "subject": EXAMPLE_NOTICE["settlement_id"],
            "datacontenttype": "application/json", "data": SettlementNotice.model_validate(EXAMPLE_NOTICE).model_dump(
                mode="json"), "correlationid": example_id("notice:settlement:correlation"), "causationid": None}}])
    channels["notice.{provider_id}.settlement"] = {
        "description": "A settlement notice per settlement, published by payments through its outbox; read by the "
                       "provider's system, and only by it, from its queue `{namespace}.notices.<provider_id>` (broker "
                       "user `provider-<provider_id>`; sample client: `clients/seteli-client`, `seteli-consume-notices`). Providers "
                       "without AMQP set a webhook (`PUT /providers/{provider_id}/webhook`, https at a public address): "
                       "the same body is POSTed with `X-Seteli-Signature`, retried with back-off, logged. A notice "
                       "published before the provider's queue is bound is parked by payments and delivered once it "
                       "is (the operator's `POST /notices/parked/retry`, or within the hour): a provider's system "
                       "may see notices of earlier days arrive together.",
        "parameters": {"provider_id": {"description": "the provider's id in the register", "schema": {"type": "string"}}},
        "bindings": {"amqp": {"is": "routingKey", "exchange": {"name": "{namespace}.notices", "type": "topic",
                                                               "durable": True, "autoDelete": False},
                              "bindingVersion": "0.2.0"}},
        "subscribe": {"operationId": "onSettlementNotice", "message": {"$ref": "#/components/messages/SettlementNotice"}},
    }
    messages["RecoveryClaimNotice"] = message(
        "RecoveryClaimNotice", CLAIM_NOTICE_TYPE, RecoveryClaimNotice,
        " ".join((RecoveryClaimNotice.__doc__ or "").split()),
        [{"name": "recovery-claim", "payload": {
            "specversion": "1.0", "id": example_id("notice:recovery-claim"), "source": "/seteli/payments",
            "type": CLAIM_NOTICE_TYPE, "time": EXAMPLE_CLAIM_NOTICE["created_at"],
            "subject": EXAMPLE_CLAIM_NOTICE["claim_id"], "datacontenttype": "application/json",
            "data": RecoveryClaimNotice.model_validate(EXAMPLE_CLAIM_NOTICE).model_dump(mode="json"),
            "correlationid": example_id("notice:recovery-claim:correlation"), "causationid": None}}])
    channels["notice.{provider_id}.recovery-claim"] = {
        **{k: v for k, v in channels["notice.{provider_id}.settlement"].items() if k not in ("description", "subscribe")},
        "description": "A recovery claim: corrections of the provider's settled charges that no payout offset, to "
                       "be paid back with the RF reference; published by payments through its outbox to the same "
                       "queue (and webhook) as the settlement notices.",
        "subscribe": {"operationId": "onRecoveryClaimNotice",
                      "message": {"$ref": "#/components/messages/RecoveryClaimNotice"}},
    }


def openapi(name: str) -> dict:
    import importlib

    app = importlib.import_module(f"{name}.app").create_app()
    return app.openapi()


def init_databases_sql() -> str:
    return "".join([
        "-- Generated by scripts/gen_contracts.py from seteli_shared.manifest: do not edit.\n",
        "-- Run once by the postgres image (/docker-entrypoint-initdb.d) on an empty data directory,\n",
        "-- as POSTGRES_USER (seteli). One database per service (and the portal's, for its sessions);\n",
        "-- each connects only to its own.\n",
        *(f"CREATE DATABASE {name} OWNER seteli;\n" for name in WITH_DATABASE),
    ])


def render() -> dict[Path, str]:
    bus = asyncapi()
    place_bounds(bus)  # the bounds of optional strict numbers, where JSON Schema has them
    out = {DOCS / "asyncapi.yaml": dump_yaml(bus)}
    from seteli_shared.broker import USER_TEMPLATES, definitions

    out[ROOT / "deploy" / "rabbitmq" / "definitions.json"] = json.dumps(definitions(), indent=2) + "\n"
    out[ROOT / "deploy" / "rabbitmq" / "user-templates.json"] = json.dumps(USER_TEMPLATES, indent=2) + "\n"
    out[ROOT / "deploy" / "postgres" / "init-databases.sql"] = init_databases_sql()
    for s in SERVICES:
        out[DOCS / "openapi" / f"{s.name}.json"] = json.dumps(openapi(s.name), indent=2, ensure_ascii=False) + "\n"
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
