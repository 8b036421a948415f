"""Task queries over the in-memory state: filters, free text, newest first, without full rescans.

Pure (no Flask): the API and the push loop call `find()` with the state's lock held. Structured
filters (state, name, worker) use the sets the state keeps per value and intersect them in C;
free text searches a per-chunk cache of lowercased haystacks that is rebuilt only for chunks
whose tasks changed since the last query (finished tasks never change, so most chunks stay
cached while events stream in).
"""

from __future__ import annotations

import heapq
import math
import re
import time
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import accumulate, compress, islice
from operator import and_
from typing import Any

from .indexes import DenseMembers, Members
from .records import TaskRecord, derived_runtime
from .state import CHUNK_BITS, State

_EMPTY: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Filters:
    """What a task list shows: every filter is optional; `text` is matched case-insensitively."""

    state: str | None = None
    name: str | None = None  # substring of the task name, case-insensitive
    worker: str | None = None  # exact hostname
    text: str | None = None  # substring of uuid, args, kwargs, result or exception
    queue: str | None = None  # exact queue (or routing key) name, known from task-sent events
    since: float | None = None  # first seen (sent, else received) at or after this time
    until: float | None = None  # ... and before this time
    group: str | None = None  # a failure group id (dashboard/core/failures.py)
    outcome: str | None = None  # one of OUTCOMES

    def any(self) -> bool:
        """Whether any filter is set."""
        return any(
            (
                self.state,
                self.name,
                self.worker,
                self.text,
                self.queue,
                self.since is not None,
                self.until is not None,
                self.group,
                self.outcome,
            )
        )


# Outcomes people ask for besides the state: retried and then succeeded, or failed after retrying.
OUTCOMES = {"recovered": "SUCCESS", "gave_up": "FAILURE"}


# Sort keys besides the default (newest first seen): the field a task list can be ordered by.
SORTS = ("received", "started", "runtime")


def seen_at(rec: TaskRecord) -> float | None:
    """When the task was first seen: sent, else received, else its first event."""
    for value in (rec.sent, rec.received, rec.started):
        if value is not None:
            return value
    hist = rec.history
    return hist[1] if len(hist) > 1 else rec.timestamp


def _predicate(f: Filters) -> Callable[[TaskRecord], bool] | None:
    # The filters no index serves: rare enough in practice to be checked task by task.
    queue, since, until, outcome = f.queue, f.since, f.until, OUTCOMES.get(f.outcome or "")
    if not queue and since is None and until is None and not f.outcome:
        return None

    def check(rec: TaskRecord) -> bool:
        if queue and rec.queue != queue and rec.routing_key != queue:
            return False
        if f.outcome and (rec.state != outcome or not rec.attempt_count()):
            return False
        if since is not None or until is not None:
            when = seen_at(rec)
            if when.__class__ is not float and when.__class__ is not int:
                return False
            if (since is not None and when < since) or (until is not None and when >= until):
                return False
        return True

    return check


# Wire names of the filters (query string, subscribe payload) -> Filters fields.
TEXT_FILTERS = {
    "state": "state",
    "name": "name",
    "worker": "worker",
    "q": "text",
    "queue": "queue",
    "group": "group",
    "outcome": "outcome",
}
TIME_FILTERS = ("since", "until")
MAX_FILTER_LENGTH = 200
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(raw: str, now: float) -> float | None:
    """A time filter: epoch seconds, ISO 8601 (naive means UTC), or an age like `15m`, `2h`, `7d`."""
    raw = raw.strip()
    rel = _RELATIVE.match(raw)
    if rel:
        return now - float(rel.group(1)) * _UNIT_SECONDS[rel.group(2)]
    try:
        value = float(raw)
    except ValueError:
        try:
            when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.timestamp()
    return value if math.isfinite(value) else None


def parse_filters(raw: Mapping[str, Any] | None, now: float | None = None) -> tuple[Filters | None, str | None]:
    """Filters from a request's fields (query string or subscribe payload): (filters, error)."""
    raw = raw or {}
    values: dict[str, Any] = {}
    for wire, field in TEXT_FILTERS.items():
        value = raw.get(wire)
        if value is not None and not isinstance(value, str):
            return None, f"the {wire} filter must be a string"
        if value and len(value) > MAX_FILTER_LENGTH:
            return None, f"the {wire} filter is longer than {MAX_FILTER_LENGTH} characters"
        values[field] = (value.strip() or None) if value else None
    if values["outcome"] and values["outcome"] not in OUTCOMES:
        return None, f"the outcome filter must be one of {', '.join(OUTCOMES)}"
    for wire in TIME_FILTERS:
        value = raw.get(wire)
        if value is None or value == "":
            values[wire] = None
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            return None, f"the {wire} filter must be a time"
        parsed = parse_time(str(value), time.time() if now is None else now)
        if parsed is None:
            return None, (f"the {wire} filter must be epoch seconds, an ISO 8601 time, or an age like 15m, 2h or 7d")
        values[wire] = parsed
    return Filters(**values), None


