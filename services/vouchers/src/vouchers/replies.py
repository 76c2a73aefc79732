"""Batched decision replies (contract 1.8.0): a case system that sets its decision envelope's extension attribute
``replymode`` to ``batched`` (``seteli_shared.decisions.DecisionEnvelope``) gets the replies to its decisions that
one run of the decisions consumer takes (``decisions.on_decisions``) in one ``fi.seteli.decision.replies.v1``
message per funder (``DecisionReplies``), at most ``DECISION_REPLIES_PER_MESSAGE`` replies a message, instead of a
message each: one outbox row, one publish and one delivery for the run instead of one per decision (aio-pika's
per-message cost was about a third of a decision's CPU, in the service's relay and in the case system).

Each listed reply is the very envelope JSON the decision's single reply would have had as its message's body
(``send_reply``'s, or the direct accepted rows'), its ``causationid`` the decision's id. The message is written in
the run's transaction, after the run's other rows (so after the ``voucher.issued`` events announcing its vouchers),
and with the run's inbox claim: a redelivered run changes nothing and answers nothing again.
"""
from __future__ import annotations

import json
from contextvars import ContextVar
from typing import Any

from pydantic_core import to_json

from seteli_shared.decisions import REPLIES_EXCHANGE, REPLIES_TYPE, reply_routing_key
from seteli_shared.events import utcnow
from seteli_shared.ids import new_id
from seteli_shared.logging import correlation_id_var
from seteli_shared.outbox import EXCHANGE_SEPARATOR
from seteli_shared.tracing import current_traceparent


class RunReplies:
    """The replies a run of decisions owes to the decisions that asked for batched replies, per funder (the reply's
    ``funder_id``: the queue it goes to), in the order the decisions were taken."""

    def __init__(self, source: str, per_message: int = 1000) -> None:
        if per_message < 1:
            raise ValueError("per_message must be at least 1")
        self.where, self.per_message = f"/seteli/{source}", per_message
        #: funder -> (each reply's envelope as JSON, the correlation id bound when it was made)
        self.listed: dict[str, list[tuple[str, str | None]]] = {}

    def add(self, funder_id: str, body: str) -> None:
        """A decision's reply envelope (the JSON its own message would have carried), made under its correlation."""
        self.listed.setdefault(funder_id, []).append((body, correlation_id_var.get()))

    def rows(self) -> list[dict[str, Any]]:
        """The outbox rows of the replies gathered (and forgets them): one ``DecisionReplies`` per funder and
        ``per_message`` replies."""
        out = []
        for funder_id, listed in self.listed.items():
            for i in range(0, len(listed), self.per_message):
                out.append(self._row(funder_id, listed[i:i + self.per_message]))
        self.listed = {}
        return out

    def _row(self, funder_id: str, part: list[tuple[str, str | None]]) -> dict[str, Any]:
        """The row of one message; its body written around the listed envelopes' JSON (never parsed again), in the
        order ``Envelope.model_dump_json`` writes an envelope's attributes. Its correlation is its first reply's."""
        eid, now = new_id(), utcnow()
        head = to_json({"specversion": "1.0", "id": eid, "source": self.where, "type": REPLIES_TYPE, "time": now,
                        "subject": funder_id, "datacontenttype": "application/json"}).decode()
        body = (f'{head[:-1]},"data":{{"funder_id":{json.dumps(funder_id)},"replies":[{",".join(b for b, _c in part)}]}},'
                f'"correlationid":{json.dumps(part[0][1] or eid)},"causationid":null}}')
        return {"message_id": eid, "routing_key": f"{REPLIES_EXCHANGE}{EXCHANGE_SEPARATOR}{reply_routing_key(funder_id)}",
                "body": body, "created_at": now, "attempts": 0, "traceparent": current_traceparent()}


#: while ``decisions.on_decisions`` takes a decision whose case system asked for batched replies: the run's
#: ``RunReplies`` (``decisions.send_reply`` and the direct rows add its reply there); None otherwise
current_batch: ContextVar[RunReplies | None] = ContextVar("decision_replies_batch", default=None)
