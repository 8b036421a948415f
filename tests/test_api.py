"""The JSON API and /healthz on a real app (ingest off) whose broker is db 1 of the session Redis."""

from __future__ import annotations

import base64
import json
import re
import time
from typing import Any

import pytest
import redis
from conftest import RedisServer, feed
from hypothesis import given, settings
from hypothesis import strategies as st

from dashboard.processes import free_port

HOST = "w1@box"
TRACEBACK = (
    'Traceback (most recent call last):\n  File "demo.py", line 60, in _authorize\n'
    "PaymentDeclined: card 4000 was declined\n"
)


def ev(type_: str, uuid: str, ts: float, hostname: str = HOST, **fields: Any) -> dict[str, Any]:
    """A Celery task event as ingest hands it to the state."""
    return {"type": type_, "uuid": uuid, "hostname": hostname, "timestamp": ts, "local_received": time.time(), **fields}


def heartbeat(hostname: str, received: float, freq: float = 2.0, **fields: Any) -> dict[str, Any]:
    """A worker-heartbeat event received at `received`."""
    return {
        "type": "worker-heartbeat",
        "hostname": hostname,
        "timestamp": received,
        "local_received": received,
        "freq": freq,
        "active": 0,
        "processed": 3,
        "sw_ident": "py-celery",
        "sw_ver": "5.4.0",
        "sw_sys": "Linux",
        "loadavg": [0.1, 0.2, 0.3],
        **fields,
    }


def seed(app: Any) -> float:
    """Four tasks in first-seen order ok, bad, retry, kid (a child of ok) and two workers; returns t0."""
    t0 = time.time() - 30
    feed(
        app,
        heartbeat(HOST, time.time(), freq=30.0),
        heartbeat("w2@box", time.time() - 120),
        ev("task-sent", "ok", t0, hostname="client@box", name="dashboard.demo.add", args="(2, 3)", kwargs="{}"),
        ev("task-received", "ok", t0 + 1, name="dashboard.demo.add", args="(2, 3)", kwargs="{}", retries=0),
        ev("task-started", "ok", t0 + 2),
        ev("task-succeeded", "ok", t0 + 3, result="5", runtime=1.0),
        ev("task-received", "bad", t0 + 4, name="dashboard.demo.fail", args="()", kwargs="{'amount': 42}"),
        ev("task-started", "bad", t0 + 5),
        ev("task-failed", "bad", t0 + 6, exception="PaymentDeclined('card 4000 was declined')", traceback=TRACEBACK),
        ev("task-received", "retry", t0 + 7, name="dashboard.demo.flaky", args="()", kwargs="{}", retries=0),
        ev("task-started", "retry", t0 + 8),
        ev(
            "task-retried",
            "retry",
            t0 + 9,
            exception="ConnectionError('upstream unavailable on attempt 1')",
            traceback="Traceback (most recent call last):\nConnectionError: upstream unavailable on attempt 1\n",
        ),
        ev("task-received", "retry", t0 + 10, name="dashboard.demo.flaky", args="()", kwargs="{}", retries=1),
        ev("task-started", "retry", t0 + 11),
        ev("task-succeeded", "retry", t0 + 12, result="'succeeded on attempt 2'", runtime=0.1),
        ev(
            "task-received",
            "kid",
            t0 + 13,
            name="dashboard.demo.add",
            args="(1, 1)",
            kwargs="{}",
            parent_id="ok",
            root_id="ok",
        ),
    )
    return t0


def queued(client: redis.Redis) -> list[dict[str, Any]]:
    """The messages in the `celery` list of db 1, oldest first, as (headers, args, kwargs) dicts."""
    out = []
    for raw in reversed(client.lrange("celery", 0, -1)):  # kombu LPUSHes, the worker BRPOPs
        msg = json.loads(raw)
        args, kwargs, _embed = json.loads(base64.b64decode(msg["body"]))
        out.append(
            {
                "id": msg["headers"]["id"],
                "task": msg["headers"]["task"],
                "eta": msg["headers"]["eta"],
                "args": args,
                "kwargs": kwargs,
            }
        )
    return out


# -- /healthz --------------------------------------------------------------------------------------


@pytest.mark.integration
def test_healthz_reports_broker_events_tasks_and_workers(app: Any) -> None:
    """/healthz says the broker is not connected (ingest off), and counts tasks and online workers."""
    seed(app)
    resp = app.test_client().get("/healthz")
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["ok"] is False
    assert body["broker"]["connected"] is False
    assert body["events"] == {"received": 0, "rejected": 0}
    assert body["tasks"]["retained"] == 4
    assert body["tasks"]["evicted"] == 0
    assert body["workers"] == {"online": 1, "known": 2}
    assert body["server"] == {"async_mode": "threading", "idle_sessions_closed": 0}


@pytest.mark.integration
def test_healthz_on_an_empty_state(app: Any) -> None:
    """A fresh dashboard reports zero tasks and zero workers, not an error."""
    body = app.test_client().get("/healthz").get_json()
    assert body["tasks"]["retained"] == 0
    assert body["workers"]["online"] == 0


# -- /api/tasks ------------------------------------------------------------------------------------


@pytest.mark.integration
def test_task_list_is_newest_first(app: Any) -> None:
    """Tasks come most recently first seen first, with their total."""
    seed(app)
    body = app.test_client().get("/api/tasks").get_json()
    assert body["total"] == 4
    assert [t["uuid"] for t in body["tasks"]] == ["kid", "retry", "bad", "ok"]
    bad = body["tasks"][2]
    assert bad["name"] == "dashboard.demo.fail"
    assert bad["state"] == "FAILURE"
    assert bad["exception"] == "PaymentDeclined('card 4000 was declined')"
    assert bad["hostname"] == HOST
    ok = body["tasks"][3]
    assert ok["state"] == "SUCCESS" and ok["result"] == "5" and ok["args"] == "(2, 3)"


@pytest.mark.integration
def test_task_list_state_filter(app: Any) -> None:
    """?state= keeps the tasks in that state only; total counts the matches."""
    seed(app)
    client = app.test_client()
    success = client.get("/api/tasks?state=SUCCESS").get_json()
    assert success["total"] == 2
    assert [t["uuid"] for t in success["tasks"]] == ["retry", "ok"]
    assert client.get("/api/tasks?state=REVOKED").get_json() == {"total": 0, "tasks": [], "next_cursor": None}


