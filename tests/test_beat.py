"""Beat page (issue 12 item 3): schedules in words, the missed-run rule and "beat may be down" (pure), the
app's beat_schedule with next runs computed by Celery's schedule classes, RedBeat's keys in a real Redis,
/api/beat and Run now against the shop app's real worker, and the page in Chromium."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest
from test_state import replay, task_ev

from dashboard.cluster.beat import BeatSchedule, app_entries, describe
from dashboard.core import beat as rules
from dashboard.core.masking import make_masker
from dashboard.core.state import State
from dashboard.live.beat import beat_view

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
    view = beat_view(state, schedule, grace=60, now=now)
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
    replay(state, [task_ev("received", "u2", now - 2, name="t.i", args="(1,)")])
    assert beat_view(state, schedule, grace=60, now=now)["beat_down"] is False  # beat is sending again


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
