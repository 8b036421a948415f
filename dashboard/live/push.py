"""Live push over websockets: snapshots on subscribe, then one batched diff per room per tick.

Ingest only marks tasks and workers as changed; this loop turns the changes into at most one
message per room every PUSH_INTERVAL, so ten events for one task within a tick become one
update, and nothing is built for rooms nobody watches. Emitting queues per client in
python-socketio, so a slow browser delays only itself.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from flask import request
from flask_socketio import ConnectionRefusedError, SocketIO, join_room, leave_room

from ..core.query import Filters, TextIndex, find, matcher, parse_filters, workflow_root, workflow_tree
from ..core.state import STATES, State, task_detail, task_summary, worker_summary
from ..ingest.stream import Ingest
from .socketio_internals import backlog as queued
from .socketio_internals import close_session, sessions

log = logging.getLogger(__name__)

MAX_TASKS_PER_TICK = 200  # rows a task-list room gets per tick; more changes mean a busy list anyway
MAX_TASKS_BUSY = 100  # during a flood: the newest 100 changed rows, what a list's first page shows
# Past this many events a second, rooms get one update a second instead of one a tick: nobody reads a
# list that changes five times a second, and a thousand viewers then cost a fifth of the socket
# writes while a flood is being ingested (they share the hub with it).
BUSY_EVENTS_PER_SECOND = 10_000
BUSY_INTERVAL = 2.0
FAILURES_SHOWN = 10
THROUGHPUT_SHOWN = 300  # seconds of the overview chart
MAX_LIMIT = 500
# Updates queued for one client past which it is skipped until it catches up (then it resyncs):
# at one diff per room and tick, 50 is 10 s of updates a tab has not taken.
BACKLOG_MAX = 50
# An engine.io session must connect the dashboard's namespace this soon after its handshake (a page
# does so within one round trip); one that never does only holds a socket, and is closed.
NAMESPACE_DEADLINE = 3.0
FAILURE_GROUPS_SHOWN = 100


def tasks_room(f: Filters) -> str:
    """The room of one task-list filter (browsers with the same filter share it)."""
    return "tasks" + json.dumps(dataclasses.astuple(f))  # every field: rooms never share a stream wrongly


class Push:
    """Subscriptions, snapshots and the tick loop."""

    def __init__(self, socketio: SocketIO, state: State, ingest: Ingest | None, interval: float,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.socketio = socketio
        self.sleep = sleep  # the tick runs where the sockets are: on the gevent hub it must yield
        self.state = state
        self.ingest = ingest
        self.interval = interval
        self.rooms: Counter[str] = Counter()  # room -> subscribers
        self.filters: dict[str, Filters] = {}  # tasks room -> its filters
        self.text_index = TextIndex()  # shared by every free-text query (API and rooms)
        self.subs: dict[str, str] = {}  # sid -> its room
        self._subs_lock = threading.Lock()
        self._last_status: dict[str, Any] | None = None
        self._last_failures: list[str] = []
        self._totals_cache: dict[str, tuple[float, int]] = {}
        self._stop = threading.Event()
        self.lagging: set[str] = set()  # sids skipped because they are too far behind
        self._skip: list[str] = []
        self._lagging_at = 0.0
        self.tick_no = 0  # ticks so far; diffs and snapshots carry it (see on_subscribe)
        self.skipped = 0  # times a client started lagging
        self._aggregates_at = 0.0
        self._unconnected: dict[str, float] = {}  # engine.io sessions without the namespace -> first seen
        self._swept_at = 0.0
        self.idle_closed = 0  # sessions closed for never connecting the namespace
        self.busy = False  # a flood is being ingested (see BUSY_EVENTS_PER_SECOND)
        self.tick_seconds: deque[float] = deque(maxlen=100)  # how long the latest ticks took (build + emit)
        self._aggregates_version = (-1, -1)
        # Set by control_api.init_app: the inspect cache (pool, uptime) and when offline workers hide.
        self.inspector: Any = None
        self.hide_offline_after = 0.0
        self._hidden: set[str] = set()  # workers left out of the workers room for being offline long
        self._hidden_at = 0.0

    # -- socket handlers -------------------------------------------------------------------------
    def register(self) -> None:
        """Bind the Socket.IO handlers of this push to the module-level socketio."""
        self.socketio.on_event("connect", self.on_connect)
        self.socketio.on_event("subscribe", self.on_subscribe)
        self.socketio.on_event("disconnect", self.on_disconnect)

    def on_subscribe(self, payload: Any) -> dict[str, Any]:
        """Join the room of the requested view and return its snapshot (the ack)."""
        if not isinstance(payload, dict):
            return {"error": "subscribe expects an object like {\"view\": \"overview\"}"}
        view = payload.get("view")
        sid = request.sid  # type: ignore[attr-defined]  # Flask-SocketIO sets it on its handlers' request
        if view == "overview":
            room, snapshot = "overview", self.overview_snapshot
        elif view == "workers":
            room, snapshot = "workers", self.workers_snapshot
        elif view == "failures":
            room, snapshot = "failures", self.failures_snapshot
        elif view == "stats":
            room, snapshot = "stats", self.stats_snapshot
        elif view == "task" and isinstance(payload.get("uuid"), str):
            uuid = payload["uuid"]
            room, snapshot = f"task:{uuid}", lambda: self.task_snapshot(uuid)
        elif view == "tasks":
            filters, error = parse_filters(payload)
            if filters is None:
                return {"error": error}
            limit = payload.get("limit", 100)
            limit = limit if isinstance(limit, int) and 0 < limit <= MAX_LIMIT else 100
            room = tasks_room(filters)
            snapshot = lambda: self.tasks_snapshot(filters, limit)  # noqa: E731 - as the other views bind theirs
        else:
            return {"error": f"unknown view {view!r}"}
        self._move(sid, room)
        if view == "tasks" and filters is not None:  # (never None here: the tasks branch returned then)
            with self._subs_lock:
                self.filters[room] = filters
        join_room(room)
        # The snapshot carries the number of the last tick it includes: a diff of that tick or an earlier
        # one may still reach the client after it (emitted after the join), and the client drops those.
        with self.state.lock:
            data = snapshot()
            data["tick"] = self.tick_no
        data["status"] = self.status()
        return data

    def on_connect(self, auth: Any = None) -> None:
        """Refuse a websocket that is not authenticated when auth is on."""
        from ..web.security import socket_allowed

        if not socket_allowed(auth):
            raise ConnectionRefusedError("authentication required")  # flask_socketio's: the client sees why

    def on_disconnect(self, *args: Any) -> None:
        """Forget the subscription of a closed socket."""
        self._move(request.sid, None)  # type: ignore[attr-defined]  # (set by Flask-SocketIO)

    def _move(self, sid: str, room: str | None) -> None:
        with self._subs_lock:
            if room is not None and self.subs.get(sid) == room:
                return  # a resubscribe (resync): leaving would drop the room's filter and count
            old = self.subs.pop(sid, None)
            if old is not None:
                self.rooms[old] -= 1
                if self.rooms[old] <= 0:
                    del self.rooms[old]
                    self.filters.pop(old, None)
                    self._totals_cache.pop(old, None)
                if room is not None:
                    leave_room(old)
            if room is not None:
                self.subs[sid] = room
                self.rooms[room] += 1

    # -- snapshots (shared by the socket and the JSON API) -----------------------------------------
    def status(self) -> dict[str, Any]:
        """Broker connection and event counters, as the banner and /healthz show them."""
        ingest = self.ingest
        broker = ingest.status() if ingest else {"connected": False, "error": "ingest disabled"}
        return {
            "broker": broker,
            "events": {
                "received": ingest.received if ingest else 0,
                "rejected": ingest.rejected if ingest else 0,
            },
        }

    def overview_snapshot(self) -> dict[str, Any]:
        """Counters, workers, throughput and latest failures."""
        now = time.time()
        with self.state.lock:
            data = self._overview_common(now)
            data["throughput"] = list(self.state.throughput)[-THROUGHPUT_SHOWN:]
            data["failures"] = self._failures()
        return data

    def _overview_common(self, now: float) -> dict[str, Any]:
        st = self.state
        online = st.workers_online(now)
        return {
            "counts": {s: n for s, n in st.counts.items() if n or s in STATES},
            "workers": {"online": online, "offline": len(st.workers) - online, "total": len(st.workers)},
            "totals": {"retained": len(st.tasks), "events": st.event_count, "evicted": st.evicted},
        }

    def _failures(self) -> list[dict[str, Any]]:
        out, seen = [], set()
        tasks = self.state.tasks
        for uuid in reversed(self.state.failures):
            rec = tasks.get(uuid)
            if rec is None or uuid in seen or rec.state != "FAILURE":
                continue
            seen.add(uuid)
            out.append(task_summary(rec))
            if len(out) >= FAILURES_SHOWN:
                break
        return out

    def tasks_snapshot(self, f: Filters, limit: int, offset: int = 0, sort: str | None = None,
                       ascending: bool = False, before: int | None = None) -> dict[str, Any]:
        """One page of the task list for a filter; `next_cursor` pages on in the default order."""
        with self.state.lock:
            total, page = find(self.state, f, limit=limit, offset=offset, text_index=self.text_index,
                               sort=sort, ascending=ascending, before=before)
            rows = [task_summary(r) for r in page]
            more = sort is None and len(page) == limit and page[-1].seq > self.state.first_seq()
            return {"total": total, "tasks": rows, "next_cursor": str(page[-1].seq) if more else None}

    def _task_payload(self, rec: Any) -> dict[str, Any]:
        return {"task": task_detail(rec, self.state.children_of(rec.uuid)),
                "tree": workflow_tree(self.state, rec.uuid)}

    def task_snapshot(self, uuid: str) -> dict[str, Any]:
        """One task in full, or None when it has not been seen."""
        with self.state.lock:
            rec = self.state.tasks.get(uuid)
            return self._task_payload(rec) if rec is not None else {"task": None, "tree": None}

    def failures_snapshot(self, sort: str = "last_seen", limit: int = FAILURE_GROUPS_SHOWN) -> dict[str, Any]:
        """Failure groups and the outcome counters (failed, retried, recovered, gave up)."""
        now = time.time()
        with self.state.lock:
            return {"groups": self.state.failure_groups.groups(sort=sort, limit=limit, now=now),
                    "outcomes": dict(self.state.outcomes), "now": now}

    def stats_snapshot(self, windows: tuple[str, ...] = ("all", "recent")) -> dict[str, Any]:
        """Per-task-name statistics for the given windows (the page shows both, the API asks for one:
        a table is built under the lock and costs milliseconds per hundred task names)."""
        now = time.time()
        with self.state.lock:
            stats = self.state.stats
            data: dict[str, Any] = {w: stats.table(now=now, window=w) for w in windows}
            data.update(window_seconds=stats.window_seconds, now=now)
            return data

    def worker_row(self, worker: Any, now: float) -> dict[str, Any]:
        """A worker's summary plus pool, uptime and inspect_at from the inspect cache."""
        row = worker_summary(worker, now)
        if self.inspector is not None:
            row.update(self.inspector.summary(worker.hostname, row["online"], now))
        else:
            row.update(pool=None, uptime=None, inspect_at=None)
        return row

    def _is_hidden(self, worker: Any, now: float) -> bool:
        return worker.long_gone(now, self.hide_offline_after)

    def workers_snapshot(self) -> dict[str, Any]:
        """Every known worker except those offline longer than HIDE_OFFLINE_AFTER (counted instead)."""
        now = time.time()
        with self.state.lock:
            workers = sorted(self.state.workers.values(), key=lambda w: w.hostname)
            shown = [w for w in workers if not self._is_hidden(w, now)]
            return {"workers": [self.worker_row(w, now) for w in shown], "hidden_offline": len(workers) - len(shown)}

    def _workers_diff(self, changed: set[str], now: float) -> dict[str, Any] | None:
        # Hiding depends on time, not on events: re-check every worker once a second (cheap: ≤ MAX_WORKERS).
        st = self.state
        hidden = self._hidden
        newly_hidden: set[str] = set()
        unhidden: set[str] = set()
        if now - self._hidden_at >= 1.0 or changed:
            self._hidden_at = now
            current = {h for h, w in st.workers.items() if self._is_hidden(w, now)}
            newly_hidden, unhidden = current - hidden, (hidden - current) & set(st.workers)
            self._hidden = hidden = current
        show = (changed | unhidden) - hidden
        rows = [self.worker_row(w, now) for w in map(st.workers.get, sorted(show)) if w is not None]
        gone = sorted({h for h in changed if h not in st.workers} | newly_hidden)
        if not (rows or gone):
            return None
        return {"workers": rows, "removed": gone, "hidden_offline": len(hidden)}

    # -- the tick --------------------------------------------------------------------------------
    def run(self) -> None:
        """Push diffs every interval (longer during a flood) until stop(); a bad tick never ends the loop."""
        events, at = self.state.event_count, time.monotonic()
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.tick()
                self.tick_seconds.append(time.monotonic() - started)
                self.close_idle_sessions(started)
            except Exception:  # a bad tick must not silence the dashboard
                log.exception("push tick failed")
            rate = (self.state.event_count - events) / max(started - at, 1e-3)
            events, at = self.state.event_count, started
            self.busy = rate >= BUSY_EVENTS_PER_SECOND
            interval = BUSY_INTERVAL if self.busy else self.interval
            self.sleep(max(0.0, interval - (time.monotonic() - started)))

    def tick_cost(self) -> dict[str, float | None]:
        """Milliseconds of the latest tick and the median and most of the last hundred (for /healthz)."""
        ticks = sorted(self.tick_seconds)
        if not ticks:
            return {"last_ms": None, "median_ms": None, "max_ms": None}
        return {"last_ms": round(self.tick_seconds[-1] * 1000, 2), "median_ms": round(ticks[len(ticks) // 2] * 1000, 2),
                "max_ms": round(ticks[-1] * 1000, 2)}

    def close_idle_sessions(self, now: float) -> None:
        """Close engine.io sessions that have not connected the namespace within NAMESPACE_DEADLINE."""
        if now - self._swept_at < 1.0:
            return
        self._swept_at = now
        server = self.socketio.server
        seen: dict[str, float] = {}
        for eio_sid, connected in sessions(server):
            if connected:
                continue
            first = seen[eio_sid] = self._unconnected.get(eio_sid, now)
            if now - first >= NAMESPACE_DEADLINE:
                del seen[eio_sid]
                self.idle_closed += 1
                close_session(server, eio_sid)
        self._unconnected = seen

    def stop(self) -> None:
        """End the loop after the current tick."""
        self._stop.set()

    def tick(self) -> None:
        """Build and emit one diff per watched room from what changed since the last tick."""
        now = time.time()
        with self._subs_lock:
            rooms = dict(self.rooms)
            filters = dict(self.filters)
        out: list[tuple[str, dict[str, Any], str]] = []
        st = self.state
        with st.lock:
            changed_tasks, changed_workers = st.drain_changes(now)
            self.tick_no += 1
            tick_no = self.tick_no
            if rooms.get("overview") and (changed_tasks or changed_workers or self._chart_due(now)):
                out.append(("overview", self._overview_diff(now, changed_tasks), "overview"))
            if changed_tasks:
                recs = [r for r in map(st.tasks.get, changed_tasks) if r is not None]
                recs.sort(key=lambda r: r.seq, reverse=True)
                for room, f in filters.items():
                    if rooms.get(room):
                        out.append(("tasks", self._tasks_diff(room, recs, f, now), room))
                task_rooms = [room for room in rooms if room.startswith("task:")]
                # A task page shows its whole workflow: it changes when any task of that workflow does.
                roots = {workflow_root(st, r) for r in recs} if task_rooms else set()
                for room in task_rooms:
                    rec = st.tasks.get(room[5:])
                    if rec is not None and (rec.uuid in changed_tasks or workflow_root(st, rec) in roots):
                        out.append(("task", self._task_payload(rec), room))
            if rooms.get("workers"):
                diff = self._workers_diff(changed_workers, now)
                if diff is not None:
                    out.append(("workers", diff, "workers"))
        # Aggregates change with every event: at most once a second, and only when something happened.
        if (rooms.get("failures") or rooms.get("stats")) and now - self._aggregates_at >= 1.0:
            version = (st.outcomes["FAILURE"] + st.outcomes["RETRY"], st.task_event_count)
            if rooms.get("failures") and version[0] != self._aggregates_version[0]:
                out.append(("failures", self.failures_snapshot(), "failures"))
            if rooms.get("stats") and version[1] != self._aggregates_version[1]:
                out.append(("stats", self.stats_snapshot(), "stats"))
            self._aggregates_at, self._aggregates_version = now, version
        # Every tab shows the broker's status: sent to all when it changes, not for every event counted.
        status = self.status()
        if status["broker"] != self._last_status:
            self._last_status = status["broker"]
            out.append(("status", status, ""))
        # Whether a client lags is read from its send queue, a walk over every viewer: once a second is
        # enough (a client is skipped past 50 queued updates, ten seconds of them).
        if out and now - self._lagging_at >= 1.0:
            self._lagging_at = now
            self._skip = self._lagging()
        skip = self._skip
        for event, data, room in out:
            if event != "status":
                data["tick"] = tick_no  # the client drops diffs its snapshot already includes
            if room:
                self.socketio.emit(event, data, to=room, skip_sid=skip)
            else:
                self.socketio.emit(event, data, skip_sid=skip)

    def _lagging(self) -> list[str]:
        """Clients too far behind to send to (their queue is only growing), and resync those caught up.

        A throttled or frozen tab must cost the others nothing: its socket's writer blocks on its own, and
        the updates queued for it are capped here instead of growing for as long as it stays stuck."""
        server = self.socketio.server
        with self._subs_lock:
            sids = list(self.subs)
        lagging, caught_up = set(), []
        for sid in sids:
            try:
                backlog = queued(server, sid)
            except Exception:  # noqa: BLE001 - a socket closing meanwhile
                continue
            if backlog > BACKLOG_MAX or (sid in self.lagging and backlog > BACKLOG_MAX // 4):
                lagging.add(sid)
            elif sid in self.lagging:
                caught_up.append(sid)
        if lagging - self.lagging:
            self.skipped += len(lagging - self.lagging)
            log.info("%d client(s) too far behind: their updates are held until they catch up",
                     len(lagging - self.lagging))
        self.lagging = lagging
        for sid in caught_up:
            self.socketio.emit("resync", {}, to=sid)  # it missed diffs: it asks for a fresh snapshot
        return list(lagging)

    _chart_second = 0.0

    def _chart_due(self, now: float) -> bool:
        # The chart's time axis moves every second even when nothing happens.
        second = float(int(now))
        if second != self._chart_second:
            self._chart_second = second
            return True
        return False

    def _overview_diff(self, now: float, changed: set[str]) -> dict[str, Any]:
        data = self._overview_common(now)
        data["throughput"] = list(self.state.throughput)[-2:]  # the current and the last second
        latest = list(reversed(self.state.failures))[:FAILURES_SHOWN]
        if latest != self._last_failures or any(u in changed for u in latest):
            self._last_failures = latest
            data["failures"] = self._failures()
        return data

    def _tasks_diff(self, room: str, recs: list[Any], f: Filters, now: float) -> dict[str, Any]:
        shown: list[dict[str, Any]] = []
        removed: list[str] = []
        most = MAX_TASKS_BUSY if self.busy else MAX_TASKS_PER_TICK
        filtered = f.any()
        test = matcher(f, self.state)
        for rec in recs:
            if not filtered or test(rec):
                if len(shown) < most:
                    shown.append(task_summary(rec))
            elif filtered:
                removed.append(rec.uuid)
        total = self._total(room, f, now, fresh=bool(shown or removed))
        return {"total": total, "tasks": shown, "removed": removed[:MAX_TASKS_PER_TICK * 5]}

    def _total(self, room: str, f: Filters, now: float, fresh: bool) -> int:
        st = self.state
        if not f.any():
            return len(st.tasks)
        if f.state is not None and f == Filters(state=f.state):  # (f.any(): a lone state filter is not None)
            return len(st.by_state.get(f.state, ()))
        # Other filters cost a set intersection or a text search: only when the room's rows changed
        # (a total that disagrees with the rows shown is worse than a little work), else once a second.
        cached = self._totals_cache.get(room)
        if fresh or cached is None or now - cached[0] >= 1.0:
            cached = (now, find(st, f, limit=0, text_index=self.text_index)[0])
            self._totals_cache[room] = cached
        return cached[1]
