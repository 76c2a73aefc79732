"""Broker definitions and the identities of outside systems, applied with RabbitMQ's own tools.

``seteli-broker definitions`` prints the definitions (vhost, exchanges, the services' quorum queues
with their dead-letter queues and delivery limits, policies); ``seteli-broker apply`` imports them;
``seteli-broker add-funder-system`` / ``add-provider-system`` create an outside system's user with
permissions that let it do only its own part:

- a funder's case system may publish only to ``<ns>.decisions`` and only with routing keys
  ``decision.<funder_id>[.*]`` (topic permissions), and read only its own reply queue
  ``<ns>.decision-replies.<funder_id>``, bound to the ``<ns>.decision-replies`` exchange for
  ``reply.<funder_id>`` (the replies carry clients' one-time login codes: no one else may read them);
  it can configure nothing;
- a provider's system may only read its own queue ``<ns>.notices.<provider_id>``, bound to the
  ``<ns>.notices`` exchange for ``notice.<provider_id>.#``; it can configure and write nothing.

The broker validates the ``user_id`` property of every message against the publishing connection's
user, so a consumer can trust ``message.user_id`` (see ``trusted_funder``).
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys

from .bus import quorum_queue_arguments

_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")  # ids and namespaces need no escaping in the patterns below

#: who may do what on the broker; ``{ns}`` is the namespace, ``{id}`` the funder, provider or service
USER_TEMPLATES = {
    "funder_system": {
        "about": "a funder's case system: publishes its own service decisions, reads only the replies to them",
        "user": "funder-{id}",
        "configure": "^$", "write": r"^{ns}\.decisions$", "read": r"^{ns}\.decision-replies\.{id}$",
        "topic": {"exchange": "{ns}.decisions", "write": r"^decision\.{id}(\..*)?$", "read": "^$"},
        "queue": {"name": "{ns}.decision-replies.{id}", "exchange": "{ns}.decision-replies",
                  "routing_key": "reply.{id}"},
    },
    "provider_system": {
        "about": "a provider's system: reads its own settlement notices, nothing else",
        "user": "provider-{id}",
        "configure": "^$", "write": "^$", "read": r"^{ns}\.notices\.{id}$",
        "queue": {"name": "{ns}.notices.{id}", "exchange": "{ns}.notices", "routing_key": "notice.{id}.#"},
    },
    "service": {
        "about": "one of the platform's services: its own queues, publishing domain events and dead letters; "
                 "the vouchers service also consumes decisions and publishes the replies to them",
        "user": "svc-{id}",
        "configure": r"^{ns}\.({id}|{id}\.dlq|{id}\.[a-z-]+|{id}\.[a-z-]+\.dlq|events|dlx|decisions|decision-replies)$",
        "write": r"^{ns}\.({id}|{id}\.dlq|{id}\.[a-z-]+|{id}\.[a-z-]+\.dlq|events|dlx|decision-replies)$",
        "read": r"^{ns}\.({id}|{id}\.dlq|{id}\.[a-z-]+|{id}\.[a-z-]+\.dlq|events|dlx|decisions)$",
    },
}
FUNDER_USER = USER_TEMPLATES["funder_system"]["user"]


def _fill(value, ns: str, ident: str):  # noqa: ANN001, ANN202
    if isinstance(value, dict):
        return {k: _fill(v, ns, ident) for k, v in value.items()}
    return value.replace("{ns}", ns).replace("{id}", ident)


def definitions(namespace: str = "seteli", vhost: str = "/", delivery_limit: int = 5,
                subscriptions: dict[str, list[str]] | None = None,
                extra_subscriptions: dict[str, list[tuple[str, str, list[str]]]] | None = None) -> dict:
    """The broker's definitions; each consuming service's queue is bound to the routing keys its
    ``ServiceSpec`` subscribes to (``manifest.subscriptions()``, which imports the services), and each of
    its further consumers' queues to theirs on their own exchange (``manifest.extra_subscriptions()``)."""
    if subscriptions is None:
        from .manifest import subscriptions as from_the_specs

        subscriptions = from_the_specs()
    if extra_subscriptions is None:
        from .manifest import extra_subscriptions as extras_from_the_specs

        extra_subscriptions = extras_from_the_specs()
    ns = namespace
    exchanges = [
        {"name": f"{ns}.events", "type": "topic"},  # domain events between the services
        {"name": f"{ns}.dlx", "type": "direct"},  # dead letters, routed by queue name
        {"name": f"{ns}.decisions", "type": "topic"},  # service decisions from funders' case systems
        {"name": f"{ns}.decision-replies", "type": "topic"},  # the answers to them, reply.<funder_id>
        {"name": f"{ns}.notices", "type": "topic"},  # settlement notices to providers' systems
    ]
    queues, bindings = [], []
    for service, keys in subscriptions.items():
        q = f"{ns}.{service}"
        queues.append({"name": q, "arguments": quorum_queue_arguments(f"{ns}.dlx", q, delivery_limit)})
        queues.append({"name": f"{q}.dlq", "arguments": {"x-queue-type": "quorum"}})
        bindings.append({"source": f"{ns}.dlx", "destination": f"{q}.dlq", "routing_key": q})
        bindings += [{"source": f"{ns}.events", "destination": q, "routing_key": k} for k in keys]
    for extras in extra_subscriptions.values():
        for queue, exchange, keys in extras:
            q = f"{ns}.{queue}"
            queues.append({"name": q, "arguments": quorum_queue_arguments(f"{ns}.dlx", q, delivery_limit)})
            queues.append({"name": f"{q}.dlq", "arguments": {"x-queue-type": "quorum"}})
            bindings.append({"source": f"{ns}.dlx", "destination": f"{q}.dlq", "routing_key": q})
            bindings += [{"source": f"{ns}.{exchange}", "destination": q, "routing_key": k} for k in keys]
    return {
        "vhosts": [{"name": vhost}],
        "exchanges": [{**e, "vhost": vhost, "durable": True, "auto_delete": False, "internal": False,
                       "arguments": {}} for e in exchanges],
        "queues": [{**q, "vhost": vhost, "durable": True, "auto_delete": False} for q in queues],
        "bindings": [{**b, "vhost": vhost, "destination_type": "queue", "arguments": {}} for b in bindings],
        "policies": [{
            "vhost": vhost, "name": f"{ns}-notices", "pattern": rf"^{re.escape(ns)}\.notices\.",
            "apply-to": "queues", "priority": 0,
            "definition": {"dead-letter-exchange": f"{ns}.dlx", "delivery-limit": 20},
        }, {
            "vhost": vhost, "name": f"{ns}-decision-replies", "pattern": rf"^{re.escape(ns)}\.decision-replies\.",
            "apply-to": "queues", "priority": 0,
            "definition": {"dead-letter-exchange": f"{ns}.dlx", "delivery-limit": 20},
        }],
    }


