"""The Beat page's read model (and /api/beat's): each periodic entry with its schedule in words, next run,
the last run seen in the event stream, and its missed runs; whether beat may be down."""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from typing import Any

from ..cluster.beat import BeatSchedule, Entry
from ..core import beat as rules
from ..core.state import State

NO_WORKER = (
    "Runs were missed but no worker is online: periodic tasks are seen when a worker receives them, so beat "
    "is not blamed."
)


def _repr(value: Any) -> str:
    from celery.utils.saferepr import saferepr

    return str(saferepr(value, 1024))


def _jsonable(options: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in options.items():
        try:
            json.dumps(value)
            out[str(key)] = value
        except (TypeError, ValueError):
            out[str(key)] = repr(value)
    return out


def _runs(state: State, name: str, after: float) -> list[rules.Run]:
    """The tasks of this name in the state first seen after `after`, and before it only the newest with each
    arguments, as runs (call under the state lock; bounded by MAX_TASKS). Entries of one task name share it."""
    runs = []
    tasks = state.tasks
    older: dict[tuple[Any, Any], tuple[float, Any]] = {}  # (args, kwargs) -> the newest before `after`
    for uuid in state.by_name.get(name) or ():
        rec = tasks.get(uuid)
        if rec is None:
            continue
        at = rec.sent or rec.received or rec.started or rec.timestamp
        if at is None:
            continue
        if at >= after:
            runs.append(rules.Run(uuid, float(at), rec.state, rec.args, rec.kwargs))
        else:
            key = (rec.args, rec.kwargs)
            if key not in older or at > older[key][0]:
                older[key] = (at, rec)
    runs.extend(rules.Run(rec.uuid, float(at), rec.state, rec.args, rec.kwargs) for at, rec in older.values())
    return runs


def beat_view(
    state: State, schedule: BeatSchedule, grace: float, now: float | None = None, since: float | None = None
) -> dict[str, Any]:
    """{"entries": [...], "beat_down", "note", "grace"}: what the Beat page and /api/beat show.

    Only due times after the dashboard started, and after `since` (when the event stream last connected), are
    judged: runs sent while nobody listened are not missed runs."""
    now = time.time() if now is None else now
    started = max(schedule.started_at, since or 0.0)
    entries, note = schedule.entries()
    same_task = Counter(e.task for e in entries)
    rows = []
    seen_by_name: dict[str, list[rules.Run]] = {}
    for entry in entries:
        mask = state.mask or (lambda text: text)
        args, kwargs = mask(_repr(entry.args)), mask(_repr(entry.kwargs))
        if entry.task not in seen_by_name:
            with state.lock:
                # Older runs only matter as the last run: due times before `started` are not judged.
                seen_by_name[entry.task] = _runs(state, entry.task, started - 2 * grace)
        seen = seen_by_name[entry.task]
        runs = rules.runs_of(seen, args, kwargs, distinguish=same_task[entry.task] > 1)
        rows.append(_row(entry, args, kwargs, runs, started, grace, now))
    down = rules.beat_down(rows)
    with state.lock:
        workers = state.workers_online(now)
    if down and not workers:
        # A periodic task is seen when a worker receives it (or from task-sent events, if beat sends them): with
        # no worker online the workers may be what is down, not beat. No alarm then; the sentence says why.
        down = False
        note = " ".join(filter(None, [note, NO_WORKER]))
    return {"entries": rows, "beat_down": down, "note": note, "grace": grace}


def _row(
    entry: Entry, args: str, kwargs: str, runs: list[rules.Run], started: float, grace: float, now: float
) -> dict[str, Any]:
    last = runs[0] if runs else None
    entry_grace = rules.grace_for(grace, entry.period)
    # An interval counts from its last run (beat's own record with RedBeat, else the last run seen); nothing
    # before the dashboard started is judged.
    last_at = max((t for t in (entry.last_run_at, last.at if last else None) if t is not None), default=None)
    if entry.period is not None:
        base = last_at if last_at is not None else started  # beat's chain: every period after the last run
        nxt = entry.next_run_at
        if nxt is None:
            chain = last_at if last_at is not None else started
            nxt = chain + entry.period * max(1, math.ceil((now - chain) / entry.period))  # the next one after now
        due = [d for d in entry.due_between(base, now) if d > started]
        missing = rules.missed(due, runs, entry_grace, now)
    else:
        try:
            nxt = entry.next_run_at or entry.next_after(now)
        except Exception:  # noqa: BLE001 - a solar schedule without `ephem`
            nxt = None
        missing = rules.missed(entry.due_between(started, now), runs, entry_grace, now)
    return {
        "name": entry.name,
        "task": entry.task,
        "args": args,
        "kwargs": kwargs,
        "options": _jsonable(entry.options),
        "schedule": {"kind": entry.kind, "text": entry.text, "error": entry.error},
        "next_run": nxt,
        "last_run": {"uuid": last.uuid, "state": last.state, "at": last.at} if last else None,
        "missed": missing,
        "grace": entry_grace,
        "source": entry.source,
    }


__all__ = ["beat_view"]
