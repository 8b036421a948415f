"""Broker I/O: subscribe to Celery events, decode them, feed the state, reconnect forever.

For redis:// brokers the event channels are read directly with redis-py (hiredis parser):
kombu publishes each event envelope on `/<db>.celeryev/<routing key>`, and a prefork worker
batches task events as `task.multi` (a JSON list in one envelope). Any other broker goes
through Celery's own EventReceiver. Either way an error is logged, the reader backs off and
reconnects, and users see the broker status (a banner, /healthz).
"""
from __future__ import annotations

import base64
import logging
import threading
import time
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

import orjson

from .brokerurl import mask_url, scrub  # mask_url also re-exported: `from .ingest import mask_url` still works
from .state import State

log = logging.getLogger(__name__)

# Messages drained from the socket at once (a prefork worker packs up to 24 events in one), and
# events applied per hold of the state lock. The lock is released between slices so pages and API
# calls wait milliseconds, not the length of a burst; small batches also bound transient memory.
BATCH_MAX = 64
EVENTS_PER_LOCK = 256
YIELD_SECONDS = 0.001
_DECODE_LOG_INTERVAL = 10.0


class DecodeError(ValueError):
    """A broker message that is not a Celery event envelope we can read."""


def utcoffset_hours(now: float | None = None) -> float:
    """This machine's offset to UTC in hours (as celery.utils.time.utcoffset)."""
    lt = time.localtime(now)
    return (lt.tm_gmtoff or 0) / 3600.0


def decode_message(data: bytes | str) -> list[dict[str, Any]]:
    """Decode one kombu envelope published on a celeryev channel into its event dicts."""
    try:
        envelope = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"envelope is not JSON: {exc}") from None
    if not isinstance(envelope, dict) or "body" not in envelope:
        raise DecodeError("envelope has no body")
    body = envelope["body"]
    props = envelope.get("properties")
    if isinstance(props, dict) and props.get("body_encoding") == "base64":
        try:
            body = base64.b64decode(body, validate=True)
        except (ValueError, TypeError):
            raise DecodeError("body is not valid base64") from None
    content_type = envelope.get("content-type", "application/json")
    if content_type != "application/json":
        raise DecodeError(f"unsupported content type {content_type!r} (the dashboard reads JSON events)")
    if isinstance(body, (dict, list)):
        payload = body
    else:
        try:
            payload = orjson.loads(body)
        except (orjson.JSONDecodeError, TypeError):
            raise DecodeError("body is not JSON") from None
    if isinstance(payload, dict):
        return [payload]
    if isinstance(payload, list):
        return payload
    raise DecodeError("body is neither an event nor a list of events")


def prepare(events: Iterable[Any], local_received: float, here: float) -> list[dict[str, Any]]:
    """Stamp events as Celery's EventReceiver does: local_received, timestamp moved to our zone."""
    out = []
    for ev in events:
        if not isinstance(ev, dict):
            out.append(ev)  # the state rejects it and it is counted
            continue
        offset = ev.get("utcoffset")
        ts = ev.get("timestamp")
        if offset is not None and isinstance(ts, (int, float)) and isinstance(offset, (int, float)):
            ev["timestamp"] = ts - (offset - here) * 3600
        ev["local_received"] = local_received
        out.append(ev)
    return out


def redis_event_pattern(broker_url: str) -> str:
    """The pub/sub pattern of Celery event channels for a redis:// URL (db from the path)."""
    path = urlsplit(broker_url).path.strip("/")
    db = int(path) if path.isdigit() else 0
    return f"/{db}.celeryev/*"


