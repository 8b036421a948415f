"""Beat page (issue 12 item 3): schedules in words, the missed-run rule and "beat may be down" (pure), the
app's beat_schedule with next runs computed by Celery's schedule classes, RedBeat's keys in a real Redis,
/api/beat and Run now against the shop app's real worker, and the page in Chromium."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import ROOT, DashboardServer, RedisServer, wait_for
from test_state import replay, task_ev

from dashboard.cluster.beat import BeatSchedule, app_entries, describe
from dashboard.core import beat as rules
from dashboard.core.masking import make_masker
from dashboard.core.state import State
from dashboard.live.beat import NO_WORKER, beat_view
from dashboard.processes import _die_with_parent, stop_process

T0 = 1_800_000_000.0


def _app(schedule: dict[str, Any], **conf: Any) -> Any:
    from celery import Celery

    app = Celery("periodic", broker="memory://", set_as_current=False)
    app.conf.update(beat_schedule=schedule, timezone="UTC", **conf)
    return app


# -- pure rules --------------------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    "seconds, words",
    [
        (1, "every second"),
        (30, "every 30 seconds"),
        (90, "every 90 seconds"),
        (300, "every 5 minutes"),
        (3600, "every hour"),
        (7200, "every 2 hours"),
        (86_400, "every day"),
        (0.5, "every 0.5 seconds"),
    ],
)
def test_an_interval_in_words(seconds: float, words: str) -> None:
    """The largest unit that divides the interval."""
    assert rules.interval_words(seconds) == words


@pytest.mark.unit
def test_schedules_in_words_from_celerys_classes() -> None:
    """crontab, interval and solar objects as Celery builds them, described by kind and in words."""
    from celery.schedules import crontab, schedule

    assert describe(crontab(hour=7, minute=30)) == ("crontab", "at 07:30 (crontab 30 7 * * *)", None)
    assert describe(crontab(minute="*/15"))[1] == "every 15 minutes (crontab */15 * * * *)"
    assert describe(crontab(minute=0, day_of_week=1))[1] == "at minute 0 of every hour, on Monday (crontab 0 * 1 * *)"
    assert describe(crontab())[1] == "every minute (crontab * * * * *)"
    assert describe(schedule(dt.timedelta(minutes=5))) == ("interval", "every 5 minutes", 300.0)
    assert rules.solar_words("sunset", 48.85, 2.35) == "at sunset at 48.85, 2.35"  # solar() itself needs ephem


@pytest.mark.unit
def test_a_due_time_without_a_run_within_the_grace_period_is_missed() -> None:
    """Missed: passed by more than the grace period with no run in [due - grace, due + grace]; not yet late
    due times are not judged."""
    runs = [rules.Run("a", T0 + 30, "SUCCESS"), rules.Run("b", T0 + 200, "SUCCESS")]
    due = [T0, T0 + 100, T0 + 200, T0 + 300, T0 + 390]
    assert rules.missed(due, runs, grace=60, now=T0 + 400) == [T0 + 100, T0 + 300]
    assert rules.missed(due, runs, grace=60, now=T0 + 350) == [T0 + 100]  # T0 + 300 is not late yet
    assert rules.missed(due, [], grace=10, now=T0 + 1000) == due
    assert rules.missed([T0 + k for k in range(100)], [], grace=0, now=T0 + 1000)[0] == T0 + 100 - rules.MAX_MISSED


@pytest.mark.unit
def test_the_grace_of_a_short_interval_is_half_its_period() -> None:
    """So that two consecutive due times never share a run."""
    assert rules.grace_for(60, 10) == 5
    assert rules.grace_for(60, 3600) == 60
    assert rules.grace_for(60, None) == 60


@pytest.mark.unit
def test_beat_may_be_down_only_while_no_run_follows_a_missed_one() -> None:
    """Some entry missed a run and no run of any entry was seen after the newest missed due time."""
    ok = {"missed": [], "last_run": {"at": T0}}
    assert rules.beat_down([ok]) is False
    assert rules.beat_down([]) is False
    late = {"missed": [T0 + 100], "last_run": None}
    assert rules.beat_down([ok, late]) is True
    assert rules.beat_down([{"missed": [], "last_run": {"at": T0 + 150}}, late]) is False  # beat sent since


@pytest.mark.unit
def test_runs_are_told_apart_by_arguments_only_when_entries_share_a_task() -> None:
    """Celery's argsrepr of a tuple and of a list compare equal; a task without a repr matches anything."""
    runs = [
        rules.Run("a", T0, "SUCCESS", "(1, 2)", "{}"),
        rules.Run("b", T0 + 1, "SUCCESS", "[3]", "{}"),
        rules.Run("c", T0 + 2, "SUCCESS", None, None),
    ]
    assert [r.uuid for r in rules.runs_of(runs, "[1, 2]", "{}", distinguish=False)] == ["c", "b", "a"]
    assert [r.uuid for r in rules.runs_of(runs, "[1, 2]", "{}", distinguish=True)] == ["c", "a"]
    assert [r.uuid for r in rules.runs_of(runs, "(3,)", "{}", distinguish=True)] == ["c", "b"]


