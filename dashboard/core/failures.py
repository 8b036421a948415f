"""Pure, incremental grouping of failed Celery tasks by a normalized failure signature.

No Flask, no I/O, stdlib only. A signature is (exception type, normalized message, innermost
application frame); `FailureGroups.add()` runs on the ingest hot path, so its work is
O(len(traceback)) with precompiled regexes, signature computations are cached by the
(exception, traceback) strings, and nothing ever rescans all groups on add.
Not internally locked: call it under the caller's lock (the ingest holds `State.lock`).
"""

from __future__ import annotations

import ast
import hashlib
import heapq
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from functools import lru_cache
from typing import Any

# Input caps: every field is untrusted and may be megabytes long.
MAX_EXCEPTION_CHARS = 4_000
MAX_TRACEBACK_CHARS = 20_000  # the innermost frames are at the end, so the tail is kept
MAX_MESSAGE_SCAN = 2_000  # normalize at most this much of a message (placeholders only shrink it)
MAX_MESSAGE_CHARS = 300
MAX_TYPE_CHARS = 200
MAX_FRAME_PART_CHARS = 200
MAX_KEY_CHARS = 200  # uuids, task names, hostnames
MAX_LITERAL_CHARS = 2_000  # repr arguments longer than this are not parsed with ast.literal_eval
MAX_COUNTER_KEYS = 20  # task_names / workers kept per group
SIGNATURE_CACHE_SIZE = 1024
PRIMED_MAX = 4096  # analyses offered ahead for one batch (a batch holds at most a few thousand events)
TRUNCATED_MARK = "...(truncated)\n"
OUTCOMES = ("FAILURE", "RETRY")
# Plausible event timestamps (seconds): anything else is garbage and would overflow bucket math.
_MAX_ABS_TIMESTAMP = 1e13

# --- exception repr / traceback parsing -------------------------------------------------------
_IDENT = r"[^\W\d]\w*(?:\.[^\W\d]\w*)*"
_REPR_RE = re.compile(rf"\s*({_IDENT})\(")
_BARE_TYPE_RE = re.compile(rf"\s*({_IDENT})\s*\Z")
# Last line of a formatted traceback: "module.Type: message" or just "Type".
_TB_LAST_LINE_RE = re.compile(rf"({_IDENT})(?::[ \t]?(.*))?\Z", re.S)
# One pass finds both block headers (group 1 is None) and frames; chained and grouped exceptions
# prefix lines with spaces or "|".
_TB_LINE_RE = re.compile(
    r"^[ \t|+]*(?:(?:Exception Group )?Traceback \(most recent call last\)"
    r'|File "([^"\n]*)", line [^,\n]*(?:, in ([^\n]*))?)',
    re.M,
)
# Library code: frames here are never "the application's own" innermost frame.
_LIBRARY_RE = re.compile(
    r"site-packages|dist-packages|/lib/python[23]|/lib/pypy|/python3\d*/lib/|<frozen "
    # Source checkouts / editable installs of Celery's stack (installed copies match above).
    r"|/celery/(?:app|worker|concurrency|backends|utils|events|contrib|bin)/|/(?:kombu|billiard|vine|amqp)/",
    re.I,
)
# A backslash escape Python's repr never writes: literal_eval would warn about it, so skip it.
_BAD_ESCAPE_RE = re.compile(r"\\[^\\'\"abfnrtvx0-7NuU\n]")

