"""Reconciliation: a task whose final event never came is resolved, from the result backend or as
UNREPORTED, and never while its worker still holds it."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
from conftest import DashboardServer, RedisServer, event_envelope, wait_for
from test_state import replay, task_ev, worker_ev

from dashboard.cluster.reconcile import HELD_BY, Reconciler
from dashboard.core.state import State
from dashboard.processes import start_worker, stop_process

WORKER = "celery@w1"

# -- the core: which tasks are candidates, and how one is resolved ----------------------------------------


def _started(now: float) -> State:
    state = State()
    replay(
        state,
        [
            worker_ev("heartbeat", WORKER, now - 1),
            task_ev("received", "t1", now - 120),
            task_ev("started", "t1", now - 110),
        ],
    )
    return state


@pytest.mark.unit
def test_a_quiet_running_task_on_a_live_worker_is_a_candidate_and_a_fresh_one_is_not() -> None:
    """Only tasks without an event for `quiet` seconds, on a worker that is alive, are checked."""
    now = time.time()
    state = _started(now)
    replay(state, [task_ev("started", "t2", now - 5)])
    assert [c.uuid for c in state.reconcile_candidates(now, quiet=60)] == ["t1"]
    assert state.reconcile_candidates(now + 1000, quiet=60) == [], "a dead worker's tasks become LOST instead"


@pytest.mark.unit
def test_resolved_from_the_backend_the_task_ends_as_the_backend_says_and_shows_where_that_came_from() -> None:
    """The backend's SUCCESS is applied as the task's final state, with its result and a timeline step."""
    now = time.time()
    state = _started(now)
    (cand,) = state.reconcile_candidates(now, quiet=60)
    assert state.resolve(cand, {"type": "task-succeeded", "timestamp": now - 100, "result": "5"}, now)
    rec = state.tasks["t1"]
    assert (rec.state, rec.result, state.from_backend, state.unreported) == ("SUCCESS", "5", 1, 0)
    assert rec.history[-2] == "from result backend"
    assert state.counts["SUCCESS"] == 1 and "t1" in state.changed_tasks


@pytest.mark.unit
def test_without_a_backend_the_task_is_unreported_and_any_later_event_wins() -> None:
    """UNREPORTED ends 'running forever'; the task's own final event, if it ever comes, is the truth."""
    now = time.time()
    state = _started(now)
    (cand,) = state.reconcile_candidates(now, quiet=60)
    assert state.resolve(cand, None, now)
    assert (state.tasks["t1"].state, state.unreported) == ("UNREPORTED", 1)
    assert state.reconcile_candidates(now, quiet=60) == [], "resolved once, not again"
    replay(state, [task_ev("succeeded", "t1", now - 100, result="5")])
    assert state.tasks["t1"].state == "SUCCESS"


@pytest.mark.unit
def test_an_event_that_came_while_the_workers_were_asked_keeps_the_task_as_the_event_says() -> None:
    """resolve() refuses a candidate that moved on since it was picked."""
    now = time.time()
    state = _started(now)
    (cand,) = state.reconcile_candidates(now, quiet=60)
    replay(state, [task_ev("retried", "t1", now - 1)])
    assert not state.resolve(cand, None, now)
    assert state.tasks["t1"].state == "RETRY" and state.unreported == 0


class _Inspector:
    """Stands in for the inspector: each worker's active/reserved/scheduled answer, or no answer."""

    def __init__(self, held: dict[str, list[str]]) -> None:
        self.held = held  # hostname -> task ids it runs; a hostname missing here does not answer
        self.asked: list[list[str]] = []

    def refresh(self, hostnames: list[str], methods: tuple[str, ...]) -> None:
        self.asked.append(list(hostnames))

    def worker(self, hostname: str) -> dict[str, dict[str, Any]]:
        if hostname not in self.held:
            return {m: {"status": "no reply", "fetched_at": None, "reply": None} for m in HELD_BY}
        ok = {"status": "ok", "fetched_at": time.time() + 1}
        return {
            "active": {**ok, "reply": [{"id": u} for u in self.held[hostname]]},
            "reserved": {**ok, "reply": []},
            "scheduled": {**ok, "reply": []},
        }