@pytest.mark.integration
def test_task_list_name_filter_is_a_case_insensitive_substring(app: Any) -> None:
    """?name= matches part of the task name, whatever the case."""
    seed(app)
    client = app.test_client()
    body = client.get("/api/tasks?name=DEMO.ADD").get_json()
    assert body["total"] == 2
    assert [t["uuid"] for t in body["tasks"]] == ["kid", "ok"]
    both = client.get("/api/tasks?name=add&state=RECEIVED").get_json()
    assert [t["uuid"] for t in both["tasks"]] == ["kid"]
    assert both["total"] == 1


@pytest.mark.integration
def test_task_list_worker_filter_and_free_text(app: Any) -> None:
    """?worker= keeps one worker's tasks; ?q= finds a word in uuid, args, kwargs, result or exception."""
    seed(app)
    feed(
        app,
        ev(
            "task-received",
            "other",
            time.time(),
            hostname="w2@box",
            name="dashboard.demo.add",
            args="('invoice-7731',)",
            kwargs="{}",
        ),
    )
    client = app.test_client()
    assert [t["uuid"] for t in client.get("/api/tasks?worker=w2@box").get_json()["tasks"]] == ["other"]
    assert client.get(f"/api/tasks?worker={HOST}").get_json()["total"] == 4
    assert [t["uuid"] for t in client.get("/api/tasks?q=INVOICE-7731").get_json()["tasks"]] == ["other"]
    assert [t["uuid"] for t in client.get("/api/tasks?q=declined").get_json()["tasks"]] == ["bad"]
    assert [t["uuid"] for t in client.get("/api/tasks?q=amount").get_json()["tasks"]] == ["bad"]
    body = client.get("/api/tasks?q=(2,%203)&state=SUCCESS&name=add").get_json()
    assert body == {"total": 1, "tasks": [body["tasks"][0]], "next_cursor": None} and body["tasks"][0]["uuid"] == "ok"
    assert client.get("/api/tasks?q=nowhere").get_json() == {"total": 0, "tasks": [], "next_cursor": None}


@pytest.mark.integration
def test_task_list_refuses_an_overlong_filter(app: Any) -> None:
    resp = app.test_client().get("/api/tasks?q=" + "x" * 201)
    assert resp.status_code == 400 and "q filter" in resp.get_json()["error"]


@pytest.mark.integration
def test_task_list_limit_and_offset(app: Any) -> None:
    """limit and offset page through the list; total stays the number of all matches."""
    seed(app)
    client = app.test_client()
    first = client.get("/api/tasks?limit=2").get_json()
    second = client.get("/api/tasks?limit=2&offset=2").get_json()
    past = client.get("/api/tasks?limit=2&offset=10").get_json()
    assert [t["uuid"] for t in first["tasks"]] == ["kid", "retry"]
    assert [t["uuid"] for t in second["tasks"]] == ["bad", "ok"]
    assert past["tasks"] == []
    assert first["total"] == second["total"] == past["total"] == 4
    filtered = client.get("/api/tasks?state=SUCCESS&limit=1&offset=1").get_json()
    assert filtered["total"] == 2
    assert [t["uuid"] for t in filtered["tasks"]] == ["ok"]


@pytest.mark.integration
@pytest.mark.parametrize(
    "query", ["limit=abc", "limit=0", "limit=501", "limit=-5", "limit=2.5", "limit=", "offset=-1", "offset=x"]
)
def test_task_list_refuses_bad_paging(app: Any, query: str) -> None:
    """A limit outside 1-500 or a negative/non-numeric offset is a 400 with a JSON error."""
    resp = app.test_client().get(f"/api/tasks?{query}")
    assert resp.status_code == 400
    assert resp.is_json
    assert "must be a whole number" in resp.get_json()["error"]


@pytest.mark.integration
@pytest.mark.parametrize("query", ["limit=%C2%B2", "offset=%C2%B2"])
def test_task_list_refuses_superscript_digits(app: Any, query: str) -> None:
    """?limit=² is a bad limit (400 with a JSON error), not a server error."""
    app.config["PROPAGATE_EXCEPTIONS"] = False
    resp = app.test_client().get(f"/api/tasks?{query}")
    assert resp.status_code == 400


# -- /api/tasks/<uuid> -----------------------------------------------------------------------------


@pytest.mark.integration
def test_task_detail_of_a_failure_has_the_traceback_and_history(app: Any) -> None:
    """A failed task shows its exception, full traceback, worker and every event with its time."""
    t0 = seed(app)
    resp = app.test_client().get("/api/tasks/bad")
    assert resp.status_code == 200
    task = resp.get_json()
    assert task["uuid"] == "bad"
    assert task["state"] == "FAILURE"
    assert task["traceback"] == TRACEBACK
    assert task["exception"] == "PaymentDeclined('card 4000 was declined')"
    assert task["worker"] == HOST
    assert task["kwargs"] == "{'amount': 42}"
    assert task["history"] == [
        {"event": "received", "timestamp": t0 + 4},
        {"event": "started", "timestamp": t0 + 5},
        {"event": "failed", "timestamp": t0 + 6},
    ]
    assert task["attempts"] == []
    assert task["children"] == []


@pytest.mark.integration
def test_task_detail_lists_each_retry_attempt(app: Any) -> None:
    """A retried task lists the attempt that failed, with its exception and traceback."""
    t0 = seed(app)
    task = app.test_client().get("/api/tasks/retry").get_json()
    assert task["state"] == "SUCCESS"
    assert task["retries"] == 1
    assert len(task["attempts"]) == 1
    attempt = task["attempts"][0]
    assert attempt["exception"] == "ConnectionError('upstream unavailable on attempt 1')"
    assert "ConnectionError: upstream unavailable" in attempt["traceback"]
    assert attempt["timestamp"] == t0 + 9
    assert [h["event"] for h in task["history"]] == [
        "received",
        "started",
        "retried",
        "received",
        "started",
        "succeeded",
    ]


