"""Broker definitions and the identities of outside systems, applied with RabbitMQ's own tools.

``seteli-broker definitions`` prints the definitions (vhost, exchanges, the services' quorum queues
with their dead-letter queues and delivery limits, policies); ``seteli-broker apply`` imports them;
``seteli-broker add-funder-system`` / ``add-provider-system`` create an outside system's user with
permissions that let it do only its own part:

- a funder's case system may publish only to ``<ns>.decisions`` and only with routing key
  ``decision.<funder_id>`` (topic permissions: the only key the vouchers service's queue binds for it, so
  nothing it may publish comes back unroutable), and read only its own reply queue
  ``<ns>.decision-replies.<funder_id>``, bound to the ``<ns>.decision-replies`` exchange for
  ``reply.<funder_id>`` (the replies carry clients' one-time login codes: no one else may read them);
  it can configure nothing;
- a provider's system may only read its own queue ``<ns>.notices.<provider_id>``, bound to the
  ``<ns>.notices`` exchange for ``notice.<provider_id>.#``; it can configure and write nothing.

The broker validates the ``user_id`` property of every message against the publishing connection's
user, so a consumer can trust ``message.user_id`` (see ``trusted_funder``).

Names come from the environment the services read too (``settings.BrokerNames``: ``BUS_NAMESPACE``,
``BROKER_USER_PREFIX``), so the user ``add-funder-system`` makes is the one the vouchers service recognises.
``add-funder-system`` and ``add-provider-system`` create the exchange their queue is bound to when ``apply``
has not yet, and say "ready" only once the broker lists the binding (else they name what is missing and exit
1); ``apply`` may run before or after them, any number of times. ``remove-funder-system``,
``remove-provider-system`` and ``remove-namespace`` take away what the others made: users, queues (with their
bindings), policies and exchanges, found by listing the broker's own definitions.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys

from .bus import quorum_queue_arguments, replay_key

_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")  # ids and namespaces need no escaping in the patterns below

#: who may do what on the broker; ``{ns}`` is the namespace, ``{id}`` the funder, provider or service
USER_TEMPLATES = {
    "funder_system": {
        "about": "a funder's case system: publishes its own service decisions, reads only the replies to them",
        "user": "funder-{id}",
        "configure": "^$", "write": r"^{ns}\.decisions$", "read": r"^{ns}\.decision-replies\.{id}$",
        "topic": {"exchange": "{ns}.decisions", "write": r"^decision\.{id}$", "read": "^$"},
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
        # a dead letter replayed by the operator comes back this way (seteli_shared.deadletters)
        bindings.append({"source": f"{ns}.dlx", "destination": q, "routing_key": replay_key(q)})
        bindings += [{"source": f"{ns}.events", "destination": q, "routing_key": k} for k in keys]
    for extras in extra_subscriptions.values():
        for queue, exchange, keys in extras:
            q = f"{ns}.{queue}"
            queues.append({"name": q, "arguments": quorum_queue_arguments(f"{ns}.dlx", q, delivery_limit)})
            queues.append({"name": f"{q}.dlq", "arguments": {"x-queue-type": "quorum"}})
            bindings.append({"source": f"{ns}.dlx", "destination": f"{q}.dlq", "routing_key": q})
            bindings.append({"source": f"{ns}.dlx", "destination": q, "routing_key": replay_key(q)})
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


class MissingOnBroker(RuntimeError):
    """What the broker should hold after a command and does not (``str`` names each missing object)."""


def _ctl(*args: str, stdin: str | None = None) -> str:
    r = subprocess.run(["rabbitmqctl", "-q", *args], input=stdin, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {args[0]} failed: {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout


def apply(namespace: str, vhost: str, delivery_limit: int) -> None:
    """Import the definitions (again: importing is idempotent), then check that every binding they name is
    on the broker; ``MissingOnBroker`` names those that are not."""
    defs = definitions(namespace, vhost, delivery_limit)
    _import(defs)
    _check_bindings(vhost, defs["bindings"])


def _import(defs: dict) -> None:
    """Definitions go in on standard input: rabbitmqctl reads files as the broker's own user."""
    _ctl("import_definitions", "--format", "json", stdin=json.dumps(defs))