def _ctl(*args: str, stdin: str | None = None) -> None:
    r = subprocess.run(["rabbitmqctl", "-q", *args], input=stdin, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {args[0]} failed: {r.stderr.strip() or r.stdout.strip()}")


def apply(namespace: str, vhost: str, delivery_limit: int) -> None:
    _import(definitions(namespace, vhost, delivery_limit))


def _import(defs: dict) -> None:
    """Definitions go in on standard input: rabbitmqctl reads files as the broker's own user."""
    _ctl("import_definitions", "--format", "json", stdin=json.dumps(defs))


def _user(name: str, password: str, vhost: str, configure: str, write: str, read: str) -> None:
    try:
        _ctl("add_user", name, password)
    except RuntimeError as exc:
        if "already exists" not in str(exc):
            raise
        _ctl("change_password", name, password)
    _ctl("set_permissions", "-p", vhost, name, configure, write, read)


def add_system_user(kind: str, ident: str, password: str, namespace: str = "seteli", vhost: str = "/",
                    user_prefix: str = "") -> str:
    """Create (or update) the broker user of an outside system or service from its template."""
    if not _ID.match(ident) or not _ID.match(namespace.replace(".", "-")):
        raise ValueError("ids may hold only letters, digits and '-'")
    t = _fill(USER_TEMPLATES[kind], namespace, ident)
    name = user_prefix + t["user"]
    if "queue" in t:
        q = t["queue"]
        _import({
            "queues": [{"name": q["name"], "vhost": vhost, "durable": True, "auto_delete": False,
                        "arguments": {"x-queue-type": "quorum"}}],
            "bindings": [{"source": q["exchange"], "vhost": vhost, "destination": q["name"],
                          "destination_type": "queue", "routing_key": q["routing_key"], "arguments": {}}],
        })
    _user(name, password, vhost, t["configure"], t["write"], t["read"])
    if "topic" in t:
        _ctl("set_topic_permissions", "-p", vhost, name, t["topic"]["exchange"], t["topic"]["write"],
             t["topic"]["read"])
    return name


def add_funder_system(funder_id: str, password: str, namespace: str = "seteli", vhost: str = "/",
                      user_prefix: str = "") -> str:
    return add_system_user("funder_system", funder_id, password, namespace, vhost, user_prefix)


def add_provider_system(provider_id: str, password: str, namespace: str = "seteli", vhost: str = "/",
                        user_prefix: str = "") -> str:
    return add_system_user("provider_system", provider_id, password, namespace, vhost, user_prefix)


def remove_user(name: str) -> None:
    _ctl("delete_user", name)


def trusted_funder(user_id: str | None, user_prefix: str = "") -> str | None:
    """The funder whose case system published a message, from the broker-validated ``user_id``."""
    prefix = user_prefix + FUNDER_USER.format(id="")
    if user_id and user_id.startswith(prefix) and _ID.match(user_id[len(prefix):]):
        return user_id[len(prefix):]
    return None


def main() -> None:
    parser = argparse.ArgumentParser(prog="seteli-broker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--namespace", default="seteli")
    parser.add_argument("--vhost", default="/")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("definitions", help="print the broker definitions (JSON)")
    d.add_argument("--delivery-limit", type=int, default=5)
    a = sub.add_parser("apply", help="import the definitions into the local broker (rabbitmqctl)")
    a.add_argument("--delivery-limit", type=int, default=5)
    sub.add_parser("templates", help="print the users' templates (JSON)")
    for kind, help_ in (("funder-system", "a funder's case system"), ("provider-system", "a provider's system"),
                        ("service", "one of the platform's services (registry, vouchers, payments, reporting)")):
        p = sub.add_parser(f"add-{kind}", help=f"create the broker user of {help_} from its template")
        p.add_argument("id")
        p.add_argument("--password", required=True)
        p.add_argument("--user-prefix", default="")
    args = parser.parse_args()
    if args.command == "definitions":
        print(json.dumps(definitions(args.namespace, args.vhost, args.delivery_limit), indent=2))
    elif args.command == "apply":
        apply(args.namespace, args.vhost, args.delivery_limit)
        print(f"definitions for namespace {args.namespace!r} applied to vhost {args.vhost!r}")
    elif args.command == "templates":
        print(json.dumps(USER_TEMPLATES, indent=2))
    else:
        kind = {"add-funder-system": "funder_system", "add-provider-system": "provider_system",
                "add-service": "service"}[args.command]
        name = add_system_user(kind, args.id, args.password, args.namespace, args.vhost, args.user_prefix)
        print(f"user {name} ready")
        if kind == "provider_system":  # notices sent before its queue was bound are parked in payments
            print(f"notices parked for provider {args.id} go out at payments' next hourly retry, or now: "
                  f"POST /notices/parked/retry?provider_id={args.id} on payments (operator)")


if __name__ == "__main__":
    sys.exit(main())
