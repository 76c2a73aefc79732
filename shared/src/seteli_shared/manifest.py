"""The one list of the platform's services. Everything else that names them (the launcher, the
contract generator, the broker definitions, the compose file's test, the test fixtures) reads it here."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .service import ServiceSpec


@dataclass(frozen=True)
class ServiceInfo:
    name: str  # also the Python package, the ``seteli-<name>`` command and the database name
    port: int  # the port ``make run`` and the compose file serve it on
    summary: str
    #: "service": its own database, migrations, events (a ``ServiceSpec``); "frontend": no events and no
    #: ``ServiceSpec``, it calls the services' public HTTP APIs (the web portal)
    kind: str = "service"
    #: it keeps a database of its own, named after it, with its own migrations (every service; the portal
    #: for its sign-in sessions)
    database: bool = True

    @property
    def command(self) -> str:
        return f"seteli-{self.name}"

    def spec(self) -> "ServiceSpec":
        """The service's ``ServiceSpec`` (imports the service package)."""
        return importlib.import_module(f"{self.name}.app").SPEC


SERVICES: tuple[ServiceInfo, ...] = (
    ServiceInfo("registry", 8001, "funders, providers, approvals per funder and service category"),
    ServiceInfo("vouchers", 8002, "service decisions, vouchers, the client's choice of provider"),
    ServiceInfo("payments", 8003, "charges, the ledger, settlements"),
    ServiceInfo("reporting", 8004, "monitoring and statistics built only from events"),
)
#: front ends: started and deployed beside the services, no events, no ``ServiceSpec``
FRONTENDS: tuple[ServiceInfo, ...] = (
    ServiceInfo("portal", 8005, "the web portal: public comparison, clients, providers, funders, the operator",
                kind="frontend"),
)
#: everything ``make run`` and the compose file start, services first
EVERYTHING: tuple[ServiceInfo, ...] = SERVICES + FRONTENDS
NAMES: tuple[str, ...] = tuple(s.name for s in SERVICES)
BY_NAME: dict[str, ServiceInfo] = {s.name: s for s in EVERYTHING}
#: everything with a database of its own (one PostgreSQL database each in the compose file)
WITH_DATABASE: tuple[str, ...] = tuple(s.name for s in EVERYTHING if s.database)


def subscriptions() -> dict[str, list[str]]:
    """Each consuming service's queue bindings on the events exchange, from its ``ServiceSpec``
    (handlers, batch handlers, ``bind_keys``): the one place subscriptions are written down.
    Imports the service packages, so call it only where they are installed (definitions, contracts)."""
    return {s.name: spec.routing_keys for s in SERVICES if (spec := s.spec()).consumes_events}


def extra_subscriptions() -> dict[str, list[tuple[str, str, list[str]]]]:
    """Each service's further consumers (``ServiceSpec.extra_consumers``) as (queue name after the
    namespace, exchange after the namespace, routing keys): e.g. ``("vouchers.decisions", "decisions",
    ["decision.*"])``. Imports the service packages, like ``subscriptions()``."""
    out: dict[str, list[tuple[str, str, list[str]]]] = {}
    for s in SERVICES:
        extras = s.spec().extra_consumers
        if extras:
            out[s.name] = [(f"{s.name}.{c.name}", c.exchange, list(c.bind_keys)) for c in extras]
    return out


def producers() -> dict[str, str]:
    """Event type -> the service that publishes it (``Event.producer``)."""
    from .events import ALL_EVENTS

    return {ev.event_type(): ev.producer for ev in ALL_EVENTS}