def haystack(rec: TaskRecord) -> str:
    """The lowercased text free-text search looks in (one string: one `in` per task)."""
    return "\x00".join((rec.uuid, _text(rec.args), _text(rec.kwargs), _text(rec.result), _text(rec.exception))).lower()


def _text(value: Any) -> str:
    return value if value.__class__ is str else ("" if value is None else str(value))


def matcher(f: Filters, st: State | None = None) -> Callable[[TaskRecord], bool]:
    """A test of one task against the filters, built once for many tasks (the push loop checks
    every changed task of a tick with it); the failure-group filter needs the state."""
    name = f.name.lower() if f.name else None
    text = f.text.lower() if f.text else None
    check = _predicate(f)

    def test(rec: TaskRecord) -> bool:
        if f.state and rec.state != f.state:
            return False
        if name and (rec.name.__class__ is not str or name not in rec.name.lower()):
            return False
        if f.worker and rec.hostname != f.worker:
            return False
        if f.group and (st is None or st.failure_groups.group_of(rec.uuid) != f.group):
            return False
        if text and text not in haystack(rec):
            return False
        return check is None or check(rec)

    return test


def matches(rec: TaskRecord, f: Filters, st: State | None = None) -> bool:
    """Whether one task passes the filters."""
    return matcher(f, st)(rec)


