"""Task and worker records, the states a task can be in, and how a record is shown (list row, detail).

Pure and small on purpose: the state (dashboard/core/state.py) mutates these records; the read models
(dashboard/live/readmodels.py), the snapshot file and the API read them.
"""

from __future__ import annotations

from typing import Any

# Celery's event subject -> task state (celery.events.state.TASK_EVENT_TO_STATE).
EVENT_TO_STATE: dict[str, str] = {
    "sent": "PENDING",
    "received": "RECEIVED",
    "started": "STARTED",
    "failed": "FAILURE",
    "retried": "RETRY",
    "succeeded": "SUCCESS",
    "revoked": "REVOKED",
    "rejected": "REJECTED",
}
# celery.states.PRECEDENCE: a lower index wins; unknown (custom) states rank as None does.
_PRECEDENCE_LIST = ["SUCCESS", "FAILURE", None, "REVOKED", "STARTED", "RECEIVED", "REJECTED", "RETRY", "PENDING"]
PRECEDENCE: dict[str | None, int] = {s: i for i, s in enumerate(_PRECEDENCE_LIST)}
PRECEDENCE["LOST"] = PRECEDENCE["STARTED"]
READY_STATES = frozenset(("SUCCESS", "FAILURE", "REVOKED", "REJECTED"))
# LOST is the dashboard's own: the worker running the task died (no heartbeat, or it said goodbye) before
# the task finished. Any later event of the task (a redelivery, or a worker that was only cut off) wins.
LOST = "LOST"
# UNREPORTED is the dashboard's own too: the task's worker is alive but no longer runs or holds it, and no
# final event arrived (events are fire-and-forget; some Celery releases lose them): finished, outcome not
# reported. Ranked as STARTED, so any later event of the task wins (dashboard/cluster/reconcile.py).
UNREPORTED = "UNREPORTED"
PRECEDENCE[UNREPORTED] = PRECEDENCE["STARTED"]
STATES = ("PENDING", "RECEIVED", "STARTED", "RETRY", "SUCCESS", "FAILURE", "REVOKED", "REJECTED", LOST, UNREPORTED)
HEARTBEAT_EXPIRE_WINDOW = 2.0  # a worker is offline after freq * 2 s without a heartbeat (Celery: 200 %)
# A field longer than this is kept cut, with a note of its length: the memory a task can take is bounded
# (a flood of megabyte tracebacks must not grow the process past what max_tasks implies).
MAX_FIELD_CHARS = 256 * 1024
# Task pages and the task API show this much of a field; the whole kept value is one request away.
DISPLAY_CHARS = 10_000
# The fields a detail view shortens (the rest are short by nature: names, ids, times).
LONG_FIELDS = ("args", "kwargs", "result", "exception", "traceback")


# Every field of a task, as the pages, the API and the snapshot file name them (in this order).
TASK_FIELDS = (
    "uuid",
    "seq",
    "name",
    "state",
    "timestamp",
    "args",
    "kwargs",
    "result",
    "exception",
    "traceback",
    "hostname",
    "client",
    "retries",
    "eta",
    "expires",
    "root_id",
    "parent_id",
    "exchange",
    "routing_key",
    "queue",
    "runtime",
    "sent",
    "received",
    "started",
    "succeeded",
    "failed",
    "retried",
    "revoked",
    "rejected",
    "history",
    "attempts",
    "extra",
)
# Fields most tasks never have (a failure, a retry, an eta, custom events): kept in a second object that
# only such a task has, so every other record is 6 slots smaller. (exchange, routing_key, queue and
# client stay in the record: with task-sent events enabled every task has them.)
RARE_FIELDS = ("exception", "traceback", "eta", "expires", "attempts", "extra")
# Times of the rarer event kinds: read from the task's history (the last event of that kind) instead
# of a slot each. `sent`, `received` and `started` keep slots: lists, sorting and statistics read them.
HISTORY_TIMES = ("succeeded", "failed", "retried", "revoked", "rejected")


