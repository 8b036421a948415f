"""Talking to Celery: the client app used to launch tasks and to broadcast control commands."""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ..concurrency import offload
from ..core.brokerurl import scrub
from ..core.numbers import whole_number
from .errors import BrokerUnavailable, InvalidRequest

log = logging.getLogger(__name__)


def make_celery(broker_url: str, timeout: float = 5.0, app: Any = None, backend: str = "") -> Any:
    """The Celery client that sends tasks and broadcasts and reads results; never runs or imports tasks by itself.

    With the user's app (dashboard/cluster/userapp.py) that app is the client, so launches follow its routes,
    queues, serializer and result backend; only the broker URL (when set apart from the app's), the result
    backend (when RESULT_BACKEND is given) and the fail-fast options below are set on it, in this process."""
    if app is None:
        from celery import Celery

        app = Celery("celery-dashboard", broker=broker_url, backend=backend or None, set_as_current=False)
    else:
        if broker_url and broker_url != app.conf.broker_url:
            app.conf.broker_url = broker_url
        if backend:
            app.conf.result_backend = backend
    transport = {"socket_connect_timeout": timeout, "socket_timeout": timeout}
    app.conf.update(
        # Launched tasks show up as PENDING at once, and queue wait (sent -> started) is measurable.
        task_send_sent_event=True,
        broker_connection_timeout=timeout,
        broker_connection_retry=False,
        # The app's own transport options (sentinels, priorities...) are kept; the timeouts are added.
        broker_transport_options={**transport, **(app.conf.broker_transport_options or {})},
        # Fail fast when the broker is down: the user gets an error instead of a hung form.
        task_publish_retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.5, "interval_max": 0.5},
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


# -- control commands (issue #5): validation, broadcast, replies -----------------------------------
# Broker I/O for these runs on the request thread: actions are user-initiated and bounded by
# CONTROL_TIMEOUT. Inspect is different (dashboard/cluster/inspector.py): requests only read its cache.

SIGNALS = ("SIGTERM", "SIGKILL", "SIGINT", "SIGQUIT", "SIGUSR1")
WORKER_ACTIONS = (
    "shutdown",
    "pool_restart",
    "pool_grow",
    "pool_shrink",
    "autoscale",
    "add_consumer",
    "cancel_consumer",
)
TASK_TYPE_ACTIONS = ("rate_limit", "time_limit")
POOL_STEP_MAX = 64
AUTOSCALE_MAX = 1000
QUEUE_NAME_MAX = 200
TASK_NAME_MAX = 200
HOSTNAME_MAX = 255
WORKERS_MAX = 1000
TIME_LIMIT_MAX = 86_400.0
RATE_PATTERN = re.compile(r"^\d{1,7}(\.\d{1,6})?(/[smh])?$")  # Celery's rate strings: "10/m", "100/s", "0"


@dataclass
class Outcome:
    """What an action achieved: ok, the workers' replies by hostname, and a sentence for people."""

    ok: bool
    replies: dict[str, Any]
    message: str


def _whole(body: dict[str, Any], key: str, low: int, high: int) -> int:
    value = body.get(key)
    whole = whole_number(value, low, high) if not isinstance(value, str) else None  # JSON numbers only
    if whole is None:
        raise InvalidRequest(f"{key} must be a whole number from {low} to {high}")
    return whole