# --- message normalization (order matters: specific shapes before bare numbers) ---------------
_HEX4 = r"[0-9a-fA-F]{1,4}"
_NORMALIZERS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(
            r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?"
            r"(?:Z|[+-]\d{2}:?\d{2})?)?\b"
        ),
        "<time>",
    ),
    (re.compile(r"\b\d{1,2}:\d{2}:\d{2}(?:\.\d+)?\b"), "<time>"),
    (re.compile(r"\b[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}\b"), "<uuid>"),
    # A quote opens only after a non-word char, so apostrophes ("can't") do not start a string.
    (re.compile(r"""(?<!\w)(?:'[^'\\\n]*(?:\\.[^'\\\n]*)*'|"[^"\\\n]*(?:\\.[^"\\\n]*)*")"""), "<str>"),
    # The lookbehind anchors the match at the start of a run, keeping the scan linear.
    (re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), "<email>"),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b"), "<ip>"),
    (
        re.compile(
            rf"(?<![\w:])(?:{_HEX4}(?::{_HEX4}){{7}}|{_HEX4}(?::{_HEX4})*::(?:{_HEX4}(?::{_HEX4})*)?"
            rf"|::{_HEX4}(?::{_HEX4})*)(?![\w:])"
        ),
        "<ip>",
    ),
    (re.compile(r"\b0[xX][0-9a-fA-F]+\b"), "<hex>"),
    # Long hex strings (ids, digests) must mix digits and letters; pure digits are numbers.
    (re.compile(r"\b(?=\d*[a-fA-F])(?=[a-fA-F]*\d)[0-9a-fA-F]{8,}\b"), "<hex>"),
    # Numbers not glued to a letter ("md5", "utf8", "E1234" stay; "order_42" -> "order_<n>").
    (re.compile(r"(?<![^\W\d_])\d+(?:\.\d+)*(?:[eE][+-]?\d+)?"), "<n>"),
    (re.compile(r"\s+"), " "),
)


def _text(value: Any, cap: int, tail: bool = False) -> str | None:
    """Coerce an untrusted field to a capped exact str, or None."""
    if value is None:
        return None
    if type(value) is not str:
        if isinstance(value, str):
            value = str.__add__("", value)  # an exact copy: a subclass could override __str__/__hash__
        elif isinstance(value, (bytes, bytearray, memoryview)):
            raw = bytes(value[-cap * 4 :] if tail else value[: cap * 4])  # a UTF-8 char is <= 4 bytes
            value = raw.decode("utf-8", "replace")
        else:
            try:
                value = str(value)
            except Exception:  # noqa: BLE001 - a hostile __str__, or an int too long to print
                value = f"<unprintable {type(value).__name__}>"
            if type(value) is not str:  # a __str__ that returns a str subclass
                value = str.__add__("", value)
    text: str = value  # an exact str by now, whatever came in
    if len(text) > cap:  # slicing within the cap would return the same object anyway
        text = text[-cap:] if tail else text[:cap]
    return text


def _unwrap_args(inner: str, closed: bool) -> str:
    """The text of an exception repr's arguments: `'a', 42` -> `a, 42`; unparsable stays as is."""
    stripped = inner.strip()
    if not stripped:
        return ""
    if len(stripped) <= MAX_LITERAL_CHARS and not _BAD_ESCAPE_RE.search(stripped):
        try:
            args = ast.literal_eval(f"({stripped},)")
        except Exception:  # noqa: BLE001 - not literals (object reprs, kwargs), too deep, too big: fall back
            args = None
        if isinstance(args, tuple):
            return ", ".join(a if isinstance(a, str) else repr(a) for a in args)
    quote = stripped[0]
    if quote in "'\"" and len(stripped) >= 2 and stripped[-1] == quote:
        return stripped[1:-1]  # a single string argument too long to parse: drop its quotes
    if quote in "'\"" and not closed:
        return stripped[1:]  # the repr was truncated at the cap: its closing quote is gone
    return stripped


def _parse_exception(exc: str) -> tuple[str, str] | None:
    """(type, raw message) from an exception repr like `Type('msg')` or a bare `Type`."""
    m = _REPR_RE.match(exc)
    if m is not None:
        rest = exc[m.end() :].rstrip()
        closed = rest.endswith(")")  # not when the repr was truncated at the cap
        return m.group(1), _unwrap_args(rest[:-1] if closed else rest, closed)
    m = _BARE_TYPE_RE.match(exc)
    if m is not None:
        return m.group(1), ""
    return None


def _parse_tb_last_line(tb: str) -> tuple[str, str] | None:
    """(type, raw message) from a traceback's last line `module.Type: message`."""
    body = tb.rstrip()
    line = body[body.rfind("\n") + 1 :]
    m = _TB_LAST_LINE_RE.match(line)
    if m is None:
        return None
    return m.group(1), m.group(2) or ""


def normalize_message(message: str) -> str:
    """Replace variable parts (numbers, ids, strings, addresses, times) with placeholders."""
    text = message[:MAX_MESSAGE_SCAN]
    for pattern, placeholder in _NORMALIZERS:
        text = pattern.sub(placeholder, text)
    return text.strip()[:MAX_MESSAGE_CHARS]


