"""Live push: snapshots on subscribe, one batched diff per room per tick, only what a page shows."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import feed

from dashboard import create_app, socketio
from dashboard.core.query import Filters
from dashboard.live.rooms import tasks_room


@pytest.fixture
def push_app(redis_server: Any) -> Iterator[Any]:
    """An app whose push loop is stopped, so each test drives the ticks itself."""
    app = create_app({"ASYNC_MODE": "threading", "INGEST_ENABLED": False, "BROKER_URL": redis_server.url_db(1)})
    svc = app.extensions["dashboard"]
    svc.rooms.stop()
    time.sleep(0.05)  # let the loop finish its first tick
    yield app
    svc.stop()


def ev(type_: str, uuid: str, ts: float, **fields: Any) -> dict[str, Any]:
    """A Celery task event as ingest hands it to the state."""
    return {"type": type_, "uuid": uuid, "hostname": "w1@h", "timestamp": ts, "local_received": time.time(), **fields}


def tick(app: Any) -> None:
    """Run one push tick."""
    app.extensions["dashboard"].rooms.tick()


def received(client: Any, name: str) -> list[Any]:
    """The payloads of the `name` events the client got since the last call (tick numbers left out)."""
    payloads = [m["args"][0] for m in client.get_received() if m["name"] == name]
    return [{k: v for k, v in p.items() if k != "tick"} if isinstance(p, dict) else p for p in payloads]


def lifecycle(uuid: str, ts: float, ok: bool = True) -> list[dict[str, Any]]:
    """received, started, then succeeded or failed."""
    end = (
        ev("task-succeeded", uuid, ts + 2, result="3", runtime=1.0)
        if ok
        else ev("task-failed", uuid, ts + 2, exception="KeyError('x')", traceback="Traceback...\nKeyError: 'x'")
    )
    return [
        ev("task-received", uuid, ts, name="proj.add", args="(1, 2)", kwargs="{}"),
        ev("task-started", uuid, ts + 1),
        end,
    ]


@pytest.mark.integration
def test_overview_snapshot_then_diffs(push_app: Any) -> None:
    """The overview gets counters at once, then a diff with new counts and the latest failure."""
    feed(push_app, *lifecycle("a", 100.0))
    client = socketio.test_client(push_app)
    snap = client.emit("subscribe", {"view": "overview"}, callback=True)
    assert snap["counts"]["SUCCESS"] == 1
    assert snap["workers"] == {"online": 1, "offline": 0, "total": 1}
    assert snap["failures"] == []
    assert snap["status"]["broker"]["connected"] is False
    assert snap["throughput"] and snap["throughput"][-1][1] == 1
    client.get_received()
    feed(push_app, *lifecycle("b", 200.0, ok=False))
    tick(push_app)
    (diff,) = received(client, "overview")
    assert diff["counts"]["FAILURE"] == 1 and diff["counts"]["SUCCESS"] == 1
    assert [f["uuid"] for f in diff["failures"]] == ["b"]
    assert diff["failures"][0]["exception"] == "KeyError('x')"
    client.disconnect()


@pytest.mark.integration
def test_many_events_for_one_task_in_a_tick_become_one_update(push_app: Any) -> None:
    """Three events of one task within a tick reach the task list as one row in its final state."""
    client = socketio.test_client(push_app)
    snap = client.emit("subscribe", {"view": "tasks"}, callback=True)
    assert snap["total"] == 0 and snap["tasks"] == []
    client.get_received()
    feed(push_app, *lifecycle("a", 100.0))
    tick(push_app)
    (diff,) = received(client, "tasks")
    assert [(t["uuid"], t["state"]) for t in diff["tasks"]] == [("a", "SUCCESS")]
    assert diff["total"] == 1
    tick(push_app)
    assert received(client, "tasks") == [], "nothing changed, nothing sent"
    client.disconnect()


@pytest.mark.integration
def test_filtered_list_gets_matches_and_removals(push_app: Any) -> None:
    """A list filtered on STARTED gets the task while it runs and a removal when it finishes."""
    client = socketio.test_client(push_app)
    client.emit("subscribe", {"view": "tasks", "state": "STARTED"}, callback=True)
    client.get_received()
    feed(push_app, *lifecycle("a", 100.0)[:2])
    tick(push_app)
    (diff,) = received(client, "tasks")
    assert [t["uuid"] for t in diff["tasks"]] == ["a"] and diff["total"] == 1
    feed(push_app, ev("task-succeeded", "a", 103.0, result="3"))
    tick(push_app)
    (diff,) = received(client, "tasks")
    assert diff["tasks"] == [] and diff["removed"] == ["a"] and diff["total"] == 0
    client.disconnect()


@pytest.mark.integration
def test_search_room_gets_tasks_whose_text_matches(push_app: Any) -> None:
    """A list searching for a word gets a task once an event puts the word in it, and the total."""
    client = socketio.test_client(push_app)
    snap = client.emit("subscribe", {"view": "tasks", "q": "KeyError", "worker": "w1@h"}, callback=True)
    assert snap["total"] == 0 and snap["tasks"] == []
    client.get_received()
    feed(push_app, *lifecycle("ok", 100.0), *lifecycle("bad", 110.0, ok=False)[:2])
    tick(push_app)
    assert received(client, "tasks") == [{"total": 0, "tasks": [], "removed": ["bad", "ok"]}]
    feed(push_app, lifecycle("bad", 110.0, ok=False)[2])
    tick(push_app)
    (diff,) = received(client, "tasks")
    assert [t["uuid"] for t in diff["tasks"]] == ["bad"] and diff["total"] == 1
    assert client.emit("subscribe", {"view": "tasks", "q": 5}, callback=True) == {
        "error": "the q filter must be a string"
    }
    client.disconnect()


@pytest.mark.integration
def test_task_room_follows_its_whole_workflow(push_app: Any) -> None:
    """A task page shows its workflow: a sibling finishing updates it; an unrelated task does not."""
    feed(
        push_app,
        ev("task-succeeded", "root", 1.0, root_id="root"),
        ev("task-received", "a", 2.0, root_id="root", parent_id="root"),
        ev("task-received", "b", 3.0, root_id="root", parent_id="root"),
    )
    client = socketio.test_client(push_app)
    snap = client.emit("subscribe", {"view": "task", "uuid": "a"}, callback=True)
    assert {n["uuid"] for n in snap["tree"]["nodes"]} == {"root", "a", "b"}
    tick(push_app)
    client.get_received()
    feed(push_app, ev("task-received", "other", 4.0))
    tick(push_app)
    assert received(client, "task") == []
    feed(push_app, ev("task-succeeded", "b", 5.0, result="1"))
    tick(push_app)
    (update,) = received(client, "task")
    assert update["task"]["uuid"] == "a"
    assert {n["uuid"]: n["state"] for n in update["tree"]["nodes"]}["b"] == "SUCCESS"
    client.disconnect()


@pytest.mark.integration
def test_lists_with_different_filters_never_share_a_stream(push_app: Any) -> None:
    """Every filter is part of the room: an outcome-filtered list and a plain one get their own diffs,
    and a state list narrowed by another filter counts only its own matches."""
    plain, recovered, narrowed = (socketio.test_client(push_app) for _ in range(3))
    plain.emit("subscribe", {"view": "tasks"}, callback=True)
    recovered.emit("subscribe", {"view": "tasks", "outcome": "recovered"}, callback=True)
    narrowed.emit("subscribe", {"view": "tasks", "state": "SUCCESS", "queue": "mail"}, callback=True)
    for c in (plain, recovered, narrowed):
        c.get_received()
    feed(push_app, *lifecycle("a", 100.0))
    tick(push_app)
    assert [t["uuid"] for t in received(plain, "tasks")[0]["tasks"]] == ["a"]
    assert received(recovered, "tasks")[0]["tasks"] == []
    (diff,) = received(narrowed, "tasks")
    assert diff["tasks"] == [] and diff["total"] == 0, "a SUCCESS task outside the queue is not counted"
    for c in (plain, recovered, narrowed):
        c.disconnect()


@pytest.mark.integration
def test_task_room_gets_only_its_task(push_app: Any) -> None:
    """A task page is sent its own task's updates (with the traceback) and nobody else's."""
    client = socketio.test_client(push_app)
    snap = client.emit("subscribe", {"view": "task", "uuid": "b"}, callback=True)
    assert snap["task"] is None, "an unseen task is announced as unknown, not an error"
    client.get_received()
    feed(push_app, *lifecycle("a", 100.0), *lifecycle("b", 100.0, ok=False))
    tick(push_app)
    updates = received(client, "task")
    assert [u["task"]["uuid"] for u in updates] == ["b"]
    assert updates[0]["task"]["traceback"].endswith("KeyError: 'x'")
    assert received(client, "tasks") == [] and received(client, "overview") == []
    client.disconnect()


@pytest.mark.integration
def test_worker_going_silent_is_pushed_offline(push_app: Any) -> None:
    """A worker whose heartbeats stop is pushed as offline without any new event."""
    client = socketio.test_client(push_app)
    now = time.time()
    feed(
        push_app,
        {
            "type": "worker-heartbeat",
            "hostname": "w9@h",
            "timestamp": now,
            "local_received": now,
            "freq": 0.1,
            "active": 0,
            "processed": 3,
        },
    )
    snap = client.emit("subscribe", {"view": "workers"}, callback=True)
    assert [(w["hostname"], w["online"]) for w in snap["workers"]] == [("w9@h", True)]
    client.get_received()
    time.sleep(0.3)  # two heartbeat intervals and more
    tick(push_app)
    (diff,) = received(client, "workers")
    assert [(w["hostname"], w["online"]) for w in diff["workers"]] == [("w9@h", False)]
    client.disconnect()


@pytest.mark.integration
def test_resubscribe_gives_a_fresh_snapshot(push_app: Any) -> None:
    """After a reconnect the page subscribes again and gets the current state, not a stale one."""
    client = socketio.test_client(push_app)
    first = client.emit("subscribe", {"view": "tasks"}, callback=True)
    client.disconnect()
    feed(push_app, *lifecycle("a", 100.0))
    tick(push_app)
    again = socketio.test_client(push_app)
    second = again.emit("subscribe", {"view": "tasks"}, callback=True)
    assert first["total"] == 0 and second["total"] == 1
    assert second["tasks"][0]["state"] == "SUCCESS"
    assert push_app.extensions["dashboard"].rooms.rooms == {tasks_room(Filters()): 1}, "the closed socket left its room"
    again.disconnect()


@pytest.mark.integration
@pytest.mark.parametrize("payload", [None, "overview", {"view": "nope"}, {"view": "tasks", "state": 5}])
def test_bad_subscribe_gets_an_error_not_a_crash(push_app: Any, payload: Any) -> None:
    """A malformed subscribe is answered with an error message."""
    client = socketio.test_client(push_app)
    answer = client.emit("subscribe", payload, callback=True)
    assert "error" in answer
    client.disconnect()


class _Queue:
    def __init__(self, n: int) -> None:
        self.n = n

    def qsize(self) -> int:
        return self.n


class _FakeServer:
    """Stands in for python-socketio's server: per-client engine.io queues of a chosen length."""

    def __init__(self, backlog: dict[str, int]) -> None:
        self.queues = {sid: type("Sock", (), {"queue": _Queue(n)})() for sid, n in backlog.items()}
        self.eio = type("Eio", (), {"sockets": self.queues})()
        self.manager = type("Manager", (), {"eio_sid_from_sid": staticmethod(lambda sid, ns: sid)})()


