"""The optional state snapshot: saved atomically on an interval and at shutdown, restored at start.

A file is written beside the target (temp file, fsync, rename), so a crash mid-save leaves the previous
snapshot intact. A file that cannot be read back (corrupt, truncated, another format or version) is
renamed aside with a warning and the dashboard starts empty: it is never overwritten.
"""

from __future__ import annotations

import gzip
import logging
import os
import threading
import time
from typing import Any

import orjson

from ..core.records import SNAPSHOT_TASK_FIELDS, SNAPSHOT_WORKER_FIELDS
from ..core.state import State

log = logging.getLogger(__name__)

FORMAT = "celery-live-dashboard-snapshot"
VERSION = 1
CHUNK = 2_000  # tasks copied per hold of the state lock: ingest and pages wait at most that long
_STRING_FIELDS = frozenset(("traceback", "exception"))  # repeated across tasks: stored once in a table


class SnapshotError(ValueError):
    """A snapshot file that cannot be restored; the message says why."""


def dump(state: State) -> dict[str, Any]:
    """The state as a JSON-able document (tasks oldest first), copied in chunks under the lock."""
    with state.lock:
        uuids = list(state.order)
        workers = [state.export_worker(w) for w in state.workers.values()]
    strings: dict[str, int] = {}
    shared = [i for i, f in enumerate(SNAPSHOT_TASK_FIELDS) if f in _STRING_FIELDS]
    rows = []
    for start in range(0, len(uuids), CHUNK):
        with state.lock:
            chunk = [state.export_task(u) for u in uuids[start : start + CHUNK]]
        for row in chunk:
            if row is None:
                continue  # evicted meanwhile
            for i in shared:
                if row[i].__class__ is str:
                    row[i] = strings.setdefault(row[i], len(strings))
            rows.append(row)
    return {
        "format": FORMAT,
        "version": VERSION,
        "saved_at": time.time(),
        "task_fields": SNAPSHOT_TASK_FIELDS,
        "worker_fields": SNAPSHOT_WORKER_FIELDS,
        "strings": list(strings),
        "tasks": rows,
        "workers": workers,
    }


def restore(state: State, doc: Any) -> tuple[int, int]:
    """Load a `dump()` document into an empty state; returns (tasks, workers). Raises SnapshotError."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise SnapshotError("not a Celery Live Dashboard snapshot")
    if doc.get("version") != VERSION:
        raise SnapshotError(f"snapshot version {doc.get('version')!r}; this dashboard reads version {VERSION}")
    if doc.get("task_fields") != list(SNAPSHOT_TASK_FIELDS) or doc.get("worker_fields") != list(SNAPSHOT_WORKER_FIELDS):
        raise SnapshotError("snapshot written by a dashboard with other task or worker fields")
    strings, tasks, workers = doc.get("strings"), doc.get("tasks"), doc.get("workers")
    saved_at = doc.get("saved_at")
    if not (
        isinstance(strings, list)
        and isinstance(tasks, list)
        and isinstance(workers, list)
        and isinstance(saved_at, (int, float))
    ):
        raise SnapshotError("snapshot without its strings, tasks, workers or time")
    shared = [i for i, f in enumerate(SNAPSHOT_TASK_FIELDS) if f in _STRING_FIELDS]
    try:
        with state.lock:
            for row in workers:
                state.restore_worker(row, saved_at)
            for row in tasks[-state.max_tasks :]:  # a smaller max_tasks keeps the newest
                if isinstance(row, list) and len(row) == len(SNAPSHOT_TASK_FIELDS):
                    for i in shared:
                        if row[i].__class__ is int:
                            row[i] = strings[row[i]]
                state.restore_task(row)
    except (ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
        raise SnapshotError(f"broken record in snapshot: {type(exc).__name__}: {exc}") from None
    return len(state.tasks), len(state.workers)


class Snapshots:
    """Saves the state to `path` every `interval` seconds (and on `save()`), restores it with `load()`."""

    def __init__(self, state: State, path: str, interval: float) -> None:
        self.state = state
        self.path = path
        self.interval = interval
        self.saved_at: float | None = None
        self.last_error: str | None = None
        self.restored: tuple[int, int] | None = None
        self.set_aside: str | None = None  # where a bad snapshot was moved
        self._stop = threading.Event()
        self._save_lock = threading.Lock()

    def load(self) -> bool:
        """Restore from the file if there is one; a bad file is moved aside with a warning. True if restored."""
        if not os.path.exists(self.path):
            log.info("no snapshot at %s yet: starting empty", self.path)
            return False
        try:
            with open(self.path, "rb") as fh:
                data = fh.read()
            try:
                doc = orjson.loads(gzip.decompress(data))
            except (OSError, EOFError, orjson.JSONDecodeError) as exc:
                raise SnapshotError(f"unreadable ({type(exc).__name__}: {exc})") from None
            self.restored = restore(self.state, doc)
        except (OSError, SnapshotError) as exc:
            self._set_aside(str(exc))
            return False
        log.info("restored %d tasks and %d workers from %s", *self.restored, self.path)
        return True

    def _set_aside(self, why: str) -> None:
        # Start empty, but keep the bad file for inspection: the next save must not overwrite it.
        # (Re-initialised in place, which mypy refuses: every holder of this State sees it empty.)
        with self.state.lock:
            self.state.__init__(self.state.max_tasks, self.state.max_workers, self.state.mask)  # type: ignore[misc]
        aside = f"{self.path}.bad-{time.strftime('%Y%m%d-%H%M%S')}"
        try:
            os.replace(self.path, aside)
            self.set_aside = aside
        except OSError as exc:
            aside = f"(could not move it: {exc})"
        log.warning(
            "snapshot %s could not be restored: %s. Starting empty; the file was kept as %s", self.path, why, aside
        )

    def save(self) -> bool:
        """Write the snapshot atomically (temp file + fsync + rename); False (and logged) on failure."""
        with self._save_lock:
            tmp = f"{self.path}.tmp-{os.getpid()}"
            try:
                body = gzip.compress(orjson.dumps(dump(self.state), default=str), compresslevel=1)
                directory = os.path.dirname(os.path.abspath(self.path))
                os.makedirs(directory, exist_ok=True)
                # Owner-only: it holds every task's arguments, results and tracebacks.
                with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
                    fh.write(body)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.path)
                dir_fd = os.open(directory, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)  # the rename itself survives a power cut
                finally:
                    os.close(dir_fd)
            except (OSError, TypeError, ValueError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("could not save the snapshot to %s: %s", self.path, self.last_error)
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                return False
            self.saved_at, self.last_error = time.time(), None
            log.debug("snapshot saved to %s (%d bytes)", self.path, len(body))
            return True

    def run(self) -> None:
        """Save every `interval` seconds until stop()."""
        while not self._stop.wait(self.interval):
            self.save()

    def stop(self) -> None:
        """End the loop (the final save is the caller's: after ingest has stopped)."""
        self._stop.set()

    def status(self) -> dict[str, Any]:
        """For /healthz: where, when last saved, last error, what was restored or set aside."""
        return {
            "path": self.path,
            "saved_at": self.saved_at,
            "error": self.last_error,
            "restored": list(self.restored) if self.restored else None,
            "set_aside": self.set_aside,
        }
