"""Reconciliation: tasks whose final event never came are resolved instead of running forever.

Events are fire-and-forget: pub/sub keeps nothing while the dashboard is away, and some Celery releases
lose them (a Celery 5.3 worker with `-P threads` put the final event of about a quarter of its tasks on
no wire). Every RECONCILE_INTERVAL, tasks shown as running or received with no event for RECONCILE_AFTER
seconds, on a worker that is alive, are checked against what their workers hold (`inspect active`,
`reserved`, `scheduled`, through the inspector's cache). A task its worker answered for but no longer
holds has ended: its state, result and traceback come from the result backend when one is known (marked
as taken from it), otherwise it is UNREPORTED ("finished, outcome not reported"). A worker that does not
answer leaves its tasks as they are; any later event of a task wins over either.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ..core.state import Candidate, State
from .inspector import Inspector

log = logging.getLogger(__name__)

HELD_BY = ("active", "reserved", "scheduled")  # what a worker answers for a task it runs or will run
Backend = Callable[[str], dict[str, Any] | None]  # uuid -> a final task event from the result backend, or None


def held_uuids(method: str, reply: Any) -> set[str]:
    """The task ids in one worker's `active`/`reserved` (requests) or `scheduled` (entries) reply."""
    out: set[str] = set()
    for item in reply if isinstance(reply, list) else ():
        request = item.get("request") if method == "scheduled" and isinstance(item, dict) else item
        if isinstance(request, dict) and isinstance(request.get("id"), str):
            out.add(request["id"])
    return out


def backend_lookup(app: Any) -> Backend | None:
    """A lookup in the app's result backend, or None when it has none (`result_backend` unset or disabled)."""
    backend = app.conf.result_backend
    if not backend or str(backend).startswith("disabled"):
        return None

    def lookup(uuid: str) -> dict[str, Any] | None:
        result = app.AsyncResult(uuid)
        state = result.state
        if state not in ("SUCCESS", "FAILURE", "REVOKED"):
            return None  # PENDING: nothing stored (ignore_result, expired, or never ran); not an outcome
        done = result.date_done
        event: dict[str, Any] = {
            "type": f"task-{_SUBJECT[state]}",
            "timestamp": done.timestamp() if done else time.time(),
        }
        if state == "SUCCESS":
            event["result"] = repr(result.result)
        elif state == "FAILURE":
            event["exception"] = repr(result.result)
            event["traceback"] = result.traceback
        return event

    return lookup


_SUBJECT = {"SUCCESS": "succeeded", "FAILURE": "failed", "REVOKED": "revoked"}


class Reconciler:
    """The loop (`run` / `stop`) and one round (`round`)."""

    def __init__(
        self, state: State, inspector: Inspector, *, interval: float, quiet: float, backend: Backend | None
    ) -> None:
        self.state = state
        self.inspector = inspector
        self.interval = interval
        self.quiet = quiet  # seconds without an event before a task is checked
        self.backend = backend
        self.rounds = 0
        self._stop = threading.Event()

    def run(self) -> None:
        """Check every `interval` seconds until stop(); a failed round never ends the loop."""
        while not self._stop.wait(self.interval):
            try:
                self.round()
            except Exception:  # the loop must outlive any surprise (a broker outage, a backend error)
                log.exception("reconciliation round failed")

    def stop(self) -> None:
        """End the loop."""
        self._stop.set()

    def round(self, now: float | None = None) -> int:
        """One check: ask the candidates' workers what they hold, resolve what none holds; returns how many."""
        now = time.time() if now is None else now
        with self.state.lock:
            candidates = self.state.reconcile_candidates(now, self.quiet)
            alive = {h for h, w in self.state.workers.items() if w.alive(now)}
        if not candidates:
            return 0
        self.rounds += 1
        # A running task is its worker's to hold; a received one may have been handed to another worker
        # (a redelivery), so then every live worker is asked and must answer.
        received = any(c.state == "RECEIVED" for c in candidates)
        workers = sorted({c.hostname for c in candidates} | (alive if received else set()))
        asked = time.time()
        self.inspector.refresh(workers, HELD_BY)
        held: set[str] = set()
        answered: set[str] = set()
        for host in workers:
            entries = self.inspector.worker(host)
            fresh = [entries[m] for m in HELD_BY]
            if all(e["status"] == "ok" and (e["fetched_at"] or 0) >= asked for e in fresh):
                answered.add(host)  # it answered all three just now: what it does not list, it does not hold
                for method, entry in zip(HELD_BY, fresh, strict=True):
                    held |= held_uuids(method, entry["reply"])
        everyone = answered >= set(workers)
        gone = [
            c
            for c in candidates
            if c.uuid not in held and c.hostname in answered and (everyone or c.state != "RECEIVED")
        ]
        resolved = from_backend = 0
        for candidate in gone:
            outcome = self._outcome(candidate)  # backend I/O outside the lock
            with self.state.lock:
                done = self.state.resolve(candidate, outcome, time.time())
            resolved += done
            from_backend += done and outcome is not None
        if resolved:
            log.info(
                "%d task(s) ended without their final event: %d from the result backend, %d unreported",
                resolved,
                from_backend,
                resolved - from_backend,
            )
        return resolved

    def _outcome(self, candidate: Candidate) -> dict[str, Any] | None:
        if self.backend is None:
            return None
        try:
            return self.backend(candidate.uuid)
        except Exception as exc:  # noqa: BLE001 - a backend that fails leaves the task unreported, not running
            log.warning("result backend lookup of %s failed: %s", candidate.uuid, exc)
            return None
