"""Cached `inspect` replies per worker, fetched in the background: requests never wait for workers.

A loop asks the online workers for `stats`, `active_queues` and `registered` every INSPECT_INTERVAL (the
workers list shows the pool from `stats`; the queues page lists consumers from `active_queues`; the launch
form offers and checks task names from `registered`); the worker
page asks for all eight methods of one worker on demand. Each method is one broadcast to the workers
concerned with `limit` = their number, so a round ends as soon as everyone answered, and the methods
run in threads side by side, so a dead worker costs one INSPECT_TIMEOUT, not eight. A worker that
does not answer keeps its last reply (with its age) and is shown as "no reply".
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from celery.utils.saferepr import saferepr

from ..core.state import State
from .control import broker_connection, broker_errors
from .errors import BrokerUnavailable

log = logging.getLogger(__name__)

METHODS = ("stats", "active", "reserved", "scheduled", "revoked", "registered", "active_queues", "conf")
# Cheap, and what the workers list, the queues page and the launch form (registered task names) need.
LIST_METHODS = ("stats", "active_queues", "registered")
# Task attributes `registered` lists next to each name: shows limits set from the dashboard.
_METHOD_ARGS: dict[str, tuple[Any, ...]] = {"registered": ("rate_limit", "time_limit", "soft_time_limit")}
HOT_SECONDS = 8.0  # after a pool action the worker's stats are refreshed every second this long
UNCLAIMED_MAX = 100  # late replies kombu keeps for tickets nobody waits for any more


@dataclass
class Entry:
    """One method's last answer from one worker."""

    reply: Any = None
    fetched_at: float | None = None
    error: str | None = None
    status: str = "pending"  # ok | no reply | pending (never fetched) | error

    def as_dict(self) -> dict[str, Any]:
        """The API shape."""
        return {"reply": self.reply, "fetched_at": self.fetched_at, "error": self.error, "status": self.status}


def pool_summary(stats: Any) -> dict[str, Any] | None:
    """Pool implementation, size and autoscaler from a `stats` reply."""
    pool = stats.get("pool") if isinstance(stats, dict) else None
    if not isinstance(pool, dict):
        return None
    impl = pool.get("implementation")
    if isinstance(impl, str):
        # "celery.concurrency.prefork:TaskPool" -> "prefork"
        impl = impl.split(":", 1)[0].rsplit(".", 1)[-1]
    processes = pool.get("processes")
    concurrency = pool.get("max-concurrency")
    scaler = stats.get("autoscaler")
    return {
        "implementation": impl if isinstance(impl, str) else None,
        "max_concurrency": concurrency if isinstance(concurrency, int) else None,
        "processes": len(processes) if isinstance(processes, list) else None,
        "autoscaler": (
            {"max": scaler.get("max"), "min": scaler.get("min")} if isinstance(scaler, dict) and scaler else None
        ),
    }


_SECRET_KEYS = ("password", "passwd", "secret", "token", "credential", "api_key", "apikey")