@pytest.mark.unit
def test_a_round_resolves_only_what_an_answering_worker_no_longer_holds() -> None:
    """t1 is still active on w1: left alone; t2 is not: from the backend; t3 was received, and w2 (alive)
    did not answer, so it may hold a redelivery of t3: left alone."""
    now = time.time()
    state = State()
    replay(
        state,
        [
            worker_ev("heartbeat", "celery@w1", now - 1),
            worker_ev("heartbeat", "celery@w2", now - 1),
            task_ev("started", "t1", now - 100),
            task_ev("started", "t2", now - 100),
            task_ev("received", "t3", now - 100),
        ],
    )
    inspector = _Inspector({"celery@w1": ["t1"]})
    asked_backend: list[str] = []

    def backend(uuid: str) -> dict[str, Any]:
        asked_backend.append(uuid)
        return {"type": "task-failed", "timestamp": now - 50, "exception": "KeyError('x')"}

    rec = Reconciler(state, inspector, interval=1, quiet=60, backend=backend)  # type: ignore[arg-type]
    assert rec.round(now) == 1
    assert [state.tasks[u].state for u in ("t1", "t2", "t3")] == ["STARTED", "FAILURE", "RECEIVED"]
    assert asked_backend == ["t2"] and inspector.asked == [["celery@w1", "celery@w2"]]
    assert state.tasks["t2"].exception == "KeyError('x')" and state.failure_groups.groups(limit=10, now=now)


# -- end to end: a real worker whose task events never reach the dashboard ---------------------------------

DB = 13  # this module's Redis db
WORK = 3.0  # seconds add() sleeps on the silent worker: long enough for reconciliation rounds to see it active


def _publish_started(redis_server: RedisServer, uuid: str, hostname: str) -> None:
    """The task-started event a worker would send (its final event is the one that gets lost)."""
    raw = redis.Redis.from_url(redis_server.url_db(DB))
    raw.publish(
        f"/{DB}.celeryev/task.multi",
        event_envelope(
            {
                "type": "task-started",
                "uuid": uuid,
                "hostname": hostname,
                "timestamp": time.time(),
                "utcoffset": 0,
                "pid": 1,
                "clock": 1,
            }
        ),
    )
    raw.close()


def _server(redis_server: RedisServer, *extra: str) -> DashboardServer:
    # No enable_events broadcasts: the worker keeps its task events off, so only heartbeats and the crafted
    # task-started arrive. Checks every half second, for tasks quiet for a second.
    return DashboardServer(
        redis_server.url_db(DB),
        "--enable-events-interval",
        "0",
        "--reconcile-interval",
        "0.5",
        "--reconcile-after",
        "1",
        *extra,
    )


@pytest.fixture
def silent_worker(redis_server: RedisServer) -> Any:
    """A real worker that sends heartbeats but no task events (its results go to the backend)."""
    hostname = f"silent-{time.monotonic_ns()}@localhost"
    proc = start_worker(
        redis_server.url_db(DB),
        concurrency=1,
        hostname=hostname,
        quiet=True,
        extra_env={"DASHBOARD_DEMO_EVENTS": "0", "DASHBOARD_DEMO_SLEEP": str(WORK)},
    )
    yield hostname
    stop_process(proc)


@pytest.mark.integration
def test_a_task_whose_final_event_was_lost_takes_its_outcome_from_the_result_backend(
    redis_server: RedisServer, silent_worker: str
) -> None:
    """While its worker runs it, a STARTED task stays STARTED; once the worker no longer holds it, its
    state and result come from the backend, marked as such, and /healthz and /metrics count it."""
    server = _server(redis_server, "--result-backend", redis_server.url_db(DB))
    try:
        wait_for(lambda: server.worker_online(silent_worker), timeout=30, message="the silent worker online")
        (uid,) = server.launch("dashboard.demo.add", args=[2, 3])
        time.sleep(0.3)
        _publish_started(redis_server, uid, silent_worker)
        server.wait_task(uid, "STARTED", timeout=10)
        time.sleep(WORK - 0.8)  # quiet for over a second: rounds asked, the worker lists it as active
        assert server.task(uid)["state"] == "STARTED", "a task its worker still runs is left alone"
        task = server.wait_task(uid, "SUCCESS", timeout=30)
        assert task["result"] == "5"
        assert [h["event"] for h in task["history"]][-2:] == ["succeeded", "from result backend"]
        assert task["worker"] == silent_worker
        assert server.health()["tasks"]["from_backend"] == 1
        assert "celery_dashboard_tasks_from_backend_total 1" in server.get("/metrics").text
    finally:
        server.stop()


@pytest.mark.integration
def test_without_a_result_backend_a_lost_final_event_shows_outcome_not_reported(
    redis_server: RedisServer, silent_worker: str
) -> None:
    """No backend to ask: the task is UNREPORTED ("finished, outcome not reported"), not running forever."""
    server = _server(redis_server)
    try:
        wait_for(lambda: server.worker_online(silent_worker), timeout=30, message="the silent worker online")
        (uid,) = server.launch("dashboard.demo.add", args=[2, 3])
        time.sleep(WORK + 0.5)  # done by now, its events never sent
        _publish_started(redis_server, uid, silent_worker)
        task = server.wait_task(uid, "UNREPORTED", timeout=30)
        assert task["history"][-1]["event"] == "outcome not reported"
        assert server.health()["tasks"]["unreported"] == 1
        assert "celery_dashboard_tasks_unreported_total 1" in server.get("/metrics").text
    finally:
        server.stop()
