"""The four services, called over their public HTTP APIs with the signed-in user's own token.

The portal never reads a service's database: everything it shows comes from these calls, and every
decision about who may see what is the service's (the portal only hides pages a role has no use for)."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import httpx

from seteli_shared.ids import new_id

from .settings import PortalSettings


@dataclass
class BackendError(Exception):
    """A service refused or failed: its status and the common error body's reason and message."""

    status: int
    reason: str
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.status} {self.reason}"


class Unavailable(BackendError):
    """The service did not answer at all."""


class Backend:
    def __init__(self, settings: PortalSettings, transport: httpx.AsyncBaseTransport | None = None):
        self.settings = settings
        self.http = httpx.AsyncClient(timeout=settings.request_timeout_seconds, transport=transport)

    async def close(self) -> None:
        await self.http.aclose()

    async def request(self, service: str, method: str, path: str, *, token: str | None = None,
                      correlation_id: str | None = None, **kw: Any) -> httpx.Response:
        headers = dict(kw.pop("headers", None) or {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        headers["X-Correlation-ID"] = correlation_id or new_id()
        url = self.settings.service_url(service) + path
        try:
            return await self.http.request(method, url, headers=headers, **kw)
        except httpx.HTTPError:
            raise Unavailable(503, "service_unavailable", f"{service} did not answer") from None

    async def json(self, service: str, method: str, path: str, **kw: Any) -> Any:
        """The answer's JSON body, or ``BackendError`` for any status of 400 and over."""
        r = await self.request(service, method, path, **kw)
        return self.body(r)

    @staticmethod
    def body(r: httpx.Response) -> Any:
        if r.status_code >= 400:
            raise error_of(r)
        return r.json() if r.content else None

    async def all_pages(self, service: str, path: str, *, limit: int = 500, most: int = 2000, **kw: Any) -> list:
        """Every item of a paged list (``{"items", "next_cursor"}``), at most ``most``."""
        params = dict(kw.pop("params", None) or {})
        items: list = []
        cursor = None
        while True:
            page = await self.json(service, "GET", path, params={**params, "limit": limit,
                                                                 **({"cursor": cursor} if cursor else {})}, **kw)
            items.extend(page["items"])
            cursor = page.get("next_cursor")
            if not cursor or len(items) >= most:
                return items[:most]


def error_of(r: httpx.Response) -> BackendError:
    reason, message, details = "error", "", {}
    try:
        err = r.json().get("error") or {}
        reason, message, details = err.get("reason", reason), err.get("message", ""), err.get("details") or {}
    except (ValueError, AttributeError):
        pass
    return BackendError(r.status_code, str(reason), str(message), details if isinstance(details, dict) else {})


#: how long the operator's page waits for the broker's answers (a broker that stalls must not hang the page)
BROKER_TIMEOUT_SECONDS = 5.0


async def dead_letter_counts(settings: PortalSettings) -> list[tuple[str, int]] | None:
    """Messages waiting in each dead-letter queue (a passive declare: nothing is consumed or changed);
    None when the portal has no broker configured. A queue that does not exist is left out. Every step waits
    at most ``BROKER_TIMEOUT_SECONDS``: a broker that is down or stalled raises (the page says so)."""
    if not settings.amqp_url:
        return None
    out: list[tuple[str, int]] = []
    connection = await _connect_first(settings.amqp_url)
    try:
        for name in (q.strip() for q in settings.dead_letter_queues.split(",") if q.strip()):
            channel = await asyncio.wait_for(connection.channel(), BROKER_TIMEOUT_SECONDS)
            try:
                queue = await channel.declare_queue(f"{settings.bus_namespace}.{name}", passive=True,
                                                    timeout=BROKER_TIMEOUT_SECONDS)
                out.append((queue.name, int(queue.declaration_result.message_count or 0)))
            except Exception:  # noqa: BLE001  (no such queue here)
                pass
            finally:
                if not channel.is_closed:
                    await asyncio.wait_for(channel.close(), BROKER_TIMEOUT_SECONDS)
    finally:
        await _close_within(connection, BROKER_TIMEOUT_SECONDS)
    return out


async def _connect_first(amqp_url: str):  # noqa: ANN202
    """The first of ``AMQP_URL``'s addresses (a cluster's nodes) that answers, each given the broker timeout."""
    import aio_pika

    from seteli_shared.bus import broker_urls

    urls = broker_urls(amqp_url)
    for url in urls[:-1]:
        try:
            return await aio_pika.connect(url, timeout=BROKER_TIMEOUT_SECONDS)
        except Exception:  # noqa: BLE001  (that node is away: the next)
            continue
    return await aio_pika.connect(urls[-1], timeout=BROKER_TIMEOUT_SECONDS)


async def _close_within(connection, timeout: float) -> None:  # noqa: ANN001
    try:
        await asyncio.wait_for(connection.close(), timeout)
    except (asyncio.TimeoutError, TimeoutError):  # a stalled broker never answers the close: leave it
        pass
