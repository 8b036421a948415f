"""Push without a fixed wait: a watched task's page follows at once when it has been quiet, whatever the
push interval, while a stream of changes still costs at most one update per room and interval."""

from __future__ import annotations

import math
import threading
import time
import uuid as uuidlib
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import socketio
from conftest import DashboardServer, RedisServer, event_envelope, open_live, wait_for
from playwright.sync_api import expect

from dashboard.live.rooms import TASK_PAGE_BURST

DB = 10  # this module's Redis db: its events reach this module's dashboard only
CHANNEL = f"/{DB}.celeryev/task.multi"
# A push interval long enough that an update which waited for it cannot pass for one sent at once
# (under the old fixed tick, a change right after a tick waited all of it).
INTERVAL = 5.0
AT_ONCE = INTERVAL / 2  # "well before the interval": generous, the machine is shared and noisy
HOST = "push@test"


@pytest.fixture(scope="module")
def slow_push(redis_server: RedisServer) -> Iterator[tuple[DashboardServer, redis.Redis]]:
    """The gevent server with a push interval of INTERVAL seconds, and a client that publishes its events."""
    url = redis_server.url_db(DB)
    dash = DashboardServer(
        url,
        "--push-interval",
        str(INTERVAL),
        env={"DASHBOARD_ENABLE_EVENTS_INTERVAL": "0", "DASHBOARD_INSPECT_INTERVAL": "0"},
    )
    raw = redis.Redis.from_url(url)
    yield dash, raw
    raw.close()
    dash.stop()


def task_event(type_: str, uuid: str, **fields: Any) -> dict[str, Any]:
    """A task event as a worker sends it, stamped now."""
    return {"type": type_, "uuid": uuid, "hostname": HOST, "timestamp": time.time(), "utcoffset": 0, **fields}


def received(uuid: str) -> dict[str, Any]:
    """The task-received event of a new task of ours."""
    return task_event("task-received", uuid, name="push.demo", args="()", kwargs="{}")


def publish(raw: redis.Redis, *events: dict[str, Any]) -> None:
    """Publish events as one task.multi message of a worker."""
    raw.publish(CHANNEL, event_envelope(*events))


def new_task(dash: DashboardServer, raw: redis.Redis) -> str:
    """A task the dashboard has seen received."""
    uuid = str(uuidlib.uuid4())
    publish(raw, received(uuid))
    wait_for(lambda: dash.task(uuid), message=f"task {uuid} seen")
    return uuid