def _bindings(vhost: str) -> set[tuple[str, str, str]]:
    lines = _ctl("list_bindings", "-p", vhost, "source_name", "destination_name", "routing_key").splitlines()
    return {tuple(line.split("\t")[:3]) for line in lines if line.count("\t") >= 2}


def _check_bindings(vhost: str, wanted: list[dict]) -> None:
    """The broker imports a binding whose exchange does not exist without a word and without the binding:
    ask it what it holds."""
    held = _bindings(vhost)
    missing = [b for b in wanted if (b["source"], b["destination"], b["routing_key"]) not in held]
    if missing:
        raise MissingOnBroker("; ".join(f"binding of queue {b['destination']} to exchange {b['source']} for "
                                        f"{b['routing_key']}" for b in missing))


def _user(name: str, password: str, vhost: str, configure: str, write: str, read: str) -> None:
    try:
        _ctl("add_user", name, password)
    except RuntimeError as exc:
        if "already exists" not in str(exc):
            raise
        _ctl("change_password", name, password)
    _ctl("set_permissions", "-p", vhost, name, configure, write, read)


def names(namespace: str | None = None, user_prefix: str | None = None) -> tuple[str, str]:
    """(namespace, user prefix): as given, else as the services read them (``BUS_NAMESPACE``,
    ``BROKER_USER_PREFIX``)."""
    from .settings import BrokerNames

    if namespace is None or user_prefix is None:
        env = BrokerNames()
        namespace = env.bus_namespace if namespace is None else namespace
        user_prefix = env.broker_user_prefix if user_prefix is None else user_prefix
    return namespace, user_prefix


def add_system_user(kind: str, ident: str, password: str, namespace: str | None = None, vhost: str = "/",
                    user_prefix: str | None = None) -> str:
    """Create (or update) the broker user of an outside system or service from its template, with its queue,
    the queue's binding and, when ``apply`` has not made it yet, the exchange the binding needs (as ``apply``
    defines it); ``MissingOnBroker`` if the broker does not then list the binding."""
    namespace, user_prefix = names(namespace, user_prefix)
    if not _ID.match(ident) or not _ID.match(namespace.replace(".", "-")):
        raise ValueError("ids may hold only letters, digits and '-'")
    t = _fill(USER_TEMPLATES[kind], namespace, ident)
    name = user_prefix + t["user"]
    if "queue" in t:
        q = t["queue"]
        exchange = next(e for e in definitions(namespace, vhost, subscriptions={}, extra_subscriptions={})[
            "exchanges"] if e["name"] == q["exchange"])
        binding = {"source": q["exchange"], "vhost": vhost, "destination": q["name"], "destination_type": "queue",
                   "routing_key": q["routing_key"], "arguments": {}}
        _import({
            "exchanges": [exchange],
            "queues": [{"name": q["name"], "vhost": vhost, "durable": True, "auto_delete": False,
                        "arguments": {"x-queue-type": "quorum"}}],
            "bindings": [binding],
        })
        _check_bindings(vhost, [binding])
    _user(name, password, vhost, t["configure"], t["write"], t["read"])
    if "topic" in t:
        _ctl("set_topic_permissions", "-p", vhost, name, t["topic"]["exchange"], t["topic"]["write"],
             t["topic"]["read"])
    return name


def add_funder_system(funder_id: str, password: str, namespace: str | None = None, vhost: str = "/",
                      user_prefix: str | None = None) -> str:
    return add_system_user("funder_system", funder_id, password, namespace, vhost, user_prefix)


def add_provider_system(provider_id: str, password: str, namespace: str | None = None, vhost: str = "/",
                        user_prefix: str | None = None) -> str:
    return add_system_user("provider_system", provider_id, password, namespace, vhost, user_prefix)