def _frame_key(path: str, func: str) -> str:
    """`parent/file.py:func`: no line number, so editing code above does not split groups."""
    path = path.replace("\\", "/").rstrip("/")
    parts = path.rsplit("/", 2)[-2:]
    short = "/".join(parts) if len(parts) == 2 and parts[0] else parts[-1]
    func = func.strip() or "?"
    return f"{short[-MAX_FRAME_PART_CHARS:]}:{func[:MAX_FRAME_PART_CHARS]}"


def _is_library(path: str) -> bool:
    """True for stdlib, installed packages and Celery's own machinery."""
    return _LIBRARY_RE.search("/" + path.replace("\\", "/")) is not None


def _app_frame(tb: str) -> str | None:
    """The innermost application frame of the raised (last) traceback block.

    If the last block holds only library frames (autoretry_for: Celery raises Retry from its own
    code), the app frame is taken from the nearest earlier block that has one; if no block has
    one, the innermost frame overall is used.
    """
    # Per block: (innermost frame, innermost app frame); a header starts a new block.
    blocks: list[list[tuple[str, str] | None]] = [[None, None]]
    for m in _TB_LINE_RE.finditer(tb):
        path = m.group(1)
        if path is None:
            if blocks[-1][0] is not None:
                blocks.append([None, None])
            continue
        frame = (path, m.group(2) or "?")
        block = blocks[-1]
        block[0] = frame
        if not _is_library(path):
            block[1] = frame
    for _, app in reversed(blocks):
        if app is not None:
            return _frame_key(*app)
    for last, _ in reversed(blocks):
        if last is not None:
            return _frame_key(*last)
    return None


def group_id(sig: tuple[str, str, str | None]) -> str:
    """A short stable id for a signature (12 hex of sha1), usable in URLs."""
    try:
        exc_type, message, frame = sig
    except Exception:  # noqa: BLE001 - not a 3-tuple: hash its text, still never raise
        exc_type, message, frame = str(sig), "", None
    # \x1f cannot appear in a normalized part; \x00 tells a missing frame from an empty one.
    text = "\x1f".join((str(exc_type), str(message), "\x00" if frame is None else str(frame)))
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]


@lru_cache(maxsize=SIGNATURE_CACHE_SIZE)
def _analyze(exc: str | None, tb: str | None) -> tuple[tuple[str, str, str | None], str]:
    """(signature, group id) of already coerced and capped strings; cached, as many failures share
    one traceback text."""
    parsed = _parse_exception(exc) if exc else None
    if parsed is None and tb:
        parsed = _parse_tb_last_line(tb)
    if parsed is None:
        parsed = ("Unknown", exc or "")
    exc_type, raw_message = parsed
    sig = (exc_type[:MAX_TYPE_CHARS], normalize_message(raw_message), _app_frame(tb) if tb else None)
    return sig, group_id(sig)


Analysis = tuple[tuple[str, str, str | None], str]  # (signature, group id)


def analysis_key(exception: Any, traceback: Any) -> tuple[str | None, str | None]:
    """The capped exact strings a failure is analyzed from (what `FailureGroups.add` keys by)."""
    return _text(exception, MAX_EXCEPTION_CHARS), _text(traceback, MAX_TRACEBACK_CHARS, tail=True)


def analyze(exception: Any, traceback: Any) -> Analysis:
    """(signature, group id) of a failure; never raises. Pure: the event reader runs it ahead (see `prime`)."""
    return _analyze(*analysis_key(exception, traceback))


def signature(exception: str | None, traceback: str | None) -> tuple[str, str, str | None]:
    """(exc_type, normalized_message, app_frame) of a failure; never raises."""
    exc = _text(exception, MAX_EXCEPTION_CHARS)
    tb = _text(traceback, MAX_TRACEBACK_CHARS, tail=True)
    return _analyze(exc, tb)[0]


def _bump(counter: dict[str, int], key: str) -> None:
    """Count key, keeping at most MAX_COUNTER_KEYS keys (Space-Saving: a newcomer replaces the
    smallest, inheriting its count, so heavy hitters survive and the total stays exact)."""
    if key in counter:
        counter[key] += 1
    elif len(counter) < MAX_COUNTER_KEYS:
        counter[key] = 1
    else:
        victim = min(counter, key=counter.__getitem__)  # O(MAX_COUNTER_KEYS), a constant
        counter[key] = counter.pop(victim) + 1


