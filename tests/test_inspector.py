"""Inspector: cached inspect replies fetched in the background; a silent worker is "no reply" while
every request stays fast; a broker outage is recorded, not fatal; offline workers hide after a while."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import WORK_SECONDS, DashboardServer, RedisServer, wait_for

from dashboard.cluster.control import make_celery
from dashboard.cluster.inspector import METHODS, Inspector, pool_summary
from dashboard.core.state import State
from dashboard.processes import free_port, start_worker, stop_process


def heartbeat(state: State, hostname: str, at: float | None = None, kind: str = "heartbeat") -> None:
    """A worker event as ingest applies it."""
    at = time.time() if at is None else at
    state.events([{"type": f"worker-{kind}", "hostname": hostname, "timestamp": at, "local_received": at, "freq": 2.0}])


@pytest.mark.unit
def test_pool_summary_from_stats() -> None:
    stats = {
        "pool": {
            "implementation": "celery.concurrency.prefork:TaskPool",
            "max-concurrency": 4,
            "processes": [11, 12, 13],
        },
        "autoscaler": {"max": 8, "min": 2, "qty": 3},
    }
    assert pool_summary(stats) == {
        "implementation": "prefork",
        "max_concurrency": 4,
        "processes": 3,
        "autoscaler": {"max": 8, "min": 2},
    }
    threads = {"pool": {"implementation": "celery.concurrency.thread:TaskPool", "max-concurrency": 10, "threads": 10}}
    assert pool_summary(threads) == {
        "implementation": "thread",
        "max_concurrency": 10,
        "processes": None,
        "autoscaler": None,
    }
    assert pool_summary({"pool": "garbage"}) is None
    assert pool_summary(None) is None


@pytest.mark.unit
def test_broker_down_is_recorded_and_the_loop_goes_on() -> None:
    state = State()
    heartbeat(state, "w1@h")
    inspector = Inspector(make_celery(f"redis://127.0.0.1:{free_port()}/0", 1.0), state, interval=0.2, timeout=0.5)
    before = threading.active_count()
    loop = threading.Thread(target=inspector.run, daemon=True)
    loop.start()
    wait_for(lambda: inspector.rounds >= 4, timeout=10, message="four inspect rounds against a dead broker")
    entry = inspector.worker("w1@h")["stats"]
    assert entry["status"] == "error" and "the broker is unreachable" in entry["error"] and entry["reply"] is None
    assert threading.active_count() <= before + 3  # the loop and at most one round's fetch threads
    inspector.request_refresh("w1@h")
    wait_for(lambda: inspector.worker("w1@h")["conf"]["status"] == "error", timeout=5, message="on-demand error")
    inspector.stop()
    loop.join(5)
    assert not loop.is_alive()
    wait_for(lambda: threading.active_count() <= before, timeout=5, message="no thread left behind")


@pytest.fixture(scope="module")
def own_worker(redis_server: RedisServer) -> Iterator[tuple[str, str, Any]]:
    """A worker of this module alone on db 12 (these tests stop it)."""
    url = redis_server.url_db(12)
    hostname = f"insp-{os.getpid()}@localhost"
    proc = start_worker(
        url, concurrency=2, hostname=hostname, quiet=True, extra_env={"DASHBOARD_DEMO_SLEEP": WORK_SECONDS}
    )
    yield url, hostname, proc
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGCONT)
    stop_process(proc)


@pytest.mark.integration
def test_inspector_caches_every_method(own_worker: tuple[str, str, Any]) -> None:
    url, hostname, _ = own_worker
    state = State()
    heartbeat(state, hostname)
    inspector = Inspector(make_celery(url, 2.0), state, interval=1.0, timeout=2.0)
    wait_for(
        lambda: (inspector.refresh([hostname], ["stats"]), inspector.worker(hostname)["stats"]["status"] == "ok")[1],
        timeout=30,
        message="the worker answers stats",
    )
    started = time.monotonic()
    inspector.refresh([hostname], METHODS)
    assert time.monotonic() - started < 1.5  # all answered: no method waited for its timeout
    entries = inspector.worker(hostname)
    assert {m: e["status"] for m, e in entries.items()} == dict.fromkeys(METHODS, "ok")
    assert "dashboard.demo.add" in entries["registered"]["reply"]
    assert [q["name"] for q in entries["active_queues"]["reply"]] == ["celery"]
    assert inspector.replies("active_queues")[hostname][0]["name"] == "celery"
    summary = inspector.summary(hostname, online=True, now=time.time() + 5)
    assert summary["pool"] == {"implementation": "prefork", "max_concurrency": 2, "processes": 2, "autoscaler": None}
    assert summary["uptime"] >= 5 and summary["inspect_at"] == entries["stats"]["fetched_at"]
    with state.lock:  # push sends the worker's row again with its pool
        assert hostname in state.drain_changes(time.time())[1]


@pytest.mark.integration
def test_stopped_worker_is_no_reply_and_requests_stay_fast(own_worker: tuple[str, str, Any]) -> None:
    url, hostname, proc = own_worker
    server = DashboardServer(url, env={"DASHBOARD_INSPECT_INTERVAL": "1", "DASHBOARD_INSPECT_TIMEOUT": "1"})
    try:

        def fresh_ok() -> bool:
            body = server.get(f"/api/workers/{hostname}?refresh=1").json()
            return all(e["status"] == "ok" for e in body["inspect"].values())

        wait_for(fresh_ok, timeout=30, interval=0.5, message="every method answered")
        old = server.get(f"/api/workers/{hostname}").json()["inspect"]["registered"]
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            time.sleep(0.3)
            stopped_at = time.monotonic()
            started = time.monotonic()
            body = server.get(f"/api/workers/{hostname}?refresh=1").json()
            assert time.monotonic() - started < 0.2 and body["refreshing"] is True
            slow = []
            while True:
                for path in ("/api/workers", f"/api/workers/{hostname}", "/api/tasks", "/healthz"):
                    t0 = time.monotonic()
                    server.get(path)
                    slow += [(path, time.monotonic() - t0)] if time.monotonic() - t0 > 0.2 else []
                entry = server.get(f"/api/workers/{hostname}").json()["inspect"]["registered"]
                if entry["status"] == "no reply":
                    break
                assert time.monotonic() - stopped_at < 1 + 1.5, f"still {entry['status']} after the timeout"
                time.sleep(0.05)
            assert not slow, f"requests slower than 200 ms while a worker was silent: {slow}"
            # The last reply is kept, with its age, so the page still shows something.
            assert entry["reply"] == old["reply"] and entry["fetched_at"] == old["fetched_at"]
            assert "no reply within 1 s" in entry["error"]
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        wait_for(fresh_ok, timeout=20, interval=0.5, message="answers again after SIGCONT")
    finally:
        server.stop()


@pytest.mark.integration
def test_offline_workers_hide_after_the_setting(app: Any) -> None:
    svc = app.extensions["dashboard"]
    svc.views.hide_offline_after = 60.0
    now = time.time()
    heartbeat(svc.state, "up@h", now)
    heartbeat(svc.state, "recent@h", now - 30)
    heartbeat(svc.state, "recent@h", now - 29, kind="offline")
    heartbeat(svc.state, "gone@h", now - 600)
    heartbeat(svc.state, "gone@h", now - 599, kind="offline")
    body = app.test_client().get("/api/workers").get_json()
    assert [w["hostname"] for w in body["workers"]] == ["recent@h", "up@h"]
    assert body["hidden_offline"] == 1
    assert {"pool", "uptime", "inspect_at"} <= set(body["workers"][0])

    # The live room drops a worker as it crosses the line, and counts it.
    with svc.state.lock:
        changed = svc.state.drain_changes(now)[1]
        first = svc.rooms._workers_diff(changed, now)
        assert first["hidden_offline"] == 1 and "gone@h" in first["removed"]
        svc.views.hide_offline_after = 20.0
        later = svc.rooms._workers_diff(set(), now + 2)
    assert later == {"workers": [], "removed": ["recent@h"], "hidden_offline": 2}
    svc.views.hide_offline_after = 0.0  # 0: never hide
    assert app.test_client().get("/api/workers").get_json()["hidden_offline"] == 0


@pytest.mark.unit
def test_inspect_replies_show_no_secrets() -> None:
    """active/reserved/scheduled carry a request's real arguments: shown as masked reprs like the events';
    stats' broker and transport options lose every password."""
    from dashboard.cluster.inspector import _sanitize
    from dashboard.core.masking import make_masker

    mask = make_masker("password")
    request = {"id": "a", "name": "t.login", "args": ["bob"], "kwargs": {"password": "hunter2"}}
    (active,) = _sanitize("active", [request], mask)
    assert active["args"] == "('bob',)" and "hunter2" not in active["kwargs"]
    (scheduled,) = _sanitize("scheduled", [{"eta": None, "request": request}], mask)
    assert "hunter2" not in scheduled["request"]["kwargs"]
    stats = {"broker": {"password": "pw", "transport_options": {"sentinel_kwargs": {"password": "pw2"}}}, "pid": 1}
    shown = _sanitize("stats", stats, mask)
    assert "pw" not in str(shown) and shown["pid"] == 1
