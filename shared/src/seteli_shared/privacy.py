"""Guards that keep personal data out: the operator knows clients only by pseudonymous references."""
from __future__ import annotations

import re

from stdnum.fi import hetu

# a Finnish personal identity code: DDMMYY, century sign, individual number, check character
_HETU_LIKE = re.compile(r"\d{6}[-+A-FU-Y]\d{3}[0-9A-Y]", re.IGNORECASE)


def contains_personal_identity_code(text: str) -> bool:
    return any(hetu.is_valid(m.group(0).upper()) for m in _HETU_LIKE.finditer(text or ""))