# -- the schedule read from an app, judged against a replayed state -------------------------------------


@pytest.mark.unit
def test_next_runs_and_due_times_come_from_celerys_schedule_classes() -> None:
    """A crontab's next run and its due times since a start are Celery's; an interval counts from a start."""
    from celery.schedules import crontab

    app = _app(
        {
            "quarter": {"task": "t.q", "schedule": crontab(minute="*/15")},
            "every-10s": {"task": "t.i", "schedule": 10.0, "args": (1,)},
        }
    )
    by_name = {e.name: e for e in app_entries(app)}
    quarter, every = by_name["quarter"], by_name["every-10s"]
    assert quarter.kind == "crontab" and every.kind == "interval" and every.period == 10.0
    now = time.time()
    nxt = quarter.next_after(now)
    assert nxt is not None and now < nxt <= now + 900 and nxt % 900 == 0
    start = (now // 900) * 900 - 3600  # on a quarter: four due times after it, up to the last quarter
    assert quarter.due_between(start, now) == [start + 900 * k for k in range(1, 5)]
    assert every.due_between(T0, T0 + 35) == [T0 + 10, T0 + 20, T0 + 30]


@pytest.mark.unit
def test_a_solar_schedule_gets_its_next_run_from_celery_as_beat_does() -> None:
    """Celery's solar needs ephem (a dependency for that reason): the next sunset in Paris is within a day."""
    from celery.schedules import solar

    (entry,) = app_entries(_app({"dusk": {"task": "t.s", "schedule": solar("sunset", 48.85, 2.35)}}))
    now = time.time()
    nxt = entry.next_after(now)
    assert entry.kind == "solar" and nxt is not None and now < nxt <= now + 86_400
    assert entry.due_between(now - 86_400 - 3600, now), "yesterday's sunset was due"


@pytest.mark.unit
def test_the_view_shows_last_runs_missed_runs_and_masked_arguments() -> None:
    """/api/beat's rows: arguments masked like the state's, the newest task of the entry's name as its last
    run, the interval's due times since it without a run missed; beat may be down when none came since."""
    app = _app(
        {
            "every-10s": {"task": "t.i", "schedule": 10.0, "args": (1,), "kwargs": {"api_token": "s3cret"}},
            "unseen": {"task": "t.never", "schedule": 3600.0},
        }
    )
    now = time.time()
    schedule = BeatSchedule(app, started_at=now - 100)
    state = State(mask=make_masker("token"))
    replay(state, [task_ev("received", "u1", now - 95, name="t.i", args="(1,)", kwargs="{'api_token': 'x'}")])
    replay(state, [task_ev("succeeded", "u1", now - 94, runtime=0.1)])
    no_worker = beat_view(State(), schedule, grace=60, now=now)  # nothing seen at all, no worker online
    assert no_worker["entries"][0]["missed"] and no_worker["beat_down"] is False  # the workers may be what is down
    assert no_worker["note"] == NO_WORKER
    view = beat_view(state, schedule, grace=60, now=now)  # the worker that ran u1 is online
    assert view["note"] is None
    every, unseen = view["entries"]
    assert every["name"] == "every-10s" and every["source"] == "app"
    assert every["kwargs"] == "{'api_token': '«masked»'}" and every["args"] == "[1]"
    assert every["schedule"] == {"kind": "interval", "text": "every 10 seconds", "error": None}
    assert every["last_run"] == {"uuid": "u1", "state": "SUCCESS", "at": pytest.approx(now - 95)}
    assert every["grace"] == 5
    # due at now-85, -75, ..., -15 (late by more than 5 s): 8 missed; the next after now
    assert every["missed"] == pytest.approx([now - 95 + 10 * k for k in range(1, 9)])
    assert now < every["next_run"] <= now + 10
    assert unseen["missed"] == [] and unseen["last_run"] is None  # first due after the dashboard started: not yet
    assert view["beat_down"] is True
    # the event stream (re)connected 30 s ago: only the due times after that are judged, on beat's chain
    since = beat_view(state, schedule, grace=60, now=now, since=now - 30)["entries"][0]
    assert since["missed"] == pytest.approx([now - 25, now - 15])
    replay(state, [task_ev("received", "u2", now - 2, name="t.i", args="(1,)")])
    assert beat_view(state, schedule, grace=60, now=now)["beat_down"] is False  # beat is sending again


@pytest.mark.unit
def test_entries_of_one_task_each_find_their_own_last_run() -> None:
    """Two entries of the same task with other arguments: each one's last run is the newest task with its
    arguments, also when it was seen long before the dashboard started (a restored snapshot)."""
    app = _app(
        {
            "eu": {"task": "t.sync", "schedule": 3600.0, "args": ("eu",)},
            "us": {"task": "t.sync", "schedule": 3600.0, "args": ("us",)},
        }
    )
    now = time.time()
    state = State()
    replay(state, [task_ev("received", "old-eu", now - 5000, name="t.sync", args="('eu',)", kwargs="{}")])
    replay(state, [task_ev("received", "old-us", now - 4000, name="t.sync", args="('us',)", kwargs="{}")])
    replay(state, [task_ev("received", "new-eu", now - 3000, name="t.sync", args="('eu',)", kwargs="{}")])
    view = beat_view(state, BeatSchedule(app, started_at=now - 60), grace=60, now=now)
    rows = {e["name"]: e for e in view["entries"]}
    assert rows["eu"]["last_run"]["uuid"] == "new-eu" and rows["us"]["last_run"]["uuid"] == "old-us"


@pytest.mark.unit
def test_without_an_app_the_schedule_is_empty_with_a_sentence() -> None:
    """No app: no entries, and the note says how to give one."""
    view = beat_view(State(), BeatSchedule(None, time.time()), grace=60)
    assert view["entries"] == [] and view["beat_down"] is False
    assert "celery -A proj dashboard" in view["note"]


@pytest.mark.integration
def test_the_api_without_an_app(client: Any) -> None:
    """GET /api/beat answers the empty list and the sentence; Run now of an unknown entry is a 404."""
    body = client.get("/api/beat").get_json()
    assert body["entries"] == [] and "No Celery app" in body["note"] and body["beat_down"] is False
    resp = client.post("/api/beat/nope/run", json={})
    assert resp.status_code == 404 and resp.get_json() == {"error": "no periodic entry named 'nope'"}
    assert client.post("/api/beat/nope/run", data="x").status_code == 415
    assert "Beat" in client.get("/beat").get_data(as_text=True)


@pytest.fixture()
def client(app: Any) -> Any:
    """A test client of the app without ingest."""
    return app.test_client()


# -- the shop app's schedule, its real worker, a real beat ---------------------------------------------

SHOP = "tests.apps.shop"
BEAT_DB = 14  # a database of the session Redis that no other test uses


@pytest.fixture(scope="module")
def shop_env(redis_server: RedisServer) -> dict[str, str]:
    """The shop's processes' environment: its broker (db 14), no DASHBOARD_* from outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHBOARD_")}
    return dict(env, SHOP_BROKER_URL=redis_server.url_db(BEAT_DB))


@pytest.fixture(scope="module")
def shop_worker(shop_env: dict[str, str]) -> Iterator[str]:
    """A real worker of the shop app; yields its hostname."""
    from tests.apps import shop

    hostname = f"beat-shop-{os.getpid()}@localhost"
    proc = shop.start_worker(shop_env["SHOP_BROKER_URL"], hostname)
    yield hostname
    stop_process(proc)


@pytest.fixture(scope="module")
def shop_dashboard(shop_env: dict[str, str], shop_worker: str) -> Iterator[DashboardServer]:
    """`celery -A tests.apps.shop dashboard`, once the shop worker is online."""
    dash = DashboardServer("", env=shop_env, command=[sys.executable, "-m", "celery", "-A", SHOP, "dashboard"])
    wait_for(lambda: dash.worker_online(shop_worker), timeout=60, message=f"{shop_worker} online")
    yield dash
    dash.stop()


def _entries(dash: DashboardServer) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in dash.get("/api/beat").json()["entries"]}


@pytest.mark.integration
def test_the_apps_schedule_with_next_runs_then_run_now_and_beat_down_until_beat_runs(
    shop_dashboard: DashboardServer, shop_worker: str, shop_env: dict[str, str], tmp_path: Path
) -> None:
    """/api/beat lists the shop's beat_schedule (masked kwargs, schedules in words, next runs); Run now sends
    the entry's task through the app, its worker runs it, it becomes the entry's last run and the action is
    audited; with no beat running the 10 s entry then misses a run and beat may be down; a real
    `celery beat` sends it again and the alarm clears."""
    entries = _entries(shop_dashboard)
    assert set(entries) == {"charge-every-10s", "nightly-report", "ship-express"}
    charge, nightly, ship = entries["charge-every-10s"], entries["nightly-report"], entries["ship-express"]
    now = time.time()
    assert charge["schedule"] == {"kind": "interval", "text": "every 10 seconds", "error": None}
    assert nightly["schedule"]["text"] == "at 03:30 (crontab 30 3 * * *)"
    assert now < nightly["next_run"] <= now + 86_400 and now < charge["next_run"] <= now + 10.5
    assert ship["kwargs"] == "{'order_id': 3, 'address': {'city': 'Paris', 'api_token': '«masked»'}, 'express': True}"
    assert ship["options"] == {"priority": 5} and ship["source"] == "app"
    assert all(e["missed"] == [] for e in (nightly, ship))

    resp = requests.post(shop_dashboard.base_url + "/api/beat/charge-every-10s/run", json={}, timeout=10)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    task = shop_dashboard.wait_task(body["task_id"], "SUCCESS", timeout=30)
    assert task["name"] == "shop.charge" and task["worker"] == shop_worker and task["args"] == "[1, 2.5]"
    last = wait_for(lambda: _entries(shop_dashboard)["charge-every-10s"]["last_run"], timeout=10, message="last run")
    assert last["uuid"] == body["task_id"]
    (entry,) = [e for e in shop_dashboard.get("/api/audit").json()["entries"] if e["id"] == body["audit_id"]]
    assert entry["action"] == "beat_run" and entry["target"] == "charge-every-10s" and entry["ok"] is True
    assert entry["params"] == {"task": "shop.charge", "source": "app", "task_id": body["task_id"]}

    # No beat runs: 10 s after that run (+ 5 s grace) the entry has missed one, and nothing came since.
    wait_for(lambda: shop_dashboard.get("/api/beat").json()["beat_down"], timeout=40, message="beat may be down")
    assert _entries(shop_dashboard)["charge-every-10s"]["missed"]

    schedule_file = tmp_path / "celerybeat-schedule"
    beat = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", SHOP, "beat", "-s", str(schedule_file), "--loglevel", "WARNING"],
        cwd=ROOT,
        env=shop_env,
        preexec_fn=_die_with_parent,
    )
    try:
        wait_for(lambda: not shop_dashboard.get("/api/beat").json()["beat_down"], timeout=40, message="beat back")
        last = _entries(shop_dashboard)["charge-every-10s"]["last_run"]
        assert last["uuid"] != body["task_id"]  # beat's own run
    finally:
        stop_process(beat)


@pytest.mark.integration
def test_run_now_needs_json_and_a_known_entry(shop_dashboard: DashboardServer) -> None:
    """Controls are JSON POSTs: 415 otherwise; an unknown entry is 404 in the error shape."""
    base = shop_dashboard.base_url
    assert requests.post(base + "/api/beat/charge-every-10s/run", data="x", timeout=5).status_code == 415
    resp = requests.post(base + "/api/beat/nope/run", json={}, timeout=5)
    assert resp.status_code == 404 and resp.json() == {"error": "no periodic entry named 'nope'"}


# -- RedBeat: its keys in a real Redis, written as RedBeat writes them ----------------------------------


def _redbeat_time(when: float) -> dict[str, Any]:
    d = dt.datetime.fromtimestamp(when, dt.UTC)
    fields = ("year", "month", "day", "hour", "minute", "second", "microsecond")
    return {"__type__": "datetime", **{f: getattr(d, f) for f in fields}, "timezone": "UTC"}


@pytest.mark.integration
def test_redbeat_entries_are_read_from_its_keys(redis_server: RedisServer) -> None:
    """With `redbeat_redis_url`, the entries of RedBeat's hashes (definition JSON, meta's last run, the
    schedule zset's next run) are listed as source "redbeat"; a name also in beat_schedule is RedBeat's; a
    schedule type we cannot compute is shown with its error; a disabled entry is left out."""
    import json

    import redis

    url = redis_server.url_db(15)
    client = redis.Redis.from_url(url)
    client.flushdb()
    now = time.time()
    every = {"__type__": "interval", "every": 60.0, "relative": False}
    defs = {
        "redbeat:cleanup": {
            "name": "cleanup",
            "task": "ops.cleanup",
            "args": [1],
            "kwargs": {"password": "pw"},
            "options": {"queue": "ops"},
            "schedule": every,
            "enabled": True,
        },
        "redbeat:weekly": {
            "name": "weekly",
            "task": "ops.weekly",
            "args": [],
            "kwargs": {},
            "options": {},
            "schedule": {
                "__type__": "crontab",
                "minute": "0",
                "hour": "6",
                "day_of_week": "1",
                "day_of_month": "*",
                "month_of_year": "*",
            },
            "enabled": True,
        },
        "redbeat:rule": {"name": "rule", "task": "ops.rule", "schedule": {"__type__": "rrule", "freq": 3}},
        "redbeat:off": {"name": "off", "task": "ops.off", "schedule": every, "enabled": False},
    }
    for key, definition in defs.items():
        client.hset(key, mapping={"definition": json.dumps(definition)})
    client.hset("redbeat:cleanup", "meta", json.dumps({"last_run_at": _redbeat_time(now - 30), "total_run_count": 4}))
    client.zadd("redbeat::schedule", {"redbeat:cleanup": now + 30, "redbeat:weekly": now + 3600})
    client.set("redbeat::lock", "x")  # not a hash: skipped
    app = _app(
        {"cleanup": {"task": "app.version", "schedule": 5.0}, "mine": {"task": "app.mine", "schedule": 5.0}},
        redbeat_redis_url=url,
    )
    schedule = BeatSchedule(app, started_at=now - 1)
    view = beat_view(State(mask=make_masker("password")), schedule, grace=60, now=now)
    rows = {e["name"]: e for e in view["entries"]}
    assert set(rows) == {"cleanup", "mine", "rule", "weekly"} and view["note"] is None
    cleanup = rows["cleanup"]
    assert cleanup["source"] == "redbeat" and cleanup["task"] == "ops.cleanup"
    assert cleanup["kwargs"] == "{'password': '«masked»'}" and cleanup["options"] == {"queue": "ops"}
    assert cleanup["schedule"]["text"] == "every minute"
    assert cleanup["next_run"] == pytest.approx(now + 30) and cleanup["missed"] == []
    assert rows["weekly"]["schedule"]["text"] == "at 06:00, on Monday (crontab 0 6 1 * *)"
    assert rows["weekly"]["next_run"] == pytest.approx(now + 3600)
    assert rows["rule"]["schedule"]["kind"] == "rrule" and "rrule" in rows["rule"]["schedule"]["error"]
    assert rows["mine"]["source"] == "app"

    # Run now of a RedBeat entry: its task, arguments and options (its queue) through the app.
    app.conf.broker_url = url
    (cleanup_entry,) = [e for e in schedule.entries()[0] if e.name == "cleanup"]
    task_id = schedule.run_now(cleanup_entry)
    (message,) = [json.loads(m) for m in client.lrange("ops", 0, -1)]
    assert message["headers"]["task"] == "ops.cleanup" and message["headers"]["id"] == task_id
    assert message["headers"]["argsrepr"] == "[1]" and message["headers"]["kwargsrepr"] == "{'password': 'pw'}"

    unreachable = BeatSchedule(
        _app({"mine": {"task": "app.mine", "schedule": 5.0}}, redbeat_redis_url="redis://:hunter2@127.0.0.1:1/0"),
        started_at=now,
        timeout=0.5,
    )
    entries, note = unreachable.entries()
    assert [e.name for e in entries] == ["mine"]
    assert note is not None and note.startswith("RedBeat's entries could not be read") and "hunter2" not in note
    client.flushdb()


@pytest.mark.integration
def test_run_now_is_refused_in_read_only_mode(redis_server: RedisServer) -> None:
    """Read-only mode: POST /api/beat/<name>/run is 403 and nothing is audited; the schedule still shows."""
    from dashboard import create_app
    from tests.apps import shop

    app = _app(dict(shop.app.conf.beat_schedule))  # not shop.app itself: create_app sets its broker
    cfg = {"ASYNC_MODE": "threading", "INGEST_ENABLED": False, "BROKER_URL": redis_server.url_db(1), "READ_ONLY": True}
    flask_app = create_app(cfg, celery_app=app)
    try:
        client = flask_app.test_client()
        resp = client.post("/api/beat/charge-every-10s/run", json={})
        assert resp.status_code == 403 and "read-only" in resp.get_json()["error"]
        assert flask_app.extensions["dashboard"].audit.entries() == []
        names = [e["name"] for e in client.get("/api/beat").get_json()["entries"]]
        assert names == ["charge-every-10s", "nightly-report", "ship-express"]
        assert 'data-controls="off"' in client.get("/beat").get_data(as_text=True)
    finally:
        flask_app.extensions["dashboard"].stop()


@pytest.mark.unit
def test_run_now_with_the_broker_down_is_503_and_audited() -> None:
    """Nothing listens on the broker's port: 503 in the error shape with the audit entry of the failed action."""
    from dashboard import create_app

    app = _app({"tick": {"task": "t.tick", "schedule": 30.0, "args": [1]}})
    cfg = {"ASYNC_MODE": "threading", "INGEST_ENABLED": False, "BROKER_URL": "redis://127.0.0.1:9/0"}
    flask_app = create_app({**cfg, "LAUNCH_TIMEOUT": 1.0}, celery_app=app)
    try:
        resp = flask_app.test_client().post("/api/beat/tick/run", json={})
        assert resp.status_code == 503, resp.get_data(as_text=True)
        body = resp.get_json()
        assert body["error"].startswith("the broker is unreachable") and "audit_id" in body
        (entry,) = flask_app.extensions["dashboard"].audit.entries()
        assert entry["id"] == body["audit_id"] and entry["action"] == "beat_run" and entry["ok"] is False
        assert entry["target"] == "tick" and entry["params"] == {"task": "t.tick", "source": "app"}
    finally:
        flask_app.extensions["dashboard"].stop()


# -- the page in Chromium ----------------------------------------------------------------------------


@pytest.mark.browser
def test_the_beat_page_lists_the_schedule_and_runs_an_entry_after_confirming(
    page: Any, shop_dashboard: DashboardServer, shop_worker: str
) -> None:
    """The page shows each entry (masked kwargs as text, the schedule in words, the next run); Run now asks
    first (Cancel sends nothing), then sends the task, links to it and to its audit entry; with beat not
    running the overview then says beat may be down."""
    from playwright.sync_api import expect

    page.goto(shop_dashboard.base_url + "/beat")
    rows = page.locator("#beat-table tbody tr[data-entry]")
    expect(rows).to_have_count(3)
    ship = page.locator('tr[data-entry="ship-express"]')
    expect(ship.locator("td.args")).to_contain_text("'api_token': '«masked»'")
    expect(ship.locator("td.args")).to_contain_text('options {"priority":5}')
    expect(ship.locator("td.schedule")).to_have_text("every 15 minutes, on mon-fri (crontab */15 * mon-fri * *)")
    charge = page.locator('tr[data-entry="charge-every-10s"]')
    expect(charge.locator("td.schedule")).to_have_text("every 10 seconds")
    expect(charge.locator("td.next")).not_to_have_text("–")
    audited = len(shop_dashboard.get("/api/audit").json()["entries"])

    charge.locator("button.beat-run").click()
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_contain_text("Sends shop.charge once, now, outside its schedule.")
    dialog.locator("button.confirm-cancel").click()
    expect(dialog).to_have_count(0)
    assert len(shop_dashboard.get("/api/audit").json()["entries"]) == audited  # nothing sent

    charge.locator("button.beat-run").click()
    page.locator("#confirm-dialog button.confirm-ok").click()
    result = page.locator("#beat-result")
    expect(result).to_have_attribute("data-ok", "true")
    expect(result.locator("a.audit-link")).to_be_visible()
    task_id = result.locator("p a").inner_text()
    task = shop_dashboard.wait_task(task_id, "SUCCESS", timeout=30)
    assert task["name"] == "shop.charge" and task["worker"] == shop_worker
    expect(charge.locator("td.last a")).to_have_attribute("title", re.compile(f"^{task_id} "))

    wait_for(lambda: shop_dashboard.get("/api/beat").json()["beat_down"], timeout=40, message="beat may be down")
    expect(page.locator("#beat-down")).to_be_visible(timeout=10_000)
    expect(charge.locator("td.missed")).to_contain_text("missed")
    page.goto(shop_dashboard.base_url + "/")
    expect(page.locator("#beat-down")).to_be_visible()
    expect(page.locator("#beat-down-detail")).to_contain_text("charge-every-10s")


@pytest.mark.browser
def test_markup_in_an_entry_is_text(page: Any, redis_server: RedisServer) -> None:
    """Entry and task names, arguments and options made of markup and script are shown as text, on the page
    and in Run now's dialog; nothing runs, nothing is injected."""
    from playwright.sync_api import expect

    from tests.apps.hostile_beat import PAYLOAD

    url = redis_server.url_db(BEAT_DB)
    dash = DashboardServer(url, "--app", "tests.apps.hostile_beat", env={"HOSTILE_BROKER_URL": url})
    try:
        page.goto(dash.base_url + "/beat")
        row = page.locator("#beat-table tbody tr[data-entry]")
        expect(row).to_have_count(1)
        expect(row.locator("td.name")).to_have_text(f"entry {PAYLOAD}")
        expect(row.locator("td.task")).to_have_text(f"tasks.{PAYLOAD}")
        expect(row.locator("td.args")).to_contain_text("<script>window.__pwned=2</script>")  # in a repr
        row.locator("button.beat-run").click()
        expect(page.locator("#confirm-dialog h2")).to_have_text(f"Run entry {PAYLOAD} now?")
        page.keyboard.press("Escape")
        expect(page.locator("#confirm-dialog")).to_have_count(0)
        assert page.evaluate("window.__pwned") is None
        assert page.locator("#injected, main img[src='x'], main script, dialog script").count() == 0
    finally:
        dash.stop()