class TextIndex:
    """Per-chunk text of the tasks, kept up to date task by task as the state notes changes.

    Each chunk keeps the lowercased text of its tasks (by seq, a hole for a task evicted before the
    chunk was built), one blob joining them with a separator no needle holds, and where each task
    starts in it: a search runs str.find over the blob, in C, and maps each hit to its task by
    bisection, so a rare word costs little more than the scan. A changed task's text is replaced
    and its chunk's blob joined again (C speed), never rebuilt from the records. The answers of
    recent needles are remembered per chunk until that chunk's blob changes: paging, the live
    total of a searching list and repeated searches only rescan what changed.
    """

    _SEP = "\x01"
    MEMO_NEEDLES = 16

    def __init__(self) -> None:
        # chunk -> [uuids, texts, blob, starts] (uuids and texts by seq within the chunk)
        self._chunks: dict[int, list[Any]] = {}
        # needle -> chunk -> (the chunk's blob when answered, count, hits or None when only counted)
        self._memo: dict[str, dict[int, tuple[str, int, list[str] | None]]] = {}

    def refresh(self, st: State) -> None:
        """Bring the cached text up to date with the state's noted changes (call under its lock)."""
        if st.text_stale:
            st.text_stale = False
            self._chunks.clear()
        first = st.first_seq() >> CHUNK_BITS
        for gone in [k for k in self._chunks if k < first]:
            del self._chunks[gone]
        if not st.dirty_seqs:
            return
        changed: set[int] = set()
        tasks = st.tasks
        mask = (1 << CHUNK_BITS) - 1
        order, first_seq = st.order, st.first_seq()
        for seq in sorted(set(st.dirty_seqs)):  # ascending: a chunk grows by its new tasks in order
            k = seq >> CHUNK_BITS
            entry = self._chunks.get(k)
            if entry is None:
                continue  # built from the records when first searched
            uuids, texts = entry[0], entry[1]
            i = seq & mask
            while len(uuids) <= i:  # tasks first seen after the chunk was built (the newest chunk)
                pos = (k << CHUNK_BITS) + len(uuids) - first_seq
                uuids.append(order[pos] if 0 <= pos < len(order) else None)  # near the right end: cheap
                texts.append("")
            rec = tasks.get(uuids[i]) if uuids[i] is not None else None
            texts[i] = haystack(rec).replace(self._SEP, " ") if rec is not None else ""
            changed.add(k)
        del st.dirty_seqs[:]
        for k in changed:
            if k in self._chunks:
                self._join(self._chunks[k])

    def search(self, st: State, needle: str, want: int | None = None) -> tuple[int, list[str]]:
        """(how many retained tasks contain `needle`, the uuids of the newest `want` of them, newest
        first; all of them when `want` is None)."""
        needle = needle.lower()
        if not st.order or not needle or self._SEP in needle:
            if not st.order:
                self._chunks.clear()
            return 0, []
        self.refresh(st)
        first_seq = st.first_seq()
        first, last = first_seq >> CHUNK_BITS, st.last_seq() >> CHUNK_BITS
        # One match per task: the needle and the rest of that task's text, up to the separator.
        per_task = re.compile(re.escape(needle) + "[^" + self._SEP + "]*")
        memo = self._memo.pop(needle, None) or {}
        self._memo[needle] = memo  # most recently used last
        while len(self._memo) > self.MEMO_NEEDLES:
            del self._memo[next(iter(self._memo))]
        total = 0
        out: list[str] = []
        for k in range(last, first - 1, -1):
            entry = self._chunks.get(k)
            if entry is None:
                entry = self._chunks[k] = self._build(st, k, first_seq)
            uuids, _, blob, starts = entry
            known = memo.get(k)
            if known is not None and known[0] is not blob:
                known = None  # the chunk's text changed since
            need_hits = want is None or len(out) < want or k == first  # (the oldest chunk loses tasks)
            if known is not None and (known[2] is not None or not need_hits) and k != first:
                count, hits = known[1], known[2]
            elif needle not in blob:
                count, hits = 0, []
            elif need_hits:
                hits = self._hits(blob, starts, uuids, needle, st.tasks)
                count = len(hits)
            else:
                count, hits = len(per_task.findall(blob)), None  # counted in C; no uuid past the page
            memo[k] = (blob, count, hits)
            total += count
            if need_hits and hits:
                out.extend(hits)
        for gone in [k for k in memo if k < first]:
            del memo[gone]
        return total, out if want is None else out[:want]

    @staticmethod
    def _hits(blob: str, starts: array[int], uuids: list[str | None], needle: str, tasks: dict[str, Any]) -> list[str]:
        # The chunk's tasks containing the needle, newest first; tasks evicted since the chunk was
        # built are skipped (only the oldest chunk holds any).
        hits = []
        find = blob.find
        pos = find(needle)
        n = len(starts)
        while pos >= 0:
            i = bisect_right(starts, pos) - 1
            uuid = uuids[i]
            if uuid is not None and uuid in tasks:
                hits.append(uuid)
            if i + 1 >= n:
                break
            pos = find(needle, starts[i + 1])  # one hit per task is enough
        hits.reverse()
        return hits

    @classmethod
    def _build(cls, st: State, k: int, first_seq: int) -> list[Any]:
        # The order holds uuids by seq with no gaps, so chunk k is one slice of it; a task evicted
        # before the build leaves a hole, so position i is always seq (k << CHUNK_BITS) + i.
        base = k << CHUNK_BITS
        start = max(base, first_seq) - first_seq
        stop = min(((k + 1) << CHUNK_BITS) - first_seq, len(st.order))
        # islice steps from the end it starts at: the chunks that change (the newest) are near the
        # right end of the order, so they are sliced from there.
        size = len(st.order)
        if start > size // 2:
            members = list(islice(reversed(st.order), size - stop, size - start))
            members.reverse()
        else:
            members = list(islice(st.order, start, stop))
        holes = max(0, first_seq - base)
        uuids: list[str | None] = [None] * holes + members
        tasks = st.tasks
        texts = [""] * holes
        for uuid in members:
            rec = tasks.get(uuid)
            texts.append(haystack(rec).replace(cls._SEP, " ") if rec is not None else "")
        entry = [uuids, texts, "", array("L")]
        cls._join(entry)
        return entry

    @classmethod
    def _join(cls, entry: list[Any]) -> None:
        texts = entry[1]
        entry[2] = cls._SEP.join(texts)
        starts = array("L", [0])
        starts.extend(accumulate(len(t) + 1 for t in texts[:-1]))
        if not texts:
            starts = array("L")
        entry[3] = starts


