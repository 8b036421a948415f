"""End to end with real parts: redis-server, the demo worker (-E) and `celery-dashboard run`."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import socketio
from conftest import WORK_SECONDS, DashboardServer, RedisServer, event_envelope, wait_for

from dashboard.cluster.control import EventsEnabler
from dashboard.processes import start_worker, stop_process

pytestmark = pytest.mark.integration


def test_add_goes_through_every_state_to_success(dashboard: DashboardServer, worker: str) -> None:
    """A launched add(2, 3) ends SUCCESS with its result, worker and full event history."""
    (uuid,) = dashboard.launch("dashboard.demo.add", args=[2, 3])
    task = dashboard.wait_task(uuid, "SUCCESS")
    assert task["result"] == "5"
    assert task["name"] == "dashboard.demo.add"
    assert task["args"] == "[2, 3]"
    assert task["worker"] == worker
    assert [h["event"] for h in task["history"]] == ["sent", "received", "started", "succeeded"]
    assert task["runtime"] >= float(WORK_SECONDS) * 0.9
    assert task["sent"] <= task["received"] <= task["started"] <= task["succeeded"]


def test_failure_shows_exception_and_real_traceback(dashboard: DashboardServer, worker: str) -> None:
    """The failing task is FAILURE with its exception and the traceback down to the raising frame."""
    (uuid,) = dashboard.launch("dashboard.demo.fail", kwargs={"card": "1234", "amount": 7})
    task = dashboard.wait_task(uuid, "FAILURE")
    assert task["exception"].startswith("PaymentDeclined(")
    assert "card 1234 was declined for amount 7" in task["exception"]
    tb = task["traceback"]
    assert tb.startswith("Traceback (most recent call last):")
    assert "in _charge" in tb and "in _authorize" in tb
    assert "PaymentDeclined: card 1234 was declined" in tb.splitlines()[-1]
    failed = dashboard.get("/api/tasks", params={"state": "FAILURE", "name": "demo.fail"}).json()
    assert uuid in [t["uuid"] for t in failed["tasks"]]
    assert all(t["state"] == "FAILURE" for t in failed["tasks"])


def test_flaky_task_keeps_every_retry(dashboard: DashboardServer, worker: str) -> None:
    """autoretry_for retries twice then succeeds; the history and attempts show both failures."""
    (uuid,) = dashboard.launch("dashboard.demo.flaky", kwargs={"fail_times": 2})
    task = dashboard.wait_task(uuid, "SUCCESS", timeout=30)
    events = [h["event"] for h in task["history"]]
    assert events.count("retried") == 2
    assert events.count("received") == 3 and events.count("started") == 3
    assert task["retries"] == 2
    assert task["result"] == "'succeeded on attempt 3'"
    assert [a["exception"] for a in task["attempts"]] == [
        "ConnectionError('upstream unavailable on attempt 1')",
        "ConnectionError('upstream unavailable on attempt 2')",
    ]
    assert all("ConnectionError: upstream unavailable" in a["traceback"] for a in task["attempts"])
    # Task.retry() re-sends the task from inside itself: it must not become its own parent or child.
    assert task["parent_id"] is None and task["children"] == []


def test_progress_task_reports_progress(dashboard: DashboardServer, worker: str) -> None:
    """The progress task's custom events carry current/total, then it succeeds."""
    (uuid,) = dashboard.launch("dashboard.demo.progress", kwargs={"steps": 3, "delay": 0.1})
    task = dashboard.wait_task(uuid, "SUCCESS")
    assert task["extra"] == {"current": 3, "total": 3}
    assert [h["event"] for h in task["history"]].count("progress") == 3


def test_workflow_children_link_to_their_root(dashboard: DashboardServer, worker: str) -> None:
    """The workflow's chain/group/chord tasks all name the workflow task as their root."""
    (root,) = dashboard.launch("dashboard.demo.workflow", kwargs={"n": 3})
    dashboard.wait_task(root, "SUCCESS")

    def tsum_done() -> Any:
        rows = dashboard.get("/api/tasks", params={"name": "demo.tsum", "limit": 100}).json()["tasks"]
        return next((t for t in rows if t["state"] == "SUCCESS" and dashboard.task(t["uuid"])["root_id"] == root), None)

    tsum = wait_for(tsum_done, timeout=30, message="the chord callback to succeed")
    assert tsum["result"] == "6"  # 0+0 + 1+1 + 2+2
    children = dashboard.task(root)["children"]
    assert children, "the first task of the chain is a child of the workflow task"
    assert dashboard.task(children[0])["parent_id"] == root


