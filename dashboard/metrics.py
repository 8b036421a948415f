"""Prometheus /metrics with the names Celery exporters use, low label cardinality.

Names follow danihodovic/celery-exporter (`celery_task_sent_total`, `celery_task_runtime`,
`celery_worker_up`, `celery_queue_length`, ...), the exporter most Celery dashboards are built on.
Labels are task names (bounded by the state's stats: past its cap they share "<other>"), worker
hostnames (bounded by MAX_WORKERS; long-offline ones are left out as on the workers page) and queue
names: never a task id or argument.

Nothing is recorded per event here: a custom collector reads the state's lifetime counters and
histograms under its lock at scrape time (O(names + workers + queues), independent of how many tasks
are retained), and prometheus_client renders them (escaping, number formats, OpenMetrics when asked).
"""
from __future__ import annotations

import time
from typing import Any, Iterator

from flask import Blueprint, Flask, Response, current_app, request
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.utils import floatToGoString

from .stats import COUNTED_EVENTS, EXPORT_BUCKETS

bp = Blueprint("metrics", __name__)
EXTENSION = "dashboard_metrics"  # app.extensions key of the registry

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
_LE = [floatToGoString(b) for b in EXPORT_BUCKETS]


def _buckets(cumulative: list[int], count: int) -> list[tuple[str, int]]:
    return [*zip(_LE, cumulative), ("+Inf", count)]


class CeleryCollector:
    """Reads the dashboard's state, ingest and queue monitor at scrape time."""

    def __init__(self, svc: Any) -> None:
        self.svc = svc

    def describe(self) -> list[Metric]:
        """Nothing up front: registering must not run a scrape."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Every family, from one consistent read of the state (under its lock, copied out)."""
        svc = self.svc
        state = svc.state
        now = time.time()
        hide_after = float(svc.config.get("HIDE_OFFLINE_AFTER", 0) or 0)
        with state.lock:
            counts = state.stats.event_counts()
            runtime = state.stats.export_histograms("runtime")
            waits = state.queue_stats.export_histograms("wait_sent")
            workers = []
            for w in state.workers.values():
                up = w.alive(now)
                gone = w.offline_at if w.offline_at is not None else w.last_heartbeat
                if not up and hide_after > 0 and gone is not None and now - gone > hide_after:
                    continue  # long gone: left out, as the workers page hides it
                workers.append((w.hostname, up, w.active))
            retained, evicted = len(state.tasks), state.evicted

        for event in COUNTED_EVENTS:
            family = CounterMetricFamily(f"celery_task_{event}", _EVENT_HELP[event], labels=["name"])
            for name, row in counts.items():
                family.add_metric([name], row[event])
            yield family

        family = HistogramMetricFamily("celery_task_runtime", "Task runtime in seconds (succeeded and failed tasks).",
                                       labels=["name"])
        for name, cumulative, count, total in runtime:
            family.add_metric([name], _buckets(cumulative, count), total)
        yield family

        family = HistogramMetricFamily(
            "celery_task_queue_wait_seconds",
            "Time from task-sent to task-started per queue (needs task_send_sent_event = True on clients).",
            labels=["queue_name"])
        for queue, cumulative, count, total in waits:
            family.add_metric([queue], _buckets(cumulative, count), total)
        yield family

        up = GaugeMetricFamily("celery_worker_up", "Whether a worker has sent a heartbeat recently (1) or not (0).",
                               labels=["hostname"])
        active = GaugeMetricFamily("celery_worker_tasks_active", "Tasks a worker is executing (its last heartbeat).",
                                   labels=["hostname"])
        for hostname, alive, n in workers:
            up.add_metric([hostname], 1 if alive else 0)
            active.add_metric([hostname], n if alive and isinstance(n, (int, float)) else 0)
        yield up
        yield active
        yield GaugeMetricFamily("celery_workers", "Workers online.", value=sum(1 for w in workers if w[1]))

        yield from self._queues(now)

        ingest = svc.ingest
        yield CounterMetricFamily("celery_dashboard_events_received", "Events decoded from the broker.",
                                  value=ingest.received)
        yield CounterMetricFamily("celery_dashboard_events_rejected",
                                  "Broker messages or events that could not be applied.", value=ingest.rejected)
        yield GaugeMetricFamily("celery_dashboard_broker_connected", "Whether the event stream is connected.",
                                value=1 if ingest.connected else 0)
        yield CounterMetricFamily("celery_dashboard_broker_reconnects", "Reconnects of the event stream.",
                                  value=ingest.reconnects)
        yield GaugeMetricFamily("celery_dashboard_tasks_retained", "Tasks kept in memory.", value=retained)
        yield CounterMetricFamily("celery_dashboard_tasks_evicted", "Tasks evicted from memory (oldest first).",
                                  value=evicted)

    def _queues(self, now: float) -> Iterator[Metric]:
        monitor = self.svc.queues
        if monitor is None:
            return
        snap = monitor.snapshot(now)
        length = GaugeMetricFamily("celery_queue_length", "Messages waiting in the broker queue (all priorities).",
                                   labels=["queue_name"])
        by_priority = GaugeMetricFamily("celery_queue_priority_length",
                                        "Messages waiting per priority step (kombu's Redis sub-queues).",
                                        labels=["queue_name", "priority"])
        consumers = GaugeMetricFamily("celery_active_consumer_count", "Online workers consuming the queue.",
                                      labels=["queue_name"])
        workers = GaugeMetricFamily("celery_active_worker_count", "Online workers consuming the queue.",
                                    labels=["queue_name"])
        oldest = GaugeMetricFamily("celery_queue_oldest_waiting_seconds",
                                   "Age of the oldest task sent to the queue and not yet received (from events).",
                                   labels=["queue_name"])
        for q in snap["queues"]:
            name = q["name"]
            if q["length"] is not None:
                length.add_metric([name], q["length"])
                for step, n in (q["priorities"] or {}).items():
                    by_priority.add_metric([name, step], n)
            consumers.add_metric([name], len(q["consumers"]))
            workers.add_metric([name], len(q["consumers"]))
            if q["oldest_waiting"] is not None:
                oldest.add_metric([name], q["oldest_waiting"]["age"])
        yield from (length, by_priority, consumers, workers, oldest)
        if snap["broker"] == "redis":
            yield GaugeMetricFamily("celery_dashboard_queue_lengths_stale",
                                    "1 when the last read of queue lengths failed (the lengths shown are older).",
                                    value=1 if snap["stale"] else 0)


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text exposition (OpenMetrics when the scraper asks for it)."""
    registry = current_app.extensions[EXTENSION]
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encoder(registry), content_type=content_type)


def init_app(app: Flask, svc: Any) -> None:
    """Build this app's metrics registry (its own, never prometheus_client's global one)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CeleryCollector(svc))
    ProcessCollector(registry=registry)  # process_cpu_seconds_total, resident memory, open fds
    app.extensions[EXTENSION] = registry
