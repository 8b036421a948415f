"""Live per-task-name statistics: outcome counts, runtime and queue-wait percentiles.

Pure (no Flask, no I/O, stdlib only) and not locked: ingest calls `TaskStats.started()`,
`finished()` and `retried()` under the state's lock, readers call `table()` / `row()` the same way.

Every update is O(1): values go into fixed log-scale histogram buckets (a dict of bucket index ->
count, at most `BUCKETS + 2` keys), so memory per name is bounded and percentiles are computed from
the bucket counts at read time. Bucket i (1..BUCKETS) covers [LOW * R**(i-1), LOW * R**i) with
R = 1.1, LOW = 100 us, up to 1 day (216 buckets, plus one below and one above). Percentiles are
interpolated between order statistics exactly as statistics.quantiles(method="inclusive") does (numpy's
default "linear" too), but each order statistic is stood in for by the geometric midpoint of its bucket,
clamped to the exact [min, max] seen; so a percentile is within RELATIVE_ERROR = sqrt(R) - 1 (~4.9 %)
of the exact one for values in [100 us, 1 day]. Below 100 us the error is at most 100 us absolute;
above 1 day a value reads as the exact max. Max and mean are exact.

Two windows: "all" (lifetime) and "recent": a ring of `ceil(window / slot)` sub-aggregates, one per
`slot_seconds` of event time. A slot is recycled when an event of a newer slot maps onto it, and a
read includes only slots within the window ending at `now`, so "recent" covers between
`window - slot` and `window` seconds of event time and never anything older than `window`.
Event times are trusted for the window: a task stamped far in the future holds its ring entry until
time catches up, and with `now=None` (the newest event time seen) it would empty "recent"; readers
with a clock should pass `now=time.time()`. Lifetime statistics do not depend on event times.

For /metrics (dashboard/web/metrics.py) the stats also keep lifetime counters of task events per name
(`count()`) and, per name, how many runtimes (and, with `export_wait`, sent -> started waits) fall at or
below each of the fixed EXPORT_BUCKETS bounds: a Prometheus histogram needs exact counts at its `le`
bounds, which the log-scale buckets above cannot give. Both are O(1) per event and never shrink.
"""

from __future__ import annotations

import math
import numbers
from bisect import bisect_left
from typing import Any

LOW = 1e-4  # 100 us: the lower edge of the first regular bucket
HIGH = 86_400.0  # 1 day: values above land in the overflow bucket
# Longer than any real runtime or wait (~317 years): larger values are garbage, and ignoring them
# keeps sums finite, so a mean never turns into inf (which is not valid JSON).
MAX_SECONDS = 1e10
R = 1.1  # bucket width ratio: each bucket is 10 % wider than the one before
BUCKETS = math.ceil(math.log(HIGH / LOW) / math.log(R))  # regular buckets 1..BUCKETS
RELATIVE_ERROR = math.sqrt(R) - 1  # worst case |reported - true| / true inside [LOW, HIGH]
OTHER = "<other>"  # where names past max_names are aggregated
UNKNOWN = "<unknown>"  # the name of a task whose name was never seen (None)
MAX_NAME_REPR = 200
WINDOWS = ("all", "recent")
# Task events counted per name over the process life (metrics: celery_task_<event>_total).
COUNTED_EVENTS = ("sent", "received", "started", "succeeded", "failed", "rejected", "revoked", "retried")
# Prometheus histogram bounds (`le`), chosen once: prometheus_client's defaults, which celery-exporter
# uses unless told otherwise, extended to an hour because tasks and queue waits often last minutes.
EXPORT_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
)

_EVENT_INDEX = {s: i for i, s in enumerate(COUNTED_EVENTS)}
_NCOUNTED = len(COUNTED_EVENTS)
_NEXPORT = len(EXPORT_BUCKETS)
_LOG_LOW = math.log(LOW)
_INV_LOG_R = 1.0 / math.log(R)
_OVERFLOW = BUCKETS + 1
_INF = math.inf
# What a bucket reports before clamping: the geometric midpoint; 0 (underflow) reports LOW / 2,
# the overflow bucket reports +inf so that the clamp to the exact max replaces it.
_MIDPOINT = [LOW / 2] + [LOW * R ** (i - 0.5) for i in range(1, BUCKETS + 1)] + [_INF]