def _redact(value: Any, depth: int = 0) -> Any:
    """`value` with the values of secret-looking keys replaced, at any depth (stats: broker and transport
    options such as sentinel passwords)."""
    if depth > 8:
        return value
    if isinstance(value, dict):
        return {
            k: "********"
            if isinstance(k, str) and any(s in k.lower() for s in _SECRET_KEYS) and v
            else _redact(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_redact(v, depth + 1) for v in value]
    return value


def _request_text(request: Any, mask: Callable[[str], str] | None) -> Any:
    # Inspect replies carry a request's real args and kwargs (not the event's repr): show them as the
    # events do, a repr through the same secret masking.
    if not isinstance(request, dict):
        return request
    out = dict(request)
    for key in ("args", "kwargs"):
        value = out.get(key)
        if value is not None and not isinstance(value, str):
            value = saferepr(tuple(value) if isinstance(value, list) and key == "args" else value, 1024)
        if isinstance(value, str) and mask is not None:
            value = mask(value)
        out[key] = value
    return out


def _sanitize(method: str, reply: Any, mask: Callable[[str], str] | None = None) -> Any:
    """A reply as the dashboard may show it: no passwords, task arguments masked like the events'."""
    if method == "stats":
        return _redact(reply)
    if method in ("active", "reserved") and isinstance(reply, list):
        return [_request_text(r, mask) for r in reply]
    if method == "scheduled" and isinstance(reply, list):
        return [dict(e, request=_request_text(e.get("request"), mask)) if isinstance(e, dict) else e for e in reply]
    return reply


class Inspector:
    """The cache, the background loop (`run` / `stop`) and on-demand refreshes."""

    def __init__(self, app: Any, state: State, interval: float, timeout: float) -> None:
        self.app = app
        self.state = state
        self.interval = interval
        self.timeout = timeout
        self.rounds = 0
        self._cache: dict[str, dict[str, Entry]] = {}
        self._inflight: set[tuple[str, str]] = set()  # (hostname, method) being fetched
        self._attempted: dict[str, float] = {}  # hostname -> monotonic time of its last list refresh
        self._hot_until: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()

    # -- the loop --------------------------------------------------------------------------------
    def run(self) -> None:
        """Refresh the online workers' list methods every interval until stop()."""
        tick = min(1.0, self.interval) if self.interval > 0 else 1.0
        while not self._stop.is_set():
            try:
                due = self._due(time.monotonic())
                if due:
                    self.refresh(due, LIST_METHODS)
                    self.rounds += 1
                self._tidy()
            except Exception:  # one bad round must not end the loop
                log.exception("inspect round failed")
            self._wake.wait(tick)
            self._wake.clear()

    def stop(self) -> None:
        """End the loop (fetches in flight end by themselves within the timeout)."""
        self._stop.set()
        self._wake.set()

    def _due(self, mono: float) -> list[str]:
        now = time.time()
        with self.state.lock:
            online = [h for h, w in self.state.workers.items() if w.alive(now)]
        due = []
        with self._lock:
            for host in online:
                last = self._attempted.get(host)
                hot = self._hot_until.get(host, 0.0) > mono
                if last is None or (self.interval > 0 and mono - last >= self.interval) or (hot and mono - last >= 1.0):
                    due.append(host)
                    self._attempted[host] = mono
        return due

    def _tidy(self) -> None:
        # Forget workers the state no longer holds; drop late replies kombu would keep forever.
        with self.state.lock:
            known = set(self.state.workers)
        with self._lock:
            for host in [h for h in self._cache if h not in known]:
                del self._cache[host]
                self._attempted.pop(host, None)
                self._hot_until.pop(host, None)
        unclaimed = getattr(self.app.control.mailbox, "unclaimed", None)
        if unclaimed is not None and len(unclaimed) > UNCLAIMED_MAX:
            unclaimed.clear()

    # -- fetching --------------------------------------------------------------------------------
    def refresh(self, hostnames: Iterable[str], methods: Iterable[str] = METHODS) -> None:
        """Fetch `methods` from `hostnames`, one thread per method; returns when all are done."""
        hosts = list(dict.fromkeys(hostnames))
        plan: list[tuple[str, list[str]]] = []
        with self._lock:
            for method in methods:
                todo = [h for h in hosts if (h, method) not in self._inflight]  # already on its way
                if todo:
                    self._inflight.update((h, method) for h in todo)
                    plan.append((method, todo))
        threads = [
            threading.Thread(target=self._fetch, args=(m, hs), name=f"inspect-{m}", daemon=True) for m, hs in plan
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def request_refresh(self, hostname: str, methods: Iterable[str] = METHODS) -> None:
        """Start a background refresh of one worker (never blocks the caller)."""
        self.request_refresh_many([hostname], methods)

    def request_refresh_many(self, hostnames: list[str], methods: Iterable[str] = METHODS) -> None:
        """Start one background refresh of several workers (one broadcast per method)."""
        threading.Thread(
            target=self.refresh, args=(list(hostnames), tuple(methods)), name="inspect-refresh", daemon=True
        ).start()

    def watch(self, hostname: str, seconds: float = HOT_SECONDS) -> None:
        """Refresh this worker's stats every second for a while (a pool change takes seconds to show)."""
        with self._lock:
            self._hot_until[hostname] = time.monotonic() + seconds
        self.request_refresh(hostname, LIST_METHODS)

    def _fetch(self, method: str, hostnames: list[str]) -> None:
        replies: dict[str, Any] = {}
        error: str | None = None
        try:
            with broker_connection(self.app, self.timeout) as conn:
                inspect = self.app.control.inspect(
                    destination=hostnames, timeout=self.timeout, limit=len(hostnames), connection=conn
                )
                try:
                    replies = getattr(inspect, method)(*_METHOD_ARGS.get(method, ())) or {}
                except broker_errors(conn) as exc:
                    raise BrokerUnavailable(f"the broker failed during inspect {method}: {exc}") from exc
        except BrokerUnavailable as exc:
            error = str(exc)
        except Exception as exc:  # recorded on the entry; the loop goes on
            log.warning("inspect %s failed", method, exc_info=True)
            error = f"{type(exc).__name__}: {exc}"
        now = time.time()
        with self._lock:
            for host in hostnames:
                entry = self._cache.setdefault(host, {}).setdefault(method, Entry())
                reply = replies.get(host) if isinstance(replies, dict) else None
                if error is not None:
                    entry.status, entry.error = "error", error
                elif host not in replies:
                    entry.status, entry.error = "no reply", f"no reply within {self.timeout:g} s"
                elif isinstance(reply, dict) and set(reply) == {"error"}:
                    entry.status, entry.error = "error", str(reply["error"])
                else:
                    entry.reply, entry.fetched_at = _sanitize(method, reply, self.state.mask), now
                    entry.status, entry.error = "ok", None
                self._inflight.discard((host, method))
        if method == "stats" and error is None:
            with self.state.lock:  # push sends the workers' rows again, with the new pool size
                self.state.changed_workers.update(h for h in replies if h in self.state.workers)

    # -- readers (never touch the broker) -------------------------------------------------------------
    def worker(self, hostname: str) -> dict[str, dict[str, Any]]:
        """Every method's entry for one worker."""
        with self._lock:
            cached = self._cache.get(hostname, {})
            return {m: (cached.get(m) or Entry()).as_dict() for m in METHODS}

    def refreshing(self, hostname: str) -> bool:
        """Whether a fetch for this worker is in flight."""
        with self._lock:
            return any(h == hostname for h, _ in self._inflight)

    def replies(self, method: str) -> dict[str, Any]:
        """The last reply of `method` from each worker that ever answered it: {hostname: reply}."""
        with self._lock:
            return {
                h: methods[method].reply
                for h, methods in self._cache.items()
                if method in methods and methods[method].fetched_at is not None
            }

    def summary(self, hostname: str, online: bool, now: float) -> dict[str, Any]:
        """The workers-list additions from the cached stats: pool, uptime (now), inspect_at."""
        with self._lock:
            entry = self._cache.get(hostname, {}).get("stats")
            if entry is None or entry.fetched_at is None:
                return {"pool": None, "uptime": None, "inspect_at": None}
            stats, fetched_at = entry.reply, entry.fetched_at
        uptime = stats.get("uptime") if isinstance(stats, dict) else None
        if isinstance(uptime, (int, float)) and not isinstance(uptime, bool) and online:
            uptime = uptime + max(0.0, now - fetched_at)
        else:
            uptime = None
        return {"pool": pool_summary(stats), "uptime": uptime, "inspect_at": fetched_at}


__all__ = ["LIST_METHODS", "METHODS", "Entry", "Inspector", "pool_summary"]