def _top(counter: dict[str, int]) -> dict[str, int]:
    """Counter as a dict, most frequent first."""
    return dict(sorted(counter.items(), key=lambda kv: -kv[1]))


class _Group:
    """One failure group's incremental aggregates."""

    __slots__ = (
        "id",
        "exc_type",
        "message",
        "frame",
        "count",
        "first_seen",
        "last_seen",
        "names",
        "workers",
        "sample",
        "spark",
        "max_bucket",
        "outcomes",
        "uuids",
        "heap_seq",
    )

    def __init__(self, gid: str, sig: tuple[str, str, str | None], ts: float, bucket: int) -> None:
        self.id = gid
        self.exc_type, self.message, self.frame = sig
        self.count = 0
        self.first_seen = self.last_seen = ts
        self.names: dict[str, int] = {}
        self.workers: dict[str, int] = {}
        self.sample: dict[str, Any] = {}
        self.spark: dict[int, int] = {}  # bucket index -> count, pruned to the latest window
        self.max_bucket = bucket
        # FAILURE: final failures; RETRY: retried attempts; RECOVERED: tasks whose last retry fell here and
        # that then succeeded; GAVE_UP: tasks whose final failure (after retrying) fell here.
        self.outcomes = {"FAILURE": 0, "RETRY": 0, "RECOVERED": 0, "GAVE_UP": 0}
        self.uuids: OrderedDict[str, None] = OrderedDict()  # oldest first
        self.heap_seq = 0