def find(
    st: State,
    f: Filters,
    limit: int = 50,
    offset: int = 0,
    text_index: TextIndex | None = None,
    sort: str | None = None,
    ascending: bool = False,
    before: int | None = None,
) -> tuple[int, list[TaskRecord]]:
    """Tasks matching `f`: (total matching, one page). Call with `st.lock` held.

    The default order is newest first seen; `before` (a seq, the cursor of the default order) starts
    the page below it, so pages stay put while new tasks arrive. `sort` orders by one of SORTS
    instead (tasks without that field last), paged by offset. `total` ignores the cursor.
    """
    tasks = st.tasks
    check = _predicate(f)
    sets: list[set[str] | frozenset[str]] = []
    # Common values keep no set (dashboard/core/indexes.py DenseMembers): their tasks are tested one by one,
    # which costs little because at least one task in DENSE_SHARE matches.
    dense: list[DenseMembers | _AnyOf] = []

    def want_members(members: Members | _AnyOf | frozenset[str]) -> None:
        if members.__class__ is DenseMembers or members.__class__ is _AnyOf:
            dense.append(members)
        else:
            sets.append(members)  # type: ignore[arg-type]

    if f.state:
        want_members(st.by_state.get(f.state, _EMPTY))
    if f.name:
        needle = f.name.lower()
        named = [s for name, s in st.by_name.items() if needle in name.lower()]
        if len(named) == 1:
            want_members(named[0])
        elif any(s.__class__ is DenseMembers for s in named):
            want_members(_AnyOf(named))
        else:
            sets.append(set().union(*named))
    if f.worker:
        want_members(st.by_worker.get(f.worker, _EMPTY))
    if f.group:
        sets.append({u for u in st.failure_groups.uuids(f.group) if u in tasks})
    ordered: list[TaskRecord] | None = None  # all matches, newest first, when known
    found: set[str] | frozenset[str] | None = None  # all matches, unordered, when known
    if f.text:
        index = text_index or TextIndex()
        if not sets and not dense and check is None and sort not in SORTS and before is None:
            # Free text alone, newest first: count every match, but map only one page to tasks.
            total, hits = index.search(st, f.text, want=offset + limit)
            return total, [tasks[u] for u in hits[offset : offset + limit]]
        ordered = [
            tasks[u]
            for u in index.search(st, f.text)[1]
            if all(u in s for s in sets) and all(d.has(tasks[u]) for d in dense)
        ]
    elif sets:
        sets.sort(key=len)
        found = sets[0] if len(sets) == 1 else sets[0].intersection(*sets[1:])
        if dense:
            found = {u for u in found if all(d.has(tasks[u]) for d in dense)}
    elif dense:
        if len(dense) == 1 and check is None and sort not in SORTS:
            # One common value, newest first: its count is the total; a page is a short walk.
            only = dense[0]
            total = len(only)
            if not total or not limit:
                return total, []
            walk = (r for r in _newest_below(st, before) if only.has(r))
            return total, list(islice(walk, offset, offset + limit))
        if sort in SORTS or check is not None:
            # Every match is needed anyway: one walk of the tasks, newest first, tested in C.
            recs = list(filter(None, map(tasks.get, reversed(st.order))))
            keep: Iterable[bool] = dense[0].mask(recs)
            for d in dense[1:]:
                keep = map(and_, keep, d.mask(recs))
            ordered = list(compress(recs, keep))
        else:
            # Several, newest first: the members of the smallest, tested against the others' records.
            dense.sort(key=len)
            ids = dense[0].members()
            recs = list(map(tasks.__getitem__, ids))
            keep = [True] * len(recs)
            for d in dense[1:]:
                keep = list(map(and_, keep, d.mask(recs)))  # (tested in C)
            found = set(compress(ids, keep))
    if check is not None:
        if ordered is None:
            ordered = (
                list(st.iter_newest()) if found is None else sorted((tasks[u] for u in found), key=_seq, reverse=True)
            )
        ordered = [r for r in ordered if check(r)]
    if sort in SORTS:
        pool = ordered if ordered is not None else (st.tasks.values() if found is None else [tasks[u] for u in found])
        total = len(pool)
        return total, _sorted_page(pool, sort, ascending, offset, limit)
    if ordered is not None:
        total = len(ordered)
        if before is not None:
            ordered = [r for r in ordered if r.seq < before]
        return total, ordered[offset : offset + limit]
    total = len(tasks) if found is None else len(found)
    want = offset + limit
    if not total or not limit:
        return total, []
    newest = _newest_below(st, before)
    if found is None:
        return total, list(islice(newest, offset, want))
    # Walking the order newest first costs about len(order) * want / total steps; selecting the
    # newest `want` of the matches costs about total steps: take the cheaper one.
    if len(st.order) * want < total * total:
        page = []
        for rec in newest:
            if rec.uuid in found:
                page.append(rec)
                if len(page) >= want:
                    break
        return total, page[offset:]
    candidates: Iterator[TaskRecord] = (tasks[u] for u in found)
    if before is not None:
        candidates = (r for r in candidates if r.seq < before)
    return total, heapq.nlargest(want, candidates, key=_seq)[offset:]


