"""The state snapshot: a faithful round trip, atomic saves, bad files kept aside with a warning, restore
across a real restart (SIGTERM and SIGINT); and, without a snapshot, tasks in flight asked from workers."""

from __future__ import annotations

import gzip
import json
import logging
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import WORK_SECONDS, DashboardServer, RedisServer, wait_for
from test_state import replay, task_ev, worker_ev

from dashboard.core.records import task_detail, worker_summary
from dashboard.core.state import State
from dashboard.ingest.seed import events_from_inspect
from dashboard.ingest.snapshot import Snapshots, dump, restore
from dashboard.processes import start_worker, stop_process

TB = 'Traceback (most recent call last):\n  File "app/pay.py", line 3, in charge\nValueError: card 42 declined'


def _busy_state(max_tasks: int = 100) -> State:
    state = State(max_tasks=max_tasks)
    replay(
        state,
        [
            worker_ev("online", "celery@w1", 100.0, sw_ident="py-celery", sw_ver="5.5"),
            task_ev("sent", "root", 100.0, name="proj.flow", args="(1,)", kwargs="{}", queue="celery"),
            task_ev("received", "root", 100.1, name="proj.flow", args="(1,)", kwargs="{}"),
            task_ev("started", "root", 100.2),
            task_ev("succeeded", "root", 100.5, result="'ok'", runtime=0.3),
            task_ev(
                "received",
                "kid",
                100.6,
                name="proj.pay",
                args="('4000',)",
                kwargs="{'amount': 42}",
                parent_id="root",
                root_id="root",
            ),
            task_ev("started", "kid", 100.7),
            task_ev("retried", "kid", 100.8, exception="ValueError('card 42 declined')", traceback=TB),
            task_ev("started", "kid", 101.0),
            task_ev("failed", "kid", 101.2, exception="ValueError('card 43 declined')", traceback=TB, runtime=0.2),
            task_ev("received", "prog", 101.3, name="proj.progress"),
            task_ev("started", "prog", 101.4),
            task_ev("progress", "prog", 101.5, current=3, total=10),
        ],
    )
    return state


def _roundtrip(state: State, **kwargs: Any) -> State:
    doc = orjson.loads(orjson.dumps(dump(state)))  # exactly what goes through the file
    doc["saved_at"] = 101.0  # the scripted events' clock
    fresh = State(**kwargs)
    restore(fresh, doc)
    return fresh


@pytest.mark.unit
def test_round_trip_keeps_every_task_field_index_group_and_worker() -> None:
    state = _busy_state()
    back = _roundtrip(state)
    assert list(back.order) == list(state.order)
    for uuid, rec in state.tasks.items():
        assert task_detail(back.tasks[uuid], back.children_of(uuid)) == task_detail(rec, state.children_of(uuid))
    assert back.counts == state.counts
    assert back.task_names == state.task_names
    assert back.children_of("root") == ["kid"]
    assert {k: len(back.workflow_members(k)) for k in back.by_root} == {"root": 1}
    ours, theirs = back.failure_groups.groups(now=200.0), state.failure_groups.groups(now=200.0)
    assert [(g["id"], g["count"], g["outcomes"]) for g in ours] == [
        (g["id"], g["count"], g["outcomes"]) for g in theirs
    ]
    assert ours[0]["outcomes"]["GAVE_UP"] == 1, "a group's outcomes survive a restart"
    assert [r["name"] for r in back.stats.table(now=200.0)] == [r["name"] for r in state.stats.table(now=200.0)]
    mine = worker_summary(back.workers["celery@w1"], 101.0)
    assert mine == worker_summary(state.workers["celery@w1"], 101.0)


@pytest.mark.unit
def test_tracebacks_are_stored_once_in_the_file() -> None:
    doc = dump(_busy_state())
    assert doc["strings"].count(TB) == 1
    assert TB not in json.dumps(doc["tasks"])


@pytest.mark.unit
def test_restore_into_a_smaller_state_keeps_the_newest() -> None:
    back = _roundtrip(_busy_state(), max_tasks=2)
    assert list(back.order) == ["kid", "prog"]


@pytest.mark.unit
def test_restored_worker_alive_at_save_waits_for_events_before_expiring() -> None:
    back = _roundtrip(_busy_state())
    worker = back.workers["celery@w1"]
    assert worker.alive(10_000.0), "nobody could hear it while the dashboard was down"
    back.broker_back(10_000.0)
    assert worker.alive(10_000.0 + 3.9) and not worker.alive(10_000.0 + 4.1)  # two heartbeats of 2 s


@pytest.mark.unit
def test_save_is_atomic_and_load_restores(tmp_path: Path) -> None:
    path = tmp_path / "state.snap"
    snaps = Snapshots(_busy_state(), str(path), 60)
    assert snaps.save()
    assert sorted(os.listdir(tmp_path)) == ["state.snap"], "no temp file left behind"
    fresh = Snapshots(State(), str(path), 60)
    assert fresh.load()
    assert fresh.restored == (3, 1) and fresh.state.tasks["kid"].state == "FAILURE"