class _FakeSocketIO:
    def __init__(self, backlog: dict[str, int]) -> None:
        self.server = _FakeServer(backlog)
        self.emitted: list[tuple[str, str]] = []

    def emit(self, event: str, data: Any, to: str | None = None, **_: Any) -> None:
        self.emitted.append((event, to))


@pytest.mark.unit
def test_a_client_far_behind_is_skipped_then_resynced_once_caught_up() -> None:
    """Only the client past BACKLOG_MAX is skipped; it stays skipped until well below it, then is asked
    to resync (it missed diffs) exactly once."""
    from dashboard.core.state import State
    from dashboard.live.readmodels import ReadModels
    from dashboard.live.rooms import BACKLOG_MAX, Rooms

    fake = _FakeSocketIO({"slow": BACKLOG_MAX + 1, "fast": 0})
    push = Rooms(fake, ReadModels(State(), None), 0.2)  # type: ignore[arg-type]
    push.subs = {"slow": "overview", "fast": "overview"}
    assert push._lagging() == ["slow"] and push.skipped == 1
    fake.server.queues["slow"].queue.n = BACKLOG_MAX // 2  # draining, not yet caught up
    assert push._lagging() == ["slow"] and fake.emitted == []
    fake.server.queues["slow"].queue.n = 0
    assert push._lagging() == [] and fake.emitted == [("resync", "slow")]
    assert push._lagging() == [] and fake.emitted == [("resync", "slow")], "resync is sent once"
    assert push.skipped == 1


