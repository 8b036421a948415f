"""Pure in-memory aggregate of Celery tasks and workers, fed plain event dicts.

No Flask, no broker I/O: ingest calls `State.event()` with decoded event dicts (with
`local_received` set, as Celery's EventReceiver does) and readers query under `State.lock`.
The task state machine follows `celery.events.state.State` exactly (tests/test_state_differential.py
proves it), but records are compact `__slots__` objects and every counter is kept incrementally.
"""

from __future__ import annotations

import math
import sys
import threading
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

from .failures import FailureGroups
from .indexes import (
    DENSE_MIN,
    DENSE_SHARE,
    REBALANCE_EVERY,
    SPARSE_SHARE,
    DenseMembers,
    Members,
    intersect,
    link,
    linked,
    unlink,
)
from .records import (
    EMPTY_HISTORY,
    EVENT_TO_STATE,
    HISTORY_TIMES,
    LOST,
    MAX_FIELD_CHARS,
    PRECEDENCE,
    READY_STATES,
    SNAPSHOT_TASK_FIELDS,
    SNAPSHOT_WORKER_FIELDS,
    STATES,
    UNREPORTED,
    ImplicitHistory,
    TaskRecord,
    WorkerRecord,
    clip,
    split_traceback,
)
from .stats import TaskStats

_NONE_PRECEDENCE = PRECEDENCE[None]  # custom states rank as None does
_DENSE_STATES = READY_STATES | {LOST, UNREPORTED}  # final: a task stays, and readers page through them

# Fields a late task-received may still contribute (celery's Task.merge_rules[RECEIVED]).
_RECEIVED_KEEP = ("name", "args", "kwargs", "parent_id", "root_id", "retries", "eta", "expires")
# Event fields copied onto the task record when present.
_TASK_FIELDS = (
    "name",
    "args",
    "kwargs",
    "result",
    "exception",
    "traceback",
    "retries",
    "eta",
    "expires",
    "root_id",
    "parent_id",
    "exchange",
    "routing_key",
    "queue",
    "runtime",
)
# Fields whose values repeat across tasks (kept once), and fields naming other tasks.
_SHARED_FIELDS = frozenset(("exchange", "routing_key", "queue", "exception"))
_ID_FIELDS = frozenset(("root_id", "parent_id"))
_MASKED_FIELDS = frozenset(("args", "kwargs"))  # where secrets are masked (dashboard/core/masking.py)
# How _copy_fields treats each field's string value (one dict lookup instead of a set test per kind).
_SHARED, _ID, _MASKED, _TRACEBACK, _PLAIN = range(5)
_KIND = dict.fromkeys(_TASK_FIELDS, _PLAIN) | dict.fromkeys(_SHARED_FIELDS, _SHARED) | {"traceback": _TRACEBACK}
_KIND |= dict.fromkeys(_ID_FIELDS, _ID) | dict.fromkeys(_MASKED_FIELDS, _MASKED)
# Fields that live in a task's RareFields: a None for them (task-received sends eta and expires) is not stored.
_RARE_COPIED = frozenset(("exception", "traceback", "eta", "expires"))
_HISTORY_TIMES = frozenset(HISTORY_TIMES)
_SUBJECTS = {s: s for s in (*EVENT_TO_STATE, "progress")}  # canonical subject strings
# Event keys that are envelope, not task data: never stored as custom ("extra") fields.
_ENVELOPE_KEYS = frozenset(_TASK_FIELDS) | {
    "type",
    "uuid",
    "hostname",
    "timestamp",
    "local_received",
    "clock",
    "pid",
    "utcoffset",
    "state",
    "signum",
    "terminated",
    "expired",
    "requeue",
}
_WORKER_FIELDS = ("freq", "processed", "active", "loadavg", "sw_ident", "sw_ver", "sw_sys", "pid")
MAX_HISTORY = 64  # events kept per task; a runaway custom-event emitter cannot grow a record forever
MAX_EXTRA_KEYS = 16
MAX_QUEUES = 1_000  # distinct queue names with their own statistics; more share "<other>"
THROUGHPUT_SECONDS = 600  # per-second succeeded/failed buckets kept for the overview chart
_INTERN_LIMIT = 10_000
# Tasks are grouped by seq into chunks of 2**CHUNK_BITS for the free-text search cache
# (dashboard/core/query.py); the seqs of changed tasks are noted so it updates only those tasks' text.
CHUNK_BITS = 10
DIRTY_CAP = 60_000  # past this many task events between two searches (~20,000 tasks) the cache is rebuilt whole


class MalformedEvent(ValueError):
    """The event cannot be applied: missing or mistyped structural fields."""


class Candidate(NamedTuple):
    """A task that may have ended unseen, as it was when picked (resolve() checks it is still so)."""

    uuid: str
    state: str
    hostname: str
    timestamp: float


