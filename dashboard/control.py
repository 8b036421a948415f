"""Talking to Celery: the client app used to launch tasks and to broadcast control commands."""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

log = logging.getLogger(__name__)


def make_celery(broker_url: str, timeout: float = 5.0) -> Any:
    """A Celery client for the broker: sends tasks and broadcasts; never runs or imports tasks."""
    from celery import Celery

    app = Celery("celery-dashboard", broker=broker_url, set_as_current=False)
    app.conf.update(
        # Launched tasks show up as PENDING at once, and queue wait (sent -> started) is measurable.
        task_send_sent_event=True,
        broker_connection_timeout=timeout,
        broker_connection_retry=False,
        broker_transport_options={"socket_connect_timeout": timeout, "socket_timeout": timeout},
        # Fail fast when the broker is down: the user gets an error instead of a hung form.
        task_publish_retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.5,
                                   "interval_max": 0.5},
    )
    return app


def enable_events(app: Any) -> None:
    """Ask every worker to send events (what `celery control enable_events` does)."""
    app.control.enable_events()


class EventsEnabler:
    """Broadcasts enable_events so workers started without -E report too: every `interval` seconds, and
    every second for a few seconds after a poke (the broker came up, or a worker appeared)."""

    # A new worker says hello (worker-online) before it subscribes to broadcasts, and mingle can hold it
    # a second longer: a single broadcast on arrival would often be lost, so repeat it for a while.
    FAST_PERIOD = 1.0
    FAST_WINDOW = 6.0
    MIN_GAP = 0.5  # seconds between two broadcasts, however often it is poked (a flood of new workers)

    def __init__(self, app: Any, interval: float, is_connected: Callable[[], bool]) -> None:
        self.app = app
        self.interval = interval
        self.is_connected = is_connected
        self.broadcasts = 0
        self._fast_until = 0.0
        self._stop = threading.Event()
        self._wake = threading.Event()

    def poke(self) -> None:
        """Broadcast now and then every second for a few seconds; cheap, called from the ingest thread."""
        self._fast_until = time.monotonic() + self.FAST_WINDOW
        self._wake.set()

    def run(self) -> None:
        """Broadcast while the broker is reachable, until stop()."""
        while True:
            fast = time.monotonic() < self._fast_until
            self._wake.wait(min(self.FAST_PERIOD, self.interval) if fast else self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            if not self.is_connected():
                continue
            try:
                enable_events(self.app)
                self.broadcasts += 1
            except Exception as exc:  # noqa: BLE001 - the broker may be going away; retry next round
                log.info("enable_events broadcast failed: %s", exc)
            self._stop.wait(self.MIN_GAP)

    def stop(self) -> None:
        """Stop the loop at once."""
        self._stop.set()
        self._wake.set()