@pytest.mark.unit
@pytest.mark.parametrize(
    "content, why",
    [
        (b"not gzip at all", "unreadable"),
        (gzip.compress(b"{truncated"), "unreadable"),
        (gzip.compress(b'{"format": "celery-live-dashboard-snapshot", "version": 99}'), "version 99"),
        (gzip.compress(b'{"format": "something-else"}'), "not a Celery Live Dashboard snapshot"),
    ],
    ids=["garbage", "bad-json", "other-version", "other-format"],
)
def test_bad_snapshot_is_kept_aside_with_a_warning_and_the_dashboard_starts_empty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes, why: str
) -> None:
    path = tmp_path / "state.snap"
    path.write_bytes(content)
    snaps = Snapshots(State(), str(path), 60)
    with caplog.at_level(logging.WARNING, logger="dashboard.ingest.snapshot"):
        assert not snaps.load()
    assert not snaps.state.tasks
    assert why in caplog.text and "kept as" in caplog.text
    aside = Path(snaps.set_aside)
    assert aside.read_bytes() == content, "the bad file is kept as it was"
    assert snaps.save() and path.exists() and aside.read_bytes() == content, "never overwritten by the next save"


@pytest.mark.unit
def test_snapshot_with_a_broken_record_is_refused_whole(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    doc = orjson.loads(orjson.dumps(dump(_busy_state())))
    doc["tasks"][1][0] = 12345  # a uuid that is not a string
    path = tmp_path / "state.snap"
    path.write_bytes(gzip.compress(orjson.dumps(doc)))
    snaps = Snapshots(State(), str(path), 60)
    with caplog.at_level(logging.WARNING, logger="dashboard.ingest.snapshot"):
        assert not snaps.load()
    assert not snaps.state.tasks, "no half-restored state: it starts empty"
    assert "broken record" in caplog.text


@pytest.mark.unit
def test_failed_save_is_reported_and_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "state.snap"
    snaps = Snapshots(_busy_state(), str(path), 60)
    assert snaps.save()
    before = path.read_bytes()
    os.chmod(tmp_path, 0o500)  # root ignores permissions: make the temp file's name a directory instead
    (tmp_path / f"state.snap.tmp-{os.getpid()}").mkdir()
    try:
        assert not snaps.save()
    finally:
        os.chmod(tmp_path, 0o700)
    assert snaps.last_error and path.read_bytes() == before


# -- end to end: a real dashboard restarted -----------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_restart_restores_tasks_saved_at_shutdown(redis_server: RedisServer, tmp_path: Path, sig: int) -> None:
    url = redis_server.url_db(11)
    path = tmp_path / "state.snap"
    host = f"snap-{sig}@localhost"
    proc = start_worker(url, concurrency=1, hostname=host, quiet=True, extra_env={"DASHBOARD_DEMO_SLEEP": WORK_SECONDS})
    dash = DashboardServer(url, "--snapshot", str(path), env={"DASHBOARD_SNAPSHOT_INTERVAL": "3600"})
    try:
        (ok,) = dash.launch("dashboard.demo.add", args=[20, 22])
        (bad,) = dash.launch("dashboard.demo.fail")
        dash.wait_task(ok, "SUCCESS", timeout=60)
        dash.wait_task(bad, "FAILURE", timeout=60)
        dash.proc.send_signal(sig)
        dash.proc.wait(20)
        assert path.exists(), "saved at shutdown (the interval is an hour away)"
        dash = DashboardServer(url, "--snapshot", str(path))
        assert dash.task(ok)["result"] == "42", "restored before any new event"
        assert "PaymentDeclined" in dash.task(bad)["traceback"]
        assert dash.health()["snapshot"]["restored"][0] >= 2
    finally:
        stop_process(proc)
        dash.stop()


@pytest.mark.integration
def test_without_snapshot_tasks_in_flight_show_at_start(redis_server: RedisServer) -> None:
    """A task started before the dashboard, with no event due for a minute, is there at once."""
    url = redis_server.url_db(12)
    host = "inflight@localhost"
    proc = start_worker(url, concurrency=1, hostname=host, quiet=True)
    first = DashboardServer(url)
    try:
        (uid,) = first.launch("dashboard.demo.progress", kwargs={"steps": 1, "delay": 60})
        first.wait_task(uid, "STARTED", timeout=30)
        first.stop()
        second = DashboardServer(url)
        try:
            task = wait_for(lambda: second.task(uid), timeout=8, message="the running task asked from the worker")
            assert task["state"] == "STARTED" and task["hostname"] == host
            assert task["name"] == "dashboard.demo.progress" and "60" in task["kwargs"]
        finally:
            second.stop()
    finally:
        subprocess.run(["pkill", "-KILL", "-f", f"--hostname {host}"], check=False)
        stop_process(proc)


@pytest.mark.unit
def test_inspect_replies_become_events() -> None:
    request = {
        "id": "a1",
        "name": "t.add",
        "args": [1, 2],
        "kwargs": {"x": 1},
        "hostname": "w@h",
        "time_start": 50.0,
        "delivery_info": {"routing_key": "celery", "exchange": ""},
    }
    evs = events_from_inspect(
        {"w@h": [request]},
        {"w@h": [dict(request, id="r1", time_start=None)]},
        {"w@h": [{"eta": "2030-01-01T00:00:00", "request": dict(request, id="s1")}]},
        60.0,
    )
    state = State()
    assert state.events(evs) == 0
    assert state.tasks["a1"].state == "STARTED" and state.tasks["a1"].args == "(1, 2)"
    assert state.tasks["a1"].started == 50.0
    assert state.tasks["r1"].state == "RECEIVED" and state.tasks["s1"].eta == "2030-01-01T00:00:00"
    assert events_from_inspect({"w@h": ["junk", {"id": 3}]}, None, {"w@h": "junk"}, 1.0) == []
