"""/metrics: parsed with prometheus_client's own parsers; counters from scripted replays and a real
worker; exact histogram buckets; bounded labels; scrape time with 100k retained tasks."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import DashboardServer, RedisServer, wait_for
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families
from test_state import task_ev, worker_ev

from dashboard import create_app
from dashboard.core.stats import COUNTED_EVENTS, EXPORT_BUCKETS, OTHER

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0
LABELS = {"name", "queue_name", "hostname", "priority", "le"}  # every label /metrics may use


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of a text exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(parsed: dict, sample: str, /, **labels: str) -> float | None:
    """One sample's value, or None when absent."""
    return parsed.get((sample, tuple(sorted(labels.items()))))


def scrape(client: Any) -> dict:
    """GET /metrics through a Flask test client, parsed."""
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.content_type.startswith("text/plain; version=0.0.4")
    return samples(resp.get_data(as_text=True))


@pytest.fixture
def small_app(redis_server: RedisServer) -> Iterator[Any]:
    """An app without ingest that keeps only 5 tasks (eviction happens at once)."""
    flask_app = create_app(
        {"ASYNC_MODE": "threading", "INGEST_ENABLED": False, "BROKER_URL": redis_server.url_db(1), "MAX_TASKS": 5}
    )
    yield flask_app
    flask_app.extensions["dashboard"].stop()


def run(
    uuid: str,
    t: float,
    runtime: float,
    name: str = "app.add",
    queue: str = "q1",
    wait: float = 0.5,
    outcome: str = "succeeded",
) -> list[dict[str, Any]]:
    """A task's events: sent, received, started after `wait`, then its outcome after `runtime`."""
    events = [
        task_ev("sent", uuid, t, name=name, queue=queue),
        task_ev("received", uuid, t + wait / 2, name=name),
        task_ev("started", uuid, t + wait),
    ]
    extra = {"runtime": runtime} if outcome == "succeeded" else {"exception": "Boom()"}
    events.append(task_ev(outcome, uuid, t + wait + runtime, **extra))
    for ev in events:
        ev["local_received"] = ev["timestamp"]
    return events


def test_counters_by_name_and_event_are_monotonic_through_eviction(small_app: Any) -> None:
    """20 tasks through a state that keeps 5: the counters say 20, and only go up."""
    state = small_app.extensions["dashboard"].state
    client = small_app.test_client()
    for i in range(20):
        state.events(run(f"t{i}", T0 + i, 0.2))
    state.events(run("f1", T0 + 30, 0.1, name="app.fail", outcome="failed"))
    first = scrape(client)
    assert len(state.tasks) == 5
    for event in ("sent", "received", "started", "succeeded"):
        assert value(first, f"celery_task_{event}_total", name="app.add") == 20
    assert value(first, "celery_task_failed_total", name="app.fail") == 1
    assert value(first, "celery_task_failed_total", name="app.add") == 0
    assert value(first, "celery_dashboard_tasks_evicted_total") == 16
    assert value(first, "celery_dashboard_tasks_retained") == 5
    state.events(run("t-last", T0 + 40, 0.2))
    second = scrape(client)
    for key, v in first.items():
        if key[0].endswith("_total") and not key[0].startswith("process_"):
            assert second.get(key, 0) >= v, key
    assert value(second, "celery_task_succeeded_total", name="app.add") == 21


