"""The per-app objects views and the API share: state, ingest, push, the Celery client."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import current_app

from ..cluster.control import EventsEnabler
from ..concurrency import Runtime
from ..ingest.process import ReaderProcess
from ..ingest.stream import Ingest
from ..live.push import Push

if TYPE_CHECKING:
    from .server import ConnectionLimits
from ..core.state import State


class Inflight:
    """How many HTTP requests are being served: event ingest yields to them."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def enter(self) -> None:
        """A request starts (Flask before_request)."""
        with self._lock:
            self.count += 1

    def leave(self, *_: Any) -> None:
        """A request ends, whatever happened (Flask teardown_request)."""
        with self._lock:
            self.count -= 1

    def busy(self) -> bool:
        """Whether any request is in flight."""
        return self.count > 0


@dataclass
class Services:
    """Everything one app instance runs; `stop()` ends its background loops."""

    config: dict[str, Any]
    state: State
    ingest: Ingest
    push: Push
    celery: Any
    runtime: Runtime
    reader: ReaderProcess | None = None  # the event reader process and its feed (None: ingest disabled)
    connections: ConnectionLimits | None = None  # what clients hold (gevent server only)
    enabler: EventsEnabler | None = None
    inspector: Any = None  # dashboard/cluster/inspector.py: cached `inspect` replies per worker
    audit: Any = None  # dashboard/cluster/audit.py: who did what, when, with what result
    queues: Any = None  # dashboard/web/queues.py: queue lengths polled from the broker
    snapshots: Any = None  # dashboard/ingest/snapshot.py: the optional state file
    inflight: Inflight = field(default_factory=Inflight)
    _stopped: bool = False

    def stop(self) -> None:
        """Stop every background loop, then save the snapshot if there is one (tests, and at shutdown)."""
        if self.reader is not None:
            self.reader.stop()
        self.ingest.stop()
        self.push.stop()
        for loop in (self.enabler, self.inspector, self.queues, self.snapshots):
            if loop is not None:
                loop.stop()
        if self.snapshots is not None and not self._stopped:
            self.snapshots.save()  # after ingest stopped: the last events are in it
        self._stopped = True


def services() -> Services:
    """The services of the current app."""
    return current_app.extensions["dashboard"]
