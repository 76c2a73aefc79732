"""structlog configured for JSON lines, with the correlation id bound per request or message."""
from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from typing import Any

import structlog

from .ids import new_id
from .privacy import contains_personal_identity_code

__all__ = ["bind_correlation", "configure_logging", "get_logger", "new_id"]  # new_id: see ids

correlation_id_var: ContextVar[str | None] = ContextVar("correlation_id", default=None)
causation_id_var: ContextVar[str | None] = ContextVar("causation_id", default=None)


REMOVED = "[removed: personal identity code]"


#: texts of log lines found clean (never one found holding a code), so that the keys and the values a service
#: logs again and again (its name, levels, event names, routes, the ids of a request's lines) are checked once;
#: forgotten all at once when it is full
_CLEAN: dict[str, None] = {}
_CLEAN_MAX = 4096


def _flagged(text: str) -> bool:
    """``contains_personal_identity_code(text)``, remembering the texts found clean."""
    if text in _CLEAN:
        return False
    if contains_personal_identity_code(text):
        return True
    if len(_CLEAN) >= _CLEAN_MAX:
        _CLEAN.clear()
    _CLEAN[text] = None
    return False


def _scrubbed(value: Any) -> Any:
    """``value`` with every text (at any depth, keys too, and what numbers or other objects render as) that
    the guard's matcher flags replaced by ``REMOVED``."""
    if isinstance(value, dict):
        return {(_scrubbed(k) if isinstance(k, str) else k): _scrubbed(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_scrubbed(v) for v in value]
    if value is None or isinstance(value, bool):
        return value
    text = value if isinstance(value, str) else str(value)
    return REMOVED if _flagged(text) else value


def _drop_personal_data(_logger, _method, event: dict) -> dict:  # noqa: ANN001
    """Last line of defence: no log line carries a personal identity code, whatever a caller passed: the
    same matcher as the request guard's, over every value (nested ones too), key and traceback.

    What ``{(REMOVED if _flagged(k) else k): _scrubbed(v) for k, v in event.items()}`` makes, with the common
    cases inline (a key or a text already found clean, a number's text): a line's keys and most of its values are
    looked up once each, not passed through two calls (every request's ``http.request`` line)."""
    out = {}
    clean = _CLEAN
    for k, v in event.items():
        if k not in clean and _flagged(k):
            k = REMOVED
        kind = type(v)
        if kind is str:
            out[k] = v if v in clean or not _flagged(v) else REMOVED
        elif kind is int or kind is float:  # (not bool: a subclass, kept as it is by ``_scrubbed``)
            out[k] = v if not _flagged(str(v)) else REMOVED
        else:
            out[k] = _scrubbed(v)
    return out


class _CurrentStdout:
    """Whatever ``sys.stdout`` is when a line is written (a test's capture may replace and close it)."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


def configure_logging(service: str, level: str = "INFO", json: bool = True) -> None:
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            _drop_personal_data,
            # the time is stamped after the check: it is the clock's, never a caller's (a ``timestamp`` passed is
            # overwritten), and the matcher would read 26 digits of every line in vain (never once flagged)
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStdout()),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.bind_contextvars(service=service)


def bind_correlation(correlation_id: str | None, causation_id: str | None = None) -> str:
    """Bind ids for logs and for events caused from here on; returns the correlation id."""
    cid = correlation_id or new_id()
    correlation_id_var.set(cid)
    causation_id_var.set(causation_id)
    structlog.contextvars.bind_contextvars(correlation_id=cid)
    return cid


def get_logger(name: str | None = None):
    return structlog.get_logger(name)