class Listener:
    """A Socket.IO client of the dashboard that records each update it gets, per event name."""

    def __init__(self, dash: DashboardServer) -> None:
        self.client = socketio.Client(reconnection=False)
        self.updates: dict[str, list[tuple[float, Any]]] = {}
        self.client.on("*", self._record)
        self.client.connect(dash.base_url, transports=["websocket"], wait_timeout=10)

    def _record(self, event: str, data: Any) -> None:
        self.updates.setdefault(event, []).append((time.monotonic(), data))

    def subscribe(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Join a view's room; its snapshot."""
        snapshot: dict[str, Any] = self.client.call("subscribe", payload, timeout=10)
        assert "error" not in snapshot, snapshot
        return snapshot

    def states(self) -> list[str]:
        """The states of the task updates received so far."""
        return [data["task"]["state"] for _, data in self.updates.get("task", [])]

    def count(self, event: str, since: float = 0.0) -> int:
        """Updates `event` received since `since` (time.monotonic())."""
        return sum(1 for at, _ in self.updates.get(event, []) if at >= since)

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()


@pytest.mark.integration
def test_a_watched_task_follows_each_change_at_once_even_right_after_a_tick(
    slow_push: tuple[DashboardServer, redis.Redis],
) -> None:
    """Right after a push tick (the worst moment for a fixed tick: the whole interval ahead), a watched task
    that starts, then ends a moment later, shows each change at once, not at the next push interval."""
    dash, raw = slow_push
    uuid = new_task(dash, raw)
    watcher, overview = Listener(dash), Listener(dash)
    try:
        assert watcher.subscribe({"view": "task", "uuid": uuid})["task"]["state"] == "RECEIVED"
        overview.subscribe({"view": "overview"})
        # Another task's event makes the overview tick (at once or at the next interval): a tick just happened.
        seen = overview.count("overview")
        new_task(dash, raw)
        wait_for(lambda: overview.count("overview") > seen, timeout=INTERVAL * 2, message="an overview tick")
        publish(raw, task_event("task-started", uuid))
        wait_for(lambda: "STARTED" in watcher.states(), timeout=AT_ONCE, message="STARTED at once")
        publish(raw, task_event("task-succeeded", uuid, result="1", runtime=0.1))
        wait_for(lambda: "SUCCESS" in watcher.states(), timeout=AT_ONCE, message="SUCCESS at once, right after")
        assert watcher.states() == ["STARTED", "SUCCESS"]
    finally:
        watcher.close()
        overview.close()


@pytest.mark.integration
def test_a_stream_of_changes_costs_at_most_one_update_per_room_per_interval(
    slow_push: tuple[DashboardServer, redis.Redis],
) -> None:
    """A task reporting progress fifty times a second while other tasks arrive: its page (after its first few
    updates, sent at once), a task list and the overview each get at most one update an interval, and the
    page ends up current."""
    dash, raw = slow_push
    uuid = new_task(dash, raw)
    listeners = {view: Listener(dash) for view in ("task", "tasks", "overview")}
    stop = threading.Event()
    sent = [0]

    def stream() -> None:
        while not stop.is_set():
            sent[0] += 1
            publish(
                raw,
                task_event("task-progress", uuid, current=sent[0], total=10_000),
                received(str(uuidlib.uuid4())),
            )
            time.sleep(0.02)

    try:
        listeners["task"].subscribe({"view": "task", "uuid": uuid})
        listeners["tasks"].subscribe({"view": "tasks", "name": "push.demo"})
        listeners["overview"].subscribe({"view": "overview"})
        started = time.monotonic()
        publisher = threading.Thread(target=stream, name="progress-stream")
        publisher.start()
        wait_for(lambda: listeners["task"].states(), timeout=AT_ONCE, message="the first progress update at once")
        time.sleep(1.5 * INTERVAL)
        stop.set()
        publisher.join()
        streamed = time.monotonic() - started
        # Every update of the stream, the last one included (sent when the room's interval is up).
        most = {view: math.ceil(streamed / INTERVAL) + 1 for view in listeners}
        most["task"] += int(TASK_PAGE_BURST) - 1
        wait_for(
            lambda: listeners["task"].updates["task"][-1][1]["task"]["extra"].get("current") == sent[0],
            timeout=INTERVAL * 2,
            message="the page's last update shows the last progress",
        )
        assert sent[0] > 100, "the stream ran"
        for view, listener in listeners.items():
            n = listener.count(view, since=started)
            assert 1 <= n <= most[view], f"{view}: {n} updates for {sent[0]} changes in {streamed:.1f}s, not {most}"
    finally:
        stop.set()
        for listener in listeners.values():
            listener.close()


@pytest.mark.browser
def test_the_task_page_follows_at_once_while_other_tasks_stream(
    slow_push: tuple[DashboardServer, redis.Redis], page: Any
) -> None:
    """A task's own page in Chromium shows its new state at once, not at the next push interval, while
    other tasks arrive meanwhile (their updates are not what it waits for)."""
    dash, raw = slow_push
    uuid = new_task(dash, raw)
    stop = threading.Event()

    def others() -> None:
        while not stop.is_set():
            publish(raw, *(received(str(uuidlib.uuid4())) for _ in range(5)))
            time.sleep(0.01)

    background = threading.Thread(target=others, name="other-tasks")
    try:
        open_live(page, dash, f"/tasks/{uuid}")
        expect(page.locator("#task-state")).to_have_attribute("data-state", "RECEIVED")
        background.start()
        time.sleep(0.5)  # the other tasks are streaming
        publish(raw, task_event("task-started", uuid))
        expect(page.locator("#task-state")).to_have_attribute("data-state", "STARTED", timeout=AT_ONCE * 1000)
        expect(page.locator('#task-fields [data-field="worker"]')).to_have_text(HOST)
    finally:
        stop.set()
        if background.is_alive():
            background.join()
