"""Talking to Celery: the client app used to launch tasks and to broadcast control commands."""
from __future__ import annotations

import logging
import threading
from typing import Any

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
    """Periodically broadcasts enable_events so workers started without -E report too."""

    def __init__(self, app: Any, interval: float, is_connected: Any) -> None:
        self.app = app
        self.interval = interval
        self.is_connected = is_connected
        self._stop = threading.Event()

    def run(self) -> None:
        """Broadcast every `interval` seconds while the broker is reachable, until stop()."""
        while not self._stop.wait(self.interval):
            if not self.is_connected():
                continue
            try:
                enable_events(self.app)
            except Exception as exc:  # noqa: BLE001 - the broker may be going away; retry next round
                log.info("enable_events broadcast failed: %s", exc)

    def stop(self) -> None:
        """Stop the loop at its next wake-up."""
        self._stop.set()