@pytest.mark.integration
def test_task_detail_lists_children_and_parent(app: Any) -> None:
    """A parent lists its children; the child names its parent and root."""
    seed(app)
    client = app.test_client()
    parent = client.get("/api/tasks/ok").get_json()
    child = client.get("/api/tasks/kid").get_json()
    assert parent["children"] == ["kid"]
    assert parent["client"] == "client@box"
    assert parent["result"] == "5"
    assert child["parent_id"] == "ok" and child["root_id"] == "ok"
    assert child["children"] == []


@pytest.mark.integration
def test_unknown_task_is_a_json_404(app: Any) -> None:
    """A task never seen is a 404 with a JSON error that says so."""
    seed(app)
    resp = app.test_client().get("/api/tasks/0b6f3f1e-never-seen")
    assert resp.status_code == 404
    assert resp.is_json
    assert "0b6f3f1e-never-seen" in resp.get_json()["error"]
    assert "not been seen" in resp.get_json()["error"]


# -- /api/workers ----------------------------------------------------------------------------------


@pytest.mark.integration
def test_workers_with_heartbeat_status(app: Any) -> None:
    """Workers are listed by hostname: a fresh heartbeat is online, a stale one offline."""
    now = time.time()
    feed(app, heartbeat("b@box", now, freq=30.0), heartbeat("a@box", now - 60, freq=2.0))
    workers = app.test_client().get("/api/workers").get_json()["workers"]
    assert [w["hostname"] for w in workers] == ["a@box", "b@box"]
    stale, fresh = workers
    assert fresh["online"] is True
    assert fresh["last_heartbeat"] == now
    assert fresh["freq"] == 30.0
    assert fresh["sw_ver"] == "5.4.0" and fresh["processed"] == 3
    assert stale["online"] is False
    assert stale["last_heartbeat"] == now - 60
    assert stale["heartbeat_age"] >= 60


@pytest.mark.integration
def test_worker_goes_offline_on_worker_offline_event(app: Any) -> None:
    """worker-offline marks a worker offline at once, even with a recent heartbeat."""
    now = time.time()
    feed(
        app,
        heartbeat("a@box", now),
        {"type": "worker-offline", "hostname": "a@box", "timestamp": now + 1, "local_received": now + 1},
    )
    (worker,) = app.test_client().get("/api/workers").get_json()["workers"]
    assert worker["online"] is False
    assert worker["offline_at"] == now + 1


@pytest.mark.integration
def test_workers_count_their_finished_tasks(app: Any) -> None:
    """Each worker counts the tasks it finished, per outcome."""
    seed(app)
    workers = {w["hostname"]: w for w in app.test_client().get("/api/workers").get_json()["workers"]}
    assert workers[HOST]["succeeded"] == 2
    assert workers[HOST]["failed"] == 1


# -- POST /api/launch ------------------------------------------------------------------------------


@pytest.mark.integration
def test_launch_queues_count_tasks(app: Any, queue: redis.Redis) -> None:
    """A valid launch answers the task ids, and exactly that many messages are queued for a worker."""
    resp = app.test_client().post(
        "/api/launch", json={"unregistered_ok": True, "task": "dashboard.demo.add", "args": [2, 3], "count": 3}
    )
    assert resp.status_code == 200, resp.get_data(as_text=True)
    ids = resp.get_json()["task_ids"]
    assert len(ids) == len(set(ids)) == 3
    assert queue.llen("celery") == 3
    messages = queued(queue)
    assert [m["id"] for m in messages] == ids
    assert all(m["task"] == "dashboard.demo.add" and m["args"] == [2, 3] and m["kwargs"] == {} for m in messages)
    assert all(m["eta"] is None for m in messages)


@pytest.mark.integration
def test_launch_accepts_form_style_strings(app: Any, queue: redis.Redis) -> None:
    """The API also takes args/kwargs/count/countdown as strings, as the page's form sends them."""
    resp = app.test_client().post(
        "/api/launch",
        json={
            "unregistered_ok": True,
            "task": "dashboard.demo.progress",
            "args": "",
            "kwargs": '{"steps": 2}',
            "count": "2",
            "countdown": "30",
        },
    )
    assert resp.status_code == 200, resp.get_data(as_text=True)
    messages = queued(queue)
    assert [m["id"] for m in messages] == resp.get_json()["task_ids"]
    assert all(m["kwargs"] == {"steps": 2} and m["args"] == [] for m in messages)
    assert all(m["eta"] is not None for m in messages)  # countdown -> an ETA the worker waits for


@pytest.mark.integration
def test_launch_with_errors_queues_nothing(app: Any, queue: redis.Redis) -> None:
    """Any bad field is a 400 with per-field errors, and not one task is sent."""
    before = queue.llen("celery")
    resp = app.test_client().post(
        "/api/launch",
        json={
            "unregistered_ok": True,
            "task": "dashboard.demo.add",
            "args": "[2, 3",
            "kwargs": [],
            "count": 5000,
            "countdown": -1,
        },
    )
    assert resp.status_code == 400
    errors = resp.get_json()["fields"]
    assert resp.get_json()["error"].startswith("nothing was sent: ")
    assert set(errors) == {"args", "kwargs", "count", "countdown"}
    assert errors["args"].startswith("not valid JSON")
    assert queue.llen("celery") == before == 0


@pytest.mark.integration
def test_launch_arity_error_queues_nothing(app: Any, queue: redis.Redis) -> None:
    """A call the worker would reject with TypeError is refused before anything is sent."""
    resp = app.test_client().post(
        "/api/launch", json={"unregistered_ok": True, "task": "dashboard.demo.add", "args": [1], "count": 10}
    )
    assert resp.status_code == 400
    assert resp.get_json() == {
        "error": "nothing was sent: args: missing required argument(s): y",
        "fields": {"args": "missing required argument(s): y"},
    }
    assert queue.llen("celery") == 0


@pytest.mark.integration
def test_launch_requires_json(app: Any, queue: redis.Redis) -> None:
    """A form-encoded or text body is a 415 that says to send JSON; nothing is queued."""
    client = app.test_client()
    form = client.post("/api/launch", data={"task": "dashboard.demo.add", "args": "[2, 3]"})
    text = client.post("/api/launch", data='{"task": "dashboard.demo.add", "args": [2, 3]}', content_type="text/plain")
    for resp in (form, text):
        assert resp.status_code == 415
        assert "application/json" in resp.get_json()["error"]
    assert queue.llen("celery") == 0


