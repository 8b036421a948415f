"""The audit log of control actions: who did what, when, with what result.

The last entries stay in memory for the /audit page; with AUDIT_LOG set every entry is also appended
to that file as one JSON line (flushed at once), and the file's tail is read back at start, so the
page survives a restart. A file that cannot be written is logged and never fails the action itself.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from typing import Any

log = logging.getLogger(__name__)

KEEP = 1000  # entries kept in memory
TAIL_BYTES = 4 << 20  # read at most this much of an existing file at start


class AuditLog:
    """A thread-safe ring of the latest entries, optionally mirrored to a JSON-lines file."""

    def __init__(self, path: str = "", keep: int = KEEP) -> None:
        self.path = path
        self._entries: deque[dict[str, Any]] = deque(maxlen=keep)
        self._lock = threading.Lock()
        self._next_id = 1
        self.write_errors = 0
        if path:
            self._load()

    def _load(self) -> None:
        # Ids continue from the file's last entry, so an id names one action across restarts.
        try:
            with open(self.path, "rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                fh.seek(max(0, size - TAIL_BYTES))
                lines = fh.read().splitlines()
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("cannot read the audit log %s: %s", self.path, exc)
            return
        for line in lines[-(self._entries.maxlen or KEEP) :]:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a partial first line of the tail, or a line mangled by hand
            if isinstance(entry, dict) and isinstance(entry.get("id"), int):
                self._entries.append(entry)
                self._next_id = max(self._next_id, entry["id"] + 1)

    def record(
        self,
        action: str,
        target: Any,
        params: dict[str, Any],
        ok: bool,
        message: str,
        replies: dict[str, Any] | None = None,
        user: str | None = None,
        remote_addr: str | None = None,
    ) -> dict[str, Any]:
        """Add one entry (and append it to the file); returns it with its id."""
        with self._lock:
            entry = {
                "id": self._next_id,
                "time": time.time(),
                "user": user,
                "remote_addr": remote_addr,
                "action": action,
                "target": target,
                "params": params,
                "ok": bool(ok),
                "message": message,
                "replies": replies or {},
            }
            self._next_id += 1
            self._entries.append(entry)
            if self.path:
                self._append(entry)
        log.info("audit #%d %s %s by %s: %s", entry["id"], action, target, user or "-", message)
        return entry

    def _append(self, entry: dict[str, Any]) -> None:
        # Called under the lock: lines from concurrent actions never interleave.
        try:
            line = json.dumps(entry, default=str, ensure_ascii=False, separators=(",", ":"))
            # Reopened each time (log rotation works); created owner-only: who did what is not for everyone.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
                fh.flush()
        except (OSError, TypeError, ValueError) as exc:
            self.write_errors += 1
            log.error("cannot append to the audit log %s: %s", self.path, exc)

    def entries(self, limit: int = 100) -> list[dict[str, Any]]:
        """The latest `limit` entries, newest first."""
        with self._lock:
            newest = list(self._entries)[-limit:] if limit > 0 else []
        return newest[::-1]


__all__ = ["AuditLog"]