class RareFields:
    """The rare fields of one task (see RARE_FIELDS); a traceback is its shared head and its own last line."""

    __slots__ = ("exception", "tb_head", "tb_tail", "eta", "expires", "attempts", "extra")
    tb_head: str | None  # shared between tasks (interned by the state)
    exception: Any
    tb_tail: Any
    eta: Any
    expires: Any
    attempts: list[tuple[Any, ...]] | None  # (retries, timestamp, exception, tb head, tb tail, hostname) each
    extra: dict[str, Any] | None

    def __init__(self) -> None:
        self.exception = self.tb_head = self.tb_tail = self.eta = self.expires = self.attempts = self.extra = None


def split_traceback(tb: str) -> tuple[str, str]:
    """(head, tail) of a traceback: the frames, which tasks failing at the same place share, and its last line
    (the exception and its message, usually different each time)."""
    cut = tb.rfind("\n", 0, len(tb) - 1) + 1
    return tb[:cut], tb[cut:]


def _rare(name: str) -> property:
    def get(rec: TaskRecord) -> Any:
        more = rec._more
        return None if more is None else getattr(more, name)

    def put(rec: TaskRecord, value: Any) -> None:
        more = rec._more
        if more is None:
            if value is None:
                return
            more = rec._more = RareFields()
        setattr(more, name, value)

    return property(get, put, doc=f"The task's {name} (None for most tasks).")


# Fields holding the time of the last event of their kind, kept in slots.
SLOT_TIMES = ("sent", "received", "started")


class ImplicitHistory:
    """A task's history while every time in it is one of the record's own fields: each event of a kind with a
    slot (SLOT_TIMES) at most once, then possibly one final event (a HISTORY_TIMES kind) whose time is the
    record's `timestamp`. Most tasks never leave it (sent, received, started, succeeded), so their history
    costs no tuple at all: one shared object per sequence of kinds. The first event that breaks the rule
    turns the history into the explicit tuple, built from the fields before they change."""

    __slots__ = ("_next", "final", "subjects")

    def __init__(self, subjects: tuple[str, ...], final: bool) -> None:
        self.subjects = subjects
        self.final = final  # the last subject's time is the record's timestamp
        self._next: dict[str, ImplicitHistory | None] = {}

    def then(self, subject: str) -> ImplicitHistory | None:
        """This history with one more event of `subject`, or None when that cannot be implicit."""
        try:
            return self._next[subject]
        except KeyError:
            pass
        if subject not in SLOT_TIMES and subject not in HISTORY_TIMES:
            return None  # a custom kind: never implicit, and not remembered (their names are the wire's, unbounded)
        nxt = None
        if not self.final and subject not in self.subjects:
            final = subject not in SLOT_TIMES
            nxt = ImplicitHistory((*self.subjects, subject), final)
        self._next[subject] = nxt  # (bounded: the few kinds above, each at most once per node)
        return nxt

    def times(self, rec: TaskRecord) -> tuple[Any, ...]:
        """The explicit history: (subject, timestamp, ...)."""
        out: list[Any] = []
        last = len(self.subjects) - 1
        for i, subject in enumerate(self.subjects):
            out.append(subject)
            out.append(rec.timestamp if self.final and i == last else getattr(rec, subject))
        return tuple(out)


EMPTY_HISTORY = ImplicitHistory((), False)


def _history_time(subject: str) -> property:
    def get(rec: TaskRecord) -> float | None:
        implicit = rec._hist
        if implicit.__class__ is ImplicitHistory:
            if implicit.final and implicit.subjects[-1] == subject:
                return rec.timestamp
            return None  # (the other kinds of an implicit history have slots)
        hist = rec.history
        for i in range(len(hist) - 2, -1, -2):
            if hist[i] == subject:
                return hist[i + 1]  # type: ignore[no-any-return]
        return None

    return property(get, doc=f"When the task's last task-{subject} event happened (from its history).")