@pytest.mark.integration
@pytest.mark.parametrize(
    "payload", ['[{"task": "dashboard.demo.add"}]', '"dashboard.demo.add"', "42", "null", "{not json"]
)
def test_launch_body_must_be_a_json_object(app: Any, queue: redis.Redis, payload: str) -> None:
    """JSON that is not an object (or broken JSON) is a 400 on the whole form; nothing is queued."""
    resp = app.test_client().post("/api/launch", data=payload, content_type="application/json")
    assert resp.status_code == 400
    assert resp.get_json() == {
        "error": "the body must be a JSON object",
        "fields": {"form": "the body must be a JSON object"},
    }
    assert queue.llen("celery") == 0


@pytest.mark.integration
@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "http://localhost.evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
def test_cross_origin_launch_is_refused(app: Any, queue: redis.Redis, headers: dict[str, str]) -> None:
    """Another site cannot make the browser launch tasks: 403 and nothing queued."""
    resp = app.test_client().post(
        "/api/launch", json={"unregistered_ok": True, "task": "dashboard.demo.add", "args": [2, 3]}, headers=headers
    )
    assert resp.status_code == 403
    assert "cross-origin" in resp.get_json()["error"]
    assert queue.llen("celery") == 0


@pytest.mark.integration
@pytest.mark.parametrize(
    "headers", [{"Origin": "http://localhost"}, {"Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"}]
)
def test_same_origin_launch_is_allowed(app: Any, queue: redis.Redis, headers: dict[str, str]) -> None:
    """The dashboard's own page (same Origin) and curl-like clients can launch."""
    resp = app.test_client().post(
        "/api/launch", json={"unregistered_ok": True, "task": "dashboard.demo.add", "args": [2, 3]}, headers=headers
    )
    assert resp.status_code == 200
    assert queue.llen("celery") == 1


@pytest.mark.integration
def test_launch_when_the_broker_is_down_is_a_503(redis_server: RedisServer) -> None:
    """With no broker listening the launch fails fast with a 503 that says so, instead of hanging; the
    attempt is in the audit log with the error."""
    from dashboard import create_app

    down = create_app(
        {
            "ASYNC_MODE": "threading",
            "INGEST_ENABLED": False,
            "BROKER_URL": f"redis://127.0.0.1:{free_port()}/0",
            "LAUNCH_TIMEOUT": 1.0,
        }
    )
    try:
        started = time.monotonic()
        resp = down.test_client().post(
            "/api/launch", json={"unregistered_ok": True, "task": "dashboard.demo.add", "args": [2, 3]}
        )
        assert time.monotonic() - started < 10
        assert resp.status_code == 503
        body = resp.get_json()
        assert "broker is unreachable" in body["error"]
        assert body["task_ids"] == []
        [entry] = down.test_client().get("/api/audit").get_json()["entries"]
        assert entry["id"] == body["audit_id"] and entry["action"] == "launch" and entry["ok"] is False
        assert entry["message"] == body["error"] and entry["params"]["task_ids"] == []
    finally:
        down.extensions["dashboard"].stop()


@pytest.mark.integration
def test_launch_with_a_url_kombu_cannot_use_is_a_503_not_a_500(redis_server: RedisServer) -> None:
    """A broker URL kombu refuses (a malformed password) fails the launch with a 503 saying why, audited,
    without the password fragment kombu's error quotes."""
    from dashboard import create_app

    app = create_app({"INGEST_ENABLED": False, "BROKER_URL": f"redis://:Fr4gment/Tail5ecret@127.0.0.1:{free_port()}/0"})
    try:
        resp = app.test_client().post(
            "/api/launch", json={"unregistered_ok": True, "task": "dashboard.demo.add", "args": [2, 3]}
        )
        assert resp.status_code == 503
        error = resp.get_json()["error"]
        assert error == (
            "sending to the broker failed: 0 of 1 task(s) sent "
            "(ValueError: Port could not be cast to integer value as '***')"
        )
        assert app.test_client().get("/api/audit").get_json()["entries"][0]["message"] == error
    finally:
        app.extensions["dashboard"].stop()


def _audit(client: Any) -> list[dict[str, Any]]:
    return client.get("/api/audit").get_json()["entries"]


@pytest.mark.integration
def test_api_launch_is_audited_once_with_who_where_what_and_the_task_ids(app: Any, queue: redis.Redis) -> None:
    """One entry per launch request: anonymous (no auth), the address, the task, the count and countdown, and
    exactly the ids that were queued; the answer links to it."""
    client = app.test_client()
    resp = client.post(
        "/api/launch",
        json={"unregistered_ok": True, "task": "dashboard.demo.add", "args": [2, 3], "count": 3, "countdown": 60},
        environ_base={"REMOTE_ADDR": "203.0.113.7"},
    )
    assert resp.status_code == 200
    ids, audit_id = resp.get_json()["task_ids"], resp.get_json()["audit_id"]
    assert [m["id"] for m in queued(queue)] == ids
    [entry] = _audit(client)
    assert abs(entry.pop("time") - time.time()) < 5
    assert entry == {
        "id": audit_id,
        "user": None,
        "remote_addr": "203.0.113.7",
        "action": "launch",
        "target": "dashboard.demo.add",
        "ok": True,
        "replies": {},
        # No worker in this test: the API sends it anyway, with a warning, and the entry says so.
        "params": {"count": 3, "countdown": 60.0, "via": "api", "unregistered": True, "task_ids": ids},
        "message": "sent 3 × dashboard.demo.add with a 60 s countdown",
    }
    client.post("/api/launch", json={"unregistered_ok": True, "task": "dashboard.demo.fail"})
    assert [e["action"] for e in _audit(client)] == ["launch", "launch"]  # one per request