def _num(value: Any) -> float | None:
    """`value` as a float if it is a finite non-negative real number (not bool), else None."""
    t = type(value)
    if t is float:  # the hot path: comparisons reject NaN, inf and negatives in one go
        return value if 0.0 <= value < _INF else None
    if t is bool or t is str or value is None:
        return None
    try:
        if t is not int and not isinstance(value, numbers.Real):
            return None
        f = float(value)  # ints, Fractions, numpy scalars; huge ints raise OverflowError
    except Exception:  # noqa: BLE001 - untrusted input (even a hostile __float__) must never raise
        return None
    return f if 0.0 <= f < _INF else None


def _seconds(value: Any) -> float | None:
    """`value` as a duration if it is a plausible one (see MAX_SECONDS), else None."""
    v = _num(value)
    return v if v is not None and v <= MAX_SECONDS else None


def _bucket(v: float) -> int:
    """Histogram bucket index of a finite non-negative value."""
    if v < LOW:
        return 0
    i = int((math.log(v) - _LOG_LOW) * _INV_LOG_R) + 1
    return i if i <= BUCKETS else _OVERFLOW


def _name(name: Any) -> str:
    """The key a task name is tracked under: str as is, None -> <unknown>, else a capped repr."""
    if isinstance(name, str):
        return str.__str__(name)  # an exact str even for subclasses (never a custom __str__)
    if name is None:
        return UNKNOWN
    try:
        return repr(name)[:MAX_NAME_REPR]
    except Exception:  # noqa: BLE001 - a hostile __repr__ must not break ingest
        return f"<{type(name).__name__}>"[:MAX_NAME_REPR]


def _window_name(window: Any) -> str:
    """`window` if it names a window; a ValueError (a caller's bug, not event data) otherwise."""
    if type(window) is str and window in WINDOWS:
        return window
    raise ValueError(f"window must be one of {WINDOWS}, not {type(window).__name__}")


class _Hist:
    """Bucket counts plus exact count, sum, min and max of one measured quantity."""

    __slots__ = ("counts", "n", "total", "lo", "hi")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.n = 0
        self.total = 0.0
        self.lo = _INF
        self.hi = 0.0

    def add(self, i: int, v: float) -> None:
        """Count value `v`, already mapped to bucket `i`."""
        c = self.counts
        c[i] = c.get(i, 0) + 1
        self.n += 1
        self.total += v
        if v < self.lo:
            self.lo = v
        if v > self.hi:
            self.hi = v

    def merge(self, other: _Hist) -> None:
        """Add another histogram's data to this one (read time only)."""
        if not other.n:
            return
        c = self.counts
        for i, k in other.counts.items():
            c[i] = c.get(i, 0) + k
        self.n += other.n
        self.total += other.total
        self.lo = min(self.lo, other.lo)
        self.hi = max(self.hi, other.hi)

    def percentiles(self, qs: tuple[float, ...]) -> list[float | None]:
        """Percentiles (q in 0..1), interpolated like statistics.quantiles(method="inclusive")."""
        n = self.n
        if not n:
            return [None] * len(qs)
        # Each q needs the order statistics at 0-based ranks j and j + 1 (weight f on the latter);
        # each is stood in for by its bucket's midpoint clamped to [min, max], which is within
        # RELATIVE_ERROR of it, so the interpolation between them is too.
        spots = []
        for q in qs:
            h = q * (n - 1)
            j = min(int(h), n - 1)
            spots.append((j, min(j + 1, n - 1), h - j))
        ranks = sorted({r for j, k, _ in spots for r in (j, k)})
        value: dict[int, float] = {}
        lo, hi, counts = self.lo, self.hi, self.counts
        r = 0
        cum = 0
        for i in sorted(counts):
            cum += counts[i]  # this bucket holds the 0-based ranks below cum
            while r < len(ranks) and ranks[r] < cum:
                value[ranks[r]] = min(max(_MIDPOINT[i], lo), hi)
                r += 1
            if r == len(ranks):
                break
        return [value[j] + f * (value[k] - value[j]) for j, k, f in spots]


class _Agg:
    """Everything tracked for one name in one window (lifetime, or one recent slot)."""

    __slots__ = ("count", "succeeded", "failed", "retried", "last_seen", "runtime", "wait", "wait_sent")

    def __init__(self) -> None:
        self.count = 0
        self.succeeded = 0
        self.failed = 0
        self.retried = 0
        self.last_seen: float | None = None
        self.runtime = _Hist()
        self.wait = _Hist()  # received -> started
        self.wait_sent = _Hist()  # sent -> started

    def merge(self, other: _Agg) -> None:
        """Add another aggregate's data to this one (read time only)."""
        self.count += other.count
        self.succeeded += other.succeeded
        self.failed += other.failed
        self.retried += other.retried
        if other.last_seen is not None and (self.last_seen is None or other.last_seen > self.last_seen):
            self.last_seen = other.last_seen
        self.runtime.merge(other.runtime)
        self.wait.merge(other.wait)
        self.wait_sent.merge(other.wait_sent)