def test_histograms_are_exact_at_their_bounds(app: Any) -> None:
    """A value equal to a bound counts in that bucket (le is inclusive); count and sum are exact."""
    state = app.extensions["dashboard"].state
    runtimes = [0.005, 0.0051, 0.1, 1.0, 3600.0, 4000.0]
    for i, rt in enumerate(runtimes):
        # Sent at time 0: the wait (started - sent) is then exactly `rt`, with no rounding of a subtraction.
        state.events(run(f"r{i}", 0.0, rt, wait=rt, queue="qh"))
    parsed = scrape(app.test_client())
    expected = {"0.005": 1, "0.01": 2, "0.1": 3, "1.0": 4, "10.0": 4, "3600.0": 5, "+Inf": 6}
    for le, n in expected.items():
        assert value(parsed, "celery_task_runtime_bucket", name="app.add", le=le) == n, le
        assert value(parsed, "celery_task_queue_wait_seconds_bucket", queue_name="qh", le=le) == n, le
    assert value(parsed, "celery_task_runtime_count", name="app.add") == 6
    assert value(parsed, "celery_task_runtime_sum", name="app.add") == pytest.approx(sum(runtimes))
    assert value(parsed, "celery_task_queue_wait_seconds_sum", queue_name="qh") == pytest.approx(sum(runtimes))
    les = [k[1] for k in parsed if k[0] == "celery_task_runtime_bucket"]
    assert len(les) == len(EXPORT_BUCKETS) + 1  # the bounds are fixed, whatever the data


def test_buckets_are_cumulative_and_never_decrease(app: Any) -> None:
    """Prometheus buckets are cumulative: each le counts at least what the previous one did."""
    state = app.extensions["dashboard"].state
    for i in range(200):
        state.events(run(f"c{i}", T0 + i, (i % 37) * 0.37, queue="qc"))
    parsed = scrape(app.test_client())
    buckets = sorted(
        (float(dict(labels)["le"]), v)
        for (sample, labels), v in parsed.items()
        if sample == "celery_task_runtime_bucket"
    )
    assert [le for le, _ in buckets] == [*EXPORT_BUCKETS, float("inf")]
    counts = [v for _, v in buckets]
    assert counts == sorted(counts) and counts[-1] == 200


def test_labels_stay_low_cardinality(app: Any) -> None:
    """No task id in any label; task names past the stats cap share "<other>"; only known label keys."""
    state = app.extensions["dashboard"].state
    state.stats.max_names = 5
    uuids = [f"uuid-{i:04d}" for i in range(40)]
    for i, uuid in enumerate(uuids):
        state.events(run(uuid, T0 + i, 0.01, name=f"app.task{i}", queue=f"q{i % 3}"))
    state.events([worker_ev("heartbeat", "w1@h", time.time(), active=2, local_received=time.time())])
    text = app.test_client().get("/metrics").get_data(as_text=True)
    parsed = samples(text)
    keys = {k for key in parsed for k, _ in key[1]}
    assert keys <= LABELS, keys - LABELS
    values = {v for key in parsed for _, v in key[1]}
    assert not values & set(uuids)
    names = {v for key in parsed for k, v in key[1] if k == "name"}
    assert names == {"app.task0", "app.task1", "app.task2", "app.task3", "app.task4", OTHER}
    assert value(parsed, "celery_task_succeeded_total", name=OTHER) == 35
    assert value(parsed, "celery_worker_up", hostname="w1@h") == 1
    assert value(parsed, "celery_worker_tasks_active", hostname="w1@h") == 2
    assert value(parsed, "celery_workers") == 1


def test_every_family_has_help_and_type_and_parses_strictly(app: Any) -> None:
    """Each family is announced once with HELP and TYPE; the OpenMetrics parser (stricter) reads the
    same samples once the text format's differences (_total families, no EOF) are bridged."""
    state = app.extensions["dashboard"].state
    state.events(run("o1", T0, 0.3))
    text = app.test_client().get("/metrics").get_data(as_text=True)
    types = [line.split()[2:4] for line in text.splitlines() if line.startswith("# TYPE")]
    helps = [line.split()[2] for line in text.splitlines() if line.startswith("# HELP")]
    assert [t[0] for t in types] == helps and len(set(helps)) == len(helps)
    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert families["celery_task_succeeded"] == "counter" and families["celery_task_runtime"] == "histogram"
    assert families["celery_queue_length"] == "gauge"
    om = "\n".join(_om_line(line) for line in text.splitlines()) + "\n# EOF\n"
    parsed = {f.name: f for f in parse_openmetrics(om)}
    assert parsed["celery_task_succeeded"].samples[0].value == 1


