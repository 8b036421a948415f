"""Event ingest: a Reader turns the broker's event stream into decoded batches; Ingest applies them.

For redis:// brokers the event channels are read off the socket (dashboard/ingest/pubsub.py):
kombu publishes each event envelope on `/<db>.celeryev/<routing key>`, and a prefork worker
batches task events as `task.multi` (a JSON list in one envelope). Any other broker goes
through Celery's own EventReceiver. Either way an error is logged, the reader backs off and
reconnects, and users see the broker status (a banner, /healthz).

The Reader runs in a process of its own (dashboard/ingest/process.py): decoding costs more CPU than
applying, and there it never competes with the web server for the GIL. `Ingest.run()` runs a
Reader in this process instead (tests and tools). Either way the Reader talks to a `Sink`:
connected, disconnected, and one call per batch of decoded events.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson

from ..core.brokerurl import mask_url, scrub  # mask_url also re-exported: `from .ingest import mask_url` still works
from ..core.failures import analyze
from ..core.state import State

log = logging.getLogger(__name__)

# Events applied per hold of the state lock. The lock is released between slices so pages and API
# calls wait milliseconds, not the length of a burst.
EVENTS_PER_LOCK = 256
# The key a failed or retried event carries its failure analysis under, from the reader to the state.
ANALYSIS = "\x00failure"
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
    """Stamp events as Celery's EventReceiver does (local_received, timestamp moved to our zone), and
    attach the failure analysis to failed and retried ones (see `with_analysis`)."""
    out = []
    for ev in events:
        if not isinstance(ev, dict):
            out.append(ev)  # the state rejects it and it is counted
            continue
        with_analysis(ev)
        offset = ev.get("utcoffset")
        ts = ev.get("timestamp")
        if offset is not None and isinstance(ts, (int, float)) and isinstance(offset, (int, float)):
            ev["timestamp"] = ts - (offset - here) * 3600
        ev["local_received"] = local_received
        out.append(ev)
    return out


def with_analysis(ev: dict[str, Any]) -> None:
    """Attach `analyze(exception, traceback)` to a failed or retried event, under ANALYSIS.

    The reader process runs this, so the signature parsing (regexes, literal parsing of exception
    reprs) is done on its core instead of the state's; `Ingest.batch` offers it to the failure groups,
    which use it only for the exact strings it was computed from. A key of that name that came from the
    wire is dropped: only the reader writes it."""
    type_ = ev.get("type")
    if type_ == "task-failed" or type_ == "task-retried":
        sig, gid = analyze(ev.get("exception"), ev.get("traceback"))
        ev[ANALYSIS] = [list(sig), gid]
    elif ANALYSIS in ev:
        del ev[ANALYSIS]


def redis_event_pattern(broker_url: str) -> str:
    """The pub/sub pattern of Celery event channels for a redis:// URL (db from the path)."""
    path = urlsplit(broker_url).path.strip("/")
    db = int(path) if path.isdigit() else 0
    return f"/{db}.celeryev/*"


def decode_batch(batch: list[bytes], on_bad: Callable[[object], None] = lambda _: None) -> tuple[list[Any], int]:
    """Decode and stamp the events of many envelopes -> (events, envelopes that could not be decoded)."""
    now = time.time()
    here = utcoffset_hours(now)
    events: list[Any] = []
    rejected = 0
    for data in batch:
        try:
            events.extend(decode_message(data))
        except DecodeError as exc:
            rejected += 1
            on_bad(exc)
    return prepare(events, now, here), rejected


class Sink(Protocol):
    """What a Reader reports to: connection changes and decoded batches, in stream order."""

    def subscribed(self, reconnects: int) -> None:
        """The stream is subscribed (again)."""

    def failed(self, error: str, reconnects: int) -> None:
        """The stream failed; the reader backs off and reconnects."""

    def batch(self, events: list[Any], messages: int, rejected: int, at: float) -> None:
        """Events decoded from `messages` envelopes at `at`; `rejected` envelopes did not decode."""


class RateLimitedLog:
    """Warnings about bad data, at most one per interval: a flood of garbage is not a flood of lines."""

    def __init__(self, interval: float = _DECODE_LOG_INTERVAL) -> None:
        self.interval = interval
        self._last = -interval
        self._suppressed = 0

    def __call__(self, what: object) -> None:
        now = time.monotonic()
        if now - self._last >= self.interval:
            extra = f" ({self._suppressed} similar suppressed)" if self._suppressed else ""
            log.warning("rejected event data: %s%s", what, extra)
            self._last = now
            self._suppressed = 0
        else:
            self._suppressed += 1