def test_worker_is_online_with_heartbeat(dashboard: DashboardServer, worker: str) -> None:
    """The worker list shows the demo worker online with a fresh heartbeat; /healthz counts it."""
    workers = {w["hostname"]: w for w in dashboard.get("/api/workers").json()["workers"]}
    me = workers[worker]
    assert me["online"] is True
    assert time.time() - me["last_heartbeat"] < 3 * me["freq"]
    assert me["sw_ident"] == "py-celery"
    health = dashboard.health()
    assert health["workers"]["online"] >= 1
    assert health["broker"]["connected"] is True
    assert health["events"]["received"] > 0
    assert health["server"]["async_mode"] == "gevent"


def test_websocket_pushes_live_updates(dashboard: DashboardServer, worker: str) -> None:
    """A Socket.IO client gets a snapshot, then batched updates for a launched task until SUCCESS."""
    client = socketio.Client(reconnection=False)
    seen: list[dict[str, Any]] = []
    detail: list[dict[str, Any]] = []
    done = threading.Event()

    @client.on("tasks")
    def on_tasks(data: dict[str, Any]) -> None:
        seen.extend(data["tasks"])
        if any(t["state"] == "SUCCESS" and t["uuid"] in launched for t in data["tasks"]):
            done.set()

    client.on("task", lambda data: detail.append(data["task"]))
    launched: list[str] = []
    client.connect(dashboard.base_url, transports=["websocket"])
    try:
        snapshot = client.call("subscribe", {"view": "tasks", "name": "demo.add"}, timeout=5)
        assert "total" in snapshot and isinstance(snapshot["tasks"], list)
        assert snapshot["status"]["broker"]["connected"] is True
        launched.extend(dashboard.launch("dashboard.demo.add", args=[20, 22]))
        assert done.wait(20), f"no SUCCESS update for {launched} over the websocket; got {seen[-5:]}"
        states = [t["state"] for t in seen if t["uuid"] == launched[0]]
        assert states[-1] == "SUCCESS"
        assert len(states) <= 4, "updates for one task within a tick are batched into one"
        # A second subscription on the same socket moves it to the task's own room.
        one = client.call("subscribe", {"view": "task", "uuid": launched[0]}, timeout=5)
        assert one["task"]["result"] == "42"
    finally:
        client.disconnect()


def test_ingest_resumes_after_redis_restart(own_redis: RedisServer) -> None:
    """Redis goes away mid-run: the dashboard reports it, reconnects, and sees new tasks again."""
    dash = DashboardServer(own_redis.url)
    proc = start_worker(
        own_redis.url,
        concurrency=1,
        hostname="restart@localhost",
        quiet=True,
        extra_env={"DASHBOARD_DEMO_SLEEP": WORK_SECONDS},
    )
    try:
        (first,) = dash.launch("dashboard.demo.add", args=[1, 1])
        dash.wait_task(first, "SUCCESS", timeout=30)
        own_redis.stop()
        down = wait_for(
            lambda: (h := dash.health()) and not h["broker"]["connected"] and h,
            timeout=10,
            message="/healthz to report the broker down",
        )
        assert down["broker"]["error"]
        own_redis.start()
        up = wait_for(
            lambda: (h := dash.health()) and h["broker"]["connected"] and h,
            timeout=20,
            message="/healthz to report the broker back",
        )
        assert up["broker"]["outages"] == 1
        lost, back = up["broker"]["last_outage"]
        assert back > lost > 0
        second = wait_for(
            lambda: dash.try_launch("dashboard.demo.add", args=[2, 2]), timeout=30, message="a launch after the restart"
        )
        dash.wait_task(second, "SUCCESS", timeout=40)
        assert dash.task(first)["state"] == "SUCCESS", "state from before the outage is kept"
    finally:
        stop_process(proc)
        dash.stop()


