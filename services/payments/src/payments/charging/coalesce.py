"""The relay's hook (``outbox.OutboxRelay.coalesce``, ``RELAY_COALESCE``): the ``charge.accepted.v1`` rows of single
charges (``POST /charges``) that one relay batch reads are published as ``charge.accepted.v2`` messages, one per
funder and provider of each run of such rows, at most ``ACCEPTED_EVENT_CHARGES`` charges each, the charges in the
order their rows were written. Vouchers and reporting then take one message where they took tens (their cost is per
message), and fold each charge listed as the v1 event it stands for (``ChargesAccepted.each()``), idempotently per
charge.

- Only with ``ACCEPTED_EVENTS=v2``: ``v1`` keeps one message a row, and so does ``both`` (the rollout, while a
  consumer may read only version 1, which it would no longer get for single charges).
- A row of any other type (a cancellation, a correction, a settlement's event) ends a run: nothing is moved across
  it, so a charge's later events still follow its acceptance on the bus. The messages of one run keep the order of
  their first rows; they only reorder acceptances of different vouchers among themselves: a voucher's charge for
  another funder or provider than its earlier charges in the run (its client changed provider) ends the run too,
  so each voucher's charges keep their order (vouchers' usage says which charge used a voucher up, in order).
- A group of one row is published as that row (v1). A row that cannot be read is left to the relay as it is.
- The v2 message's id is derived from its rows (uuid5 over its first row's id and its number of charges): a relay
  that dies after the publish and before marking the rows sent publishes the same message again, and the
  consumers' inbox drops it (a differently grouped repeat is dropped per charge by their folds).
- Traces: the v2 message's ``traceparent`` is its first row's, and its ``tracelinks`` header lists the other rows'
  (each once, at most ``tracing.MAX_LINKS``): the consumers' span is the first charge's child and links to the
  others, so each single charge's trace still reaches vouchers and reporting.
- The first message the process makes is checked against the models (``ChargesAccepted`` valid, ``each()`` equal
  to the rows' ``ChargeAccepted`` field for field); if that ever fails, coalescing stops with a warning.
"""
from __future__ import annotations

import json
import uuid
from typing import Any, Iterable, Sequence

from seteli_shared.events import TYPE_PREFIX, ChargeAccepted, ChargesAccepted
from seteli_shared.ids import clean
from seteli_shared.logging import get_logger
from seteli_shared.outbox import Coalesced, Coalescer
from seteli_shared.tracing import MAX_LINKS

log = get_logger(__name__)
V1_KEY = ChargeAccepted.routing_key()
V2_KEY = ChargesAccepted.routing_key()
V2_TYPE = TYPE_PREFIX + V2_KEY
#: the namespace of the v2 messages' derived ids
NAMESPACE = uuid.UUID("6f0c5a3e-2b0b-5d7e-9a53-1c1d0c0a7e52")
_OWN = ("funder_id", "provider_id")


def accepted_coalescer(events: str = "v2", per_event: int = 1000, **_other: Any) -> Coalescer | None:
    """Payments' hook for its relay, or None when its ``ACCEPTED_EVENTS`` is not ``v2``."""
    if events != "v2":
        return None
    return AcceptedCoalescer(per_event)


def trace_links(first: str | None, others: Iterable[str | None]) -> str | None:
    """The traces of a v2 message's other rows, each once and not the first's, for its ``tracelinks`` header (at most
    ``tracing.MAX_LINKS``): the message's consumer span is the child of the first row's trace and links to these,
    so that every single charge's trace still reaches vouchers and reporting."""
    seen = {first}
    out = []
    for value in others:
        if value and value not in seen and len(out) < MAX_LINKS:
            seen.add(value)
            out.append(value)
    return " ".join(out) or None


def message_id(first_row_id: str, count: int) -> str:
    """The v2 message's id: the same rows give the same id (one the privacy guard passes)."""
    draws = iter(range(1000))

    def draw() -> str:
        n = next(draws)
        return str(uuid.uuid5(NAMESPACE, f"{first_row_id}:{count}" + (f":{n}" if n else "")))

    return clean(draw)


