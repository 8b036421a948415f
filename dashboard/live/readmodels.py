"""Read models: what a page, the JSON API and a live room show, built from the state.

Each method takes the state's lock for as long as it reads and returns plain JSON-ready dicts; the
HTTP API and the Socket.IO rooms (dashboard/live/rooms.py) share them, so a page and its live updates
never disagree about what a row holds.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..core.query import Filters, TextIndex, find, workflow_tree
from ..core.records import STATES, TaskRecord, WorkerRecord, task_detail, task_summary, worker_summary
from ..core.state import State

if TYPE_CHECKING:
    from ..cluster.inspector import Inspector
    from ..ingest.stream import Ingest

FAILURES_SHOWN = 10
THROUGHPUT_SHOWN = 300  # seconds of the overview chart
FAILURE_GROUPS_SHOWN = 100
MAX_LIMIT = 500  # rows of one task-list page


class ReadModels:
    """Snapshots of the state for pages, the API and rooms (each one consistent: read under the lock)."""

    def __init__(
        self, state: State, ingest: Ingest | None, inspector: Inspector | None = None, hide_offline_after: float = 0.0
    ) -> None:
        self.state = state
        self.ingest = ingest  # None: ingest disabled (tests, a read-only replica of a snapshot)
        self.inspector = inspector  # the inspect cache: pool, uptime; None without one
        self.hide_offline_after = hide_offline_after
        self.text_index = TextIndex()  # shared by every free-text query (API and rooms)

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
            data = self.overview_counts(now)
            data["throughput"] = list(self.state.throughput)[-THROUGHPUT_SHOWN:]
            data["failures"] = self.latest_failures()
        return data

    def overview_counts(self, now: float) -> dict[str, Any]:
        """The overview's counters (call under the state lock)."""
        st = self.state
        online = st.workers_online(now)
        return {
            "counts": {s: n for s, n in st.counts.items() if n or s in STATES},
            "workers": {"online": online, "offline": len(st.workers) - online, "total": len(st.workers)},
            "totals": {"retained": len(st.tasks), "events": st.event_count, "evicted": st.evicted},
        }

    def latest_failures(self) -> list[dict[str, Any]]:
        """The newest FAILURE tasks, newest first, at most FAILURES_SHOWN (call under the state lock)."""
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

    def tasks_snapshot(
        self,
        f: Filters,
        limit: int,
        offset: int = 0,
        sort: str | None = None,
        ascending: bool = False,
        before: int | None = None,
    ) -> dict[str, Any]:
        """One page of the task list for a filter; `next_cursor` pages on in the default order."""
        with self.state.lock:
            total, page = find(
                self.state,
                f,
                limit=limit,
                offset=offset,
                text_index=self.text_index,
                sort=sort,
                ascending=ascending,
                before=before,
            )
            rows = [task_summary(r) for r in page]
            more = sort is None and len(page) == limit and page[-1].seq > self.state.first_seq()
            return {"total": total, "tasks": rows, "next_cursor": str(page[-1].seq) if more else None}

    def task_payload(self, rec: TaskRecord) -> dict[str, Any]:
        """A task in full with its workflow tree (call under the state lock)."""
        return {"task": task_detail(rec, self.state.children_of(rec.uuid)), "tree": workflow_tree(self.state, rec.uuid)}

    def task_snapshot(self, uuid: str) -> dict[str, Any]:
        """One task in full, or {"task": None} when it has not been seen."""
        with self.state.lock:
            rec = self.state.tasks.get(uuid)
            return self.task_payload(rec) if rec is not None else {"task": None, "tree": None}

    def failures_snapshot(self, sort: str = "last_seen", limit: int = FAILURE_GROUPS_SHOWN) -> dict[str, Any]:
        """Failure groups and the outcome counters (failed, retried, recovered, gave up)."""
        now = time.time()
        with self.state.lock:
            return {
                "groups": self.state.failure_groups.groups(sort=sort, limit=limit, now=now),
                "outcomes": dict(self.state.outcomes),
                "now": now,
            }

    def stats_snapshot(self, windows: tuple[str, ...] = ("all", "recent")) -> dict[str, Any]:
        """Per-task-name statistics for the given windows (the page shows both, the API asks for one:
        a table is built under the lock and costs milliseconds per hundred task names)."""
        now = time.time()
        with self.state.lock:
            stats = self.state.stats
            data: dict[str, Any] = {w: stats.table(now=now, window=w) for w in windows}
            data.update(window_seconds=stats.window_seconds, now=now)
            return data

    def worker_row(self, worker: WorkerRecord, now: float) -> dict[str, Any]:
        """A worker's summary plus pool, uptime and inspect_at from the inspect cache."""
        row = worker_summary(worker, now)
        if self.inspector is not None:
            row.update(self.inspector.summary(worker.hostname, row["online"], now))
        else:
            row.update(pool=None, uptime=None, inspect_at=None)
        return row

    def hidden(self, worker: WorkerRecord, now: float) -> bool:
        """Whether a worker is left out of the list for being offline longer than HIDE_OFFLINE_AFTER."""
        return worker.long_gone(now, self.hide_offline_after)

    def workers_snapshot(self) -> dict[str, Any]:
        """Every known worker except those offline longer than HIDE_OFFLINE_AFTER (counted instead)."""
        now = time.time()
        with self.state.lock:
            workers = sorted(self.state.workers.values(), key=lambda w: w.hostname)
            shown = [w for w in workers if not self.hidden(w, now)]
            return {"workers": [self.worker_row(w, now) for w in shown], "hidden_offline": len(workers) - len(shown)}
