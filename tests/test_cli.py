"""`celery-dashboard demo` as `make run` starts it: local Redis, demo worker, web; Ctrl-C ends it all."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import requests

from conftest import ROOT, WORK_SECONDS, wait_for
from dashboard.processes import free_port, redis_answers

pytestmark = pytest.mark.integration


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_demo_starts_everything_and_leaves_nothing_running(how: str) -> None:
    """With no Redis at the broker URL, demo starts one, a worker and the web; stopping ends all three."""
    dead_broker = f"redis://127.0.0.1:{free_port()}/0"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, DASHBOARD_DEMO_SLEEP=WORK_SECONDS, DASHBOARD_LOG_LEVEL="WARNING")
    proc = subprocess.Popen([sys.executable, "-m", "dashboard.cli", "demo", "--port", str(port), "--broker", dead_broker],
                            cwd=ROOT, env=env, start_new_session=True)  # its own group, like a terminal job
    try:
        health = wait_for(lambda: (h := requests.get(base + "/healthz", timeout=2).json())["broker"]["connected"] and h,
                          timeout=30, message="the demo dashboard")
        used = health["broker"]["url"]
        assert used != dead_broker, "a local Redis on a free port replaced the unreachable one"
        assert redis_answers(used)
        wait_for(lambda: requests.get(base + "/healthz", timeout=2).json()["workers"]["online"] == 1, timeout=60,
                 message="the demo worker online")
        resp = requests.post(base + "/api/launch", json={"task": "dashboard.demo.add", "args": [4, 5]}, timeout=10)
        (uid,) = resp.json()["task_ids"]
        wait_for(lambda: requests.get(f"{base}/api/tasks/{uid}", timeout=2).json().get("result") == "9", timeout=30,
                 message="the launched task to succeed")
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
        else:
            proc.send_signal(signal.SIGTERM)  # only the parent: it must stop its children itself
        assert proc.wait(30) == 0
        wait_for(lambda: not _group_alive(proc.pid), timeout=15, message="every child process to exit")
        assert not redis_answers(used), "the Redis it started is gone"
    finally:
        if _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)


def test_demo_explains_an_unreachable_remote_broker() -> None:
    """A broker URL the demo did not start Redis for (not localhost/127.0.0.1) that does not answer is an
    error with a message, not a local Redis. (127.0.0.2 is such a URL that sends nothing off this machine.)"""
    url = f"redis://127.0.0.2:{free_port()}/0"
    result = subprocess.run([sys.executable, "-m", "dashboard.cli", "demo", "--broker", url,
                             "--port", str(free_port())], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert f"no Redis answers at {url}" in result.stderr


def test_bad_setting_is_a_clear_error() -> None:
    """A malformed environment setting stops the command with the variable's name."""
    env = dict(os.environ, DASHBOARD_MAX_TASKS="lots")
    result = subprocess.run([sys.executable, "-m", "dashboard.cli", "run"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2
    assert "DASHBOARD_MAX_TASKS='lots' is not a valid int" in result.stderr


def test_threading_mode_serves_live_updates(redis_server, worker) -> None:  # noqa: ANN001 - fixtures
    """The development mode (--async-mode threading, gunicorn's gthread worker) ingests, serves pages and
    pushes over websockets."""
    import socketio

    from conftest import DashboardServer

    dash = DashboardServer(redis_server.url, "--async-mode", "threading")
    client = socketio.Client(reconnection=False)
    try:
        assert dash.health()["server"]["async_mode"] == "threading"
        assert "text/html" in dash.get("/").headers["Content-Type"]
        updates: list[dict] = []
        client.on("task", lambda data: updates.append(data["task"]))
        client.connect(dash.base_url, transports=["websocket"])
        (uid,) = dash.launch("dashboard.demo.fail")
        snap = client.call("subscribe", {"view": "task", "uuid": uid}, timeout=5)
        assert snap["status"]["broker"]["connected"] is True
        wait_for(lambda: any(u["state"] == "FAILURE" for u in updates) or
                 (snap["task"] or {}).get("state") == "FAILURE", timeout=20, message="FAILURE pushed in threading mode")
        assert dash.wait_task(uid, "FAILURE")["traceback"].startswith("Traceback")
    finally:
        client.disconnect()
        dash.stop()