def _om_line(line: str) -> str:
    """A text-format line as OpenMetrics spells it (families of counters lose their _total)."""
    if line.startswith(("# HELP", "# TYPE")):
        parts = line.split(" ", 3)
        if parts[2].endswith("_total"):
            parts[2] = parts[2][: -len("_total")]
        return " ".join(parts)
    return line


def test_hostile_task_names_are_escaped(app: Any) -> None:
    """Quotes, backslashes and newlines in a task name cannot break the exposition."""
    state = app.extensions["dashboard"].state
    evil = 'x"} 1\nfake_metric 666\n\\'
    state.events(run("e1", T0, 0.1, name=evil))
    parsed = scrape(app.test_client())
    assert value(parsed, "celery_task_succeeded_total", name=evil) == 1
    assert not any(key[0] == "fake_metric" for key in parsed)


def test_scrape_with_100k_retained_tasks_counts_them_all(app: Any) -> None:
    """With 100k tasks, 50 names, 10 workers and 5 queues retained, a scrape has every count right.
    (Its speed is measured, not asserted: `python -m bench.metrics_scrape`.)"""
    svc = app.extensions["dashboard"]
    state = svc.state
    svc.queues.interval = 3600.0  # the loop's job: the on-demand read happens once, before timing
    now = time.time()
    batch = []
    for i in range(100_000):
        t = now - 100_000 + i
        if i % 10 == 0:  # a backlog: sent, never received
            batch.append(task_ev("sent", f"p{i}", t, name=f"app.t{i % 50}", queue=f"q{i % 5}", local_received=t))
        else:
            batch.extend(run(f"t{i}", t, (i % 100) / 10, name=f"app.t{i % 50}", queue=f"q{i % 5}"))
        if len(batch) > 5000:
            state.events(batch)
            batch = []
    state.events(batch)
    state.events([worker_ev("heartbeat", f"w{i}@h", now, active=1, local_received=now) for i in range(10)])
    assert len(state.tasks) == 100_000
    client = app.test_client()
    scrape(client)  # warm-up (and the one queue read)
    parsed = scrape(client)
    succeeded = sum(v for (name, _), v in parsed.items() if name == "celery_task_succeeded_total")
    sent = sum(v for (name, _), v in parsed.items() if name == "celery_task_sent_total")
    assert succeeded == 90_000 and sent == 100_000  # every task was sent; one in ten never ran
    assert value(parsed, "celery_task_succeeded_total", name="app.t1") == 2_000
    assert sum(1 for (name, _) in parsed if name == "celery_worker_up") == 11  # the tasks' worker + 10


def test_counters_rise_after_a_real_task_runs(dashboard: DashboardServer, worker: str) -> None:
    """Against the real server and worker: a task run raises its counters and runtime histogram;
    the worker is up; the queue it consumes has a length."""

    def get() -> dict:
        resp = dashboard.get("/metrics")
        assert resp.status_code == 200
        return samples(resp.text)

    name = "dashboard.demo.add"
    before = get()
    (uuid,) = dashboard.launch(name, args=[2, 3])
    dashboard.wait_task(uuid, "SUCCESS")
    # The queue monitor reads lengths in the background: wait for its first read.
    after = wait_for(
        lambda: (m := get()) and value(m, "celery_queue_length", queue_name="celery") is not None and m,
        message="celery_queue_length of the celery queue",
    )
    for event in ("sent", "received", "started", "succeeded"):
        assert (value(after, f"celery_task_{event}_total", name=name) or 0) >= (
            value(before, f"celery_task_{event}_total", name=name) or 0
        ) + 1, event
    assert (
        value(after, "celery_task_runtime_count", name=name)
        >= (value(before, "celery_task_runtime_count", name=name) or 0) + 1
    )
    assert value(after, "celery_worker_up", hostname=worker) == 1
    assert value(after, "celery_dashboard_broker_connected") == 1
    assert value(after, "celery_dashboard_events_received_total") > value(
        before, "celery_dashboard_events_received_total"
    )
    assert not {v for key in after for _, v in key[1]} & {uuid}
    assert set(COUNTED_EVENTS) <= {k[0].removeprefix("celery_task_").removesuffix("_total") for k in after}
