"""A client for outside systems of seteli, written from the published contract alone (docs/asyncapi.yaml,
docs/outside-systems.md, docs/webhooks.md): no part of the platform's own code is needed or imported.

- ``CaseSystem``: a funder's case system publishes service decisions (confirms, ``mandatory``, ``user_id``)
  and reads the replies to them from its own reply queue;
- ``ProviderSystem``: a provider's system reads its settlement notices and recovery claims from its own queue;
- ``webhooks.verify``: checks the ``X-Seteli-Signature`` of a notice POSTed to a provider's webhook;
- ``contract.Contract`` (extra ``validate``): validates a message against its published schema.
"""
from .decisions import CaseSystem, DecisionReply, NotPublished, Refused, Unroutable, decision_envelope
from .ids import message_id
from .notices import ProviderSystem

__all__ = ["CaseSystem", "DecisionReply", "NotPublished", "ProviderSystem", "Refused", "Unroutable",
           "decision_envelope", "message_id"]
