"""What can go wrong talking to Celery and the broker, as the web layer renders it (dashboard/web/errors.py)."""

from __future__ import annotations


class InvalidRequest(ValueError):
    """The request is malformed or out of bounds (HTTP 400); the message says what to send instead."""


class BrokerUnavailable(RuntimeError):
    """The broker could not be reached or dropped the connection (HTTP 503).

    `sent` holds what went out before it failed (task ids of a launch); `audit_id` the entry that
    recorded the failed action, once audited.
    """

    def __init__(self, message: str, sent: list[str] | None = None) -> None:
        super().__init__(message)
        self.sent: list[str] = sent or []
        self.audit_id: int | None = None
