"""The state's index structures: a common value's members without a set, and one-to-many links.

Pure data structures over the state's task records (dashboard/core/state.py keeps them up to date;
dashboard/core/query.py reads them). They exist for memory: at 1M tasks a set per common value or a
list per link costs hundreds of megabytes (bench/memprofile.py shows where the bytes go).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from itertools import compress, repeat
from operator import attrgetter, eq
from typing import Any

from .records import TaskRecord

# A value of the state, name or worker index held by this many tasks, and by at least one in DENSE_SHARE of
# them, keeps a count instead of a set of uuids (DenseMembers): its tasks are found by walking the tasks,
# where at least one in DENSE_SHARE matches. Below one in SPARSE_SHARE it gets its set back (hysteresis: a
# set is rebuilt by one walk of every task, rarely). The indexes are checked every REBALANCE_EVERY tasks.
DENSE_MIN = 2048
DENSE_SHARE = 64
SPARSE_SHARE = 256
REBALANCE_EVERY = 1024


class DenseMembers:
    """The tasks of one common value of an index: a count, and a list of uuids that holds every member and may
    hold stale ones (tasks gone or moved to another value), tested against the record when read. A set costs
    ~40 bytes a member, the list 8-9: a task leaving costs nothing, and stale entries are trimmed as the
    oldest tasks go (State._rebalance).

    Reads as a set of uuids does (len, in, iteration, <=, ==); membership is the record's field.
    """

    __slots__ = ("count", "get", "tasks", "uuids", "value")

    def __init__(self, tasks: dict[str, TaskRecord], attr: str, value: Any, members: Iterable[str]) -> None:
        self.tasks = tasks
        self.get = attrgetter(attr)  # the record field whose value this is (exactly: see State._rebalance)
        self.value = value
        self.uuids = list(members)
        self.count = len(self.uuids)

    def has(self, rec: TaskRecord) -> bool:
        """Whether a retained task is one of these."""
        return bool(self.get(rec) == self.value)

    def mask(self, recs: Iterable[TaskRecord]) -> Iterator[bool]:
        """Whether each of `recs` is one of these, tested in C (for itertools.compress)."""
        return map(eq, map(self.get, recs), repeat(self.value))

    def members(self) -> list[str]:
        """The uuids of the members, each once (tested in C: ~0.1 µs a member)."""
        uuids = self.uuids
        valid = list(compress(uuids, self.mask(map(self.tasks.get, uuids, repeat(GONE)))))
        # (A task that left and came back, or a uuid seen again after eviction, is listed twice.)
        return valid if len(valid) == self.count else list(dict.fromkeys(valid))

    def trim(self) -> None:
        """Drop the stale entries at the front (the oldest tasks go first); rebuild when half are stale."""
        uuids, tasks, get, value = self.uuids, self.tasks, self.get, self.value
        k, n = 0, len(uuids)
        while k < n and ((rec := tasks.get(uuids[k])) is None or get(rec) != value):
            k += 1
        if k:
            del uuids[:k]
        if len(uuids) > 2 * self.count + 64:
            self.uuids = self.members()

    def __len__(self) -> int:
        return self.count

    def __contains__(self, uuid: object) -> bool:
        rec = self.tasks.get(uuid) if uuid.__class__ is str else None
        return rec is not None and self.get(rec) == self.value

    def __iter__(self) -> Iterator[str]:
        return iter(self.members())

    def __le__(self, other: Any) -> bool:
        return all(uuid in other for uuid in self)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (set, frozenset, DenseMembers)):
            return set(self) == set(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"DenseMembers({self.value!r}, {self.count})"


Members = set[str] | DenseMembers


def intersect(a: Members, b: Members) -> list[str]:
    """The uuids in both (the smaller one's members tested against the other)."""
    if a.__class__ is set and b.__class__ is set:
        return list(a & b)
    if len(b) < len(a):
        a, b = b, a
    return [uuid for uuid in a if uuid in b]


# Stands for a task no longer retained where members are tested in C: no field of it equals a dense value.
GONE = TaskRecord("", 0)


# Links from one task to many (parent -> children, root -> workflow): most tasks link to one or none, so one
# uuid is stored alone (no list: a list costs ~90 bytes), more as a list in the order they came.
LONG_LINKS = 64  # members from which a task's links are a deque, not a list


def link(links: dict[str, Any], key: str, uuid: str) -> None:
    """Add uuid to key's links."""
    had = links.get(key)
    if had is None:
        links[key] = uuid
    elif isinstance(had, str):
        links[key] = [had, uuid]
    else:
        had.append(uuid)
        if len(had) == LONG_LINKS and had.__class__ is list:
            # A big workflow or fan-out: eviction removes its oldest member, at the front, which a list
            # does by moving every other one (O(n) per eviction); a deque does it in O(1).
            links[key] = deque(had)


def unlink(links: dict[str, Any], key: str, uuid: str) -> None:
    """Remove uuid from key's links (nothing if it is not there)."""
    had = links.get(key)
    if had is None:
        return
    if isinstance(had, str):
        if had == uuid:
            del links[key]
        return
    try:
        had.remove(uuid)  # (eviction removes the oldest: the list's first)
    except ValueError:
        return
    if len(had) == 1:
        links[key] = had[0]
    elif not had:
        del links[key]


def linked(links: dict[str, Any], key: str) -> list[str]:
    """The uuids linked from key, in the order they came."""
    had = links.get(key)
    return [] if had is None else [had] if isinstance(had, str) else list(had)
