"""What the tests share: the tier rule, helpers, the real parts (a redis-server on a free loopback port,
the demo worker with events on, the dashboard server as a subprocess), the in-process app and its broker
queue, and Debian's Chromium driven by Playwright."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from dashboard.processes import free_port, start_redis, start_worker, stop_process

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
# The demo tasks sleep this long instead of 2 s, so the suite stays quick.
WORK_SECONDS = "0.3"


# -- test tiers ------------------------------------------------------------------------------------
# Every test has exactly one tier (pyproject.toml declares them; `make test-unit` runs `-m unit`):
#   unit         pure logic, or an app made in the test and driven through Flask's test client; no
#                redis-server, worker, subprocess or listening socket (the `app` fixture's broker is the
#                session redis-server, so its tests are integration)
#   integration  a real redis-server, Celery worker, dashboard server process or sockets
#   browser      Chromium driven by Playwright
# A module of one tier says so once (`pytestmark = pytest.mark.unit`); a mixed module marks each test.
TIERS = ("unit", "integration", "browser")
# Fixtures that start a redis-server (`app`, `dashboard` and `worker` build on `redis_server`), and those
# that start Chromium: a unit test may use neither, an integration test no browser. A test that starts
# its processes itself (test_cli) is not caught here: its mark is up to its author.
SERVER_FIXTURES = frozenset({"redis_server", "own_redis"})
BROWSER_FIXTURES = frozenset({"browser", "page"})


@pytest.hookimpl(tryfirst=True)  # before -m deselects: every test is checked, whatever is selected
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Refuse the run if a test has no tier, more than one, or one that its fixtures contradict."""
    problems = []
    for item in items:
        tiers = sorted({mark.name for mark in item.iter_markers() if mark.name in TIERS})
        fixtures = set(getattr(item, "fixturenames", ()))
        forbidden = {"unit": SERVER_FIXTURES | BROWSER_FIXTURES, "integration": BROWSER_FIXTURES}
        if len(tiers) != 1:
            problems.append(f"{item.nodeid}: " + (f"more than one tier: {', '.join(tiers)}" if tiers else "no tier"))
        elif fixtures & forbidden.get(tiers[0], set()):
            problems.append(f"{item.nodeid}: marked {tiers[0]} but uses {sorted(fixtures & forbidden[tiers[0]])}")
        elif tiers[0] == "browser" and not fixtures & BROWSER_FIXTURES:
            problems.append(f"{item.nodeid}: marked browser but uses neither `browser` nor `page`")
    if problems:
        raise pytest.UsageError(
            "every test needs exactly one tier: @pytest.mark.unit, .integration or .browser on the test, or "
            "`pytestmark = pytest.mark.<tier>` in a module of one tier (tiers: tests/conftest.py)\n  "
            + "\n  ".join(problems)
        )


# -- helpers ---------------------------------------------------------------------------------------