def _merged(a: _Agg) -> _Agg:
    """A fresh aggregate holding a copy of `a`'s data."""
    m = _Agg()
    m.merge(a)
    return m


def _row(name: str, a: _Agg) -> dict[str, Any]:
    """The public row dict of one aggregate."""
    rt = a.runtime
    p50, p95, p99 = rt.percentiles((0.50, 0.95, 0.99))
    w50, w95 = a.wait.percentiles((0.50, 0.95))
    s50, s95 = a.wait_sent.percentiles((0.50, 0.95))
    return {
        "name": name,
        "count": a.count,
        "succeeded": a.succeeded,
        "failed": a.failed,
        "retried": a.retried,
        "failure_rate": a.failed / a.count if a.count else None,
        "runtime": {
            "p50": p50,
            "p95": p95,
            "p99": p99,
            "max": rt.hi if rt.n else None,
            "mean": rt.total / rt.n if rt.n else None,
        },
        "queue_wait": {"p50": w50, "p95": w95},
        "queue_wait_sent": {"p50": s50, "p95": s95},
        "last_seen": a.last_seen,
    }


def _export_add(table: dict[str, list[int]], key: str, v: float) -> None:
    """Count `v` at the first EXPORT_BUCKETS bound >= v (values above the last are only in +Inf)."""
    i = bisect_left(EXPORT_BUCKETS, v)
    if i < _NEXPORT:
        row = table.get(key)
        if row is None:
            row = table[key] = [0] * _NEXPORT
        row[i] += 1


def _cumulative(row: list[int] | None) -> list[int]:
    """Per-bound counts -> Prometheus' cumulative bucket counts."""
    out = [0] * _NEXPORT
    if row is not None:
        total = 0
        for i, k in enumerate(row):
            total += k
            out[i] = total
    return out


