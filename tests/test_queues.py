"""Queues: per-queue wait stats and counters from scripted replays, and lengths, consumers and the
task_send_sent_event hint against a real Redis, a real worker and the real dashboard server."""

from __future__ import annotations

import types
from typing import Any

import pytest
import requests
from conftest import DashboardServer, RedisServer, wait_for
from test_state import replay, task_ev

from dashboard.cluster.control import make_celery
from dashboard.cluster.queues import (
    NOT_REDIS,
    PRIORITY_SEP,
    PRIORITY_STEPS,
    QueueMonitor,
    consumers_from,
    priority_keys,
)
from dashboard.core.state import State
from dashboard.core.stats import OTHER

T0 = 1_700_000_000.0
FAST = {"DASHBOARD_QUEUE_POLL_INTERVAL": "0.3"}


def lifecycle(
    uuid: str, sent: float, wait: float, queue: str | None = "q1", routing_key: str | None = None, name: str = "app.add"
) -> list[dict[str, Any]]:
    """sent -> received -> started -> succeeded, started `wait` seconds after sent."""
    fields = {k: v for k, v in (("queue", queue), ("routing_key", routing_key)) if v is not None}
    return [
        task_ev("sent", uuid, sent, name=name, **fields),
        task_ev("received", uuid, sent + wait / 2, name=name),
        task_ev("started", uuid, sent + wait),
        task_ev("succeeded", uuid, sent + wait + 0.1, runtime=0.1),
    ]


# -- per-queue stats from events --------------------------------------------------------------------


@pytest.mark.unit
def test_queue_wait_is_sent_to_started_per_queue() -> None:
    """Each queue gets its own sent -> started percentiles; received -> started does not count."""
    state = State()
    for i in range(100):
        replay(state, lifecycle(f"a{i}", T0 + i, wait=1.0, queue="fast"))
        replay(state, lifecycle(f"b{i}", T0 + i, wait=10.0 + i * 0.1, queue="slow"))
    fast, slow = state.queue_stats.wait_sent("fast"), state.queue_stats.wait_sent("slow")
    assert fast["count"] == slow["count"] == 100
    assert fast["p50"] == pytest.approx(1.0, rel=0.05) and fast["p99"] == pytest.approx(1.0, rel=0.05)
    assert slow["p50"] == pytest.approx(14.95, rel=0.05)
    assert slow["p95"] == pytest.approx(19.4, rel=0.05)
    assert slow["p99"] == pytest.approx(19.8, rel=0.05)
    assert state.queue_stats.wait_sent("nobody-sends-here") is None


@pytest.mark.unit
def test_queue_wait_falls_back_to_the_routing_key_and_needs_a_sent_time() -> None:
    """Without a queue name the routing key names it; a task never sent (no task-sent) gives no wait."""
    state = State()
    replay(state, lifecycle("r1", T0, wait=2.0, queue=None, routing_key="by-key"))
    replay(state, [task_ev("received", "x1", T0, name="app.add"), task_ev("started", "x1", T0 + 3)])
    assert state.queue_stats.wait_sent("by-key")["count"] == 1
    assert state.queue_stats.names() == ["by-key"]


@pytest.mark.unit
def test_recent_window_forgets_old_waits() -> None:
    """The recent window holds only the last minutes of event time."""
    state = State()
    replay(state, lifecycle("old", T0, wait=50.0))
    replay(state, lifecycle("new", T0 + 3600, wait=2.0))
    assert state.queue_stats.wait_sent("q1")["count"] == 2
    recent = state.queue_stats.wait_sent("q1", now=T0 + 3600, window="recent")
    assert recent["count"] == 1 and recent["p50"] == pytest.approx(2.0, rel=0.05)