class TaskRecord:
    """One task, as compact as Python allows (this is multiplied by max_tasks): the usual fields in slots,
    the rare ones in a RareFields object only tasks that have them carry, the times of rarer event kinds
    read from the history (implicit while it can be, see ImplicitHistory; else one tuple, rebuilt per event:
    a tuple is 32 bytes smaller than a list)."""

    __slots__ = (
        "uuid",
        "seq",
        "name",
        "state",
        "timestamp",
        "args",
        "kwargs",
        "result",
        "hostname",
        "client",
        "retries",
        "root_id",
        "parent_id",
        "exchange",
        "routing_key",
        "queue",
        "runtime",
        "sent",
        "received",
        "started",
        "_hist",
        "_more",
    )
    # Declared here for the type checker (slots take no class values). Fields copied from events are
    # untrusted JSON (_copy_fields clips strings, nothing more): Any. The state sets the others itself.
    uuid: str
    seq: int
    state: str
    name: Any
    args: Any
    kwargs: Any
    result: Any
    retries: Any
    exchange: Any
    routing_key: Any
    queue: Any
    runtime: Any
    root_id: str | None  # (_copy_fields drops an id that is not a string)
    parent_id: str | None
    hostname: str | None
    client: Any  # the sender's hostname: interned when a string
    timestamp: float | None
    sent: float | None  # the timestamp of the last event of each kind (see HISTORY_TIMES for the others)
    received: float | None
    started: float | None
    _hist: ImplicitHistory | tuple[Any, ...]
    _more: RareFields | None

    exception = _rare("exception")
    eta = _rare("eta")
    expires = _rare("expires")
    extra = _rare("extra")  # fields of custom events (e.g. progress)
    succeeded = _history_time("succeeded")
    failed = _history_time("failed")
    retried = _history_time("retried")
    revoked = _history_time("revoked")
    rejected = _history_time("rejected")

    def __init__(self, uuid: str, seq: int) -> None:
        self.uuid = uuid
        self.seq = seq
        self.state = "PENDING"
        self.name = self.timestamp = self.args = self.kwargs = self.result = None
        self.hostname = self.client = self.retries = None
        self.root_id = self.parent_id = self.exchange = None
        self.routing_key = self.queue = self.runtime = None
        self.sent = self.received = self.started = None
        self._hist = EMPTY_HISTORY
        self._more = None

    @property
    def history(self) -> tuple[Any, ...]:
        """Every event of the task, flat: (subject, timestamp, subject, timestamp, ...)."""
        hist = self._hist
        return hist.times(self) if hist.__class__ is ImplicitHistory else hist  # type: ignore[return-value]

    @history.setter
    def history(self, value: tuple[Any, ...]) -> None:
        """Set explicitly (a tuple, as `history` gives it)."""
        self._hist = value

    @property
    def traceback(self) -> Any:
        """The task's traceback (None for most tasks)."""
        more = self._more
        if more is None or more.tb_head is None:
            return None if more is None else more.tb_tail
        return more.tb_head + more.tb_tail

    @traceback.setter
    def traceback(self, value: Any) -> None:
        """Set whole: kept as one value (the state splits a text to share its head, see set_traceback)."""
        self.set_traceback(None, value)

    @property
    def attempts(self) -> list[dict[str, Any]] | None:
        """One dict per task-retried (retries, timestamp, exception, traceback, hostname); None before any."""
        more = self._more
        if more is None or more.attempts is None:
            return None
        return [
            {
                "retries": a[0],
                "timestamp": a[1],
                "exception": a[2],
                "traceback": a[4] if a[3] is None else a[3] + a[4],
                "hostname": a[5],
            }
            for a in more.attempts
        ]

    @attempts.setter
    def attempts(self, value: list[dict[str, Any]] | None) -> None:
        """Set from dicts as `attempts` gives them (a snapshot's); anything but a dict is dropped."""
        if self._more is None:
            if value is None:
                return
            self._more = RareFields()
        self._more.attempts = None
        for a in value or ():
            if isinstance(a, dict):
                tb = a.get("traceback")
                self.add_attempt(a.get("retries"), a.get("timestamp"), a.get("exception"), None, tb, a.get("hostname"))
        if value is not None and self._more.attempts is None:
            self._more.attempts = []

    def add_attempt(self, retries: Any, when: Any, exception: Any, tb_head: str | None, tb: Any, host: Any) -> None:
        """Note one retried attempt; its traceback is `tb_head + tb` (the head shared, see split_traceback)."""
        more = self._more
        if more is None:
            more = self._more = RareFields()
        if more.attempts is None:
            more.attempts = []
        more.attempts.append((retries, when, exception, tb_head, tb, host))

    def attempt_count(self) -> int:
        """How many retried attempts are noted."""
        more = self._more
        return 0 if more is None or more.attempts is None else len(more.attempts)

    def set_traceback(self, head: str | None, tail: Any) -> None:
        """Keep a traceback as `head + tail` (head shared with other tasks), or any value as `tail` alone."""
        more = self._more
        if more is None:
            if head is None and tail is None:
                return
            more = self._more = RareFields()
        more.tb_head = head
        more.tb_tail = tail


