"""Ids an outside system makes for its messages.

The platform refuses any message in which it finds the shape of a Finnish personal identity code (six digits
of a date, a century sign such as ``-`` or ``A``..``F``, three digits and a check character), and a random
UUID has that shape about once in 27,000. An id with no six digits in a row never has it: ``message_id``
draws UUIDs until it gets one (about two draws in three pass).
"""
from __future__ import annotations

import re
import uuid

_SIX_DIGITS = re.compile(r"[0-9]{6}")


def message_id() -> str:
    """A random version 4 UUID with no six digits in a row."""
    while True:
        value = str(uuid.uuid4())
        if not _SIX_DIGITS.search(value):
            return value


def reference(prefix: str = "DEC") -> str:
    """A new reference (``DEC-`` and 12 hex characters, no six digits in a row), e.g. for a test decision."""
    return f"{prefix}-{message_id().replace('-', '')[:12]}"
