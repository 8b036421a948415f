"""Reliability scenarios of issue #6, each against real parts: broker outages (a 30 s one, and ten in a
row without leaking threads or connections), a worker killed with SIGKILL."""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

import pytest
import redis
from conftest import WORK_SECONDS, DashboardServer, RedisServer, wait_for

from dashboard.processes import start_worker, stop_process


def _server_pid(dash: DashboardServer) -> int:
    """The process that holds the state and the sockets (gunicorn's worker, child of the master)."""
    children = Path(f"/proc/{dash.proc.pid}/task/{dash.proc.pid}/children").read_text().split()
    return int(children[0]) if children else dash.proc.pid


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _sockets(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                count += 1
        except OSError:
            pass  # closed meanwhile
    return count


def _redis_clients(url: str) -> int:
    """Connections the Redis server holds, not counting the one asking."""
    client = redis.Redis.from_url(url)
    try:
        return len(client.client_list()) - 1
    finally:
        client.close()


@pytest.mark.integration
def test_thirty_second_outage_banner_then_resume_within_five_seconds(own_redis: RedisServer) -> None:
    """Redis stops for 30 s: /healthz (what the banner shows) says the broker is down and events may be
    missed; within 5 s of Redis' return ingest is connected again, and the worker is back online from
    its next heartbeats and its tasks are seen again."""
    dash = DashboardServer(own_redis.url)
    host = "outage@localhost"
    proc = start_worker(
        own_redis.url, concurrency=1, hostname=host, quiet=True, extra_env={"DASHBOARD_DEMO_SLEEP": WORK_SECONDS}
    )
    try:
        wait_for(lambda: dash.worker_online(host), timeout=60, message="the worker online")
        own_redis.stop()
        down = wait_for(
            lambda: (h := dash.health()) and not h["broker"]["connected"] and h,
            timeout=10,
            message="the broker reported down",
        )
        assert down["broker"]["error"]
        time.sleep(30)
        assert not dash.health()["broker"]["connected"]
        own_redis.start()
        back_at = time.monotonic()
        up = wait_for(
            lambda: (h := dash.health()) and h["broker"]["connected"] and h,
            timeout=10,
            interval=0.05,
            message="ingest connected again",
        )
        resumed = time.monotonic() - back_at
        assert resumed <= 5.0, f"ingest resumed {resumed:.1f} s after Redis came back"
        lost, back = up["broker"]["last_outage"]
        assert back - lost >= 30, "the reported window covers the whole outage"
        # The worker reconnects on its own; its heartbeats bring it back online, and its tasks show.
        wait_for(lambda: dash.worker_online(host), timeout=30, message="the worker online again after the outage")
        uid = wait_for(
            lambda: dash.try_launch("dashboard.demo.add", args=[2, 3]), timeout=30, message="a launch after the outage"
        )
        dash.wait_task(uid, "SUCCESS", timeout=30)
    finally:
        stop_process(proc)
        dash.stop()


@pytest.mark.integration
def test_ten_outages_leak_no_threads_or_connections(own_redis: RedisServer) -> None:
    """Ten outages in a row: the dashboard ends with the threads, sockets and Redis connections it had."""
    dash = DashboardServer(own_redis.url)
    try:
        pid = _server_pid(dash)

        def outage(i: int) -> None:
            own_redis.stop()
            wait_for(lambda: not dash.health()["broker"]["connected"], timeout=10, message=f"outage {i + 1} seen")
            own_redis.start()
            wait_for(lambda: dash.health()["broker"]["connected"], timeout=10, message=f"reconnect {i + 1}")

        outage(-1)  # a first one creates whatever is created lazily (pools, the server's request threads)
        time.sleep(8)  # past the enable-events broadcasts that follow a connect
        before = (_threads(pid), _sockets(pid), _redis_clients(own_redis.url))
        for i in range(10):
            outage(i)
        assert dash.health()["broker"]["outages"] == 11
        time.sleep(8)
        after = (_threads(pid), _sockets(pid), _redis_clients(own_redis.url))
        # One spare for the web server's request threads, which it starts on demand: a leak per outage
        # would show as ten.
        assert after[0] <= before[0] + 1, f"threads {before[0]} -> {after[0]}"
        assert after[1] <= before[1] + 1, f"sockets {before[1]} -> {after[1]}"
        assert after[2] <= before[2], f"Redis connections {before[2]} -> {after[2]}"
    finally:
        dash.stop()


@pytest.mark.integration
def test_sigkilled_worker_goes_offline_and_its_running_task_is_lost(own_redis: RedisServer) -> None:
    """SIGKILL a worker mid-task: offline within two heartbeat intervals (+ a tick), its running task LOST
    (never STARTED forever); started again under the same name, it is online again."""
    import signal

    dash = DashboardServer(own_redis.url)
    host = "victim@localhost"
    proc = start_worker(own_redis.url, concurrency=1, hostname=host, quiet=True)
    try:
        wait_for(lambda: dash.worker_online(host), timeout=60, message="the worker online")
        (uid,) = dash.launch("dashboard.demo.progress", kwargs={"steps": 200, "delay": 0.5})
        dash.wait_task(uid, "STARTED", timeout=30)
        freq = next(w for w in dash.get("/api/workers").json()["workers"] if w["hostname"] == host)["freq"]
        children = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
        proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        for child in children:  # the pool process would run on orphaned; it is not what is tested
            os.kill(child, signal.SIGKILL)
        wait_for(lambda: not dash.worker_online(host), timeout=30, interval=0.05, message="the worker offline")
        took = time.monotonic() - killed
        limit = 2 * freq + 0.2 + 0.5  # two heartbeat intervals + one push tick + polling slack
        assert took <= limit, f"offline {took:.1f} s after SIGKILL (limit {limit:.1f} s)"
        task = dash.wait_task(uid, "LOST", timeout=5)
        assert task["history"][-1]["event"] == "lost"
        proc.wait(5)
        proc = start_worker(own_redis.url, concurrency=1, hostname=host, quiet=True)
        wait_for(lambda: dash.worker_online(host), timeout=60, message="the worker online again")
        assert dash.task(uid)["state"] == "LOST", "a restart does not resurrect a task that died"
    finally:
        stop_process(proc)
        dash.stop()


STALLED_CLIENT = """
import sys, time, socketio
client = socketio.Client()
client.connect(sys.argv[1], transports=["websocket"])
client.call("subscribe", {"view": "tasks", "limit": 200}, timeout=10)
print("subscribed", flush=True)
time.sleep(600)
"""


@pytest.mark.integration
def test_a_stalled_browser_does_not_hold_up_the_others(own_redis: RedisServer) -> None:
    """One client freezes (SIGSTOP: its socket stops reading) during a flood: the other keeps getting
    updates without gaps, and the server stops queueing for the frozen one instead of growing forever."""
    import signal
    import subprocess
    import sys
    import threading
    import uuid as uuidlib

    import socketio
    from conftest import event_envelope

    dash = DashboardServer(own_redis.url, env={"DASHBOARD_ENABLE_EVENTS_INTERVAL": "0"})
    stalled = subprocess.Popen([sys.executable, "-c", STALLED_CLIENT, dash.base_url], stdout=subprocess.PIPE, text=True)
    healthy = socketio.Client()
    arrivals: list[float] = []
    healthy.on("tasks", lambda data: arrivals.append(time.monotonic()))
    stop = threading.Event()
    try:
        assert stalled.stdout.readline().strip() == "subscribed"
        healthy.connect(dash.base_url, transports=["websocket"])
        healthy.call("subscribe", {"view": "tasks", "limit": 200}, timeout=10)
        os.kill(stalled.pid, signal.SIGSTOP)
        raw = redis.Redis.from_url(own_redis.url)

        def flood() -> None:  # ~4k events/s of tasks with 2 kB of args: big diffs for every client
            while not stop.is_set():
                pipe = raw.pipeline(transaction=False)
                for _ in range(20):
                    pipe.publish(
                        "/0.celeryev/task.multi",
                        event_envelope(
                            *[
                                {
                                    "type": "task-received",
                                    "uuid": str(uuidlib.uuid4()),
                                    "name": "flood",
                                    "args": "x" * 2000,
                                    "hostname": "w@h",
                                    "timestamp": time.time(),
                                    "utcoffset": 0,
                                }
                                for _ in range(10)
                            ]
                        ),
                    )
                pipe.execute()
                time.sleep(0.05)

        flooder = threading.Thread(target=flood, daemon=True)
        flooder.start()
        lagged = wait_for(
            lambda: dash.health()["clients"]["times_lagged"] >= 1,
            timeout=40,
            interval=0.5,
            message="the frozen client to be found lagging",
        )
        assert lagged
        start = len(arrivals)
        time.sleep(5)
        window = arrivals[start:]
        assert len(window) >= 10, f"the healthy client got {len(window)} updates in 5 s"
        gaps = [b - a for a, b in itertools.pairwise(window)]
        assert max(gaps) < 2.0, f"the healthy client waited {max(gaps):.1f} s for an update"
        assert dash.health()["clients"]["lagging"] >= 1, "updates for the frozen client are held, not queued"
    finally:
        stop.set()
        os.kill(stalled.pid, signal.SIGKILL)
        stalled.wait(5)
        healthy.disconnect()
        dash.stop()


@pytest.mark.unit
def test_a_million_events_keep_memory_within_max_tasks() -> None:
    """One million events (250k tasks, each received/started/finished/progress; every failure's traceback different)
    through the reader's batch path into a 10 000-task state: memory levels off once the state is full."""
    from bench.reliability import million_events

    state, ingest, levels, _ = million_events(every=200_000)
    assert state.event_count == 1_000_000 and ingest.rejected == 0
    assert len(state.tasks) == 10_000 and state.evicted == 240_000
    growth = levels[-1] - levels[1]  # from 400k events (state long full) to 1M
    assert growth < 10, f"memory grew {growth:.1f} MB between 400k and 1M events: {levels}"