def _name(value: Any, label: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(f"{label} must be a non-empty string")
    value = value.strip()
    if len(value) > limit:
        raise InvalidRequest(f"{label} must be at most {limit} characters")
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise InvalidRequest(f"{label} must not contain spaces or control characters")
    return value


def worker_command(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Validate a worker action body: (action, the command's arguments)."""
    action = body.get("action")
    if action not in WORKER_ACTIONS:
        raise InvalidRequest(f"action must be one of: {', '.join(WORKER_ACTIONS)}")
    if action in ("pool_grow", "pool_shrink"):
        return action, {"n": _whole(body, "n", 1, POOL_STEP_MAX)}
    if action == "autoscale":
        high = _whole(body, "max", 1, AUTOSCALE_MAX)
        low = _whole(body, "min", 0, AUTOSCALE_MAX)
        if low > high:
            raise InvalidRequest("min must not be more than max")
        return action, {"max": high, "min": low}
    if action == "add_consumer":
        queue = _name(body.get("queue"), "queue", QUEUE_NAME_MAX)
        return action, {"queue": queue, "exchange": None, "exchange_type": "direct", "routing_key": None}
    if action == "cancel_consumer":
        return action, {"queue": _name(body.get("queue"), "queue", QUEUE_NAME_MAX)}
    if action == "pool_restart":
        return action, {"modules": None, "reload": False, "reloader": None}
    return action, {}


def _seconds(value: Any, label: str) -> int | float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidRequest(f"{label} must be a number of seconds or null")
    if not 0 < value <= TIME_LIMIT_MAX:
        raise InvalidRequest(f"{label} must be more than 0 and at most {int(TIME_LIMIT_MAX)} seconds (1 day)")
    return int(value) if float(value).is_integer() else float(value)  # "time_limit=10", not "10.0"


def task_type_command(body: dict[str, Any]) -> tuple[str, dict[str, Any], list[str] | None]:
    """Validate a task-type action body: (action, the command's arguments, destination or None for all)."""
    action = body.get("action")
    if action not in TASK_TYPE_ACTIONS:
        raise InvalidRequest(f"action must be one of: {', '.join(TASK_TYPE_ACTIONS)}")
    task = _name(body.get("task"), "task", TASK_NAME_MAX)
    workers = body.get("workers")
    if workers is not None:
        if not isinstance(workers, list) or not workers or len(workers) > WORKERS_MAX:
            raise InvalidRequest(f"workers must be a non-empty list of hostnames (at most {WORKERS_MAX}) or left out")
        workers = sorted({_name(w, "each worker", HOSTNAME_MAX) for w in workers})
    if action == "rate_limit":
        rate = body.get("rate")
        if isinstance(rate, (int, float)) and not isinstance(rate, bool) and math.isfinite(rate) and rate >= 0:
            rate = f"{rate:g}"
        if not isinstance(rate, str) or not RATE_PATTERN.match(rate.strip()):
            raise InvalidRequest(
                'rate must be like "10/m", "100/s" or "5/h" (tasks per second, minute or hour), or "0" for no limit'
            )
        return action, {"task_name": task, "rate_limit": rate.strip()}, workers
    soft = _seconds(body.get("soft"), "soft")
    hard = _seconds(body.get("hard"), "hard")
    if soft is not None and hard is not None and soft > hard:
        raise InvalidRequest("the soft time limit must not be longer than the hard one")
    return action, {"task_name": task, "soft": soft, "hard": hard}, workers


def revoke_options(body: dict[str, Any]) -> tuple[bool, str]:
    """Validate a revoke body: (terminate, signal name)."""
    terminate = body.get("terminate", False)
    if not isinstance(terminate, bool):
        raise InvalidRequest("terminate must be true or false")
    signal = body.get("signal") or "SIGTERM"
    if signal not in SIGNALS:
        raise InvalidRequest(f"signal must be one of: {', '.join(SIGNALS)}")
    return terminate, signal


@contextmanager
def broker_connection(app: Any, timeout: float) -> Iterator[Any]:
    """A fresh connection, connected with one attempt (kombu would otherwise retry for seconds)."""
    conn = app.connection_for_write(connect_timeout=timeout)
    try:
        try:
            conn.ensure_connection(max_retries=0, timeout=timeout)
        except Exception as exc:  # whatever the transport raises means "unreachable"
            # Scrubbed: kombu's parse error for a malformed URL quotes part of its password.
            raise BrokerUnavailable(f"the broker is unreachable: {scrub(str(exc), app.conf.broker_url)}") from exc
        yield conn
    finally:
        conn.release()


def broker_errors(conn: Any) -> tuple[type[BaseException], ...]:
    """The exceptions that mean the broker went away during a call."""
    from kombu.exceptions import OperationalError

    return (OperationalError, OSError, *conn.connection_errors, *conn.channel_errors)


def broadcast(
    app: Any,
    command: str,
    arguments: dict[str, Any],
    destination: list[str] | None,
    timeout: float,
    limit: int | None = None,
    reply: bool = True,
) -> dict[str, Any]:
    """Send a control command; returns {hostname: reply} (BrokerUnavailable if the broker fails).

    It waits up to `timeout` for replies: off the gevent hub (a request must not stall every socket)."""
    return offload(_broadcast, app, command, arguments, destination, timeout, limit, reply)


def _broadcast(
    app: Any,
    command: str,
    arguments: dict[str, Any],
    destination: list[str] | None,
    timeout: float,
    limit: int | None,
    reply: bool,
) -> dict[str, Any]:
    with broker_connection(app, timeout) as conn:
        try:
            answers = app.control.broadcast(
                command,
                arguments=arguments,
                destination=destination,
                reply=reply,
                timeout=timeout,
                limit=limit,
                connection=conn,
            )
        except broker_errors(conn) as exc:
            raise BrokerUnavailable(f"the broker failed during {command}: {exc}") from exc
    replies: dict[str, Any] = {}
    for answer in answers or ():
        if isinstance(answer, dict):
            replies.update(answer)
    return replies


def _errors(replies: dict[str, Any]) -> list[str]:
    return [
        f"{host}: {reply['error']}"
        for host, reply in sorted(replies.items())
        if isinstance(reply, dict) and "error" in reply
    ]


def _judge(replies: dict[str, Any], expected: list[str] | None, done: str) -> Outcome:
    # Expected hostnames must all answer; without a list (a broadcast) at least one must.
    errors = _errors(replies)
    missing = [h for h in expected or () if h not in replies]
    if errors:
        return Outcome(False, replies, "; ".join(errors))
    if missing:
        return Outcome(False, replies, f"no reply from {', '.join(missing)}")
    if not replies:
        return Outcome(False, replies, "no worker replied")
    oks = sorted({str(r.get("ok")) for r in replies.values() if isinstance(r, dict) and r.get("ok")})
    return Outcome(True, replies, f"{done}: {'; '.join(oks)}" if oks else done)


def control_worker(app: Any, hostname: str, action: str, arguments: dict[str, Any], timeout: float) -> Outcome:
    """Run a validated worker action on one worker and judge its reply."""
    if action == "shutdown":
        # Celery's shutdown raises in the worker before it could reply: waiting would only time out.
        broadcast(app, "shutdown", {}, [hostname], timeout, reply=False)
        return Outcome(
            True,
            {},
            f"shutdown sent to {hostname}: it stops once its running tasks finish (workers do not reply to shutdown)",
        )
    replies = broadcast(app, action, arguments, [hostname], timeout)
    return _judge(replies, [hostname], f"{action} on {hostname}")


def control_task_type(
    app: Any, action: str, arguments: dict[str, Any], workers: list[str] | None, timeout: float, online: int
) -> Outcome:
    """Set a rate or time limit on the given workers (all when None; `online` bounds the wait)."""
    limit = len(workers) if workers else (online or None)
    replies = broadcast(app, action, arguments, workers, timeout, limit=limit)
    return _judge(replies, workers, f"{action} for {arguments['task_name']}")


def revoke(app: Any, uuids: list[str], terminate: bool, signal: str, timeout: float, online: int) -> Outcome:
    """Revoke (and maybe terminate) tasks by id in one broadcast; replies from up to `online` workers."""
    arguments = {"task_id": uuids, "terminate": terminate, "signal": signal}
    replies = broadcast(app, "revoke", arguments, None, timeout, limit=online or None, reply=online > 0)
    errors = _errors(replies)
    what = f"{len(uuids)} task(s)" if len(uuids) != 1 else uuids[0]
    verb = f"terminate with {signal}" if terminate else "revoke"
    if errors:
        return Outcome(False, replies, "; ".join(errors))
    heard = f"{len(replies)} worker(s) acknowledged" if replies else "no worker acknowledged yet"
    return Outcome(True, replies, f"{verb} of {what} sent: {heard}")


def send_again(
    app: Any,
    name: str,
    args: list[Any],
    kwargs: dict[str, Any],
    queue: str | None,
    exchange: str | None = None,
    routing_key: str | None = None,
) -> str:
    """Send a task by name with the given args/kwargs to its original queue; returns the new id."""
    from kombu.exceptions import OperationalError

    options: dict[str, Any] = {}
    if queue:
        options["queue"] = queue
    elif routing_key:
        options.update(exchange=exchange or "", routing_key=routing_key)
    try:
        # Broker I/O (LAUNCH_TIMEOUT when the broker is gone): off the gevent hub.
        return offload(lambda: app.send_task(name, args=args, kwargs=kwargs, **options).id)
    except (OperationalError, OSError) as exc:
        raise BrokerUnavailable(f"the broker is unreachable: {exc}") from exc