@pytest.mark.integration
def test_launch_by_a_signed_in_user_is_audited_under_their_name_and_in_the_file(
    redis_server: RedisServer, queue: redis.Redis, tmp_path: Any
) -> None:
    """With auth, the entry names the user (or "token"); AUDIT_LOG gets the same entry as a JSON line."""
    from dashboard import create_app

    path = tmp_path / "audit.jsonl"
    app = create_app(
        {
            "INGEST_ENABLED": False,
            "BROKER_URL": redis_server.url_db(1),
            "AUDIT_LOG": str(path),
            "AUTH_USERS": "ada:correct horse",
            "AUTH_TOKEN": "t0k3n-for-the-api",
        }
    )
    try:
        client = app.test_client()
        ada = {"Authorization": "Basic " + base64.b64encode(b"ada:correct horse").decode()}
        assert (
            client.post(
                "/api/launch", json={"unregistered_ok": True, "task": "dashboard.demo.add", "args": [1, 1]}, headers=ada
            ).status_code
            == 200
        )
        assert (
            client.post(
                "/api/launch",
                json={"unregistered_ok": True, "task": "dashboard.demo.add", "args": [1, 2]},
                headers={"Authorization": "Bearer t0k3n-for-the-api"},
            ).status_code
            == 200
        )
        entries = client.get("/api/audit", headers=ada).get_json()["entries"]
        assert [e["user"] for e in entries] == ["token", "ada"]
        assert [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] == entries[::-1]
        assert len(queued(queue)) == 2
    finally:
        app.extensions["dashboard"].stop()


@pytest.mark.integration
@pytest.mark.parametrize(
    "body, field",
    [
        ({"task": "os.system", "args": ["rm -rf /"]}, "task"),
        ({"task": "dashboard.demo.add", "args": "[1,"}, "args"),
        ({"task": "dashboard.demo.add", "args": [1, 2], "count": 0}, "count"),
        ({"task": "dashboard.demo.add", "args": [1]}, "args"),
    ],
)
def test_refused_launch_sends_nothing_says_why_and_is_not_audited(
    app: Any, queue: redis.Redis, body: dict[str, Any], field: str
) -> None:
    """Bad input: 400 naming the field and why, nothing queued, no audit entry (nothing changed)."""
    client = app.test_client()
    resp = client.post("/api/launch", json=body)
    assert resp.status_code == 400
    assert resp.get_json()["fields"][field] and field in resp.get_json()["error"]
    assert queue.llen("celery") == 0
    assert _audit(client) == []


# -- task data is data ---------------------------------------------------------------------------


@pytest.mark.integration
def test_html_in_task_data_comes_back_verbatim_as_json(app: Any) -> None:
    """Markup in task names, args, exceptions and tracebacks is returned unchanged, as JSON strings."""
    name = "<script>alert('name')</script>"
    args = "('<img src=x onerror=alert(1)>',)"
    exc = 'ValueError("</pre><script>alert(2)</script>")'
    tb = "Traceback (most recent call last):\n<b>bold</b> & <i>more</i>\n"
    feed(
        app,
        ev("task-received", "xss", 1.0, name=name, args=args, kwargs="{'k': '\"&amp;'}"),
        ev("task-failed", "xss", 2.0, exception=exc, traceback=tb),
    )
    client = app.test_client()
    listed = client.get("/api/tasks")
    detail = client.get("/api/tasks/xss")
    for resp in (listed, detail):
        assert resp.mimetype == "application/json"  # a browser never renders it as HTML
    row = listed.get_json()["tasks"][0]
    assert (row["name"], row["args"], row["exception"]) == (name, args, exc)
    task = detail.get_json()
    assert (task["name"], task["args"], task["kwargs"], task["exception"], task["traceback"]) == (
        name,
        args,
        "{'k': '\"&amp;'}",
        exc,
        tb,
    )
    assert "&lt;" not in detail.get_data(as_text=True)
    failures = client.get("/api/overview").get_json()["failures"]
    assert failures[0]["name"] == name


@pytest.mark.integration
def test_unknown_api_path_is_a_json_404(app: Any) -> None:
    """Tooling that mistypes an endpoint gets a JSON error naming the path, not an HTML page."""
    resp = app.test_client().get("/api/nope")
    assert resp.status_code == 404
    assert resp.get_json() == {"error": "no such endpoint: /api/nope"}
    assert app.test_client().get("/nope").mimetype == "text/html"


@pytest.mark.integration
def test_cursor_pages_stay_put_while_new_tasks_arrive(app: Any) -> None:
    """Page 2 fetched with page 1's next_cursor is the same whatever arrived in between."""
    t0 = time.time() - 100
    feed(app, *[ev("task-received", f"t{i}", t0 + i, name="proj.job") for i in range(7)])
    client = app.test_client()
    first = client.get("/api/tasks?limit=3").get_json()
    assert [t["uuid"] for t in first["tasks"]] == ["t6", "t5", "t4"] and first["next_cursor"]
    feed(app, *[ev("task-received", f"new{i}", t0 + 50 + i, name="proj.job") for i in range(5)])
    second = client.get(f"/api/tasks?limit=3&cursor={first['next_cursor']}").get_json()
    assert [t["uuid"] for t in second["tasks"]] == ["t3", "t2", "t1"]
    assert second["total"] == 12, "the total is of the filter, not of what is left below the cursor"
    last = client.get(f"/api/tasks?limit=3&cursor={second['next_cursor']}").get_json()
    assert [t["uuid"] for t in last["tasks"]] == ["t0"] and last["next_cursor"] is None


@pytest.mark.integration
def test_sort_by_runtime_queue_and_time_filters(app: Any) -> None:
    t0 = time.time() - 3600
    feed(
        app,
        ev("task-sent", "slow", t0, hostname="client@box", name="proj.a", queue="video"),
        ev("task-received", "slow", t0 + 1, name="proj.a"),
        ev("task-succeeded", "slow", t0 + 9, runtime=8.0),
        ev("task-received", "fast", t0 + 2000, name="proj.a"),
        ev("task-succeeded", "fast", t0 + 2001, runtime=0.5),
        ev("task-received", "unfinished", t0 + 3000, name="proj.a"),
    )
    client = app.test_client()
    by_runtime = client.get("/api/tasks?sort=runtime").get_json()
    assert [t["uuid"] for t in by_runtime["tasks"]] == ["slow", "fast", "unfinished"]
    assert by_runtime["next_cursor"] is None
    ascending = client.get("/api/tasks?sort=runtime&order=asc").get_json()
    assert [t["uuid"] for t in ascending["tasks"]] == ["fast", "slow", "unfinished"], "no runtime sorts last"
    assert [t["uuid"] for t in client.get("/api/tasks?queue=video").get_json()["tasks"]] == ["slow"]
    assert [t["uuid"] for t in client.get("/api/tasks?since=30m").get_json()["tasks"]] == ["unfinished", "fast"]
    assert [t["uuid"] for t in client.get(f"/api/tasks?until={t0 + 100}").get_json()["tasks"]] == ["slow"]
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t0 + 1500))
    assert [t["uuid"] for t in client.get(f"/api/tasks?since={iso}Z").get_json()["tasks"]] == ["unfinished", "fast"]