@pytest.mark.unit
def test_lifetime_event_counters_survive_eviction() -> None:
    """Counters count events over the process life, not retained tasks: eviction never lowers them."""
    state = State(max_tasks=3)
    for i in range(10):
        replay(state, lifecycle(f"t{i}", T0 + i, wait=0.5))
    replay(
        state,
        [
            task_ev("sent", "f1", T0 + 20, name="app.fail", queue="q1"),
            task_ev("received", "f1", T0 + 21, name="app.fail"),
            task_ev("started", "f1", T0 + 22),
            task_ev("retried", "f1", T0 + 23, exception="Boom()"),
            task_ev("started", "f1", T0 + 24),
            task_ev("failed", "f1", T0 + 25, exception="Boom()"),
        ],
    )
    assert len(state.tasks) == 3
    counts = state.stats.event_counts()
    assert counts["app.add"] == {
        "sent": 10,
        "received": 10,
        "started": 10,
        "succeeded": 10,
        "failed": 0,
        "rejected": 0,
        "revoked": 0,
        "retried": 0,
    }
    assert counts["app.fail"]["retried"] == 1 and counts["app.fail"]["started"] == 2
    assert counts["app.fail"]["failed"] == 1
    assert state.queue_stats.event_counts()["q1"]["sent"] == 11


@pytest.mark.unit
def test_counter_names_are_bounded() -> None:
    """Names past the stats cap share one "<other>" row, so /metrics label values stay bounded."""
    state = State()
    state.stats.max_names = 3
    for i in range(10):
        replay(state, [task_ev("sent", f"u{i}", T0 + i, name=f"app.t{i}", queue="q1")])
    counts = state.stats.event_counts()
    assert sorted(counts) == [OTHER, "app.t0", "app.t1", "app.t2"]
    assert counts[OTHER]["sent"] == 7


@pytest.mark.unit
def test_events_of_an_unnamed_task_count_under_unknown() -> None:
    """A task-started seen before any event that names the task still counts, under <unknown>."""
    state = replay(State(), [task_ev("started", "n1", T0)])
    assert state.stats.event_counts()["<unknown>"]["started"] == 1


# -- the monitor, without a broker ------------------------------------------------------------------


def other_broker_monitor(state: State, **kwargs: Any) -> QueueMonitor:
    """A monitor on a non-Redis broker: no broker I/O at all."""
    return QueueMonitor(state, "amqp://guest@127.0.0.1:1//", **kwargs)


@pytest.mark.unit
def test_oldest_waiting_is_the_earliest_sent_task_not_yet_received() -> None:
    """Per queue, the PENDING task sent first; tasks a worker received no longer wait."""
    state = State()
    replay(
        state,
        [
            task_ev("sent", "first", T0, name="a", queue="q1"),
            task_ev("sent", "second", T0 + 5, name="a", queue="q1"),
            task_ev("sent", "other-q", T0 + 1, name="a", queue="q2"),
            task_ev("sent", "early", T0 - 10, name="a", queue="q2"),
            task_ev("received", "early", T0 + 2, name="a"),
        ],
    )
    snap = other_broker_monitor(state).snapshot(now=T0 + 60)
    rows = {q["name"]: q for q in snap["queues"]}
    assert rows["q1"]["oldest_waiting"] == {"uuid": "first", "sent": T0, "age": 60.0}
    assert rows["q2"]["oldest_waiting"]["uuid"] == "other-q"
    assert rows["celery"]["oldest_waiting"] is None


@pytest.mark.unit
def test_oldest_waiting_scans_a_large_backlog_in_slices() -> None:
    """A backlog larger than one slice of the scan still finds the oldest task."""
    state = State()
    replay(state, [task_ev("sent", f"p{i}", T0 + 10_000 - i, name="a", queue="big") for i in range(5_001)])
    rows = {q["name"]: q for q in other_broker_monitor(state).snapshot(now=T0 + 20_000)["queues"]}
    assert rows["big"]["oldest_waiting"]["uuid"] == "p5000"


