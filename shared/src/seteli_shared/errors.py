"""Domain errors with machine-readable reasons, turned into HTTP 4xx by the app factory."""
from __future__ import annotations


class DomainError(Exception):
    """A request that the rules refuse. ``reason`` is a stable machine-readable code."""

    status_code = 422

    def __init__(self, reason: str, message: str = "", status_code: int | None = None, **details):
        super().__init__(message or reason)
        self.reason = reason
        self.message = message or reason.replace("_", " ")
        self.details = details
        if status_code is not None:
            self.status_code = status_code

    def body(self) -> dict:
        err = {"reason": self.reason, "message": self.message}
        if self.details:
            err["details"] = self.details
        return {"error": err}


class NotFound(DomainError):
    status_code = 404

    def __init__(self, what: str, **details):
        super().__init__(f"{what}_not_found", f"{what.replace('_', ' ')} not found", **details)


class Conflict(DomainError):
    status_code = 409


class PermanentMessageError(Exception):
    """A bus message that can never be processed (bad schema, refused content):
    it goes straight to the dead-letter queue with this reason, no retries."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