def _happened_before(state: str, old: str) -> bool:
    """Whether an event moving a task to `state` logically precedes its current `old` state (merge, don't apply)."""
    if state == "RETRY" or old == "RETRY":
        return False
    # Celery ranks custom states (e.g. PROGRESS) above REVOKED, so a task terminated after reporting
    # progress would show PROGRESS forever: here REVOKED ends a custom state, and a late custom event
    # does not undo it (SUCCESS and FAILURE already rank above custom states).
    if state == "REVOKED" and old not in PRECEDENCE:
        return False
    if old == "REVOKED" and state not in PRECEDENCE:
        return True
    # (LOST ranks as STARTED, the state it replaced: a redelivered task's received merges, its started wins.)
    return PRECEDENCE.get(state, _NONE_PRECEDENCE) > PRECEDENCE.get(old, _NONE_PRECEDENCE)


def _name_key(name: Any) -> str | None:
    # Names are strings from well-behaved workers; anything else is indexed by its repr.
    return name if name.__class__ is str or name is None else repr(name)


def _root_key(root_id: Any, uuid: str) -> str | None:
    # Only tasks that belong to another task's workflow are indexed by root.
    return root_id if root_id.__class__ is str and root_id != uuid else None


def _trimmed(hist: tuple[Any, ...]) -> tuple[Any, ...]:
    """A history cut back to MAX_HISTORY events: the first event stays, and the oldest after it goes
    unless it is the last of a kind whose time is read from the history (HISTORY_TIMES)."""
    while len(hist) > 2 * MAX_HISTORY:
        later = hist[2::2]
        drop = next(
            (
                i
                for i in range(2, len(hist), 2)
                if hist[i] not in _HISTORY_TIMES or hist[i] in later[i // 2 :]  # (later: from the next event on)
            ),
            2,
        )
        hist = hist[:drop] + hist[drop + 2 :]
    return hist


def _indexed_name(rec: TaskRecord) -> Any:
    return _name_key(rec.name)


def _implicit(hist: Any, rec: TaskRecord) -> ImplicitHistory | None:
    """The implicit form of an explicit history (a restored one), when every time in it is the record's own."""
    if hist.__class__ is not tuple:
        return None
    node: ImplicitHistory | None = EMPTY_HISTORY
    for subject in hist[::2]:
        node = node.then(subject) if node is not None and subject.__class__ is str else None
        if node is None:
            return None
    return node if node is not None and node.times(rec) == hist else None


def _as_number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    return None


class State:
    """Bounded in-memory state of a Celery cluster; feed it with `event()`, read it under `lock`."""

    def __init__(
        self, max_tasks: int = 100_000, max_workers: int = 1_000, mask: Callable[[str], str] | None = None
    ) -> None:
        self.max_tasks = max_tasks
        self.max_workers = max_workers
        # Secrets in args/kwargs are masked on the way in: no page, API answer, search or export
        # can show what the state never kept.
        self.mask = mask
        self.lock = threading.RLock()
        self.tasks: dict[str, TaskRecord] = {}
        # uuids by first sight, i.e. by seq with no gaps: O(1) eviction of the oldest, and chunk k of
        # the order is one contiguous slice of it.
        self.order: deque[str] = deque()
        self.workers: dict[str, WorkerRecord] = {}
        # Indexes for the task-list filters (dashboard/core/query.py), kept incrementally, never rescanned.
        # A common value (at least DENSE_MIN tasks, one in DENSE_SHARE) keeps a count, not a set: DenseMembers.
        self.by_state: dict[str, Members] = {s: set() for s in STATES}
        self.by_name: dict[str, Members] = {}
        self.by_worker: dict[str, Members] = {}
        # root_id -> the other tasks of that workflow, oldest first (a standalone task is its own root: no
        # entry). Lists: most workflows are a few tasks, and a set is 216 bytes even for one.
        self.by_root: dict[str, str | list[str] | deque[str]] = {}
        # Seqs of the tasks changed since the last text search, one per event (repeats are cheaper than a set's
        # table: 8 bytes each, where a set of 20,000 ints holds a 2 MB table from one search to the next).
        self.dirty_seqs: array[int] = array("q")
        self._odd_names = 0  # retained tasks whose name is not a string (indexed by its repr)
        self.text_stale = False  # too many changes to note one by one: the text cache starts over
        # parent uuid -> child uuids (the parent may be unseen); one child is its uuid alone (see _link)
        self.children: dict[str, str | list[str] | deque[str]] = {}
        self.failures: deque[str] = deque(maxlen=50)  # latest uuids that became FAILURE
        self.failure_groups = FailureGroups()  # failures and retries by signature (dashboard/core/failures.py)
        self.stats = TaskStats()  # per task name: outcomes, runtime and queue-wait percentiles, event counts
        # Per queue (the task-sent event's queue, else its routing key): task-sent counts and the
        # sent -> started wait (dashboard/web/queues.py, /metrics).
        self.queue_stats = TaskStats(max_names=MAX_QUEUES, export_wait=True)
        # Lifetime counters: failed, retried attempts, succeeded after retries, failed after retries.
        self.outcomes: dict[str, int] = {"FAILURE": 0, "RETRY": 0, "RECOVERED": 0, "GAVE_UP": 0}
        self.throughput: deque[list[float]] = deque(maxlen=THROUGHPUT_SECONDS)  # [second, ok, failed]
        self.event_count = 0
        self.task_event_count = 0
        self.worker_event_count = 0
        self.evicted = 0
        self.lost = 0  # tasks whose worker died while running them
        self.from_backend = 0  # tasks whose final state was taken from the result backend (cluster/reconcile.py)
        self.unreported = 0  # tasks marked finished with no outcome reported (no final event, no backend)
        # Bumped when a worker appears or comes back: ingest then asks it to enable task events at once.
        self.worker_arrivals = 0
        self._seq = 0
        self._interned: dict[str, str] = {}  # tracebacks shared between tasks that failed alike
        self.changed_tasks: set[str] = set()
        self.changed_workers: set[str] = set()
        self.last_error: str | None = None  # why the last skipped event was skipped

    # -- ingest ---------------------------------------------------------------------------------
    def event(self, event: dict[str, Any]) -> None:
        """Apply one Celery event dict; raises MalformedEvent for events that cannot be applied."""
        if event.__class__ is not dict:
            raise MalformedEvent("event is not an object")
        type_ = event.get("type")
        if type_.__class__ is not str:
            raise MalformedEvent("event has no string 'type'")
        group, _, subject = type_.partition("-")
        if group == "task":
            self._task_event(subject, event)
        elif group == "worker":
            self._worker_event(subject, event)
        else:
            raise MalformedEvent(f"unknown event group {group!r}")
        self.event_count += 1

    def events(self, events: Iterable[dict[str, Any]]) -> int:
        """Apply many events under the lock; returns how many were skipped (see `last_error`)."""
        bad = 0
        with self.lock:
            for ev in events:
                try:
                    self.event(ev)
                except Exception as exc:  # noqa: BLE001 - one bad event must never cost the others
                    bad += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
        return bad

    def _task_event(self, subject: str, ev: dict[str, Any]) -> None:
        uuid = ev.get("uuid")
        if uuid.__class__ is not str or not uuid:
            raise MalformedEvent("task event without a string 'uuid'")
        timestamp = _as_number(ev.get("timestamp"))
        if timestamp is None:
            raise MalformedEvent("task event without a numeric 'timestamp'")
        if not subject:
            raise MalformedEvent("task event without a subject")
        self.task_event_count += 1
        hostname = ev.get("hostname")
        if hostname is not None and hostname.__class__ is not str:
            raise MalformedEvent("'hostname' is not a string")
        local_received = _as_number(ev.get("local_received"))

        rec = self.tasks.get(uuid)
        if rec is None:
            rec = self._new_task(uuid)
        # Every event brings its own copy of the uuid and subject strings: index and record the
        # task's one copy and a canonical subject, or each event's copies would stay alive.
        uuid = rec.uuid
        subject = _SUBJECTS.get(subject) or self._intern_text(subject[:64])
        if subject == "sent":
            rec.client = self._intern_text(hostname) if hostname.__class__ is str else hostname
        elif hostname is not None:
            hostname = self._intern_host(hostname)
            if rec.hostname != hostname:
                self._index(self.by_worker, rec.hostname, hostname, uuid)
                rec.hostname = hostname
            worker = self.workers.get(hostname) or self._new_worker(hostname, local_received)
            if local_received and worker is not None:
                # A task event proves the worker alive, unless it was sent before the worker's goodbye
                # (worker-offline) and merely arrived after it. (Celery's State revives the worker then.)
                if worker.goodbye is not None and timestamp > worker.goodbye:
                    worker.goodbye = None
                if worker.goodbye is None and (worker.last_heartbeat is None or local_received > worker.last_heartbeat):
                    worker.last_heartbeat = local_received
                self.changed_workers.add(hostname)

        hist = rec._hist
        if hist.__class__ is ImplicitHistory:
            # Implicit while this event's time will be one of the record's fields (set below); else the tuple,
            # built from the fields before this event changes them.
            implicit = hist.then(subject)
            rec._hist = implicit if implicit is not None else hist.times(rec) + (subject, timestamp)
        else:
            hist = rec._hist = hist + (subject, timestamp)  # type: ignore[operator]
            if len(hist) > 2 * MAX_HISTORY:
                rec._hist = _trimmed(hist)

        state = EVENT_TO_STATE.get(subject)
        if state is not None:
            if subject not in _HISTORY_TIMES:  # (those are read from the history)
                setattr(rec, subject, timestamp)
        else:
            state = sys.intern(subject.upper()[:64])  # custom state, as Celery derives it
            self._store_extra(rec, ev)
        old = rec.state
        old_parent = rec.parent_id
        old_root = rec.root_id
        old_name = rec.name
        if _happened_before(state, old):
            # This state logically happened before the current one: merge fields, keep the state.
            if state == "RECEIVED":
                self._copy_fields(rec, ev, _RECEIVED_KEEP)  # (masked and clipped like any other copy)
            else:
                self._copy_fields(rec, ev)
                rec.timestamp = timestamp  # Celery copies the late event's timestamp too
        else:
            self._copy_fields(rec, ev)
            rec.timestamp = timestamp
            if state != old:
                rec.state = state
                self._index(self.by_state, old, state, uuid)
                if state == "SUCCESS" or state == "FAILURE":
                    self._finished(rec, state, local_received)
        if rec.parent_id == uuid:
            # Task.retry() re-sends the task from inside itself, naming it as its own parent:
            # keep the real parent (Celery's State would overwrite it; a task is never its own child).
            rec.parent_id = old_parent
        if state == "RETRY":
            self._record_attempt(rec, ev, timestamp)
        elif subject == "started":
            self.stats.started(rec.name, rec.received, rec.sent, timestamp)  # queue wait is known now
            if rec.sent is not None:
                queue = rec.queue or rec.routing_key
                if queue is not None:
                    self.queue_stats.sent_wait(queue, rec.sent, timestamp)
        name = rec.name
        if name is not old_name:
            if name.__class__ is str:
                rec.name = name = sys.intern(name)  # one copy per task name, not per task
            if name != old_name:
                self._renamed(rec, old_name)
        self.stats.count(subject, name)  # lifetime, for /metrics: never lowered by eviction
        if subject == "sent":
            queue = rec.queue or rec.routing_key
            if queue is not None:
                self.queue_stats.count(subject, queue)
        if rec.root_id != old_root:
            self._index_root(_root_key(old_root, uuid), _root_key(rec.root_id, uuid), uuid)
        if rec.parent_id != old_parent:
            self._reparented(rec, old_parent)
        self.changed_tasks.add(uuid)
        dirty = self.dirty_seqs
        if len(dirty) < DIRTY_CAP:
            dirty.append(rec.seq)
        else:
            self.text_stale = True

    @staticmethod
    def _index(index: dict[Any, Members], old: Any, new: Any, uuid: str) -> None:
        # Move uuid from index[old] to index[new]; empty sets go, so the keys are the values in use.
        if old is not None:
            members = index.get(old)
            if members is not None:
                if members.__class__ is set:
                    members.discard(uuid)
                else:
                    members.count -= 1  # type: ignore[union-attr]
                if not members and old not in STATES:
                    del index[old]
        if new is not None:
            members = index.get(new)
            if members is None:
                members = index[new] = set()
            if members.__class__ is set:
                members.add(uuid)
            else:
                members.count += 1  # type: ignore[union-attr]
                members.uuids.append(uuid)  # type: ignore[union-attr]

    def _index_root(self, old: str | None, new: str | None, uuid: str) -> None:
        # The same for the workflow index (see _link).
        if old is not None:
            unlink(self.by_root, old, uuid)
        if new is not None:
            link(self.by_root, new, uuid)

    def _rebalance(self) -> None:
        # Common values count their tasks, rare ones keep sets (see DENSE_MIN): values change shares as
        # tasks come and go. Called between events, when every index agrees with the records. Only final
        # states turn dense: the others are few at any time, and readers walk them (reconciliation, queues).
        # A name turns dense only while every retained name is a string: a value's tasks are then exactly
        # those whose field equals it (another name is indexed by its repr, see _name_key).
        n = len(self.tasks)
        for index, attr in ((self.by_state, "state"), (self.by_name, "name"), (self.by_worker, "hostname")):
            for value, members in index.items():
                size = len(members)
                if members.__class__ is set:
                    if (
                        size >= DENSE_MIN
                        and size * DENSE_SHARE >= n
                        and (index is not self.by_state or value in _DENSE_STATES)
                        and (index is not self.by_name or not self._odd_names)
                    ):
                        index[value] = DenseMembers(self.tasks, attr, value, members)
                elif size < DENSE_MIN // 2 or size * SPARSE_SHARE < n:
                    index[value] = set(members.members())  # type: ignore[union-attr]
                else:
                    members.trim()  # type: ignore[union-attr]

    def _members(self, key: Callable[[TaskRecord], Any], value: Any) -> set[str]:
        return {uuid for uuid, rec in self.tasks.items() if key(rec) == value}

    def _copy_fields(self, rec: TaskRecord, ev: dict[str, Any], keys: tuple[str, ...] = _TASK_FIELDS) -> None:
        for key in keys:
            if key in ev:
                value = ev[key]
                kind = _KIND[key]
                if value.__class__ is str:
                    if len(value) > MAX_FIELD_CHARS:
                        value = clip(value)
                    if kind == _SHARED:  # few distinct values: one copy each
                        value = self._intern_text(value)
                    elif kind == _ID:  # ids of tasks we hold: their one copy
                        known = self.tasks.get(value)
                        if known is not None:
                            value = known.uuid
                    elif kind == _MASKED and self.mask is not None:
                        value = self.mask(value)
                    elif kind == _TRACEBACK:
                        self._set_traceback(rec, value)
                        continue
                elif kind == _ID and value is not None:
                    value = None  # an id that is not a string names no task (and would break set lookups)
                elif value is None and key in _RARE_COPIED and rec._more is None:
                    continue  # (None already: no RareFields for it)
                setattr(rec, key, value)

    def _set_traceback(self, rec: TaskRecord, tb: str) -> None:
        # Tasks failing at the same place share every line but the last (the exception's message, which
        # usually names what failed): one copy of the frames, and each task's own last line.
        head, tail = split_traceback(tb)
        rec.set_traceback(self._intern_text(head) if head else None, tail)

    def _new_task(self, uuid: str) -> TaskRecord:
        self._seq += 1
        rec = TaskRecord(uuid, self._seq)
        self.tasks[uuid] = rec
        self.order.append(uuid)
        self._index(self.by_state, None, "PENDING", uuid)
        if len(self.order) > self.max_tasks:
            self._evict_oldest()
        if not self._seq % REBALANCE_EVERY:
            self._rebalance()
        return rec

    def _evict_oldest(self) -> None:
        old = self.tasks.pop(self.order.popleft(), None)
        if old is None:
            return
        self.evicted += 1
        uuid = old.uuid
        self._index(self.by_state, old.state, None, uuid)
        self._index(self.by_name, _name_key(old.name), None, uuid)
        if old.name is not None and old.name.__class__ is not str:
            self._odd_names -= 1
        self._index(self.by_worker, old.hostname, None, uuid)
        self._index_root(_root_key(old.root_id, uuid), None, uuid)
        self.failure_groups.discard(uuid)  # (its text chunk stays clean: searches skip evicted uuids)
        if old.parent_id is not None:
            self._unlink_child(old.parent_id, old.uuid)
        self.changed_tasks.discard(old.uuid)

    def _finished(self, rec: TaskRecord, state: str, now: float | None) -> None:
        failed = state == "FAILURE"
        outcomes = self.outcomes
        self.stats.finished(rec.name, state, rec.runtime, rec.received, rec.started, rec.sent, rec.timestamp)
        if failed:
            self.failures.append(rec.uuid)
            gid = self.failure_groups.add(
                rec.uuid, rec.name, rec.hostname, rec.exception, rec.traceback, rec.timestamp, "FAILURE"
            )
            outcomes["FAILURE"] += 1
            if rec.attempt_count():
                outcomes["GAVE_UP"] += 1
                self.failure_groups.settle(gid, "GAVE_UP")
        elif rec.attempt_count():
            outcomes["RECOVERED"] += 1
            self.failure_groups.settle(self._last_retry_group(rec), "RECOVERED")
        worker = self.workers.get(rec.hostname) if rec.hostname else None
        if worker is not None:
            if failed:
                worker.failed += 1
            else:
                worker.succeeded += 1
        if now is None:
            return
        second = float(int(now))
        tp = self.throughput
        bucket: list[float] | None
        if not tp or tp[-1][0] < second:
            tp.append([second, 0, 0])
            bucket = tp[-1]
        else:
            bucket = next((b for b in reversed(tp) if b[0] == second), None)
            if bucket is None:
                return  # older than the window we keep
        bucket[2 if failed else 1] += 1

    def _last_retry_group(self, rec: TaskRecord) -> str | None:
        """The failure group of a task's last retry: the one it recovered from."""
        gid = self.failure_groups.group_of(rec.uuid)
        if gid is None and rec.attempts and isinstance(rec.attempts[-1], dict):
            last = rec.attempts[-1]  # (the group no longer holds this uuid: find it by its signature)
            gid = self.failure_groups.group_for(last.get("exception"), last.get("traceback"))
        return gid

    def _record_attempt(self, rec: TaskRecord, ev: dict[str, Any], timestamp: float) -> None:
        self.outcomes["RETRY"] += 1
        self.stats.retried(rec.name, timestamp)
        self.failure_groups.add(
            rec.uuid, rec.name, rec.hostname, ev.get("exception"), ev.get("traceback"), timestamp, "RETRY"
        )
        if rec.attempt_count() < MAX_HISTORY:
            tb = ev.get("traceback")
            head = None
            if tb.__class__ is str:
                # The frames are shared (with the task's own traceback, and other tasks failing alike).
                head, tb = split_traceback(clip(tb) if len(tb) > MAX_FIELD_CHARS else tb)
                head = self._intern_text(head) if head else None
            exc = ev.get("exception")
            if exc.__class__ is str and exc == rec.exception:
                exc = rec.exception  # the record's (interned) copy
            rec.add_attempt(rec.retries, timestamp, exc, head, tb, rec.hostname)

    def _store_extra(self, rec: TaskRecord, ev: dict[str, Any]) -> None:
        extra: dict[str, Any] = {}
        for key, value in ev.items():
            if key not in _ENVELOPE_KEYS and key.__class__ is str:
                if len(extra) == MAX_EXTRA_KEYS:
                    break
                # Custom fields are task data too: as bounded as the rest; one that is not a string (a
                # nested progress meta) is kept whole up to MAX_FIELD_CHARS of its text, else as text.
                if value.__class__ is str:
                    value = clip(value) if len(value) > MAX_FIELD_CHARS else value
                elif (
                    not isinstance(value, (int, float, bool))
                    and value is not None
                    and len(text := repr(value)) > MAX_FIELD_CHARS
                ):
                    value = clip(text)
                extra[key[:200]] = value
        if extra:
            rec.extra = extra

    def _renamed(self, rec: TaskRecord, old_name: Any) -> None:
        name = rec.name
        key = _name_key(name)
        self._index(self.by_name, _name_key(old_name), key, rec.uuid)
        if old_name is not None and old_name.__class__ is not str:
            self._odd_names -= 1
        if key is not None and name.__class__ is not str:
            self._odd_names += 1
            if self.by_name[key].__class__ is DenseMembers:  # (its tasks would no longer all equal its value)
                self.by_name[key] = self._members(_indexed_name, key)

    def _reparented(self, rec: TaskRecord, old_parent: Any) -> None:
        if old_parent is not None:
            self._unlink_child(old_parent, rec.uuid)
        parent = rec.parent_id
        if parent.__class__ is str:
            link(self.children, parent, rec.uuid)
            if parent in self.tasks:
                self.changed_tasks.add(parent)  # its page lists children

    def _unlink_child(self, parent: Any, uuid: str) -> None:
        if parent.__class__ is str:
            unlink(self.children, parent, uuid)

    def _intern_text(self, text: str) -> str:
        interned = self._interned
        found = interned.get(text)
        if found is None:
            if len(interned) >= _INTERN_LIMIT:
                interned.clear()  # a bounded cache: sharing is an optimisation, not a promise
            interned[text] = found = text
        return found

    def _intern_host(self, hostname: str) -> str:
        worker = self.workers.get(hostname)
        return worker.hostname if worker is not None else sys.intern(hostname[:255])

    def _new_worker(self, hostname: str, now: float | None) -> WorkerRecord | None:
        if len(self.workers) >= self.max_workers and not self._evict_worker():
            return None
        worker = self.workers[hostname] = WorkerRecord(hostname, now)
        return worker

    def _evict_worker(self) -> bool:
        # Rare (only past max_workers), so a scan is fine: drop the worker silent for longest.
        if not self.workers:
            return False
        victim = min(self.workers.values(), key=lambda w: w.last_heartbeat or 0.0)
        del self.workers[victim.hostname]
        self.changed_workers.add(victim.hostname)
        return True

    def _worker_event(self, subject: str, ev: dict[str, Any]) -> None:
        hostname = ev.get("hostname")
        if hostname.__class__ is not str or not hostname:
            raise MalformedEvent("worker event without a string 'hostname'")
        timestamp = _as_number(ev.get("timestamp"))
        if timestamp is None:
            raise MalformedEvent("worker event without a numeric 'timestamp'")
        self.worker_event_count += 1
        local_received = _as_number(ev.get("local_received"))
        worker = self.workers.get(hostname)
        offline = subject == "offline"
        if worker is None:
            if offline:
                return  # Celery ignores the farewell of a worker it never saw
            worker = self._new_worker(sys.intern(hostname[:255]), local_received)
            if worker is None:
                return
        for key in _WORKER_FIELDS:
            if key in ev:
                value = ev[key]
                if key == "freq":
                    value = _as_number(value)
                    if value is None or value <= 0:
                        continue
                setattr(worker, key, value)
        if offline:
            worker.last_heartbeat = worker.grace = None
            worker.offline_at = local_received or timestamp
            worker.goodbye = timestamp
            self._worker_gone(worker, worker.offline_at)
        elif local_received:
            worker.goodbye = None
            if subject == "online" or worker.last_heartbeat is None:
                self.worker_arrivals += 1  # a restart reuses the hostname: it starts without -E again
            if worker.last_heartbeat is None or local_received > worker.last_heartbeat:
                worker.last_heartbeat = local_received
            worker.offline_at = None
        self.changed_workers.add(worker.hostname)

    def _worker_gone(self, worker: WorkerRecord, when: float) -> None:
        # The tasks it was running will never report again: LOST, not STARTED forever. (Tasks it had only
        # reserved are left alone: the broker hands unacknowledged messages to another worker.)
        mine = self.by_worker.get(worker.hostname)
        if not mine:
            return
        running = [uuid for members in self._running() for uuid in intersect(mine, members)]
        for uuid in running:
            self._settle(self.tasks[uuid], LOST, "lost", when)
            self.lost += 1

    def _running(self) -> list[Members]:
        # The tasks shown as running: STARTED, and a custom state a running task reports (e.g. PROGRESS).
        return [members for state, members in self.by_state.items() if state == "STARTED" or state not in PRECEDENCE]

    def _settle(self, rec: TaskRecord, state: str, step: str, when: float) -> None:
        # The dashboard's own word on a task no event will end (LOST, UNREPORTED): its state and a timeline step.
        self._index(self.by_state, rec.state, state, rec.uuid)
        rec.state = state
        rec.history = _trimmed(rec.history + (step, when))
        self.changed_tasks.add(rec.uuid)

    def broker_lost(self, now: float) -> None:
        """The event stream is cut: workers alive now keep their status until it is back (nobody can be heard)."""
        for worker in self.workers.values():
            if worker.alive(now):
                worker.grace = math.inf

    def broker_back(self, now: float) -> None:
        """The event stream is back: workers kept alive get a full expiry window from now to be heard again."""
        for worker in self.workers.values():
            if worker.grace == math.inf:
                worker.grace = now

    # -- reconciliation (dashboard/cluster/reconcile.py): tasks whose final event never came -------------
    def reconcile_candidates(self, now: float, quiet: float, limit: int = 1000) -> list[Candidate]:
        """Tasks that may have ended unseen: running (STARTED or a custom state) or RECEIVED, with no event
        for `quiet` seconds, on a worker that is alive (a dead worker's tasks become LOST instead)."""
        out: list[Candidate] = []
        for members in (*self._running(), self.by_state.get("RECEIVED", ())):
            for uuid in members:
                rec = self.tasks[uuid]
                worker = self.workers.get(rec.hostname) if rec.hostname else None
                if worker is None or not worker.alive(now) or rec.timestamp is None or now - rec.timestamp < quiet:
                    continue
                out.append(Candidate(uuid, rec.state, worker.hostname, rec.timestamp))
                if len(out) >= limit:
                    return out
        return out

    def resolve(self, seen: Candidate, outcome: dict[str, Any] | None, now: float) -> bool:
        """End a candidate no worker holds any more: with the result backend's `outcome` (an event dict of
        its final state) or, without one, as UNREPORTED. False when an event of the task came meanwhile."""
        rec = self.tasks.get(seen.uuid)
        if rec is None or rec.state != seen.state or rec.timestamp != seen.timestamp:
            return False  # it moved on (or was evicted): the events are the truth again
        if outcome is not None:
            # No local_received: the backend's answer says how the task ended, not that its worker is alive.
            # (Applied as the task event it stands for, not counted as an event received.)
            self._task_event(
                str(outcome["type"]).partition("-")[2], {**outcome, "uuid": rec.uuid, "hostname": rec.hostname}
            )
            rec.history = _trimmed(rec.history + ("from result backend", now))
            self.changed_tasks.add(rec.uuid)
            self.from_backend += 1
        else:
            self._settle(rec, UNREPORTED, "outcome not reported", now)
            self.unreported += 1
        return True

    # -- snapshot (dashboard/ingest/snapshot.py): export and restore records -------------------------------
    def export_task(self, uuid: str) -> list[Any] | None:
        """One retained task's fields in SNAPSHOT_TASK_FIELDS order (None if evicted); call with `lock` held."""
        rec = self.tasks.get(uuid)
        if rec is None:
            return None
        return [getattr(rec, f) for f in SNAPSHOT_TASK_FIELDS]

    def export_worker(self, worker: WorkerRecord) -> list[Any]:
        """One worker's fields in SNAPSHOT_WORKER_FIELDS order; call with `lock` held."""
        return [getattr(worker, f) for f in SNAPSHOT_WORKER_FIELDS]

    def restore_task(self, row: list[Any]) -> None:
        """Re-create a task from `export_task`'s row, with its indexes, groups and statistics.

        Raises MalformedEvent for a row of the wrong shape or types (a corrupt snapshot)."""
        if not isinstance(row, list) or len(row) != len(SNAPSHOT_TASK_FIELDS):
            raise MalformedEvent("task row of the wrong length")
        fields = dict(zip(SNAPSHOT_TASK_FIELDS, row))
        uuid, state, history = fields["uuid"], fields["state"], fields["history"]
        if uuid.__class__ is not str or not uuid or state.__class__ is not str or not isinstance(history, list):
            raise MalformedEvent("task row without a uuid, state or history")
        if not (fields["attempts"] is None or isinstance(fields["attempts"], list)) or not (
            fields["extra"] is None or isinstance(fields["extra"], dict)
        ):
            raise MalformedEvent("task row with mistyped attempts or extra fields")
        if uuid in self.tasks:
            return
        rec = self._new_task(uuid)
        for key, value in fields.items():
            if key in _HISTORY_TIMES:
                continue  # read from the history
            if key == "history":
                value = _trimmed(tuple(value))
            elif value.__class__ is str and key in _SHARED_FIELDS:
                value = self._intern_text(value)
            elif value.__class__ is str and key == "traceback":
                self._set_traceback(rec, value)
                continue
            elif value.__class__ is str and key in _MASKED_FIELDS and self.mask is not None:
                value = self.mask(value)  # today's patterns: a snapshot written before them is masked now
            setattr(rec, key, value)
        implicit = _implicit(rec._hist, rec)
        if implicit is not None:
            rec._hist = implicit  # as ingest keeps it: no tuple, no second copy of the times
        rec.state = state = sys.intern(state[:64])
        if rec.name.__class__ is str:
            rec.name = sys.intern(rec.name)
        if rec.hostname.__class__ is str:
            rec.hostname = self._intern_host(rec.hostname)
        self._index(self.by_state, "PENDING", state, uuid)
        self._renamed(rec, None)
        self._index(self.by_worker, None, rec.hostname if rec.hostname.__class__ is str else None, uuid)
        self._index_root(None, _root_key(rec.root_id, uuid), uuid)
        self._reparented(rec, None)
        for attempt in rec.attempts or ():
            if isinstance(attempt, dict):
                self.failure_groups.add(
                    uuid,
                    rec.name,
                    attempt.get("hostname"),
                    attempt.get("exception"),
                    attempt.get("traceback"),
                    attempt.get("timestamp"),
                    "RETRY",
                )
        if _as_number(rec.started) is not None:
            self.stats.started(rec.name, rec.received, rec.sent, rec.started)
        if state == "FAILURE":
            self.failures.append(uuid)
            gid = self.failure_groups.add(
                uuid, rec.name, rec.hostname, rec.exception, rec.traceback, rec.timestamp, "FAILURE"
            )
            if rec.attempt_count():
                self.failure_groups.settle(gid, "GAVE_UP")
        elif state == "SUCCESS" and rec.attempt_count():
            self.failure_groups.settle(self._last_retry_group(rec), "RECOVERED")
        if state == "SUCCESS" or state == "FAILURE":
            self.stats.finished(rec.name, state, rec.runtime, rec.received, rec.started, rec.sent, rec.timestamp)
        self.text_stale = True  # the search cache is rebuilt once, after the whole restore

    def restore_worker(self, row: list[Any], saved_at: float) -> None:
        """Re-create a worker from `export_worker`'s row; one alive when the snapshot was taken counts as
        reachable until events flow again (like a broker outage: nobody could hear it meanwhile)."""
        if not isinstance(row, list) or len(row) != len(SNAPSHOT_WORKER_FIELDS):
            raise MalformedEvent("worker row of the wrong length")
        fields = dict(zip(SNAPSHOT_WORKER_FIELDS, row))
        hostname = fields["hostname"]
        if hostname.__class__ is not str or not hostname:
            raise MalformedEvent("worker row without a hostname")
        for key in ("freq", "last_heartbeat", "first_seen", "offline_at", "goodbye"):
            if fields[key] is not None and _as_number(fields[key]) is None:
                raise MalformedEvent(f"worker row with a non-numeric {key}")
        worker = self.workers.get(hostname) or self._new_worker(sys.intern(hostname[:255]), fields["first_seen"])
        if worker is None:
            return
        for key, value in fields.items():
            if key != "hostname":
                setattr(worker, key, value)
        if not worker.freq or worker.freq <= 0:
            worker.freq = 60.0
        worker.grace = math.inf if worker.alive(saved_at) else None
        self.changed_workers.add(worker.hostname)

    # -- readers (call with `lock` held) -----------------------------------------------------------
    @property
    def counts(self) -> dict[str, int]:
        """Retained tasks per state (every standard state, plus custom states in use)."""
        return {s: len(members) for s, members in self.by_state.items()}

    @property
    def task_names(self) -> dict[str, int]:
        """Retained tasks per task name."""
        return {name: len(members) for name, members in self.by_name.items()}

    def first_seq(self) -> int:
        """The seq of the oldest retained task (the order has no gaps)."""
        return self._seq - len(self.order) + 1

    def last_seq(self) -> int:
        """The seq of the newest task."""
        return self._seq

    def drain_changes(self, now: float) -> tuple[set[str], set[str]]:
        """Hand over (and reset) the task uuids and worker hostnames changed since the last call."""
        for worker in self.workers.values():
            alive = worker.alive(now)
            if alive != worker.online:
                worker.online = alive
                if not alive:
                    if worker.offline_at is None:
                        worker.offline_at = now
                    self._worker_gone(worker, now)
                self.changed_workers.add(worker.hostname)
        tasks, workers = self.changed_tasks, self.changed_workers
        self.changed_tasks, self.changed_workers = set(), set()
        return tasks, workers

    def iter_newest(self) -> Iterator[TaskRecord]:
        """Retained tasks, most recently first seen first."""
        tasks = self.tasks
        for uuid in reversed(self.order):
            rec = tasks.get(uuid)
            if rec is not None:
                yield rec

    def workers_online(self, now: float) -> int:
        """How many workers are online at `now`."""
        return sum(1 for w in self.workers.values() if w.alive(now))

    def children_of(self, uuid: str) -> list[str]:
        """Uuids of the tasks whose parent is `uuid`."""
        return linked(self.children, uuid)

    def workflow_members(self, root: str) -> list[str]:
        """Uuids of the retained tasks whose root_id is `root` (the root itself aside), oldest first."""
        return linked(self.by_root, root)