@pytest.mark.unit
def test_other_brokers_get_no_lengths_but_everything_else() -> None:
    """A non-Redis broker: lengths unknown, said so; queues, waits and the sent-event flag still there."""
    state = replay(State(), lifecycle("t1", T0, wait=1.5, queue="work"))
    snap = other_broker_monitor(state, queues="configured").snapshot()
    assert snap["broker"] == "other" and snap["error"] == NOT_REDIS and snap["stale"] is False
    rows = {q["name"]: q for q in snap["queues"]}
    assert set(rows) == {"celery", "configured", "work"}
    assert rows["work"]["length"] is None and rows["work"]["priorities"] is None
    assert rows["work"]["wait"]["count"] == 1 and rows["work"]["wait"]["p50"] == pytest.approx(1.5, rel=0.05)
    assert snap["sent_events_seen"] is True


@pytest.mark.unit
def test_consumers_come_from_active_queues_of_online_workers() -> None:
    """Consumers per queue from the inspector's replies; offline workers and junk are left out."""
    replies = {
        "w1@h": [{"name": "celery"}, {"name": "q1"}],
        "w2@h": [{"name": "q1"}],
        "gone@h": [{"name": "q1"}],
        "junk@h": "not a list",
        7: [{"name": "x"}],
        "w3@h": [{"nom": "y"}, "z"],
    }
    assert consumers_from(replies, lambda h: h != "gone@h") == {"celery": ["w1@h"], "q1": ["w1@h", "w2@h"]}
    assert consumers_from(None, lambda h: True) == {}


@pytest.mark.unit
def test_monitor_reads_consumers_from_the_inspector_and_lists_their_queues() -> None:
    """svc.inspector.replies("active_queues") names consumers; a queue only a worker consumes is listed."""
    inspector = types.SimpleNamespace(
        replies=lambda method: {"w1@h": [{"name": "only-consumed"}]} if method == "active_queues" else None
    )
    monitor = other_broker_monitor(State(), inspector=inspector)
    rows = {q["name"]: q for q in monitor.snapshot()["queues"]}
    assert rows["only-consumed"]["consumers"] == ["w1@h"]
    assert rows["celery"]["consumers"] == []


@pytest.mark.unit
def test_an_inspector_without_data_leaves_consumers_empty() -> None:
    """An inspector that has nothing yet (or raises), or none at all, must not break the page."""

    def broken(method: str) -> Any:
        raise RuntimeError("not refreshed yet")

    for inspector in (types.SimpleNamespace(replies=lambda m: None), types.SimpleNamespace(replies=broken), None):
        snap = other_broker_monitor(State(), inspector=inspector).snapshot()
        assert [q["consumers"] for q in snap["queues"]] == [[]]


@pytest.mark.unit
def test_priority_keys_are_kombus_own() -> None:
    """Every priority 0..9 a client may give lands in one of the keys we read (kombu's _q_for_pri)."""
    from kombu.transport.redis import Channel

    fake = types.SimpleNamespace(sep=Channel.sep, priority_steps=Channel.priority_steps)
    fake.priority = lambda n: Channel.priority(fake, n)
    ours = dict(priority_keys("q1"))
    assert ours["0"] == "q1" and PRIORITY_SEP == "\x06\x16" and list(PRIORITY_STEPS) == [0, 3, 6, 9]
    for priority in range(10):
        key = Channel._q_for_pri(fake, "q1", priority)
        assert key in ours.values(), (priority, key)


@pytest.mark.integration
def test_api_queues_hint_flag_follows_task_sent_events(app: Any) -> None:
    """sent_events_seen is false until a task-sent event arrives; the page carries the how-to."""
    client = app.test_client()
    assert client.get("/api/queues").get_json()["sent_events_seen"] is False
    page = client.get("/queues").get_data(as_text=True)
    assert "task_send_sent_event = True" in page and 'id="queues-sent-hint"' in page
    state = app.extensions["dashboard"].state
    state.events([task_ev("received", "r1", T0, name="a", local_received=T0)])
    assert client.get("/api/queues").get_json()["sent_events_seen"] is False  # task-received gives no sent time
    state.events([task_ev("sent", "s1", T0, name="a", queue="q1", local_received=T0)])
    assert client.get("/api/queues").get_json()["sent_events_seen"] is True