class AcceptedCoalescer:
    def __init__(self, per_event: int = 1000):
        if not 1 <= per_event <= 5000:
            raise ValueError(f"charges per accepted event {per_event}: 1 to 5,000")
        self.per_event = per_event
        self.checked: bool | None = None  # None: the first message not made yet; False: off

    def __call__(self, rows: Sequence[Any]) -> list:
        if self.checked is False:
            return list(rows)
        out: list = []
        run: list[tuple[Any, dict]] = []
        groups: dict[str, tuple[str, str]] = {}  # voucher -> its (funder, provider) in this run
        for row in rows:
            env = _read(row) if row.routing_key == V1_KEY else None
            if env is None:
                out += self._run(run)
                run, groups = [], {}
                out.append(row)
                continue
            data = env["data"]
            group = (data["funder_id"], data["provider_id"])
            if groups.setdefault(data["voucher_id"], group) != group:  # the voucher's charges stay in order
                out += self._run(run)
                run, groups = [], {data["voucher_id"]: group}
            run.append((row, env))
        out += self._run(run)
        return out

    def _run(self, run: list[tuple[Any, dict]]) -> list:
        """A run of v1 rows: one unit per (funder, provider) chunk, in the order of their first rows."""
        if len(run) < 2:
            return [row for row, _env in run]
        groups: dict[tuple[str, str], list[tuple[Any, dict]]] = {}
        for row, env in run:
            data = env["data"]
            groups.setdefault((data["funder_id"], data["provider_id"]), []).append((row, env))
        units: list[tuple[int, Any]] = []
        for part in groups.values():
            for i in range(0, len(part), self.per_event):
                chunk = part[i:i + self.per_event]
                units.append((chunk[0][0].seq, chunk[0][0] if len(chunk) == 1 else self._message(chunk)))
        units.sort(key=lambda u: u[0])
        return [unit for _seq, unit in units]

    def _message(self, chunk: list[tuple[Any, dict]]) -> Coalesced | Any:
        first_row, first = chunk[0]
        mid = message_id(first_row.message_id, len(chunk))
        data = first["data"]
        body = json.dumps({
            "specversion": "1.0", "id": mid, "source": first["source"], "type": V2_TYPE, "time": first["time"],
            "subject": None, "datacontenttype": "application/json",
            "data": {"funder_id": data["funder_id"], "provider_id": data["provider_id"],
                     "charges": [{k: v for k, v in env["data"].items() if k not in _OWN} for _row, env in chunk]},
            "correlationid": mid, "causationid": None}, separators=(",", ":"), ensure_ascii=False)
        message = Coalesced(tuple(row for row, _env in chunk), mid, V2_KEY, body, first_row.traceparent,
                            trace_links(first_row.traceparent, (row.traceparent for row, _env in chunk[1:])))
        if self.checked is None:
            self.checked = _same_charges(message, chunk)
            if not self.checked:
                log.warning("outbox.coalesce_differs", event_type=V2_TYPE)
                raise ValueError("a coalesced charge.accepted.v2 differs from its rows")  # the relay sends the rows
        return message


def _read(row: Any) -> dict | None:
    try:
        env = json.loads(row.body)
        data = env["data"]
        if all(isinstance(data.get(k), str) for k in ("funder_id", "provider_id", "voucher_id")):
            return env
    except (ValueError, TypeError, KeyError, AttributeError):
        pass
    return None


def _same_charges(message: Coalesced, chunk: list[tuple[Any, dict]]) -> bool:
    """Whether the message is a valid ``ChargesAccepted`` whose ``each()`` is the rows' ``ChargeAccepted``s."""
    try:
        event = ChargesAccepted.model_validate(json.loads(message.body)["data"])
        v1 = [ChargeAccepted.model_validate(env["data"]).model_dump() for _row, env in chunk]
        return [e.model_dump() for e in event.each()] == v1
    except Exception:  # noqa: BLE001
        return False