def remove_user(name: str) -> None:
    _ctl("delete_user", name)


# ------------------------------------------------------------------ removal
def exported(vhost: str = "/") -> dict:
    """The broker's own definitions of ``vhost`` (one ``rabbitmqctl export_definitions``): users,
    permissions, policies, queues, exchanges, bindings."""
    defs = json.loads(_ctl("export_definitions", "-", "--format", "json"))
    for key in ("permissions", "topic_permissions", "policies", "queues", "exchanges", "bindings"):
        defs[key] = [d for d in defs.get(key, []) if d.get("vhost") == vhost]
    return defs


def owner(namespace: str, permission: dict) -> tuple[str, str] | None:
    """(template kind, id) when a user's permissions on the vhost are exactly those a template of this
    namespace gives: how a namespace's users are found, whatever prefix they were made with."""
    for kind, template in USER_TEMPLATES.items():
        pattern = re.escape(_fill(template["read"], namespace, "\0")).replace(re.escape("\0"), "([A-Za-z0-9-]{1,64})")
        found = re.fullmatch(pattern, permission.get("read", ""))
        if found is None:
            continue
        t = _fill(template, namespace, found.group(1))
        if [t[k] for k in ("configure", "write", "read")] == [permission[k] for k in ("configure", "write", "read")]:
            return kind, found.group(1)
    return None


def of_namespace(namespace: str, defs: dict) -> dict[str, list[str]]:
    """What of ``defs`` (``exported``) belongs to the namespace: its users (by their permissions), queues and
    exchanges (named ``<ns>.``) and policies (named ``<ns>-`` for queues of ``<ns>.``)."""
    prefix = f"{namespace}."
    return {
        "users": sorted({p["user"] for p in defs["permissions"] if owner(namespace, p)}),
        "policies": sorted(p["name"] for p in defs["policies"] if p["name"].startswith(f"{namespace}-")
                           and p.get("pattern", "").startswith(f"^{re.escape(namespace)}\\.")),
        "queues": sorted(q["name"] for q in defs["queues"] if q["name"].startswith(prefix)),
        "exchanges": sorted(e["name"] for e in defs["exchanges"] if e["name"].startswith(prefix)),
    }


async def _delete_over_amqp(amqp_url: str, queues: list[str], exchanges: list[str]) -> None:
    """Queues (their bindings go with them) and exchanges, over AMQP (rabbitmqctl deletes no exchange)."""
    import aio_pika

    connection = await aio_pika.connect(amqp_url)
    try:
        for name in queues:
            await (await connection.channel()).queue_delete(name)
        for name in exchanges:
            await (await connection.channel()).exchange_delete(name)
    finally:
        await connection.close()


async def remove_namespaces_async(namespaces: list[str], vhost: str, amqp_url: str) -> dict[str, list[str]]:
    """Remove everything of each namespace from the broker: the outside systems' and services' users, every
    queue (with its bindings and messages), exchange and policy, found in one listing of the broker's
    definitions. Returns what it removed, all namespaces together."""
    import asyncio

    defs = await asyncio.to_thread(exported, vhost)
    found: dict[str, list[str]] = {"users": [], "policies": [], "queues": [], "exchanges": []}
    for namespace in namespaces:
        for kind, names_ in of_namespace(namespace, defs).items():
            found[kind] += names_

    def by_rabbitmqctl() -> None:
        for user in found["users"]:
            _ctl("delete_user", user)
        for policy in found["policies"]:
            _ctl("clear_policy", "-p", vhost, policy)

    await asyncio.gather(asyncio.to_thread(by_rabbitmqctl),
                         _delete_over_amqp(amqp_url, found["queues"], found["exchanges"]))
    return found


async def remove_namespace_async(namespace: str, vhost: str, amqp_url: str) -> dict[str, list[str]]:
    return await remove_namespaces_async([namespace], vhost, amqp_url)


def remove_namespace(namespace: str, vhost: str, amqp_url: str) -> dict[str, list[str]]:
    import asyncio

    return asyncio.run(remove_namespace_async(namespace, vhost, amqp_url))