class FailureGroups:
    """Failed tasks grouped by signature, bounded in groups, uuids per group and counter keys."""

    def __init__(
        self, max_groups: int = 1000, max_tasks_per_group: int = 1000, buckets: int = 60, bucket_seconds: float = 60.0
    ) -> None:
        """Configure the bounds and the sparkline (`buckets` counts of `bucket_seconds` each)."""
        if max_groups < 1 or max_tasks_per_group < 1 or buckets < 1 or not bucket_seconds > 0:
            raise ValueError("max_groups, max_tasks_per_group, buckets and bucket_seconds must be > 0")
        self.max_groups = int(max_groups)
        self.max_tasks_per_group = int(max_tasks_per_group)
        self.buckets = int(buckets)
        self.bucket_seconds = float(bucket_seconds)
        self._groups: dict[str, _Group] = {}
        self._by_uuid: dict[str, str] = {}
        # Min-heap of (last_seen, seq, gid) with lazy deletion: finds the eviction victim without
        # scanning every group; stale entries are skipped (their seq no longer matches).
        self._heap: list[tuple[float, int, str]] = []
        self._seq = 0
        self._latest: float | None = None  # newest timestamp added: the default sparkline end
        # Analyses computed ahead by the event reader process (its second core), by the exact strings
        # analyzed: a failure whose strings match uses one; any other is analyzed here, so a primed
        # analysis can only save time, never change a group. Held for one batch (`forget_primed`).
        self._primed: dict[tuple[str | None, str | None], Analysis] = {}

    def __len__(self) -> int:
        """Number of groups held."""
        return len(self._groups)

    # --- writes ---------------------------------------------------------------------------------
    def prime(self, exception: Any, traceback: Any, analysis: Any) -> bool:
        """Offer `analyze(exception, traceback)` computed elsewhere; whether it was well-formed and kept."""
        try:
            (exc_type, message, frame), gid = analysis
        except (TypeError, ValueError):
            return False
        if (
            exc_type.__class__ is not str
            or message.__class__ is not str
            or not (frame is None or frame.__class__ is str)
            or gid.__class__ is not str
        ):
            return False
        if len(self._primed) >= PRIMED_MAX:
            self._primed.clear()  # a batch that is all failures: the rest are analyzed here
        self._primed[analysis_key(exception, traceback)] = ((exc_type, message, frame), gid)
        return True

    def forget_primed(self) -> None:
        """Drop the analyses offered for the batch just applied (unused ones would hold their strings)."""
        if self._primed:
            self._primed.clear()

    def _analysis(self, exc: str | None, tb: str | None) -> Analysis:
        return self._primed.pop((exc, tb), None) or _analyze(exc, tb)

    def add(
        self,
        uuid: str,
        name: str | None,
        hostname: str | None,
        exception: str | None,
        traceback: str | None,
        timestamp: float | None,
        outcome: str,
    ) -> str:
        """Record one failure/retry event and return its group id; never raises."""
        exc = _text(exception, MAX_EXCEPTION_CHARS)
        tb = _text(traceback, MAX_TRACEBACK_CHARS, tail=True)
        sig, gid = self._analysis(exc, tb)
        ts = self._timestamp(timestamp)
        if self._latest is None or ts > self._latest:
            self._latest = ts
        bucket = self._bucket(ts)

        group = self._groups.get(gid)
        if group is None:
            if len(self._groups) >= self.max_groups:
                self._evict_oldest()
            group = _Group(gid, sig, ts, bucket)
            self._groups[gid] = group
            self._push(group)
        elif ts > group.last_seen:
            group.last_seen = ts
            self._push(group)
        elif ts < group.first_seen:
            group.first_seen = ts

        group.count += 1
        group.outcomes["RETRY" if _text(outcome, 16) == "RETRY" else "FAILURE"] += 1
        task_name = _text(name, MAX_KEY_CHARS)
        if task_name is not None:
            _bump(group.names, task_name)
        worker = _text(hostname, MAX_KEY_CHARS)
        if worker is not None:
            _bump(group.workers, worker)
        uid = _text(uuid, MAX_KEY_CHARS)
        if ts >= group.last_seen:  # most recent by event time, not by arrival
            if tb is not None and isinstance(traceback, str) and len(traceback) > MAX_TRACEBACK_CHARS:
                tb = TRUNCATED_MARK + tb  # tell the reader the head of the traceback is missing
            group.sample = {"exception": exc, "traceback": tb, "uuid": uid, "timestamp": ts}
        self._count_bucket(group, bucket)
        if uid is not None:
            self._retain(group, uid)
        return gid

    def settle(self, gid: str | None, outcome: str) -> None:
        """Count how a retried task ended in the group `gid`: "RECOVERED" (succeeded after its last retry
        fell there) or "GAVE_UP" (its final failure, after retrying, fell there). Never raises."""
        group = self._groups.get(gid) if isinstance(gid, str) else None
        if group is not None and outcome in ("RECOVERED", "GAVE_UP"):
            group.outcomes[outcome] += 1

    def group_for(self, exception: str | None, traceback: str | None) -> str:
        """The group id a failure with this exception and traceback belongs to (held or not)."""
        return _analyze(_text(exception, MAX_EXCEPTION_CHARS), _text(traceback, MAX_TRACEBACK_CHARS, tail=True))[1]

    def discard(self, uuid: str) -> None:
        """Forget a task evicted from the state (its group keeps counting it)."""
        uid = _text(uuid, MAX_KEY_CHARS)
        if uid is None:
            return
        gid = self._by_uuid.pop(uid, None)
        group = self._groups.get(gid) if gid is not None else None
        if group is not None:
            group.uuids.pop(uid, None)

    # --- reads ----------------------------------------------------------------------------------
    def groups(self, sort: str = "last_seen", limit: int | None = 50, now: float | None = None) -> list[dict[str, Any]]:
        """Groups newest ("last_seen") or biggest ("count") first, at most `limit`."""
        key: Callable[[_Group], tuple[float, float]]
        if sort == "count":
            key = lambda g: (g.count, g.last_seen)  # noqa: E731 - one of two keys for one sort
        else:
            key = lambda g: (g.last_seen, g.count)  # noqa: E731 - one of two keys for one sort
        try:
            n = len(self._groups) if limit is None else max(0, int(limit))
        except (TypeError, ValueError, OverflowError):
            n = 50
        end = self._end_bucket(now)
        return [self._as_dict(g, end) for g in heapq.nlargest(n, self._groups.values(), key=key)]

    def group(self, gid: str, now: float | None = None) -> dict[str, Any] | None:
        """One group as a dict, or None."""
        group = self._groups.get(gid) if isinstance(gid, str) else None
        return None if group is None else self._as_dict(group, self._end_bucket(now))

    def uuids(self, gid: str) -> list[str]:
        """Retained task uuids of a group, newest first."""
        group = self._groups.get(gid) if isinstance(gid, str) else None
        return [] if group is None else list(reversed(group.uuids))

    def group_of(self, uuid: str) -> str | None:
        """The group id a retained task belongs to (its latest failure), or None."""
        uid = _text(uuid, MAX_KEY_CHARS)
        return None if uid is None else self._by_uuid.get(uid)

    # --- internals ------------------------------------------------------------------------------
    def _timestamp(self, value: Any) -> float:
        """A finite, plausible float; garbage becomes the latest time seen (or the clock)."""
        try:
            ts = float(value)
        except Exception:  # noqa: BLE001 - untrusted input (even a hostile __float__) must never raise
            ts = math.nan
        if not math.isfinite(ts) or abs(ts) > _MAX_ABS_TIMESTAMP:
            return self._latest if self._latest is not None else time.time()
        return ts

    def _bucket(self, ts: float) -> int:
        """Sparkline bucket index of a timestamp."""
        return math.floor(ts / self.bucket_seconds)

    def _end_bucket(self, now: float | None) -> int:
        """Last sparkline bucket: the one holding `now`, else the newest event overall."""
        if now is not None:
            try:
                ts = float(now)
            except Exception:  # noqa: BLE001 - untrusted input (even a hostile __float__) must never raise
                ts = math.nan
            if math.isfinite(ts) and abs(ts) <= _MAX_ABS_TIMESTAMP:
                return self._bucket(ts)
        # Without `now`, every group ends at the same bucket, so sparklines line up.
        return self._bucket(self._latest if self._latest is not None else 0.0)

    def _count_bucket(self, group: _Group, bucket: int) -> None:
        """Count into the group's sparkline, pruning buckets that fell out of the window."""
        if bucket > group.max_bucket:
            group.max_bucket = bucket
        oldest = group.max_bucket - self.buckets  # buckets <= oldest can never be shown again
        if bucket <= oldest:
            return
        group.spark[bucket] = group.spark.get(bucket, 0) + 1
        if len(group.spark) > 2 * self.buckets:  # amortized O(1): prune only when twice full
            group.spark = {b: c for b, c in group.spark.items() if b > oldest}

    def _retain(self, group: _Group, uid: str) -> None:
        """Hold uid as the group's newest task, moving it from another group if it failed there."""
        previous = self._by_uuid.get(uid)
        if previous is not None and previous != group.id:
            other = self._groups.get(previous)
            if other is not None:
                other.uuids.pop(uid, None)
        group.uuids[uid] = None
        group.uuids.move_to_end(uid)  # a retried task failing again is the newest again
        self._by_uuid[uid] = group.id
        if len(group.uuids) > self.max_tasks_per_group:
            dropped, _ = group.uuids.popitem(last=False)
            if self._by_uuid.get(dropped) == group.id:
                del self._by_uuid[dropped]

    def _push(self, group: _Group) -> None:
        """Record the group's new last_seen in the eviction heap."""
        self._seq += 1
        group.heap_seq = self._seq
        heapq.heappush(self._heap, (group.last_seen, self._seq, group.id))
        if len(self._heap) > 2 * self.max_groups + 64:  # stale entries: rebuild, amortized O(1)
            self._heap = [(g.last_seen, g.heap_seq, g.id) for g in self._groups.values()]
            heapq.heapify(self._heap)

    def _evict_oldest(self) -> None:
        """Drop the group with the oldest last_seen, and its uuids."""
        while self._heap:
            _, seq, gid = heapq.heappop(self._heap)
            group = self._groups.get(gid)
            if group is not None and group.heap_seq == seq:
                del self._groups[gid]
                for uid in group.uuids:
                    if self._by_uuid.get(uid) == gid:
                        del self._by_uuid[uid]
                return

    def _as_dict(self, group: _Group, end: int) -> dict[str, Any]:
        """The public view of a group, with its sparkline ending at bucket `end`."""
        spark = group.spark
        return {
            "id": group.id,
            "exc_type": group.exc_type,
            "message": group.message,
            "frame": group.frame,
            "count": group.count,
            "retained": len(group.uuids),
            "first_seen": group.first_seen,
            "last_seen": group.last_seen,
            "task_names": _top(group.names),
            "workers": _top(group.workers),
            "sample": dict(group.sample),
            "sparkline": [spark.get(b, 0) for b in range(end - self.buckets + 1, end + 1)],
            "outcomes": dict(group.outcomes),
        }
