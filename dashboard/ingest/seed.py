"""At start (with or without a snapshot): ask the workers what they are running, reserving and scheduling,
so tasks in flight show up at once instead of only when their next event comes (which may be their last)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from celery.utils.saferepr import saferepr

from ..core.state import State

log = logging.getLogger(__name__)

ARGSREPR_MAXSIZE = 1024  # what Celery's client uses for task events' argsrepr / kwargsrepr


def _events(
    hostname: str, request: Any, subjects: tuple[str, ...], now: float, eta: Any = None
) -> list[dict[str, Any]]:
    """Task events equivalent to one request of an inspect reply (worker Request.info())."""
    if not isinstance(request, dict) or not isinstance(request.get("id"), str):
        return []
    args, kwargs = request.get("args"), request.get("kwargs")
    info = request.get("delivery_info")
    delivery = info if isinstance(info, dict) else {}
    started = request.get("time_start")
    ts = started if isinstance(started, (int, float)) and not isinstance(started, bool) else now
    base = {
        "uuid": request["id"],
        "name": request.get("name"),
        "hostname": hostname,
        "timestamp": ts,
        "local_received": now,
        "utcoffset": None,
        # Events carry reprs: the same text as if the worker had sent them (masked by the state as usual).
        "args": saferepr(tuple(args), ARGSREPR_MAXSIZE) if isinstance(args, list) else args,
        "kwargs": saferepr(kwargs, ARGSREPR_MAXSIZE) if isinstance(kwargs, dict) else kwargs,
        "routing_key": delivery.get("routing_key"),
        "exchange": delivery.get("exchange"),
    }
    if eta is not None:
        base["eta"] = eta
    return [dict(base, type=f"task-{subject}") for subject in subjects]


def events_from_inspect(active: Any, reserved: Any, scheduled: Any, now: float) -> list[dict[str, Any]]:
    """Task events for every request in the replies ({hostname: [request, ...]} per method)."""
    out: list[dict[str, Any]] = []
    for replies, subjects in ((reserved, ("received",)), (active, ("received", "started"))):
        for hostname, requests in (replies or {}).items():
            for request in requests if isinstance(requests, list) else ():
                out += _events(hostname, request, subjects, now)
    for hostname, entries in (scheduled or {}).items():
        for entry in entries if isinstance(entries, list) else ():
            if isinstance(entry, dict):
                out += _events(hostname, entry.get("request"), ("received",), now, entry.get("eta"))
    return out


def seed_in_flight(app: Any, state: State, timeout: float, connected: Callable[[], bool], wait: float = 30.0) -> int:
    """Once the event stream is up, feed the state what workers report in flight; returns tasks added."""
    deadline = time.monotonic() + wait
    while not connected():
        if time.monotonic() > deadline:
            log.info("broker not reachable: not asking workers for tasks in flight")
            return 0
        time.sleep(0.2)
    try:
        inspect = app.control.inspect(timeout=timeout)
        active, reserved, scheduled = inspect.active(), inspect.reserved(), inspect.scheduled()
    except Exception as exc:  # noqa: BLE001 - a courtesy at start: the events will tell the rest
        log.info("could not ask workers for tasks in flight: %s", exc)
        return 0
    events = events_from_inspect(active, reserved, scheduled, time.time())
    with state.lock:
        # One hold of the lock: an event arriving between the check and the feed is not counted twice.
        new = [e for e in events if e["uuid"] not in state.tasks]  # events already told us about the rest
        before = len(state.tasks)
        state.events(new)
        added = len(state.tasks) - before
    log.info("workers report %d task(s) in flight: %d new to the dashboard", len({e["uuid"] for e in events}), added)
    return added