class WorkerRecord:
    """One worker, online while heartbeats keep arriving within freq * 2 seconds."""

    __slots__ = (
        "hostname",
        "freq",
        "last_heartbeat",
        "processed",
        "active",
        "loadavg",
        "sw_ident",
        "sw_ver",
        "sw_sys",
        "pid",
        "first_seen",
        "offline_at",
        "goodbye",
        "online",
        "succeeded",
        "failed",
        "grace",
    )
    # Heartbeat fields are untrusted JSON copied as they come (see TaskRecord).
    processed: Any
    active: Any
    loadavg: Any
    sw_ident: Any
    sw_ver: Any
    sw_sys: Any
    pid: Any

    def __init__(self, hostname: str, now: float | None) -> None:
        self.hostname = hostname
        self.freq = 60.0  # Celery's default until a heartbeat says otherwise
        self.last_heartbeat: float | None = None
        self.processed = self.active = self.loadavg = self.sw_ident = self.sw_ver = None
        self.sw_sys = self.pid = None
        self.first_seen = now
        self.offline_at: float | None = None
        self.goodbye: float | None = None  # the worker's own timestamp on its worker-offline event
        self.online = False  # last value reported to readers, for change detection
        self.succeeded = 0
        self.failed = 0
        # While the broker is unreachable nobody's heartbeats can arrive: a worker alive when it went away
        # stays as it was (inf) and, once it is back, gets a full expiry window from then to be heard.
        self.grace: float | None = None

    def alive(self, now: float) -> bool:
        """Online when the last heartbeat is younger than freq * expire window."""
        hb = self.last_heartbeat
        if hb is None:
            return False
        grace = self.grace
        if grace is not None and grace > hb:
            hb = grace
        return now < hb + self.freq * HEARTBEAT_EXPIRE_WINDOW

    def long_gone(self, now: float, after: float) -> bool:
        """Offline for more than `after` seconds (0: never): the workers list and /metrics leave it out
        (autoscaled and container workers come and go)."""
        if after <= 0 or self.alive(now):
            return False
        since = self.offline_at or self.last_heartbeat or self.first_seen
        return since is not None and now - since > after


# What a snapshot keeps of a task and a worker (everything but derived or per-process fields).
SNAPSHOT_TASK_FIELDS = tuple(f for f in TASK_FIELDS if f != "seq")
SNAPSHOT_WORKER_FIELDS = tuple(f for f in WorkerRecord.__slots__ if f not in ("online", "grace"))