def remove_system(kind: str, ident: str, namespace: str | None = None, vhost: str = "/",
                  user_prefix: str | None = None) -> list[str]:
    """Remove an outside system: its user and its own queue (with its binding and what it had not read yet).
    Returns what was there and is gone."""
    namespace, user_prefix = names(namespace, user_prefix)
    t = _fill(USER_TEMPLATES[kind], namespace, ident)
    user, queue = user_prefix + t["user"], t.get("queue", {}).get("name")
    defs = exported(vhost)
    gone = []
    if user in {u["name"] for u in defs.get("users", [])}:
        _ctl("delete_user", user)
        gone.append(f"user {user}")
    if queue and queue in {q["name"] for q in defs["queues"]}:
        _ctl("delete_queue", "-p", vhost, queue)
        gone.append(f"queue {queue}")
    return gone


def trusted_funder(user_id: str | None, user_prefix: str = "") -> str | None:
    """The funder whose case system published a message, from the broker-validated ``user_id``."""
    prefix = user_prefix + FUNDER_USER.format(id="")
    if user_id and user_id.startswith(prefix) and _ID.match(user_id[len(prefix):]):
        return user_id[len(prefix):]
    return None


def main() -> int:
    parser = argparse.ArgumentParser(prog="seteli-broker", description=__doc__.split("\n\n")[0], epilog=(
        "The namespace and the users' prefix come from BUS_NAMESPACE and BROKER_USER_PREFIX, as the services "
        "read them; AMQP_URL (an administrator) is used to delete queues and exchanges."))
    parser.add_argument("--namespace", default=None, help="default: BUS_NAMESPACE, else seteli")
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
    for kind, help_ in (("funder-system", "a funder's case system: its user and its reply queue"),
                        ("provider-system", "a provider's system: its user and its notices queue")):
        p = sub.add_parser(f"remove-{kind}", help=f"remove {help_}")
        p.add_argument("id")
    sub.add_parser("remove-namespace", help="remove every user, queue, binding, exchange and policy of the namespace")
    args = parser.parse_args()
    namespace, user_prefix = names(args.namespace)
    try:
        return _run(args, namespace, user_prefix)
    except MissingOnBroker as exc:
        print(f"not ready: the broker lacks {exc}", file=sys.stderr)
        return 1
    except (RuntimeError, ValueError) as exc:
        print(str(exc), file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, namespace: str, user_prefix: str) -> int:  # noqa: PLR0911
    if args.command == "definitions":
        print(json.dumps(definitions(namespace, args.vhost, args.delivery_limit), indent=2))
    elif args.command == "apply":
        apply(namespace, args.vhost, args.delivery_limit)
        print(f"definitions for namespace {namespace!r} applied to vhost {args.vhost!r}")
    elif args.command == "templates":
        print(json.dumps(USER_TEMPLATES, indent=2))
    elif args.command == "remove-namespace":
        from .settings import ServiceSettings

        removed = remove_namespace(namespace, args.vhost, ServiceSettings().amqp_url)
        print(json.dumps({"namespace": namespace, "removed": removed}, indent=2))
    elif args.command.startswith("remove-"):
        kind = args.command.removeprefix("remove-").replace("-", "_")
        gone = remove_system(kind, args.id, namespace, args.vhost, user_prefix)
        print(f"removed: {', '.join(gone)}" if gone else f"nothing of {kind} {args.id} was on the broker")
    else:
        kind = {"add-funder-system": "funder_system", "add-provider-system": "provider_system",
                "add-service": "service"}[args.command]
        name = add_system_user(kind, args.id, args.password, namespace, args.vhost, user_prefix)
        print(f"user {name} ready")
        if kind == "provider_system":  # notices sent before its queue was bound are parked in payments
            print(f"notices parked for provider {args.id} go out at payments' next hourly retry, or now: "
                  f"POST /notices/parked/retry?provider_id={args.id} on payments (operator)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