class TaskStats:
    """Per-task-name outcome counts and latency percentiles, lifetime and over a recent window.

    The same class keeps per-queue figures in the state (names are then queue names).
    """

    def __init__(
        self,
        max_names: int = 2000,
        window_seconds: float = 300.0,
        slot_seconds: float = 60.0,
        export_wait: bool = False,
    ) -> None:
        if type(max_names) is not int or max_names < 1:
            raise ValueError(f"max_names must be a positive int, not {max_names!r}")
        window, slot = _num(window_seconds), _num(slot_seconds)
        if not window or not slot or slot > window:
            raise ValueError(f"need 0 < slot_seconds <= window_seconds, got {slot_seconds!r}, {window_seconds!r}")
        self.max_names = max_names
        self.window_seconds = window
        self.slot_seconds = slot
        # A tiny epsilon so that 300 / 60 is 5 slots even if the division lands a hair above 5.
        self._nslots = max(1, math.ceil(window / slot - 1e-9))
        self._all: dict[str, _Agg] = {}
        self._slot_index: list[int] = [-1] * self._nslots  # which slot of event time each ring entry holds
        self._slot_aggs: list[dict[str, _Agg]] = [{} for _ in range(self._nslots)]
        self._latest: float | None = None  # newest valid event timestamp: the default `now` for reads
        # Lifetime, for /metrics: task events per name, and runtimes (waits) per EXPORT_BUCKETS bound.
        self._events: dict[str, list[int]] = {}
        self.export_wait = export_wait  # whether sent -> started waits are counted per bound too
        self._runtime_le: dict[str, list[int]] = {}
        self._wait_le: dict[str, list[int]] = {}

    # -- ingest (hot path) ---------------------------------------------------------------------

    def _resolve(self, name: Any) -> tuple[str, _Agg]:
        """The tracked key and lifetime aggregate for a name, folding new names past the cap into <other>."""
        key = name if type(name) is str else _name(name)
        agg = self._all.get(key)
        if agg is None:
            if len(self._all) - (OTHER in self._all) >= self.max_names:
                key = OTHER
                agg = self._all.get(OTHER)
            if agg is None:
                agg = self._all[key] = _Agg()
        return key, agg

    def _slot(self, key: str, ts: float) -> _Agg | None:
        """The recent-window aggregate of `key` for event time `ts`, or None if ts is too old."""
        si = int(ts // self.slot_seconds)
        pos = si % self._nslots
        held = self._slot_index[pos]
        if held != si:
            if si < held:
                return None  # a newer slot already reuses this entry: ts is older than the window
            self._slot_index[pos] = si
            self._slot_aggs[pos] = aggs = {}  # recycle: drops what is now older than the window
        else:
            aggs = self._slot_aggs[pos]
        agg = aggs.get(key)
        if agg is None:
            agg = aggs[key] = _Agg()
        return agg

    def _seen(self, agg: _Agg, ts: float) -> None:
        """Advance last_seen of `agg` and the newest timestamp overall."""
        if agg.last_seen is None or ts > agg.last_seen:
            agg.last_seen = ts
        if self._latest is None or ts > self._latest:
            self._latest = ts

    def finished(
        self,
        name: str | None,
        state: str,
        runtime: float | None,
        received: float | None,
        started: float | None,
        sent: float | None,
        timestamp: float | None,
    ) -> None:
        """Count a task that reached SUCCESS or FAILURE (queue waits are recorded by started())."""
        if not isinstance(state, str):
            return  # garbage: compare nothing (a hostile __eq__ could raise)
        state = str.__str__(state)
        if state == "SUCCESS":
            failed = False
        elif state == "FAILURE":
            failed = True
        else:
            return  # not a finished state: nothing to count (and `state` may be any garbage)
        key, agg = self._resolve(name)
        ts = _num(timestamp)
        rt = _seconds(runtime)
        if rt is None and ts is not None:
            # Failures often carry no runtime; the worker's own timestamps still give one.
            st = _num(started)
            if st is not None and st <= ts <= st + MAX_SECONDS:
                rt = ts - st
        bucket = 0
        if rt is not None:
            bucket = _bucket(rt)
            _export_add(self._runtime_le, key, rt)
        aggs = (agg,) if ts is None else (agg, self._slot(key, ts))
        for a in aggs:
            if a is None:
                continue
            a.count += 1
            if failed:
                a.failed += 1
            else:
                a.succeeded += 1
            if rt is not None:
                a.runtime.add(bucket, rt)
            if ts is not None:
                self._seen(a, ts)

    def retried(self, name: str | None, timestamp: float) -> None:
        """Count a task-retried event."""
        key, agg = self._resolve(name)
        agg.retried += 1
        ts = _num(timestamp)
        if ts is None:
            return
        self._seen(agg, ts)
        slot = self._slot(key, ts)
        if slot is not None:
            slot.retried += 1
            self._seen(slot, ts)

    def started(self, name: str | None, received: float | None, sent: float | None, started: float | None) -> None:
        """Record the queue waits of a task that just started (received->started, sent->started)."""
        st = _num(started)
        if st is None:
            return  # without a start time there is no wait to measure and no time for the window
        key, agg = self._resolve(name)
        rc, sn = _num(received), _num(sent)
        # A negative wait is clock skew between producer and worker hosts: not a measurement.
        wait = st - rc if rc is not None and rc <= st <= rc + MAX_SECONDS else None
        wait_sent = st - sn if sn is not None and sn <= st <= sn + MAX_SECONDS else None
        wb = _bucket(wait) if wait is not None else 0
        sb = 0
        if wait_sent is not None:
            sb = _bucket(wait_sent)
            if self.export_wait:
                _export_add(self._wait_le, key, wait_sent)
        for a in (agg, self._slot(key, st)):
            if a is None:
                continue
            if wait is not None:
                a.wait.add(wb, wait)
            if wait_sent is not None:
                a.wait_sent.add(sb, wait_sent)
            self._seen(a, st)

    def count(self, subject: str, name: Any) -> None:
        """Count one task event of `subject` (one of COUNTED_EVENTS; others are ignored) for `name`."""
        i = _EVENT_INDEX.get(subject)
        if i is None:
            return
        key = name if type(name) is str else _name(name)
        row = self._events.get(key)
        if row is None:
            events = self._events
            if len(events) - (OTHER in events) >= self.max_names:
                key = OTHER
                row = events.get(OTHER)
            if row is None:
                row = events[key] = [0] * _NCOUNTED
        row[i] += 1

    def sent_wait(self, name: Any, sent: Any, started: Any) -> None:
        """Record only a sent -> started wait (the lean path of started() for per-queue stats)."""
        if type(sent) is not float or type(started) is not float:
            self.started(name, None, sent, started)  # ints and odd types: the careful path
            return
        wait = started - sent
        if not 0.0 <= wait <= MAX_SECONDS:
            return  # clock skew between hosts (negative), garbage, or NaN: not a measurement
        key, agg = self._resolve(name)
        b = _bucket(wait)
        agg.wait_sent.add(b, wait)
        if self.export_wait:
            _export_add(self._wait_le, key, wait)
        slot = self._slot(key, started)
        if slot is not None:
            slot.wait_sent.add(b, wait)
        if self._latest is None or started > self._latest:
            self._latest = started

    # -- reads ---------------------------------------------------------------------------------

    def total(self, subject: str) -> int:
        """Counted events of one subject over every name."""
        i = COUNTED_EVENTS.index(subject)
        return sum(row[i] for row in self._events.values())

    def event_counts(self) -> dict[str, dict[str, int]]:
        """Lifetime task events per name: {name: {event: count}} (names past max_names under <other>)."""
        return {key: dict(zip(COUNTED_EVENTS, row)) for key, row in self._events.items()}

    def names(self) -> list[str]:
        """Every name with counted events or statistics (not <other>, not <unknown>)."""
        keys = set(self._events) | set(self._all)
        keys.discard(OTHER)
        keys.discard(UNKNOWN)
        return sorted(keys)

    def export_histograms(self, which: str) -> list[tuple[str, list[int], int, float]]:
        """(name, cumulative counts at EXPORT_BUCKETS, count, sum) of lifetime "runtime" or "wait_sent"."""
        if which == "runtime":
            table = self._runtime_le
        elif which == "wait_sent":
            table = self._wait_le
        else:
            raise ValueError(f"which must be 'runtime' or 'wait_sent', not {which!r}")
        out = []
        for key, agg in self._all.items():
            h = agg.runtime if which == "runtime" else agg.wait_sent
            if h.n:
                out.append((key, _cumulative(table.get(key)), h.n, h.total))
        return out

    def wait_sent(self, name: Any, now: float | None = None, window: str = "all") -> dict[str, Any] | None:
        """Sent -> started wait of one name: {"p50", "p95", "p99", "count"}, or None without data."""
        key = _name(name)
        if _window_name(window) == "recent":
            h = _Hist()
            for aggs in self._live_slots(now):
                a = aggs.get(key)
                if a is not None:
                    h.merge(a.wait_sent)
        else:
            a = self._all.get(key)
            h = a.wait_sent if a is not None else _Hist()
        if not h.n:
            return None
        p50, p95, p99 = h.percentiles((0.50, 0.95, 0.99))
        return {"p50": p50, "p95": p95, "p99": p99, "count": h.n}

    def _live_slots(self, now: Any) -> list[dict[str, _Agg]]:
        """The ring entries inside the window ending at `now` (default: the newest event time seen)."""
        t = _num(now)
        if t is None:
            t = self._latest
        if t is None:
            return []
        cur = int(t // self.slot_seconds)
        first = cur - self._nslots  # slots strictly after this one are inside the window
        return [aggs for si, aggs in zip(self._slot_index, self._slot_aggs) if first < si <= cur]

    def _recent(self, now: Any) -> dict[str, _Agg]:
        """Merge the live ring slots into one aggregate per name."""
        out: dict[str, _Agg] = {}
        merged: set[str] = set()  # keys whose entry in `out` is a private copy, safe to merge into
        for aggs in self._live_slots(now):
            for key, a in aggs.items():
                m = out.get(key)
                if m is None:
                    out[key] = a  # most names sit in one slot: share it read-only, copy only to merge
                    continue
                if key not in merged:
                    merged.add(key)
                    out[key] = m = _merged(m)
                m.merge(a)
        return out

    def _window(self, now: Any, window: str) -> dict[str, _Agg]:
        """Name -> aggregate for a window name."""
        if _window_name(window) == "all":
            return self._all
        return self._recent(now)

    def table(self, now: float | None = None, window: str = "all") -> list[dict[str, Any]]:
        """One row per name with data in the window, most finished tasks first (then by name)."""
        aggs = self._window(now, window)
        rows = [_row(key, a) for key, a in aggs.items()]
        rows.sort(key=lambda r: (-r["count"], r["name"]))
        return rows

    def row(self, name: str, now: float | None = None, window: str = "all") -> dict[str, Any] | None:
        """The row of one name in the window, or None if it has no data there."""
        key = _name(name)
        if _window_name(window) == "recent":
            # Merge only this name's slots rather than the whole table.
            m: _Agg | None = None
            for aggs in self._live_slots(now):
                a = aggs.get(key)
                if a is not None:
                    if m is None:
                        m = _Agg()
                    m.merge(a)
            return _row(key, m) if m is not None else None
        a = self._window(now, window).get(key)
        return _row(key, a) if a is not None else None
