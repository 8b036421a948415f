"""Task queries over the in-memory state: filters, free text, newest first, without full rescans.

Pure (no Flask): the API and the push loop call `find()` with the state's lock held. Structured
filters (state, name, worker) use the sets the state keeps per value and intersect them in C;
free text searches a per-chunk cache of lowercased haystacks that is rebuilt only for chunks
whose tasks changed since the last query (finished tasks never change, so most chunks stay
cached while events stream in).
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass
from itertools import islice
from typing import Any

from .state import CHUNK_BITS, State, TaskRecord

_EMPTY: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Filters:
    """What a task list shows: every filter is optional; `text` is matched case-insensitively."""

    state: str | None = None
    name: str | None = None  # substring of the task name, case-insensitive
    worker: str | None = None  # exact hostname
    text: str | None = None  # substring of uuid, args, kwargs, result or exception

    def any(self) -> bool:
        """Whether any filter is set."""
        return bool(self.state or self.name or self.worker or self.text)


def haystack(rec: TaskRecord) -> str:
    """The lowercased text free-text search looks in (one string: one `in` per task)."""
    return "\x00".join((rec.uuid, _text(rec.args), _text(rec.kwargs), _text(rec.result),
                        _text(rec.exception))).lower()


def _text(value: Any) -> str:
    return value if value.__class__ is str else ("" if value is None else str(value))


def matches(rec: TaskRecord, f: Filters) -> bool:
    """Whether one task passes the filters (the push loop checks changed tasks with it)."""
    if f.state and rec.state != f.state:
        return False
    if f.name and (rec.name.__class__ is not str or f.name.lower() not in rec.name.lower()):
        return False
    if f.worker and rec.hostname != f.worker:
        return False
    if f.text and f.text.lower() not in haystack(rec):
        return False
    return True


class TextIndex:
    """Per-chunk lists of (uuid, haystack), rebuilt lazily when the state marks a chunk dirty."""

    def __init__(self) -> None:
        self._chunks: dict[int, tuple[list[str], list[str]]] = {}

    def search(self, st: State, needle: str) -> list[str]:
        """Uuids of every retained task whose haystack contains `needle`, newest first."""
        needle = needle.lower()
        if not st.order:
            self._chunks.clear()
            return []
        first_seq = st.first_seq()
        first, last = first_seq >> CHUNK_BITS, st.last_seq() >> CHUNK_BITS
        for gone in [k for k in self._chunks if k < first]:
            del self._chunks[gone]
        dirty = st.dirty_chunks
        out: list[str] = []
        for k in range(last, first - 1, -1):
            entry = self._chunks.get(k)
            if entry is None or k in dirty:
                entry = self._chunks[k] = self._build(st, k, first_seq)
                dirty.discard(k)
            uuids, hays = entry
            hits = [uuids[i] for i, h in enumerate(hays) if needle in h]
            hits.reverse()
            out.extend(hits)
        return out

    @staticmethod
    def _build(st: State, k: int, first_seq: int) -> tuple[list[str], list[str]]:
        # The order holds uuids by seq with no gaps, so chunk k is one slice of it.
        start = max(k << CHUNK_BITS, first_seq) - first_seq
        stop = ((k + 1) << CHUNK_BITS) - first_seq
        tasks = st.tasks
        uuids, hays = [], []
        for uuid in islice(st.order, start, stop):
            rec = tasks.get(uuid)
            if rec is not None:
                uuids.append(uuid)
                hays.append(haystack(rec))
        return uuids, hays


def find(st: State, f: Filters, limit: int = 50, offset: int = 0,
         text_index: TextIndex | None = None) -> tuple[int, list[TaskRecord]]:
    """Tasks matching `f`, newest first: (total matching, one page). Call with `st.lock` held."""
    tasks = st.tasks
    if not f.any():
        return len(tasks), list(islice(st.iter_newest(), offset, offset + limit))
    sets: list[set[str] | frozenset[str]] = []
    if f.state:
        sets.append(st.by_state.get(f.state, _EMPTY))
    if f.name:
        needle = f.name.lower()
        named = [s for name, s in st.by_name.items() if needle in name.lower()]
        sets.append(named[0] if len(named) == 1 else set().union(*named))
    if f.worker:
        sets.append(st.by_worker.get(f.worker, _EMPTY))
    if f.text:
        hits = (text_index or TextIndex()).search(st, f.text)
        if sets:
            hits = [u for u in hits if all(u in s for s in sets)]
        return len(hits), [tasks[u] for u in hits[offset:offset + limit]]
    sets.sort(key=len)
    found = sets[0] if len(sets) == 1 else sets[0].intersection(*sets[1:])
    total = len(found)
    want = offset + limit
    if not total or not limit:
        return total, []
    # Walking the order newest first costs about len(order) * want / total steps; selecting the
    # newest `want` of the matches costs about total steps: take the cheaper one.
    if len(st.order) * want < total * total:
        page = []
        for rec in st.iter_newest():
            if rec.uuid in found:
                page.append(rec)
                if len(page) >= want:
                    break
        return total, page[offset:]
    newest = heapq.nlargest(want, (tasks[u] for u in found), key=_seq)
    return total, newest[offset:]


def _seq(rec: TaskRecord) -> int:
    return rec.seq