@pytest.mark.integration
def test_diffs_carry_the_tick_and_a_snapshot_the_last_tick_it_includes(push_app: Any) -> None:
    """The client drops a diff its snapshot already includes: snapshot tick N, the next diff N + 1."""
    client = socketio.test_client(push_app)
    feed(push_app, *lifecycle("t1", 100.0))
    tick(push_app)
    snap = client.emit("subscribe", {"view": "tasks"}, callback=True)
    assert [t["uuid"] for t in snap["tasks"]] == ["t1"]
    client.get_received()
    feed(push_app, *lifecycle("t2", 101.0))
    tick(push_app)
    (diff,) = [m["args"][0] for m in client.get_received() if m["name"] == "tasks"]
    assert diff["tick"] == snap["tick"] + 1 and [t["uuid"] for t in diff["tasks"]] == ["t2"]


@pytest.mark.integration
def test_resubscribing_to_the_same_list_keeps_its_updates(push_app: Any) -> None:
    """A resync subscribes again to the room the client is in: its filter and updates must stay."""
    client = socketio.test_client(push_app)
    payload = {"view": "tasks", "state": "SUCCESS"}
    client.emit("subscribe", payload, callback=True)
    client.emit("subscribe", payload, callback=True)
    client.get_received()
    feed(push_app, *lifecycle("again", 100.0))
    tick(push_app)
    (diff,) = received(client, "tasks")
    assert [t["uuid"] for t in diff["tasks"]] == ["again"]


