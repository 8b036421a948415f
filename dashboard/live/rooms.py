"""Live rooms: snapshots on subscribe, then batched diffs per room (the transport).

Ingest only marks tasks and workers as changed and wakes the push loop after each batch. A change
reaches a room at once when the room has been quiet for a PUSH_INTERVAL; after that the room gets at
most one update an interval (BUSY_INTERVAL during a flood), so ten events for one task within an
interval become one update, a flood costs one diff per room per interval, and nothing is built for
rooms nobody watches. A task page (room task:<uuid>) has its own budget (TASK_PAGE_BURST updates at
once, then one an interval): the flood of other tasks that keeps the lists busy does not delay it.
Emitting queues per client in python-socketio, so a slow browser delays only itself. What a room
shows comes from the read models (dashboard/live/readmodels.py); the Socket.IO handlers are
dashboard/live/namespace.py.
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

from flask_socketio import SocketIO

from ..concurrency import Wake
from ..core.query import Filters, find, matcher, parse_filters, workflow_root
from ..core.records import TaskRecord, task_summary
from .readmodels import FAILURES_SHOWN, MAX_LIMIT, ReadModels
from .socketio_internals import backlog as queued
from .socketio_internals import close_session, sessions

log = logging.getLogger(__name__)

MAX_TASKS_PER_TICK = 200  # rows a task-list room gets per tick; more changes mean a busy list anyway
MAX_TASKS_BUSY = 100  # during a flood: the newest 100 changed rows, what a list's first page shows
# Past this many events a second, rooms get one update every BUSY_INTERVAL instead of one a tick: nobody
# reads a list that changes five times a second, and a thousand viewers then cost a tenth of the socket
# writes while a flood is being ingested (they share the hub with it).
BUSY_EVENTS_PER_SECOND = 10_000
BUSY_INTERVAL = 2.0
# Updates queued for one client past which it is skipped until it catches up (then it resyncs):
# at one diff per room and tick, 50 is 10 s of updates a tab has not taken.
BACKLOG_MAX = 50
# An engine.io session must connect the dashboard's namespace this soon after its handshake (a page
# does so within one round trip); one that never does only holds a socket, and is closed.
NAMESPACE_DEADLINE = 3.0
# While task pages are watched, the changes are drained at most this often after a batch (so a task
# page follows within tens of milliseconds while other tasks arrive by thousands a second), and less
# often during a flood; without task pages a batch only matters to rooms that have been quiet.
DRAIN_GAP = 0.01
DRAIN_GAP_BUSY = 0.1
# A task page may get this many updates at once (a task starts, then ends a moment later) before it gets
# one an interval: its updates are budgeted as a bucket that refills one update per interval. A flood of
# one task's events still costs one diff an interval once the bucket is empty.
TASK_PAGE_BURST = 3.0
NEVER = float("-inf")
NAMESPACE = "/"


def tasks_room(f: Filters) -> str:
    """The room of one task-list filter (browsers with the same filter share it)."""
    return "tasks" + json.dumps(dataclasses.astuple(f))  # every field: rooms never share a stream wrongly


class Rooms:
    """Subscriptions, the tick loop and slow clients: one encoding per room per tick."""

    def __init__(
        self,
        socketio: SocketIO,
        views: ReadModels,
        interval: float,
        sleep: Callable[[float], None] = time.sleep,
        wake: Wake | None = None,
        at_once: bool = True,
    ) -> None:
        self.socketio = socketio
        self.views = views
        self.state = views.state
        self.sleep = sleep  # the tick runs where the sockets are: on the gevent hub it must yield
        self.interval = interval
        # Set after each applied batch (Ingest's after_batch). Waited on by the loop, so it must be the
        # runtime's own (concurrency.Runtime.event): a threading.Event would block the gevent hub.
        self.wake: Wake = wake if wake is not None else threading.Event()
        self.at_once = at_once  # False: the old fixed tick, every room every interval (PUSH_AT_ONCE)
        self.rooms: Counter[str] = Counter()  # room -> subscribers
        self.filters: dict[str, Filters] = {}  # tasks room -> its filters
        self.subs: dict[str, str] = {}  # sid -> its room
        self._subs_lock = threading.Lock()
        self._last_status: dict[str, Any] | None = None
        self._last_failures: list[str] = []
        self._totals_cache: dict[str, tuple[float, int]] = {}
        self._stop = threading.Event()
        self.lagging: set[str] = set()  # sids skipped because they are too far behind
        self._skip: list[str] = []
        self._lagging_at = 0.0
        self.tick_no = 0  # ticks so far; diffs and snapshots carry it (see subscribe)
        self.skipped = 0  # times a client started lagging
        self._aggregates_at = 0.0
        self._unconnected: dict[str, float] = {}  # engine.io sessions without the namespace -> first seen
        self._swept_at = 0.0
        self.idle_closed = 0  # sessions closed for never connecting the namespace
        self.busy = False  # a flood is being ingested (see BUSY_EVENTS_PER_SECOND)
        self.tick_seconds: deque[float] = deque(maxlen=100)  # how long the latest ticks took (build + emit)
        self._aggregates_version = (-1, -1)
        self._hidden: set[str] = set()  # workers left out of the workers room for being offline long
        self._hidden_at = 0.0
        self._chart_second = 0.0
        self.task_rooms = 0  # rooms of task pages (task:<uuid>) watched
        self._undrained = False  # woken: a batch was applied since the last drain
        self._drained_at = NEVER  # the clocks of the loop are time.monotonic()
        self._shared_at = NEVER  # the last tick of the shared rooms (overview, lists, workers...)
        self._pushed_at = NEVER  # the last tick of the shared rooms that had changes to show
        self._pending_tasks: set[str] = set()  # drained, not yet shown to the shared rooms
        self._pending_workers: set[str] = set()
        self._dirty: set[str] = set()  # task rooms with a change not yet sent
        self._budget: dict[str, tuple[float, float]] = {}  # task room -> (updates it may get, as of when)
        self._rate_at = NEVER  # the event rate (flood or not) is measured over at least an interval
        self._rate_events = 0

    # -- subscriptions ---------------------------------------------------------------------------
    def subscribe(self, sid: str, payload: Any) -> dict[str, Any]:
        """Move client `sid` into the room of the requested view; its snapshot is the answer (the ack)."""
        if not isinstance(payload, dict):
            return {"error": 'subscribe expects an object like {"view": "overview"}'}
        view = payload.get("view")
        views = self.views
        filters: Filters | None = None
        snapshot: Callable[[], dict[str, Any]]
        if view == "overview":
            room, snapshot = "overview", views.overview_snapshot
        elif view == "workers":
            room, snapshot = "workers", views.workers_snapshot
        elif view == "failures":
            room, snapshot = "failures", views.failures_snapshot
        elif view == "stats":
            room, snapshot = "stats", views.stats_snapshot
        elif view == "task" and isinstance(payload.get("uuid"), str):
            uuid = payload["uuid"]
            room, snapshot = f"task:{uuid}", lambda: views.task_snapshot(uuid)
        elif view == "tasks":
            filters, error = parse_filters(payload)
            if filters is None:
                return {"error": error}
            limit = payload.get("limit", 100)
            limit = limit if isinstance(limit, int) and 0 < limit <= MAX_LIMIT else 100
            room = tasks_room(filters)
            snapshot = lambda: views.tasks_snapshot(filters, limit)  # noqa: E731
        else:
            return {"error": f"unknown view {view!r}"}
        new_page = self._move(sid, room, filters) and room.startswith("task:")
        if new_page:
            with self._subs_lock:
                rooms = dict(self.rooms)
        # The snapshot carries the number of the last tick it includes: a diff of that tick or an earlier
        # one may still reach the client after it (emitted after the join), and the client drops those.
        with self.state.lock:
            if new_page:
                # A new task page's snapshot includes every change so far: drained now, they cannot come
                # back as an update that would make the page's next real change wait for an interval.
                self._absorb(rooms, time.time())
                self._dirty.discard(room)
                # What was drained for the other rooms (other task pages, the shared rooms) is theirs to send:
                # the loop recomputes when that is due instead of sleeping out its old deadline.
                self.wake.set()
            data = snapshot()
            data["tick"] = self.tick_no
        data["status"] = views.status()
        return data

    def leave(self, sid: str) -> None:
        """Forget the subscription of a closed socket."""
        self._move(sid, None)

    def _move(self, sid: str, room: str | None, filters: Filters | None = None) -> bool:
        """Move `sid` to `room` (None: out of any); whether that created the room."""
        server = self.socketio.server
        with self._subs_lock:
            if room is not None and self.subs.get(sid) == room:
                return False  # a resubscribe (resync): leaving would drop the room's filter and count
            old = self.subs.pop(sid, None)
            if old is not None:
                self.rooms[old] -= 1
                if self.rooms[old] <= 0:
                    del self.rooms[old]
                    self.filters.pop(old, None)
                    self._totals_cache.pop(old, None)
                    self.task_rooms -= old.startswith("task:")
                if room is not None:
                    server.leave_room(sid, old, namespace=NAMESPACE)
            if room is not None:
                self.subs[sid] = room
                self.rooms[room] += 1
                created = self.rooms[room] == 1
                self.task_rooms += created and room.startswith("task:")
                if filters is not None:
                    self.filters[room] = filters
        if room is None:
            return False
        server.enter_room(sid, room, namespace=NAMESPACE)
        return created

    def _workers_diff(self, changed: set[str], now: float) -> dict[str, Any] | None:
        # Hiding depends on time, not on events: re-check every worker once a second (cheap: ≤ MAX_WORKERS).
        st = self.state
        hidden = self._hidden
        newly_hidden: set[str] = set()
        unhidden: set[str] = set()
        if now - self._hidden_at >= 1.0 or changed:
            self._hidden_at = now
            current = {h for h, w in st.workers.items() if self.views.hidden(w, now)}
            newly_hidden, unhidden = current - hidden, (hidden - current) & set(st.workers)
            self._hidden = hidden = current
        show = (changed | unhidden) - hidden
        rows = [self.views.worker_row(w, now) for w in map(st.workers.get, sorted(show)) if w is not None]
        gone = sorted({h for h in changed if h not in st.workers} | newly_hidden)
        if not (rows or gone):
            return None
        return {"workers": rows, "removed": gone, "hidden_offline": len(hidden)}

    # -- the tick --------------------------------------------------------------------------------
    def run(self) -> None:
        """Push until stop(): a change at once to a room quiet for an interval, then at most one diff per room
        an interval (longer during a flood); the shared rooms tick at least every interval. A bad tick never
        ends the loop."""
        while not self._stop.is_set():
            mono = time.monotonic()
            if self.wake.is_set():
                self.wake.clear()
                self._undrained = self.at_once
            due = self._due(mono)
            if due > mono:
                if not self.at_once:
                    self.sleep(due - mono)
                elif self._undrained:
                    # Woken already: later batches land in the same drain, so they need not wake the loop. Short
                    # naps all the same: a page that subscribes meanwhile may be due sooner (its first change).
                    self.sleep(min(due - mono, DRAIN_GAP))
                else:
                    self.wake.wait(due - mono)  # quiet: until a batch is applied or the heartbeat is due
                continue
            self._undrained = False
            self.wake.clear()  # the drain below takes every change applied so far
            try:
                if self._tick(time.time(), mono, force=not self.at_once):
                    self.tick_seconds.append(time.monotonic() - mono)
                    self.close_idle_sessions(mono)
            except Exception:  # a bad tick must not silence the dashboard
                log.exception("push tick failed")
                self.sleep(self._interval())  # nor spin on an error that repeats

    def _interval(self) -> float:
        return BUSY_INTERVAL if self.busy else self.interval

    def _due(self, mono: float) -> float:
        """When the loop must tick next (time.monotonic()), from what it knows without draining."""
        interval = self._interval()
        due = self._shared_at + interval  # the shared rooms' heartbeat: the chart, hidden workers, status
        if not self.at_once:
            return due
        quiet = self._pushed_at + interval  # the shared rooms may show changes again from then on
        if self._undrained or self._pending_tasks or self._pending_workers:
            due = min(due, quiet)
        if self._undrained and self.task_rooms:
            due = min(due, self._drained_at + (DRAIN_GAP_BUSY if self.busy else DRAIN_GAP))
        for room in tuple(self._dirty):  # a copy: a subscription may add to it meanwhile (threading mode)
            due = min(due, mono + max(0.0, 1.0 - self._tokens(room, mono, interval)) * interval)
        return due

    def tick_cost(self) -> dict[str, float | None]:
        """Milliseconds of the latest tick and the median and most of the last hundred (for /healthz)."""
        ticks = sorted(self.tick_seconds)
        if not ticks:
            return {"last_ms": None, "median_ms": None, "max_ms": None}
        return {
            "last_ms": round(self.tick_seconds[-1] * 1000, 2),
            "median_ms": round(ticks[len(ticks) // 2] * 1000, 2),
            "max_ms": round(ticks[-1] * 1000, 2),
        }

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
        """Build and emit every watched room's diff now, from what changed since the last tick."""
        self._tick(time.time(), time.monotonic(), force=True)

    def _tick(self, now: float, mono: float, force: bool) -> bool:
        """Drain the changes and emit the diffs that are due (all when `force`); whether the shared rooms ticked."""
        with self._subs_lock:
            rooms = dict(self.rooms)
            filters = dict(self.filters)
        out: list[tuple[str, dict[str, Any], str]] = []
        st = self.state
        interval = self._interval()
        with st.lock:
            self._absorb(rooms, now)
            self._drained_at = mono
            self.tick_no += 1
            tick_no = self.tick_no
            changed_tasks, changed_workers = self._pending_tasks, self._pending_workers
            changes = bool(changed_tasks or changed_workers)
            shared = force or mono - self._shared_at >= interval or (changes and mono - self._pushed_at >= interval)
            if shared:
                self._pending_tasks, self._pending_workers = set(), set()
                self._shared_at = mono
                if changes:
                    self._pushed_at = mono
                self._measure_rate(mono)
                if rooms.get("overview") and (changes or self._chart_due(now)):
                    out.append(("overview", self._overview_diff(now, changed_tasks), "overview"))
                if changed_tasks and filters:
                    recs = [r for r in map(st.tasks.get, changed_tasks) if r is not None]
                    recs.sort(key=lambda r: r.seq, reverse=True)
                    for room, f in filters.items():
                        if rooms.get(room):
                            out.append(("tasks", self._tasks_diff(room, recs, f, now), room))
                if rooms.get("workers"):
                    diff = self._workers_diff(changed_workers, now)
                    if diff is not None:
                        out.append(("workers", diff, "workers"))
            # Task pages, each on its own budget: at once while it holds an update, else when it refills.
            if self._dirty:
                for room in list(self._dirty):
                    tokens = self._tokens(room, mono, interval)
                    if room not in rooms:
                        self._dirty.discard(room)
                    elif force or tokens >= 1.0:
                        self._dirty.discard(room)
                        self._budget[room] = (max(0.0, tokens - 1.0), mono)
                        rec = st.tasks.get(room[5:])
                        if rec is not None:
                            out.append(("task", self.views.task_payload(rec), room))
        if not shared:
            self._emit(out, tick_no, now)
            return False
        if len(self._budget) > self.task_rooms:
            self._budget = {room: b for room, b in self._budget.items() if room in rooms}  # pages closed
        # Aggregates change with every event: at most once a second, and only when something happened.
        if (rooms.get("failures") or rooms.get("stats")) and now - self._aggregates_at >= 1.0:
            version = (st.outcomes["FAILURE"] + st.outcomes["RETRY"], st.task_event_count)
            if rooms.get("failures") and version[0] != self._aggregates_version[0]:
                out.append(("failures", self.views.failures_snapshot(), "failures"))
            if rooms.get("stats") and version[1] != self._aggregates_version[1]:
                out.append(("stats", self.views.stats_snapshot(), "stats"))
            self._aggregates_at, self._aggregates_version = now, version
        # Every tab shows the broker's status: sent to all when it changes, not for every event counted.
        status = self.views.status()
        if status["broker"] != self._last_status:
            self._last_status = status["broker"]
            out.append(("status", status, ""))
        self._emit(out, tick_no, now)
        return True

    def _absorb(self, rooms: dict[str, int], now: float) -> None:
        """Drain the state's changes: mark the task pages they touch, keep the rest for the shared rooms
        (call under the state lock)."""
        drained_tasks, drained_workers = self.state.drain_changes(now)
        if drained_tasks and self.task_rooms:
            self._dirty.update(self._task_rooms_changed(rooms, drained_tasks))
        # The shared rooms keep what they have not been shown yet (a drain for task pages takes it all).
        if self._pending_tasks:
            self._pending_tasks |= drained_tasks
        else:
            self._pending_tasks = drained_tasks
        if self._pending_workers:
            self._pending_workers |= drained_workers
        else:
            self._pending_workers = drained_workers

    def _tokens(self, room: str, mono: float, interval: float) -> float:
        """How many updates the task page `room` may get at `mono` (a full bucket when it never got one)."""
        tokens, at = self._budget.get(room, (TASK_PAGE_BURST, mono))
        return min(TASK_PAGE_BURST, tokens + (mono - at) / interval)

    def _task_rooms_changed(self, rooms: dict[str, int], changed: set[str]) -> list[str]:
        """The watched task pages that show one of the changed tasks (call under the state lock)."""
        st = self.state
        task_rooms = [room for room in rooms if room.startswith("task:")]
        # A task page shows its whole workflow: it changes when any task of that workflow does.
        roots = {workflow_root(st, r) for r in map(st.tasks.get, changed) if r is not None}
        touched = []
        for room in task_rooms:
            rec = st.tasks.get(room[5:])
            if rec is not None and (rec.uuid in changed or workflow_root(st, rec) in roots):
                touched.append(room)
        return touched

    def _measure_rate(self, mono: float) -> None:
        # Over at least an interval: a tick at once after a quiet spell would otherwise see a flood in one batch.
        elapsed = mono - self._rate_at
        if elapsed >= max(self.interval, 0.05):
            events = self.state.event_count
            self.busy = (events - self._rate_events) / elapsed >= BUSY_EVENTS_PER_SECOND
            self._rate_events, self._rate_at = events, mono

    def _emit(self, out: list[tuple[str, dict[str, Any], str]], tick_no: int, now: float) -> None:
        if not out:
            return
        # Whether a client lags is read from its send queue, a walk over every viewer: once a second is
        # enough (a client is skipped past 50 queued updates, ten seconds of them).
        if now - self._lagging_at >= 1.0:
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
            log.info(
                "%d client(s) too far behind: their updates are held until they catch up", len(lagging - self.lagging)
            )
        self.lagging = lagging
        for sid in caught_up:
            self.socketio.emit("resync", {}, to=sid)  # it missed diffs: it asks for a fresh snapshot
        return list(lagging)

    def _chart_due(self, now: float) -> bool:
        # The chart's time axis moves every second even when nothing happens.
        second = float(int(now))
        if second != self._chart_second:
            self._chart_second = second
            return True
        return False

    def _overview_diff(self, now: float, changed: set[str]) -> dict[str, Any]:
        data = self.views.overview_counts(now)
        data["throughput"] = list(self.state.throughput)[-2:]  # the current and the last second
        latest = list(reversed(self.state.failures))[:FAILURES_SHOWN]
        if latest != self._last_failures or any(u in changed for u in latest):
            self._last_failures = latest
            data["failures"] = self.views.latest_failures()
        return data

    def _tasks_diff(self, room: str, recs: list[TaskRecord], f: Filters, now: float) -> dict[str, Any]:
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
        return {"total": total, "tasks": shown, "removed": removed[: MAX_TASKS_PER_TICK * 5]}

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
            cached = (now, find(st, f, limit=0, text_index=self.views.text_index)[0])
            self._totals_cache[room] = cached
        return cached[1]