def _short(value: Any, limit: int = 200) -> Any:
    if value.__class__ is str and len(value) > limit:
        return value[:limit] + "…"
    return value


def derived_runtime(rec: TaskRecord) -> float | None:
    """A failed task's runtime, derived from its started and failed times: Celery's task-failed event
    carries no runtime. None when the worker reported one (`runtime`) or either time is unknown."""
    if rec.runtime is not None or rec.state != "FAILURE":
        return None
    started, failed = rec.started, rec.failed
    if not isinstance(started, (int, float)) or not isinstance(failed, (int, float)):
        return None
    return max(0.0, float(failed - started))


def task_summary(rec: TaskRecord) -> dict[str, Any]:
    """The fields a task list row shows."""
    return {
        "uuid": rec.uuid,
        "seq": rec.seq,  # order of first sight: a list's cursor, and how a page tells new rows from old
        "name": rec.name,
        "state": rec.state,
        "hostname": rec.hostname,
        "queue": rec.queue or rec.routing_key,
        "args": _short(rec.args),
        "kwargs": _short(rec.kwargs),
        "result": _short(rec.result),
        "exception": _short(rec.exception, 300),
        "retries": rec.retries,
        "sent": rec.sent,
        "received": rec.received,
        "started": rec.started,
        "timestamp": rec.timestamp,
        "runtime": rec.runtime,
        "runtime_derived": derived_runtime(rec),
        "progress": rec.extra if rec.extra else None,
    }


def clip(value: str, limit: int = MAX_FIELD_CHARS) -> str:
    """`value` cut to `limit` characters with a note saying so and how long it was."""
    return value[:limit] + f"\n… [cut by the dashboard: {len(value):,} characters in all]"


def task_detail(rec: TaskRecord, children: list[str], full: bool = False) -> dict[str, Any]:
    """Every field of a task, with its event history and children; long fields shortened unless `full`
    (`truncated` then maps each shortened field to its whole length, see /api/tasks/<uuid>/fields/<f>)."""
    hist = rec.history
    detail = {field: getattr(rec, field) for field in TASK_FIELDS if field not in ("history", "seq")}
    truncated = {}
    if not full:
        for key in LONG_FIELDS:
            value = detail[key]
            if value.__class__ is str and len(value) > DISPLAY_CHARS:
                detail[key] = value[:DISPLAY_CHARS] + "…"
                truncated[key] = len(value)
    detail["truncated"] = truncated
    detail["runtime_derived"] = derived_runtime(rec)
    detail["worker"] = rec.hostname
    detail["history"] = [{"event": hist[i], "timestamp": hist[i + 1]} for i in range(0, len(hist), 2)]
    attempts = rec.attempts or []
    if not full:
        attempts = [
            dict(a, traceback=a["traceback"][:DISPLAY_CHARS] + "…", traceback_length=len(a["traceback"]))
            if a.get("traceback").__class__ is str and len(a["traceback"]) > DISPLAY_CHARS
            else a
            for a in attempts
        ]
    detail["attempts"] = attempts
    detail["children"] = children
    return detail


def worker_summary(worker: WorkerRecord, now: float) -> dict[str, Any]:
    """The fields the workers page and API show."""
    hb = worker.last_heartbeat
    return {
        "hostname": worker.hostname,
        "online": worker.alive(now),
        "last_heartbeat": hb,
        "heartbeat_age": (now - hb) if hb is not None else None,
        "freq": worker.freq,
        "processed": worker.processed,
        "active": worker.active,
        "succeeded": worker.succeeded,
        "failed": worker.failed,
        "loadavg": worker.loadavg,
        "sw_ident": worker.sw_ident,
        "sw_ver": worker.sw_ver,
        "sw_sys": worker.sw_sys,
        "pid": worker.pid,
        "first_seen": worker.first_seen,
        "offline_at": None if worker.alive(now) else worker.offline_at,
    }