@pytest.mark.integration
@pytest.mark.parametrize("viewers", [1, 25])
def test_a_tick_encodes_each_room_once_however_many_watch_it(
    push_app: Any, viewers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cost of a tick grows with the rooms that changed, not with their viewers: one JSON encoding of
    each room's update, the same packet handed to every socket in the room."""
    from dashboard.web.limits import SocketIOJSON

    overview = [socketio.test_client(push_app) for _ in range(viewers)]
    tasks = [socketio.test_client(push_app) for _ in range(viewers)]
    for client in overview:
        client.emit("subscribe", {"view": "overview"}, callback=True)
    for client in tasks:
        client.emit("subscribe", {"view": "tasks"}, callback=True)
    tick(push_app)  # the first tick sends the status to everyone once
    feed(push_app, *lifecycle("a", time.time()))
    encoded: list[Any] = []
    sent: dict[str, list[Any]] = {}
    real = SocketIOJSON.dumps
    # Record what the server hands each socket (the test client would decode and re-encode it per client).
    monkeypatch.setattr(SocketIOJSON, "dumps", staticmethod(lambda obj, **kw: encoded.append(obj) or real(obj)))
    monkeypatch.setattr(
        socketio.server,
        "_send_eio_packet",
        lambda eio_sid, pkt: sent.setdefault(pkt.data.split(",")[0], []).append(pkt),
    )
    tick(push_app)
    assert [obj[0] for obj in encoded] == ["overview", "tasks"]
    for event in ('2["overview"', '2["tasks"'):
        packets = sent[event]
        assert len(packets) == viewers and all(p is packets[0] for p in packets)