class Reader:
    """The broker side: subscribe, decode, hand batches to a sink; never dies, reconnects with backoff."""

    def __init__(
        self, broker_url: str, *, mode: str = "auto", reconnect_min: float = 0.5, reconnect_max: float = 2.0
    ) -> None:
        self.broker_url = broker_url
        self.mode = reader_mode(broker_url, mode)
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        self.reconnects = 0
        self._stop = threading.Event()
        self._stream: Any = None  # the open PubSubStream (redis mode), closed by stop()
        self._streamed = False
        self._log_bad = RateLimitedLog()

    def run(self, sink: Sink) -> None:
        """Consume until stop(): every failure is reported, backed off and retried."""
        delay = self.reconnect_min
        read = self._run_redis if self.mode == "redis" else self._run_kombu
        while not self._stop.is_set():
            try:
                read(sink)
            except Exception as exc:  # noqa: BLE001 - the consumer must outlive any broker error
                if self._stop.is_set():
                    break
                if self._streamed:  # the backoff restarts after a connection that worked
                    delay, self._streamed = self.reconnect_min, False
                # Scrubbed: a malformed URL's parse error quotes part of its password.
                error = scrub(f"{type(exc).__name__}: {exc}", self.broker_url)
                sink.failed(error, self.reconnects)
                log.warning(
                    "event stream from %s failed (%s); reconnecting in %.1fs", mask_url(self.broker_url), error, delay
                )
                self._stop.wait(delay)
                delay = min(delay * 2, self.reconnect_max)
                self.reconnects += 1

    def stop(self) -> None:
        """Ask the reader to stop; it returns within about a second."""
        self._stop.set()
        stream = self._stream
        if stream is not None:
            stream.close()

    def _subscribed(self, sink: Sink) -> None:
        self._streamed = True
        log.info("listening for Celery events on %s (%s reader)", mask_url(self.broker_url), self.mode)
        sink.subscribed(self.reconnects)

    def _run_redis(self, sink: Sink) -> None:
        from .pubsub import PubSubStream

        stream = self._stream = PubSubStream(self.broker_url, redis_event_pattern(self.broker_url))
        try:
            stream.open()  # the subscription confirmed: the connection works
            self._subscribed(sink)
            read = stream.read
            stop = self._stop.is_set
            log_bad = self._log_bad
            while not stop():
                # Everything one recv brought is one batch: one frame to the dashboard and one lock hold
                # per slice there, however many messages it holds (a quiet stream's are single messages,
                # sent on at once; a busy one's are hundreds).
                batch = read()
                if not batch:
                    continue
                events, rejected = decode_batch(batch, log_bad)
                sink.batch(events, len(batch), rejected, time.time())
        finally:
            self._stream = None
            stream.close()

    def _run_kombu(self, sink: Sink) -> None:

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

        def handler(event: dict[str, Any]) -> None:
            if event.__class__ is dict:
                with_analysis(event)
            sink.batch([event], 1, 0, time.time())

        app = Celery("dashboard-ingest", broker=self.broker_url, set_as_current=False)
        with app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1)
            receiver = SafeReceiver(conn, handlers={"*": handler}, app=app)
            self._subscribed(sink)
            while not self._stop.is_set():
                try:
                    receiver.capture(limit=None, timeout=1.0, wakeup=False)
                except TimeoutError:
                    continue


def reader_mode(broker_url: str, mode: str) -> str:
    """`redis` (direct pub/sub) for Redis URLs under `auto`, else `kombu`; an explicit mode stays."""
    if mode == "auto":
        return "redis" if broker_url.startswith(("redis://", "rediss://", "unix://")) else "kombu"
    return mode


