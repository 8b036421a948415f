"""The per-app objects views and the API share: state, ingest, push, the Celery client."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import current_app

from .control import EventsEnabler
from .ingest import Ingest
from .push import Push
from .state import State


@dataclass
class Services:
    """Everything one app instance runs; `stop()` ends its background loops."""

    config: dict[str, Any]
    state: State
    ingest: Ingest
    push: Push
    celery: Any
    enabler: EventsEnabler | None = None

    def stop(self) -> None:
        """Stop ingest, push and the enable-events loop (used by tests and on shutdown)."""
        self.ingest.stop()
        self.push.stop()
        if self.enabler is not None:
            self.enabler.stop()


def services() -> Services:
    """The services of the current app."""
    return current_app.extensions["dashboard"]