def test_worker_started_without_events_is_asked_to_send_them(own_redis: RedisServer) -> None:
    """A worker started without -E after the dashboard reports its tasks: its arrival triggers
    enable_events broadcasts (the periodic one is an hour away here, so only the arrival can do it)."""
    dash = DashboardServer(own_redis.url, env={"DASHBOARD_ENABLE_EVENTS_INTERVAL": "3600"})
    time.sleep(EventsEnabler.FAST_WINDOW + 1)  # past the broadcasts that follow the dashboard's own connect
    proc = start_worker(
        own_redis.url,
        concurrency=1,
        hostname="silent@localhost",
        quiet=True,
        extra_env={"DASHBOARD_DEMO_SLEEP": WORK_SECONDS, "DASHBOARD_DEMO_EVENTS": "0"},
    )
    try:
        wait_for(lambda: dash.worker_online("silent@localhost"), timeout=60, message="the silent worker's heartbeat")

        # A task that runs before the worker has subscribed to broadcasts stays unseen (PENDING):
        # launch until one is reported, which must happen within the dashboard's follow-up window.
        def launched_and_reported() -> dict[str, Any] | None:
            (uid,) = dash.launch("dashboard.demo.add", args=[3, 4])
            try:
                return dash.wait_task(uid, "SUCCESS", timeout=2)
            except AssertionError:
                return None

        task = wait_for(
            launched_and_reported, timeout=20, interval=0, message="a task of the silent worker to be reported"
        )
        assert task["result"] == "7"
        assert task["hostname"] == "silent@localhost"
    finally:
        stop_process(proc)
        dash.stop()


def test_subscriber_cut_off_by_redis_reconnects_and_says_events_were_missed() -> None:
    """Redis drops a pub/sub subscriber that falls behind its output-buffer limit: the dashboard
    must notice, reconnect, and report the window in which events were lost — never go silent."""
    import os
    import signal
    import uuid as uuidlib

    import redis

    from dashboard.processes import start_redis

    proc, url = start_redis(pubsub_limit="256kb 128kb 1")
    dash = DashboardServer(url, env={"DASHBOARD_ENABLE_EVENTS_INTERVAL": "0"})
    try:
        raw = redis.Redis.from_url(url)
        flood = event_envelope(
            {
                "type": "task-received",
                "uuid": str(uuidlib.uuid4()),
                "name": "flood",
                "args": "x" * 2000,
                "hostname": "w@h",
                "timestamp": time.time(),
                "utcoffset": 0,
            }
        )
        # Freeze the dashboard (gunicorn's master and its worker, which holds the subscription).
        frozen = [dash.proc.pid] + [
            int(p) for p in Path(f"/proc/{dash.proc.pid}/task/{dash.proc.pid}/children").read_text().split()
        ]
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        try:
            pipe = raw.pipeline(transaction=False)
            for _ in range(2000):  # ~5 MB, far past the 256 kB limit
                pipe.publish("/0.celeryev/task.multi", flood)
            pipe.execute()
        finally:
            for pid in frozen:
                os.kill(pid, signal.SIGCONT)
        health = wait_for(
            lambda: (h := dash.health())["broker"]["outages"] == 1 and h["broker"]["connected"] and h,
            timeout=30,
            message="the dashboard to notice it was cut off and reconnect",
        )
        lost, back = health["broker"]["last_outage"]
        assert back >= lost > 0, "the window in which events may have been missed is reported"
        assert health["events"]["received"] < 2000, "Redis really dropped events (the test's premise)"
        uid = str(uuidlib.uuid4())
        raw.publish(
            "/0.celeryev/task.multi",
            event_envelope(
                {
                    "type": "task-received",
                    "uuid": uid,
                    "name": "after",
                    "hostname": "w@h",
                    "timestamp": time.time(),
                    "utcoffset": 0,
                }
            ),
        )
        wait_for(lambda: dash.task(uid), timeout=10, message="events after the reconnect")
    finally:
        dash.stop()
        stop_process(proc)
