"""structlog configured for JSON lines, with the correlation id bound per request or message."""
from __future__ import annotations

import logging
import sys
import uuid
from contextvars import ContextVar

import structlog

correlation_id_var: ContextVar[str | None] = ContextVar("correlation_id", default=None)
causation_id_var: ContextVar[str | None] = ContextVar("causation_id", default=None)


def configure_logging(service: str, level: str = "INFO", json: bool = True) -> None:
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.bind_contextvars(service=service)


def new_id() -> str:
    return str(uuid.uuid4())


def bind_correlation(correlation_id: str | None, causation_id: str | None = None) -> str:
    """Bind ids for logs and for events caused from here on; returns the correlation id."""
    cid = correlation_id or new_id()
    correlation_id_var.set(cid)
    causation_id_var.set(causation_id)
    structlog.contextvars.bind_contextvars(correlation_id=cid)
    return cid


def get_logger(name: str | None = None):
    return structlog.get_logger(name)