@pytest.mark.integration
def test_failed_task_runtime_is_derived_and_labelled_the_same_everywhere(app: Any) -> None:
    """task-failed carries no runtime: `runtime` stays what the worker reported (null) and
    `runtime_derived` (started → failed) is the same in the list, the task page's API, the export and
    the runtime sort."""
    import csv
    import io

    seed(app)  # "bad" started at t0 + 5 and failed at t0 + 6; "ok" ran 1.0 s, "retry" 0.1 s
    client = app.test_client()
    row = next(t for t in client.get("/api/tasks").get_json()["tasks"] if t["uuid"] == "bad")
    assert row["runtime"] is None and row["runtime_derived"] == pytest.approx(1.0)
    ok = next(t for t in client.get("/api/tasks").get_json()["tasks"] if t["uuid"] == "ok")
    assert ok["runtime"] == 1.0 and ok["runtime_derived"] is None, "a reported runtime is never derived"
    detail = client.get("/api/tasks/bad").get_json()
    assert detail["runtime"] is None and detail["runtime_derived"] == pytest.approx(1.0)
    exported = list(csv.DictReader(io.StringIO(client.get("/api/tasks/export?state=FAILURE").get_data(as_text=True))))
    assert exported[0]["runtime"] == "" and float(exported[0]["runtime_derived"]) == pytest.approx(1.0)
    by_runtime = [t["uuid"] for t in client.get("/api/tasks?sort=runtime&order=asc").get_json()["tasks"]]
    assert by_runtime[0] == "retry" and set(by_runtime[1:3]) == {"ok", "bad"}, (
        "a failed task sorts by its derived runtime"
    )


@pytest.mark.integration
@pytest.mark.parametrize(
    "query, message",
    [
        ("sort=name", "sort must be one of"),
        ("order=up", "order must be"),
        ("cursor=abc", "cursor must be"),
        ("sort=runtime&cursor=5", "cursor must be"),
        ("since=yesterday", "since filter must be"),
        ("until=nan", "until filter must be"),
    ],
)
def test_task_list_refuses_bad_order_and_time(app: Any, query: str, message: str) -> None:
    resp = app.test_client().get(f"/api/tasks?{query}")
    assert resp.status_code == 400 and message in resp.get_json()["error"]


@pytest.mark.integration
def test_export_downloads_the_filtered_set_as_csv_and_json(app: Any) -> None:
    """Export has every matching task (not one page), as a download; formula-like cells are defused."""
    import csv
    import io

    seed(app)
    feed(
        app,
        ev(
            "task-failed",
            "evil",
            time.time(),
            name="dashboard.demo.fail",
            args="('=HYPERLINK(1)',)",
            exception="=cmd|' /C calc'!A0",
        ),
    )
    client = app.test_client()
    resp = client.get("/api/tasks/export?format=csv&state=FAILURE")
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    assert resp.headers["Content-Disposition"].startswith('attachment; filename="tasks-')
    rows = list(csv.DictReader(io.StringIO(resp.get_data(as_text=True))))
    assert [r["uuid"] for r in rows] == ["evil", "bad"]
    assert rows[0]["exception"] == "'=cmd|' /C calc'!A0" and rows[0]["args"] == "('=HYPERLINK(1)',)"
    assert rows[1]["exception"].startswith("PaymentDeclined")
    data = client.get("/api/tasks/export?format=json&name=demo.add").get_json()
    assert [r["uuid"] for r in data] == ["kid", "ok"] and data[1]["result"] == "5"
    many = client.get("/api/tasks/export?format=json").get_json()
    assert len(many) == 5, "export is not limited to one page"
    assert client.get("/api/tasks/export?format=xml").status_code == 400


# A cell a spreadsheet would run as a formula: one of these at its start (tab and CR only at the very start:
# after a separator a tab is itself a separator).
FORMULA_START = re.compile(r'(?:\A|(?<=[,;\t\r\n]))"*[=+\-@]|\A[\t\r]')
HOSTILE = {
    "args": "('a;=1+1', 'b,+2', 'c\t@SUM(A1)', 'd\n-2+3+cmd', 'e;\"=1+1\"')",
    "kwargs": "{'note': 'line\\r\\n=ok', 'x': 'y;-1'}",
    "result": 'total;=HYPERLINK("http://evil.example","x")',
    "exception": "=cmd|' /C calc'!A0",
}


def _segments(cell: str) -> list[str]:
    # What a reader with another separator (or ignoring quotes) may take for a cell.
    return re.split(r"[,;\t\r\n]", cell)


@pytest.mark.integration
@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_export_csv_runs_no_formula_in_any_locale(app: Any, delimiter: str) -> None:
    """Read with the separator of a ',' , ';' or tab locale, no cell and no segment of a cell starts with a
    formula character (the raw text neither, for readers that ignore quotes)."""
    import csv
    import io

    feed(app, ev("task-failed", "hostile", time.time(), name="dashboard.demo.fail", **HOSTILE))
    body = app.test_client().get("/api/tasks/export?format=csv").get_data(as_text=True)
    assert FORMULA_START.search(body) is None  # the raw text: for readers that ignore quotes
    rows = list(csv.reader(io.StringIO(body, newline=""), delimiter=delimiter))
    assert len(rows) >= 2
    for row in rows:
        for cell in row:
            for segment in [cell, *_segments(cell)]:
                assert not re.match(r'"*[=+\-@]', segment), (delimiter, cell)