class Ingest:
    """The background event consumer: never dies, reconnects with backoff, counts everything."""

    def __init__(self, state: State, broker_url: str, *, mode: str = "auto",
                 reconnect_min: float = 0.5, reconnect_max: float = 2.0,
                 on_connect: Callable[[], None] | None = None,
                 on_worker_arrival: Callable[[], None] | None = None) -> None:
        self.state = state
        self.broker_url = broker_url
        if mode == "auto":
            mode = "redis" if broker_url.startswith(("redis://", "rediss://", "unix://")) else "kombu"
        self.mode = mode
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        self.on_connect = on_connect
        self.on_worker_arrival = on_worker_arrival  # must not block: it runs on the ingest thread
        self.busy: Callable[[], bool] = lambda: False  # whether requests are in flight (ingest then yields)
        self.after_batch: Callable[[], None] | None = None  # housekeeping on the ingest thread (GC policy)
        self.received = 0  # events decoded (malformed ones included)
        self.rejected = 0  # messages or events that could not be applied
        self.messages = 0
        self.connected = False
        self.error: str | None = None
        self.since = time.time()  # when `connected` last changed
        self.reconnects = 0
        self.outages = 0
        self.last_outage: tuple[float, float] | None = None  # (lost at, back at): events may be missed
        self.last_event_at: float | None = None
        self._stop = threading.Event()
        self._last_decode_log = 0.0
        self._suppressed = 0
        self._pubsub: Any = None
        self._streamed = False

    # -- lifecycle -----------------------------------------------------------------------------
    def run(self) -> None:
        """Consume until stop(): every failure is logged, backed off and retried."""
        delay = self.reconnect_min
        reader = self._run_redis if self.mode == "redis" else self._run_kombu
        while not self._stop.is_set():
            try:
                reader()
            except Exception as exc:  # noqa: BLE001 - the consumer must outlive any broker error
                if self._stop.is_set():
                    break
                if self._streamed:  # the backoff restarts after a connection that worked
                    delay, self._streamed = self.reconnect_min, False
                # Scrubbed: a malformed URL's parse error quotes part of its password.
                self._disconnected(scrub(f"{type(exc).__name__}: {exc}", self.broker_url))
                log.warning("event stream from %s failed (%s); reconnecting in %.1fs",
                            mask_url(self.broker_url), self.error, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, self.reconnect_max)
                self.reconnects += 1
        self._set_connected(False, "stopped")

    def stop(self) -> None:
        """Ask the consumer to stop; it returns within about a second."""
        self._stop.set()
        pubsub = self._pubsub
        if pubsub is not None:
            try:
                pubsub.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail; we are leaving
                pass

    def status(self) -> dict[str, Any]:
        """Broker and counter figures for the banner and /healthz."""
        return {
            "connected": self.connected,
            "url": mask_url(self.broker_url),
            "reader": self.mode,
            "error": self.error,
            "since": self.since,
            "reconnects": self.reconnects,
            "outages": self.outages,
            "last_outage": list(self.last_outage) if self.last_outage else None,
        }

    # -- readers -------------------------------------------------------------------------------
    def _run_redis(self) -> None:
        import redis

        client = redis.Redis.from_url(self.broker_url, socket_connect_timeout=5, socket_keepalive=True,
                                      health_check_interval=10)
        pubsub = self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.psubscribe(redis_event_pattern(self.broker_url))
            pubsub.get_message(timeout=1.0)  # the subscription reply: proves the connection works
            self._connected()
            get = pubsub.get_message
            stop = self._stop.is_set
            while not stop():
                msg = get(timeout=1.0)
                if msg is None:
                    continue
                batch = [msg["data"]]
                # Drain what is already buffered so one lock acquisition covers many events.
                while len(batch) < BATCH_MAX:
                    msg = get(timeout=0)
                    if msg is None:
                        break
                    batch.append(msg["data"])
                self._apply_messages(batch)
        finally:
            self._pubsub = None
            try:
                pubsub.close()
                client.close()
            except Exception:  # noqa: BLE001 - the connection may already be gone
                pass

    def _run_kombu(self) -> None:
        import socket

        from celery import Celery

        from celery.events.receiver import EventReceiver

        class SafeReceiver(EventReceiver):
            """Celery's receiver, except that an undecodable event is handed on (and rejected) instead of
            raising out of capture() and dropping the connection."""

            def event_from_message(self, body: Any, *args: Any, **kwargs: Any) -> tuple[str, dict[str, Any]]:
                try:
                    return super().event_from_message(body, *args, **kwargs)
                except Exception as exc:  # noqa: BLE001 - any malformed body
                    return "invalid", {"invalid": f"{type(exc).__name__}: {exc}"}

        app = Celery("dashboard-ingest", broker=self.broker_url, set_as_current=False)
        with app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1)
            receiver = SafeReceiver(conn, handlers={"*": self._on_receiver_event}, app=app)
            self._connected()
            while not self._stop.is_set():
                try:
                    receiver.capture(limit=None, timeout=1.0, wakeup=False)
                except socket.timeout:
                    continue

    def _on_receiver_event(self, event: dict[str, Any]) -> None:
        self.received += 1
        self.last_event_at = time.time()
        self._apply_events((event,))
        if self.after_batch is not None:
            self.after_batch()

    def _apply_events(self, events: list[Any] | tuple[Any, ...]) -> None:
        arrivals = self.state.worker_arrivals
        bad = 0
        busy = self.busy
        for start in range(0, len(events), EVENTS_PER_LOCK):
            if start and busy():
                # A page or API call is being served: hand it the GIL and the lock (neither is fair
                # in CPython, and a CPU-bound thread keeps the GIL for 5 ms at a time).
                time.sleep(YIELD_SECONDS)
            bad += self.state.events(events[start:start + EVENTS_PER_LOCK])
        if bad:
            self.rejected += bad
            self._log_bad(f"{bad} event(s) skipped, last: {self.state.last_error}")
        if self.state.worker_arrivals != arrivals and self.on_worker_arrival is not None:
            self.on_worker_arrival()

    # -- helpers -------------------------------------------------------------------------------
    def _apply_messages(self, batch: list[bytes]) -> None:
        now = time.time()
        here = utcoffset_hours(now)
        events: list[Any] = []
        for data in batch:
            try:
                events.extend(decode_message(data))
            except DecodeError as exc:
                self.rejected += 1
                self._log_bad(exc)
        self.messages += len(batch)
        if events:
            self.received += len(events)
            self._apply_events(prepare(events, now, here))
            self.last_event_at = now
        if self.after_batch is not None:
            self.after_batch()

    def _log_bad(self, what: object) -> None:
        # Rate-limited: a flood of garbage must not turn into a flood of log lines.
        now = time.monotonic()
        if now - self._last_decode_log >= _DECODE_LOG_INTERVAL:
            extra = f" ({self._suppressed} similar suppressed)" if self._suppressed else ""
            log.warning("rejected event data: %s%s", what, extra)
            self._last_decode_log = now
            self._suppressed = 0
        else:
            self._suppressed += 1

    def _connected(self) -> None:
        with self.state.lock:
            self.state.broker_back(time.time())
        self._set_connected(True, None)
        self._streamed = True
        log.info("listening for Celery events on %s (%s reader)", mask_url(self.broker_url), self.mode)
        if self.on_connect is not None:
            try:
                self.on_connect()
            except Exception as exc:  # noqa: BLE001 - a failed courtesy call must not drop the stream
                log.info("could not ask workers to enable events: %s", exc)

    def _disconnected(self, error: str) -> None:
        if self.connected:
            self.outages += 1
            self.last_outage = (time.time(), 0.0)
            with self.state.lock:  # blind now: workers must not look dead merely because nobody is heard
                self.state.broker_lost(self.last_outage[0])
        self._set_connected(False, error)

    def _set_connected(self, connected: bool, error: str | None) -> None:
        if connected and self.last_outage and not self.last_outage[1]:
            self.last_outage = (self.last_outage[0], time.time())
        if connected != self.connected:
            self.since = time.time()
        self.connected = connected
        self.error = error