# -- real Redis, real worker ------------------------------------------------------------------------


def queues_of(dashboard: DashboardServer) -> dict[str, Any]:
    """GET /api/queues as {name: row}, with the body under the key None."""
    body = dashboard.get("/api/queues").json()
    return {None: body, **{q["name"]: q for q in body["queues"]}}


@pytest.mark.integration
def test_lengths_include_priority_sub_queues(redis_server: RedisServer) -> None:
    """Tasks sent to a queue nobody consumes: the length and each priority list are read from Redis."""
    url = redis_server.url_db(12)
    server = DashboardServer(url, env=FAST)
    client = make_celery(url)
    try:
        ids = [client.send_task("queues.never_run", queue="q-prio", priority=p).id for p in (0, 0, 3, 5, 6, 9, 9, 9)]
        row = wait_for(
            lambda: (q := queues_of(server).get("q-prio")) and q["length"] == 8 and q, message="q-prio with 8 waiting"
        )
        assert row["priorities"] == {"0": 2, "3": 2, "6": 1, "9": 3}
        assert row["consumers"] == []
        assert row["oldest_waiting"]["uuid"] == ids[0]
        assert row["wait"] is None  # nothing started yet
        body = queues_of(server)[None]
        assert body["broker"] == "redis" and body["stale"] is False and body["sent_events_seen"] is True
        client.send_task("queues.never_run", queue="q-prio", priority=9)
        wait_for(lambda: queues_of(server)["q-prio"]["priorities"]["9"] == 4, message="the new message counted")
    finally:
        server.stop()
        client.close()


@pytest.mark.integration
def test_broker_down_keeps_the_last_lengths_marked_stale(own_redis: RedisServer) -> None:
    """When Redis goes away the last lengths stay, marked stale with the error; they refresh once it is back."""
    server = DashboardServer(own_redis.url, env=FAST)
    client = make_celery(own_redis.url)
    try:
        client.send_task("queues.never_run", queue="q-stale")
        wait_for(lambda: queues_of(server).get("q-stale", {}).get("length") == 1, message="q-stale read")
        own_redis.stop()
        body = wait_for(lambda: (b := queues_of(server)[None])["stale"] and b, message="stale lengths")
        assert body["error"]
        assert queues_of(server)["q-stale"]["length"] == 1  # the last known length is kept
        own_redis.start()
        wait_for(lambda: not queues_of(server)[None]["stale"], timeout=30, message="fresh lengths again")
        # The server restarted empty (no persistence): the fresh read says so.
        assert queues_of(server)["q-stale"]["length"] == 0
    finally:
        server.stop()
        client.close()


@pytest.mark.integration
def test_consumers_and_queue_wait_from_a_real_worker(dashboard: DashboardServer, worker: str) -> None:
    """The session worker consumes "celery": it is listed as a consumer, and a task it runs gives a wait."""
    (uuid,) = dashboard.launch("dashboard.demo.add", args=[1, 2])
    dashboard.wait_task(uuid, "SUCCESS")
    row = wait_for(
        lambda: (q := queues_of(dashboard)["celery"])["consumers"] and q["wait"] and q,
        timeout=40,
        message=f"{worker} consuming celery, with a measured wait",
    )
    assert worker in row["consumers"]
    assert row["wait"]["count"] >= 1 and row["wait"]["p50"] >= 0
    assert row["length"] is not None


@pytest.mark.integration
def test_queues_page_is_served(dashboard: DashboardServer) -> None:
    """The page itself: the table, the poll interval for the script, the hint's text."""
    resp = requests.get(dashboard.base_url + "/queues", timeout=5)
    assert resp.status_code == 200
    assert 'id="queue-table"' in resp.text and "data-queue-poll-interval=" in resp.text
    assert "js/queues.js" in resp.text