class _AnyOf:
    """Tasks of any of several index values (a name filter matching many names), some of them dense."""

    def __init__(self, parts: list[Members]) -> None:
        self.parts = parts

    def has(self, rec: TaskRecord) -> bool:
        """Whether a retained task is in any of the parts."""
        return any(p.has(rec) if p.__class__ is DenseMembers else rec.uuid in p for p in self.parts)

    def mask(self, recs: list[TaskRecord]) -> Iterator[bool]:
        """Whether each of `recs` is in any of the parts."""
        return map(self.has, recs)

    def members(self) -> list[str]:
        """The uuids of every part, each once."""
        return list(set().union(*(p.members() if isinstance(p, DenseMembers) else p for p in self.parts)))

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)


def _newest_below(st: State, before: int | None) -> Iterator[TaskRecord]:
    # The order has no gaps, so the cursor's position in it is arithmetic.
    if before is None or before > st.last_seq():
        return st.iter_newest()
    skip = st.last_seq() - before + 1
    tasks = st.tasks
    return (tasks[u] for u in islice(reversed(st.order), max(0, skip), None) if u in tasks)


def _sorted_page(pool: Iterable[TaskRecord], sort: str, ascending: bool, offset: int, limit: int) -> list[TaskRecord]:
    # Tasks that lack the field go last in either direction; ties keep the newest first.
    missing = float("inf") if ascending else float("-inf")

    def key(rec: TaskRecord) -> tuple[float, int]:
        value = getattr(rec, sort)
        if value is None and sort == "runtime":
            value = derived_runtime(rec)  # a failed task's, as the list shows it
        if value.__class__ is not float and value.__class__ is not int:
            value = missing
        return (value, -rec.seq) if ascending else (value, rec.seq)

    pick = heapq.nsmallest if ascending else heapq.nlargest
    return pick(offset + limit, pool, key=key)[offset:]


def _seq(rec: TaskRecord) -> int:
    return rec.seq


MAX_TREE_NODES = 500


def workflow_root(st: State, rec: TaskRecord) -> str:
    """The uuid of the workflow a task belongs to: its root_id, else its oldest known ancestor."""
    if rec.root_id.__class__ is str and rec.root_id:
        return rec.root_id
    seen = {rec.uuid}
    while rec.parent_id.__class__ is str and rec.parent_id in st.tasks and rec.parent_id not in seen:
        seen.add(rec.parent_id)
        rec = st.tasks[rec.parent_id]
    return rec.uuid


def workflow_tree(st: State, uuid: str, max_nodes: int = MAX_TREE_NODES) -> dict[str, Any] | None:
    """The whole workflow of a task from its root (chain, group, chord), each node with its state.

    Nodes are the root and every retained task with that root_id, linked by parent_id; a member whose
    parent is unknown hangs from the root, so nothing of the workflow is hidden. None for a task
    that is alone (no parent, no children, nothing shares its root)."""
    rec = st.tasks.get(uuid)
    if rec is None:
        return None
    root = workflow_root(st, rec)
    members = set(st.workflow_members(root))
    members.add(root)
    members.update(st.children_of(root))
    if len(members) <= 1 and not st.children_of(uuid):
        return None
    tasks = st.tasks
    ordered = sorted(members, key=lambda u: tasks[u].seq if u in tasks else -1)
    truncated = len(ordered) > max_nodes
    ordered = ordered[:max_nodes]
    shown = set(ordered)
    nodes = []
    for u in ordered:
        r = tasks.get(u)
        parent = r.parent_id if r is not None else None
        if u != root and (parent not in shown or parent == u):
            parent = root  # an orphan of the workflow (its parent evicted or never seen)
        nodes.append(
            {
                "uuid": u,
                "parent": parent if u != root else None,
                "name": r.name if r is not None else None,
                "state": r.state if r is not None else None,  # None: the root was evicted or never seen
                "runtime": r.runtime if r is not None else None,
                "runtime_derived": derived_runtime(r) if r is not None else None,
            }
        )
    return {"root": root, "nodes": nodes, "truncated": truncated}