class Ingest:
    """The state's side of the stream: applies batches in slices, counts everything, keeps the broker status.

    `pause()` runs between two slices (gevent: yield to the hub; threading: step aside for requests in
    flight); `after_batch()` after each batch (the GC policy); `on_connect()` when the stream is back and
    `on_worker_arrival()` when a worker appears (both must not block: they run on the ingest loop)."""

    def __init__(
        self,
        state: State,
        broker_url: str,
        *,
        mode: str = "auto",
        reconnect_min: float = 0.5,
        reconnect_max: float = 2.0,
        pause: Callable[[], None] = lambda: None,
        after_batch: Callable[[], None] | None = None,
        on_connect: Callable[[], None] | None = None,
        on_worker_arrival: Callable[[], None] | None = None,
    ) -> None:
        self.state = state
        self.broker_url = broker_url
        self.mode = reader_mode(broker_url, mode)
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        self.pause = pause
        self.after_batch = after_batch
        self.on_connect = on_connect
        self.on_worker_arrival = on_worker_arrival
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
        self._log_bad = RateLimitedLog()
        self._reader: Reader | None = None

    # -- in this process (tests, tools); the dashboard runs the reader in its own process -----------
    def run(self) -> None:
        """Read the broker in this thread until stop()."""
        self._reader = Reader(
            self.broker_url, mode=self.mode, reconnect_min=self.reconnect_min, reconnect_max=self.reconnect_max
        )
        self._reader.run(self)
        self.stopped()

    def stop(self) -> None:
        """Stop an in-process reader (a reader process is stopped by its owner)."""
        if self._reader is not None:
            self._reader.stop()

    def apply_messages(self, raw: list[bytes]) -> None:
        """Decode raw envelopes and apply them through the same wire format as the reader process."""
        from .process import decode_frame, encode_frame

        events, rejected = decode_batch(raw, self._log_bad)
        frame = decode_frame(encode_frame(batch_frame(events, len(raw), rejected, time.time()))[4:])
        self.frame(frame)

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

    # -- Sink --------------------------------------------------------------------------------------
    def frame(self, frame: dict[str, Any]) -> None:
        """Apply one frame of the reader's wire format (see dashboard/ingest/process.py)."""
        kind = frame.get("k")
        if kind == "b":
            self.batch(frame["ev"], frame["m"], frame["x"], frame["t"])
        elif kind == "c":
            self.subscribed(frame["r"])
        elif kind == "d":
            self.failed(frame["e"], frame["r"])

    def subscribed(self, reconnects: int) -> None:
        """The reader subscribed: workers get a full heartbeat window again, enable_events is broadcast."""
        self.reconnects = reconnects
        with self.state.lock:
            self.state.broker_back(time.time())
        self._set_connected(True, None)
        if self.on_connect is not None:
            try:
                self.on_connect()
            except Exception as exc:  # noqa: BLE001 - a failed courtesy call must not drop the stream
                log.info("could not ask workers to enable events: %s", exc)

    def failed(self, error: str, reconnects: int = 0) -> None:
        """The stream failed: freeze worker liveness (nobody is heard) and report the outage."""
        self.reconnects = max(self.reconnects, reconnects)
        if self.connected:
            self.outages += 1
            self.last_outage = (time.time(), 0.0)
            with self.state.lock:  # blind now: workers must not look dead merely because nobody is heard
                self.state.broker_lost(self.last_outage[0])
        self._set_connected(False, error)

    def batch(self, events: list[Any], messages: int, rejected: int, at: float) -> None:
        """Apply decoded events in slices (each one hold of the state lock), pausing between slices."""
        self.messages += messages
        self.rejected += rejected
        if events:
            self.received += len(events)
            self.last_event_at = at
            groups = self.state.failure_groups
            primed = False
            for ev in events:
                # One float shared by the batch, as Celery's receiver stamps it: a value parsed per event
                # from the reader's frame would be an object of its own in every stored history entry.
                if ev.__class__ is dict:
                    ev["local_received"] = at
                    if ANALYSIS in ev:  # analyzed by the reader (see with_analysis)
                        primed = groups.prime(ev.get("exception"), ev.get("traceback"), ev.pop(ANALYSIS)) or primed
            arrivals = self.state.worker_arrivals
            bad = 0
            pause = self.pause
            for start in range(0, len(events), EVENTS_PER_LOCK):
                if start:
                    pause()
                bad += self.state.events(events[start : start + EVENTS_PER_LOCK])
            if primed:
                groups.forget_primed()
            if bad:
                self.rejected += bad
                self._log_bad(f"{bad} event(s) skipped, last: {self.state.last_error}")
            if self.state.worker_arrivals != arrivals and self.on_worker_arrival is not None:
                self.on_worker_arrival()
        if self.after_batch is not None:
            self.after_batch()

    def stopped(self) -> None:
        """Ingest ended (shutdown): not connected any more, and nothing to reconnect."""
        self._set_connected(False, "stopped")

    def _set_connected(self, connected: bool, error: str | None) -> None:
        if connected and self.last_outage and not self.last_outage[1]:
            self.last_outage = (self.last_outage[0], time.time())
        if connected != self.connected:
            self.since = time.time()
        self.connected = connected
        self.error = error


def batch_frame(events: list[Any], messages: int, rejected: int, at: float) -> dict[str, Any]:
    """One batch in the reader's wire format."""
    return {"k": "b", "ev": events, "m": messages, "x": rejected, "t": at}