@pytest.mark.integration
def test_export_csv_quotes_every_separator_and_stays_readable(app: Any) -> None:
    """Read back as ',' CSV each field is one cell holding its text, with only a ' before each formula start."""
    import csv
    import io

    feed(app, ev("task-failed", "hostile", time.time(), name="dashboard.demo.fail", **HOSTILE))
    body = app.test_client().get("/api/tasks/export?format=csv").get_data(as_text=True)
    # Every cell holding ; or a tab is quoted (QUOTE_MINIMAL would leave it bare for a ';' locale to split).
    assert '"total;\'=HYPERLINK(""http://evil.example"",""x"")"' in body
    [row] = list(csv.DictReader(io.StringIO(body, newline="")))
    assert row["args"] == "('a;'=1+1', 'b,'+2', 'c\t'@SUM(A1)', 'd\n'-2+3+cmd', 'e;\"'=1+1\"')"
    assert row["kwargs"] == "{'note': 'line\\r\\n=ok', 'x': 'y;'-1'}"  # an escaped \\r\\n is text, not a line break
    assert row["result"] == 'total;\'=HYPERLINK("http://evil.example","x")'
    assert row["exception"] == "'=cmd|' /C calc'!A0"
    assert row["name"] == "dashboard.demo.fail" and row["state"] == "FAILURE" and row["uuid"] == "hostile"


@pytest.mark.unit
@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("=+-@;,\t\r\n\"' aZ1(|"), max_size=30))
def test_a_csv_cell_only_ever_gains_apostrophes(text: str) -> None:
    """Any text: read back (',' CSV) it is one cell, equal to the text but for apostrophes put before formula
    starts, and none of its segments starts a formula."""
    import csv
    import io

    from dashboard.web.api import _csv_cell

    field = _csv_cell(text)
    [[cell]] = list(csv.reader(io.StringIO(f"{field}\r\n", newline=""))) if field else [[""]]
    assert cell.replace("'", "") == text.replace("'", "")
    assert FORMULA_START.search(field) is None
    assert FORMULA_START.search(cell) is None


def _tb(frame_line: int, func: str, exc: str) -> str:
    return (
        "Traceback (most recent call last):\n"
        '  File "/usr/lib/python3/dist-packages/celery/app/trace.py", line 453, in trace_task\n'
        "    R = retval = fun(*args, **kwargs)\n"
        f'  File "/srv/app/shop/payments.py", line {frame_line}, in {func}\n'
        "    gateway.charge(card)\n"
        f"{exc}\n"
    )


@pytest.mark.integration
def test_failures_are_grouped_and_listed_with_their_tasks(app: Any) -> None:
    """Same exception type, message shape and app frame: one group, whose tasks the task list filters to."""
    now = time.time()
    feed(
        app,
        ev(
            "task-failed",
            "f1",
            now - 30,
            name="shop.charge",
            exception="CardDeclined('card 4000-0002 for 42 EUR')",
            traceback=_tb(88, "charge", "CardDeclined: card 4000-0002 for 42 EUR"),
        ),
        ev(
            "task-failed",
            "f2",
            now - 20,
            name="shop.charge",
            exception="CardDeclined('card 4111-9999 for 7 EUR')",
            traceback=_tb(91, "charge", "CardDeclined: card 4111-9999 for 7 EUR"),
            hostname="w2@box",
        ),
        ev(
            "task-failed",
            "f3",
            now - 10,
            name="shop.refund",
            exception="KeyError('sku-1')",
            traceback=_tb(12, "refund", "KeyError: 'sku-1'"),
        ),
    )
    client = app.test_client()
    body = client.get("/api/failures?sort=count").get_json()
    assert body["outcomes"]["FAILURE"] == 3
    top, other = body["groups"]
    assert (top["exc_type"], top["count"], top["frame"]) == ("CardDeclined", 2, "shop/payments.py:charge")
    assert top["workers"] == {HOST: 1, "w2@box": 1} and top["task_names"] == {"shop.charge": 2}
    assert other["exc_type"] == "KeyError" and other["count"] == 1
    listed = client.get(f"/api/tasks?group={top['id']}").get_json()
    assert [t["uuid"] for t in listed["tasks"]] == ["f2", "f1"] and listed["total"] == 2
    detail = client.get(f"/api/failures/{top['id']}").get_json()
    assert "CardDeclined" in detail["sample"]["traceback"]
    assert client.get("/api/failures/nope").status_code == 404
    assert client.get("/api/failures?sort=size").status_code == 400


@pytest.mark.integration
def test_recovered_and_gave_up_outcomes_are_counted_and_filterable(app: Any) -> None:
    t0 = time.time() - 60
    retried = dict(exception="ConnectionError('down')", traceback=_tb(5, "call", "ConnectionError: down"))
    feed(
        app,
        ev("task-received", "rec", t0, name="api.call"),
        ev("task-started", "rec", t0 + 1),
        ev("task-retried", "rec", t0 + 2, **retried),
        ev("task-received", "rec", t0 + 3, retries=1),
        ev("task-started", "rec", t0 + 4),
        ev("task-succeeded", "rec", t0 + 5, result="1", runtime=0.1),
        ev("task-received", "gave", t0, name="api.call"),
        ev("task-started", "gave", t0 + 1),
        ev("task-retried", "gave", t0 + 2, **retried),
        ev("task-received", "gave", t0 + 3, retries=1),
        ev("task-started", "gave", t0 + 4),
        ev("task-failed", "gave", t0 + 5, **retried),
        ev("task-succeeded", "plain", t0 + 5, name="api.call"),
    )
    client = app.test_client()
    outcomes = client.get("/api/failures").get_json()["outcomes"]
    assert outcomes == {"FAILURE": 1, "RETRY": 2, "RECOVERED": 1, "GAVE_UP": 1}
    assert [t["uuid"] for t in client.get("/api/tasks?outcome=recovered").get_json()["tasks"]] == ["rec"]
    assert [t["uuid"] for t in client.get("/api/tasks?outcome=gave_up").get_json()["tasks"]] == ["gave"]
    assert client.get("/api/tasks?outcome=won").status_code == 400