def wait_for(
    predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.1, message: str = "condition"
) -> Any:
    """Poll until predicate() is truthy and return its value, or fail with `message`."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - a server that is still starting may refuse
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {message}" + (f" (last error: {last_exc})" if last_exc else "")
    )


def event_envelope(*events: dict[str, Any]) -> str:
    """A kombu envelope as a prefork worker publishes it on /<db>.celeryev/task.multi."""
    import base64
    import json

    body = base64.b64encode(json.dumps(list(events)).encode()).decode()
    return json.dumps(
        {
            "body": body,
            "content-type": "application/json",
            "content-encoding": "utf-8",
            "headers": {},
            "properties": {
                "body_encoding": "base64",
                "delivery_tag": "t",
                "delivery_info": {"exchange": "celeryev", "routing_key": "task.multi"},
            },
        }
    )


# -- real parts: redis-server and the dashboard server as processes ---------------------------------


class RedisServer:
    """A real redis-server we can stop and start again on the same port."""

    def __init__(self) -> None:
        self.proc, self.url = start_redis()
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])

    def url_db(self, db: int) -> str:
        """The URL of another database on the same server."""
        return f"redis://127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        """Stop the server (clients see the connection drop)."""
        stop_process(self.proc)

    def start(self) -> None:
        """Start it again on the same port."""
        self.proc, _ = start_redis(self.port)


class DashboardServer:
    """`celery-dashboard run` in a subprocess, exactly as a user starts it."""

    def __init__(
        self, broker_url: str, *extra: str, env: dict[str, str] | None = None, command: list[str] | None = None
    ) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        # `command` replaces `celery-dashboard run --broker URL` (e.g. `celery -A proj dashboard`).
        start = command or [sys.executable, "-m", "dashboard.cli", "run", "--broker", broker_url]
        cmd = [*start, "--port", str(self.port), "--log-level", "WARNING", *extra]
        full_env = dict(os.environ, **(env or {}))
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env)
        wait_for(lambda: self.health()["broker"]["connected"], timeout=30, message=f"dashboard on {self.base_url}")

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        """GET a path of the dashboard."""
        return requests.get(self.base_url + path, timeout=5, **kwargs)

    def health(self) -> dict[str, Any]:
        """The /healthz body."""
        return self.get("/healthz").json()

    def launch(self, task: str, **body: Any) -> list[str]:
        """POST /api/launch and return the task ids (confirming a task no online worker has registered yet:
        a worker is online before the inspector has its `registered` reply; test_celeryapp tests the warning)."""
        resp = requests.post(
            self.base_url + "/api/launch", json={"task": task, "unregistered_ok": True, **body}, timeout=10
        )
        assert resp.status_code == 200, resp.text
        return resp.json()["task_ids"]

    def try_launch(self, task: str, **body: Any) -> str | None:
        """POST /api/launch and return the first task id, or None if the launch was refused (broker down)."""
        resp = requests.post(
            self.base_url + "/api/launch", json={"task": task, "unregistered_ok": True, **body}, timeout=10
        )
        return resp.json()["task_ids"][0] if resp.status_code == 200 else None

    def wait_registered(self, hostname: str, task: str = "dashboard.demo.add") -> None:
        """Wait until the inspector has `hostname`'s `registered` reply listing `task`: the launch form sends
        a task no online worker has registered only once confirmed."""
        wait_for(
            lambda: hostname in self.launchable(task)["workers"],
            timeout=30,
            message=f"{hostname}'s registered tasks in /api/launchable",
        )

    def launchable(self, name: str) -> dict[str, Any]:
        """The entry of /api/launchable for the task `name` (KeyError when it is not offered)."""
        return {t["name"]: t for t in self.get("/api/launchable").json()["tasks"]}[name]

    def worker_online(self, hostname: str) -> bool:
        """Whether /api/workers lists `hostname` as online."""
        return any(w["hostname"] == hostname and w["online"] for w in self.get("/api/workers").json()["workers"])

    def task(self, uuid: str) -> dict[str, Any] | None:
        """GET /api/tasks/<uuid>, or None before the dashboard has seen it."""
        resp = self.get(f"/api/tasks/{uuid}")
        return resp.json() if resp.status_code == 200 else None

    def wait_task(self, uuid: str, state: str, timeout: float = 20.0) -> dict[str, Any]:
        """Wait until the task reaches `state` and return it."""
        return wait_for(
            lambda: (t := self.task(uuid)) and t["state"] == state and t,
            timeout=timeout,
            message=f"task {uuid} to reach {state} (now: {self.task(uuid)})",
        )

    def stop(self) -> None:
        """Stop the server and everything it runs."""
        stop_process(self.proc)


# -- fixtures: real processes (integration and browser tiers) -------------------------------------


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port, for the whole session."""
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test alone (it may stop and restart it)."""
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def dashboard(redis_server: RedisServer) -> Iterator[DashboardServer]:
    """`celery-dashboard run` (the gevent server, as a user starts it) watching the session Redis."""
    server = DashboardServer(redis_server.url)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def worker(redis_server: RedisServer, dashboard: DashboardServer) -> Iterator[str]:
    """The demo worker with events on; yields its hostname once the dashboard sees it online."""
    hostname = f"pytest-{os.getpid()}@localhost"
    proc = start_worker(
        redis_server.url, concurrency=2, hostname=hostname, quiet=True, extra_env={"DASHBOARD_DEMO_SLEEP": WORK_SECONDS}
    )

    wait_for(lambda: dashboard.worker_online(hostname), timeout=60, message=f"worker {hostname} online")
    dashboard.wait_registered(hostname)  # so the demo tasks launch from the form as they are
    yield hostname
    stop_process(proc)


# -- fixtures: the app in-process, its broker queue (integration: db 1 of the session Redis) -------


@pytest.fixture
def app(redis_server: RedisServer) -> Iterator[Any]:
    """An app without the event consumer, on db 1 of the session Redis (no worker consumes there)."""
    from dashboard import create_app

    flask_app = create_app(
        {
            "ASYNC_MODE": "threading",
            "INGEST_ENABLED": False,
            "BROKER_URL": redis_server.url_db(1),
            "PUSH_INTERVAL": 0.05,
        }
    )
    flask_app.testing = True
    yield flask_app
    flask_app.extensions["dashboard"].stop()


@pytest.fixture
def queue_db() -> int:
    """The Redis db whose `celery` list `queue` watches: 1, the `app` fixture's broker (a module may override it)."""
    return 1


@pytest.fixture
def queue(redis_server: RedisServer, queue_db: int) -> Iterator[redis.Redis]:
    """db `queue_db` of the session Redis with an empty `celery` list, emptied again after the test."""
    client = redis.Redis.from_url(redis_server.url_db(queue_db))
    client.delete("celery")
    yield client
    client.delete("celery")
    client.close()


def feed(app: Any, *events: dict[str, Any]) -> None:
    """Apply events to the app's state (every one must be accepted)."""
    assert app.extensions["dashboard"].state.events(events) == 0


def csrf_token(client: Any, path: str = "/launch") -> str:
    """The CSRF token of the page's launch form (the client keeps the session cookie it belongs to)."""
    page = client.get(path).get_data(as_text=True)
    match = re.search(r'<input type="hidden" name="csrf_token" value="([^"]+)">', page)
    assert match, "no csrf_token input on the page"
    return match.group(1)


# -- fixtures: Chromium (browser tier) -------------------------------------------------------------


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's Chromium, driven by Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser page; fails the test if the page logs a JavaScript error."""
    context = browser.new_context()
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.set_default_timeout(15_000)
    yield pg
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def open_live(page: Any, server: DashboardServer, path: str) -> None:
    """Open a page of the server and wait until its live connection is up."""
    from playwright.sync_api import expect

    page.goto(server.base_url + path)
    expect(page.locator("#conn-status")).to_have_attribute("data-state", "live")
