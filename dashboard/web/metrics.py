"""Prometheus /metrics with the names Celery exporters use, low label cardinality.

Names follow danihodovic/celery-exporter (`celery_task_sent_total`, `celery_task_runtime`,
`celery_worker_up`, `celery_queue_length`, ...), the exporter most Celery dashboards are built on.
Labels are task names (bounded by the state's stats: past its cap they share "<other>"), worker
hostnames (bounded by MAX_WORKERS; long-offline ones are left out as on the workers page) and queue
names: never a task id or argument.

Nothing is recorded per event here: a scrape reads the state's lifetime counters and fixed-bound
histograms under its lock (O(names + workers + queues), independent of how many tasks are retained)
and writes the text format (version 0.0.4) itself. prometheus_client would build an object per sample
and cost ~7 us each (480 ms at the 2000-name cap, measured); these lines cost well under 1 us. The
tests parse every scrape with prometheus_client's own parser, hostile label values included.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable
from typing import Any

from flask import Blueprint, Response

from ..core.stats import COUNTED_EVENTS, EXPORT_BUCKETS
from .services import Services, services

bp = Blueprint("metrics", __name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_START = time.time()

_EVENT_HELP = {
    "sent": "Task messages published (task-sent events; clients need task_send_sent_event = True).",
    "received": "Tasks received by a worker (task-received events).",
    "started": "Tasks a worker started executing (task-started events).",
    "succeeded": "Tasks that executed successfully (task-succeeded events).",
    "failed": "Tasks whose execution failed (task-failed events).",
    "rejected": "Tasks a worker rejected, to be re-queued or dead-lettered (task-rejected events).",
    "revoked": "Tasks revoked (task-revoked events).",
    "retried": "Tasks that failed and will be retried (task-retried events).",
}
# `le` as Prometheus' Go clients write it ("0.005", "1.0"), ready to close a label set.
_LE_SUFFIX = [f'le="{float(b)!r}"}} ' for b in EXPORT_BUCKETS] + ['le="+Inf"} ']


def _escape(value: str) -> str:
    """A label value as the text format quotes it."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