@pytest.mark.integration
def test_each_failure_group_counts_its_outcomes(app: Any) -> None:
    """A group whose tasks all retried and recovered tells itself apart from one with real failures."""
    t0 = time.time() - 60
    flaky = dict(exception="TimeoutError('slow upstream')", traceback=_tb(7, "fetch", "TimeoutError: slow upstream"))
    broken = dict(exception="KeyError('sku')", traceback=_tb(9, "price", "KeyError: 'sku'"))
    events = []
    for uid in ("r1", "r2"):  # retried once, then succeeded
        events += [
            ev("task-received", uid, t0, name="api.fetch"),
            ev("task-started", uid, t0 + 1),
            ev("task-retried", uid, t0 + 2, **flaky),
            ev("task-started", uid, t0 + 3),
            ev("task-succeeded", uid, t0 + 4, result="1", runtime=0.1),
        ]
    events += [  # retried (flaky), then failed for good (broken); and one plain failure
        ev("task-received", "g1", t0, name="api.price"),
        ev("task-started", "g1", t0 + 1),
        ev("task-retried", "g1", t0 + 2, **flaky),
        ev("task-started", "g1", t0 + 3),
        ev("task-failed", "g1", t0 + 4, **broken),
        ev("task-received", "f1", t0, name="api.price"),
        ev("task-started", "f1", t0 + 1),
        ev("task-failed", "f1", t0 + 2, **broken),
    ]
    feed(app, *events)
    groups = {g["exc_type"]: g["outcomes"] for g in app.test_client().get("/api/failures").get_json()["groups"]}
    assert groups["TimeoutError"] == {"FAILURE": 0, "RETRY": 3, "RECOVERED": 2, "GAVE_UP": 0}
    assert groups["KeyError"] == {"FAILURE": 2, "RETRY": 0, "RECOVERED": 0, "GAVE_UP": 1}


@pytest.mark.integration
def test_stats_per_task_name(app: Any) -> None:
    """Per task name: finished, failure rate, runtime and queue-wait percentiles, in two windows."""
    now = time.time()
    events = []
    for i in range(20):
        uid = f"s{i}"
        events += [
            ev("task-received", uid, now - 50 + i, name="img.resize"),
            ev("task-started", uid, now - 49.5 + i),
        ]  # 0.5 s in the queue
        if i % 4 == 3:
            events.append(ev("task-failed", uid, now - 49 + i, exception="OSError('disk full')"))
        else:
            events.append(ev("task-succeeded", uid, now - 49 + i, runtime=0.2 if i % 2 else 0.4))
    feed(app, *events)
    client = app.test_client()
    body = client.get("/api/stats/tasks").get_json()
    (row,) = body["tasks"]
    assert (row["name"], row["count"], row["failed"], row["succeeded"]) == ("img.resize", 20, 5, 15)
    assert row["failure_rate"] == pytest.approx(0.25)
    assert row["queue_wait"]["p50"] == pytest.approx(0.5, rel=0.06)
    assert 0.19 <= row["runtime"]["p50"] <= 0.42 and row["runtime"]["max"] == pytest.approx(0.5)
    recent = client.get("/api/stats/tasks?window=recent").get_json()
    assert recent["window"] == "recent" and recent["tasks"][0]["count"] == 20
    assert client.get("/api/stats/tasks?window=week").status_code == 400


@pytest.mark.integration
def test_oversized_fields_are_shortened_for_display_and_whole_on_request(app: Any) -> None:
    """A 100 kB traceback: the detail shows 10 000 characters and says how long it is; the field endpoint
    and ?full=1 give the whole value, as plain text that a browser will not run."""
    from dashboard.core.records import DISPLAY_CHARS

    tb = "Traceback (most recent call last):\n" + "  <script>alert(1)</script> frame\n" * 3000
    feed(
        app,
        ev("task-received", "big", 1.0, name="t.big", args="('x',)"),
        ev("task-failed", "big", 2.0, exception="ValueError('big')", traceback=tb),
    )
    client = app.test_client()
    detail = client.get("/api/tasks/big").get_json()
    assert len(detail["traceback"]) == DISPLAY_CHARS + 1 and detail["truncated"] == {"traceback": len(tb)}
    assert client.get("/api/tasks/big?full=1").get_json()["traceback"] == tb
    resp = client.get("/api/tasks/big/fields/traceback")
    assert resp.status_code == 200 and resp.get_data(as_text=True) == tb
    assert resp.mimetype == "text/plain" and resp.headers["X-Content-Type-Options"] == "nosniff"
    assert client.get("/api/tasks/big/fields/hostname").status_code == 404
    assert client.get("/api/tasks/nope/fields/traceback").status_code == 404


@pytest.mark.integration
def test_fields_beyond_the_storage_cap_are_cut_with_a_note(app: Any) -> None:
    from dashboard.core.records import MAX_FIELD_CHARS

    huge = "r" * (MAX_FIELD_CHARS + 5000)
    feed(app, ev("task-succeeded", "huge", 1.0, result=huge))
    kept = app.test_client().get("/api/tasks/huge/fields/result").get_data(as_text=True)
    assert kept.startswith("r" * MAX_FIELD_CHARS) and f"{len(huge):,} characters in all" in kept
    assert len(kept) < MAX_FIELD_CHARS + 100


@pytest.mark.integration
def test_a_task_no_online_worker_has_is_launched_by_the_api_only_once_confirmed(app: Any, queue: redis.Redis) -> None:
    """No worker here has dashboard.demo.add registered: the API says so and sends nothing until the body
    confirms it (`unregistered_ok`), then sends it with the same warning in its answer."""
    client = app.test_client()
    refused = client.post("/api/launch", json={"task": "dashboard.demo.add", "args": [2, 3]})
    assert refused.status_code == 400 and refused.get_json()["confirm"] == "unregistered_ok"
    assert refused.get_json()["fields"]["task"].startswith("No online worker has registered dashboard.demo.add")
    assert queue.llen("celery") == 0
    sent = client.post("/api/launch", json={"task": "dashboard.demo.add", "args": [2, 3], "unregistered_ok": True})
    assert sent.status_code == 200 and "No online worker" in sent.get_json()["warning"]
    assert queue.llen("celery") == 1