class _Text:
    """Lines of one exposition."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, /) -> None:
        """# HELP and # TYPE of a family (its samples follow)."""
        self.lines.append(f"# HELP {name} {help_text.replace(chr(92), chr(92) * 2).replace(chr(10), ' ')}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: Any, /, **labels: str) -> None:
        """One sample line."""
        if labels:
            inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            self.lines.append(f"{name}{{{inner}}} {_num(value)}")
        else:
            self.lines.append(f"{name} {_num(value)}")

    def histogram(self, name: str, label: str, series: Iterable[tuple[str, list[int], int, float]]) -> None:
        """Bucket, count and sum lines of each (label value, cumulative counts, count, sum)."""
        out = self.lines
        bucket = name + "_bucket{"
        for key, cumulative, count, total in series:
            lbl = f'{label}="{_escape(key)}"'
            head = f"{bucket}{lbl},"
            for suffix, n in zip(_LE_SUFFIX, cumulative):
                out.append(f"{head}{suffix}{n}")
            out.append(f"{head}{_LE_SUFFIX[-1]}{count}")
            out.append(f"{name}_count{{{lbl}}} {count}")
            out.append(f"{name}_sum{{{lbl}}} {_num(total)}")

    def text(self) -> str:
        """The exposition, newline-terminated."""
        return "\n".join(self.lines) + "\n"


def render(svc: Services, now: float | None = None) -> str:
    """The whole exposition, from one consistent read of the state (copied out under its lock)."""
    state = svc.state
    now = time.time() if now is None else now
    hide_after = float(svc.config.get("HIDE_OFFLINE_AFTER", 0) or 0)
    with state.lock:
        counts = state.stats.event_counts()
        runtime = state.stats.export_histograms("runtime")
        waits = state.queue_stats.export_histograms("wait_sent")
        workers = []
        for w in state.workers.values():
            if w.long_gone(now, hide_after):
                continue  # left out, as the workers page hides it
            workers.append((w.hostname, w.alive(now), w.active))
        retained, evicted = len(state.tasks), state.evicted
        from_backend, unreported = state.from_backend, state.unreported

    out = _Text()
    for event in COUNTED_EVENTS:
        metric = f"celery_task_{event}_total"
        out.family(metric, "counter", _EVENT_HELP[event])
        for name, row in counts.items():
            out.sample(metric, row[event], name=name)
    out.family("celery_task_runtime", "histogram", "Task runtime in seconds (succeeded and failed tasks).")
    out.histogram("celery_task_runtime", "name", runtime)
    out.family(
        "celery_task_queue_wait_seconds",
        "histogram",
        "Time from task-sent to task-started per queue (needs task_send_sent_event = True on clients).",
    )
    out.histogram("celery_task_queue_wait_seconds", "queue_name", waits)

    out.family("celery_worker_up", "gauge", "Whether a worker has sent a heartbeat recently (1) or not (0).")
    for hostname, up, _ in workers:
        out.sample("celery_worker_up", 1 if up else 0, hostname=hostname)
    out.family("celery_worker_tasks_active", "gauge", "Tasks a worker is executing (its last heartbeat).")
    for hostname, up, active in workers:
        out.sample("celery_worker_tasks_active", active if up else 0, hostname=hostname)
    out.family("celery_workers", "gauge", "Workers online.")
    out.sample("celery_workers", sum(1 for w in workers if w[1]))

    if svc.queues is not None:
        _queues(out, svc.queues.snapshot(now))

    ingest = svc.ingest
    for metric, kind, help_text, value in (
        ("celery_dashboard_events_received_total", "counter", "Events decoded from the broker.", ingest.received),
        (
            "celery_dashboard_events_rejected_total",
            "counter",
            "Broker messages or events that could not be applied.",
            ingest.rejected,
        ),
        (
            "celery_dashboard_broker_connected",
            "gauge",
            "Whether the event stream is connected.",
            1 if ingest.connected else 0,
        ),
        ("celery_dashboard_broker_reconnects_total", "counter", "Reconnects of the event stream.", ingest.reconnects),
        ("celery_dashboard_tasks_retained", "gauge", "Tasks kept in memory.", retained),
        ("celery_dashboard_tasks_evicted_total", "counter", "Tasks evicted from memory (oldest first).", evicted),
        (
            "celery_dashboard_tasks_from_backend_total",
            "counter",
            "Tasks whose final event never came, their outcome taken from the result backend.",
            from_backend,
        ),
        (
            "celery_dashboard_tasks_unreported_total",
            "counter",
            "Tasks whose final event never came and whose outcome no backend could tell: finished, not reported.",
            unreported,
        ),
        (
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time of the dashboard process.",
            sum(os.times()[:2]),
        ),
        ("process_start_time_seconds", "gauge", "When the dashboard process started (Unix time).", _START),
    ):
        out.family(metric, kind, help_text)
        out.sample(metric, value)
    return out.text()


def _queues(out: _Text, snap: dict[str, Any]) -> None:
    rows = snap["queues"]
    out.family("celery_queue_length", "gauge", "Messages waiting in the broker queue (all priorities).")
    for q in rows:
        if q["length"] is not None:
            out.sample("celery_queue_length", q["length"], queue_name=q["name"])
    out.family("celery_queue_priority_length", "gauge", "Messages waiting per priority step (kombu's Redis lists).")
    for q in rows:
        for step, n in (q["priorities"] or {}).items():
            out.sample("celery_queue_priority_length", n, queue_name=q["name"], priority=step)
    for metric in ("celery_active_consumer_count", "celery_active_worker_count"):
        out.family(metric, "gauge", "Online workers consuming the queue (from their active_queues replies).")
        for q in rows:
            out.sample(metric, len(q["consumers"]), queue_name=q["name"])
    out.family(
        "celery_queue_oldest_waiting_seconds",
        "gauge",
        "Age of the oldest task sent to the queue and not yet received (from events).",
    )
    for q in rows:
        if q["oldest_waiting"] is not None:
            out.sample("celery_queue_oldest_waiting_seconds", q["oldest_waiting"]["age"], queue_name=q["name"])
    if snap["broker"] == "redis":
        out.family(
            "celery_dashboard_queue_lengths_stale",
            "gauge",
            "1 when the last read of queue lengths failed (the lengths shown are older).",
        )
        out.sample("celery_dashboard_queue_lengths_stale", 1 if snap["stale"] else 0)


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text exposition (format 0.0.4, which every Prometheus accepts)."""
    return Response(render(services()), content_type=CONTENT_TYPE)
