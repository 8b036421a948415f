"""Control API: every action against a real worker and Redis does what it says, shows the workers'
replies and lands in the audit log (and its file); bad input gets a clear 400 and is not audited."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import WORK_SECONDS, DashboardServer, RedisServer, feed, wait_for

from dashboard import create_app
from dashboard.processes import free_port, start_worker, stop_process

BULK_MAX = 4


# -- without a worker: validation, 404, 503, refusals ------------------------------------------------
def _known(app: Any) -> None:
    now = time.time()
    feed(
        app,
        {"type": "worker-heartbeat", "hostname": "w1@h", "timestamp": now, "local_received": now, "freq": 2.0},
        {
            "type": "task-received",
            "uuid": "t-1",
            "name": "dashboard.demo.add",
            "args": "(1, 2)",
            "kwargs": "{}",
            "hostname": "w1@h",
            "timestamp": now,
            "local_received": now,
        },
        {
            "type": "task-received",
            "uuid": "t-2",
            "name": "x.y",
            "args": "(<Foo object at 0x1>,)",
            "kwargs": "{}",
            "hostname": "w1@h",
            "timestamp": now,
            "local_received": now,
        },
    )


@pytest.mark.integration
@pytest.mark.parametrize(
    "path, body, status, fragment",
    [
        ("/api/workers/w1@h/control", {"action": "explode"}, 400, "action must be one of"),
        ("/api/workers/w1@h/control", {"action": "pool_grow", "n": 100}, 400, "n must be a whole number from 1 to 64"),
        ("/api/workers/w1@h/control", {"action": "add_consumer", "queue": ""}, 400, "queue must be a non-empty string"),
        ("/api/workers/w1@h/control", [1, 2], 400, "the body must be a JSON object"),
        ("/api/workers/nobody@h/control", {"action": "pool_grow", "n": 1}, 404, "worker nobody@h has not been seen"),
        ("/api/task-types/control", {"action": "rate_limit", "task": "t", "rate": "lots"}, 400, "rate must be like"),
        ("/api/task-types/control", {"action": "time_limit", "task": "t", "hard": 100000}, 400, "at most 86400"),
        ("/api/tasks/t-1/revoke", {"terminate": True, "signal": "SIGSTOP"}, 400, "signal must be one of"),
        ("/api/tasks/nope/revoke", {}, 404, "task nope has not been seen"),
        ("/api/tasks/t-2/rerun", {}, 400, "cannot re-run: the args repr is not a Python literal"),
        ("/api/tasks/nope/rerun", {}, 404, "has not been seen"),
        ("/api/bulk", {"action": "purge", "filters": {}}, 400, "action must be rerun or revoke"),
        ("/api/bulk", {"action": "rerun"}, 400, 'send either "group"'),
        ("/api/bulk", {"action": "rerun", "group": "g", "filters": {}}, 400, 'send either "group"'),
        (
            "/api/bulk",
            {"action": "rerun", "group": "no-such-group", "dry_run": True},
            404,
            "no failure group no-such-group",
        ),
        (
            "/api/bulk",
            {"action": "rerun", "filters": {"state": 5}, "dry_run": True},
            400,
            "the state filter must be a string",
        ),
        (
            "/api/bulk",
            {"action": "rerun", "filters": {}, "dry_run": False, "limit": 501},
            400,
            "limit must be the confirmed count",
        ),
        ("/api/bulk", {"action": "rerun", "filters": {}, "dry_run": False}, 400, "limit must be the confirmed count"),
        (
            "/api/bulk",
            {"action": "revoke", "filters": {}, "dry_run": "no"},
            400,
            "dry_run and terminate must be true or false",
        ),
        (
            "/api/bulk",
            {"action": "revoke", "filters": {"status": "FAILURE"}, "dry_run": True},
            400,
            "unknown filter(s) 'status'",
        ),
        ("/api/bulk", {"action": "revoke", "filters": {}, "dry_run": True, "cursor": "x"}, 400, "cursor must be"),
    ],
)
def test_bad_requests_get_clear_errors_and_are_not_audited(
    app: Any, path: str, body: Any, status: int, fragment: str
) -> None:
    _known(app)
    client = app.test_client()
    resp = client.post(path, json=body)
    assert resp.status_code == status, resp.get_json()
    assert fragment in resp.get_json()["error"]
    assert client.get("/api/audit").get_json() == {"entries": []}


@pytest.mark.integration
def test_a_bulk_run_acts_on_the_tasks_its_dry_run_counted(app: Any) -> None:
    """Tasks that arrive between the dry run and the confirmation are left alone (the cursor)."""
    _known(app)
    client = app.test_client()
    dry = client.post(
        "/api/bulk", json={"action": "revoke", "filters": {"state": "RECEIVED"}, "dry_run": True}
    ).get_json()
    assert dry["will_act_on"] == 2 and isinstance(dry["cursor"], int)
    now = time.time()
    feed(
        app,
        {
            "type": "task-received",
            "uuid": "t-late",
            "name": "dashboard.demo.add",
            "args": "(3, 4)",
            "kwargs": "{}",
            "hostname": "w1@h",
            "timestamp": now,
            "local_received": now,
        },
    )
    run = client.post(
        "/api/bulk",
        json={
            "action": "revoke",
            "filters": {"state": "RECEIVED"},
            "dry_run": False,
            "limit": dry["will_act_on"],
            "cursor": dry["cursor"],
        },
    ).get_json()
    assert sorted(run["revoked"]) == ["t-1", "t-2"], run


@pytest.mark.integration
def test_refusals_before_anything_else(app: Any) -> None:
    _known(app)
    client = app.test_client()
    assert client.post("/api/bulk", data="action=rerun").status_code == 415
    cross = client.post(
        "/api/bulk",
        json={"action": "rerun", "filters": {}},
        headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
    )
    assert cross.status_code == 403
    assert client.get("/api/audit?limit=0").status_code == 400
    assert client.get("/api/audit?limit=abc").status_code == 400
    assert client.get("/api/tasks/nope/rerun").status_code == 404
    assert client.get("/api/tasks/t-1/rerun").get_json() == {
        "possible": True,
        "reason": None,
        "name": "dashboard.demo.add",
        "args": [1, 2],
        "kwargs": {},
        "queue": None,
    }


@pytest.mark.integration
def test_read_only_refuses_every_control(redis_server: RedisServer) -> None:
    ro = create_app(
        {"ASYNC_MODE": "threading", "INGEST_ENABLED": False, "BROKER_URL": redis_server.url_db(1), "READ_ONLY": True}
    )
    try:
        _known(ro)
        client = ro.test_client()
        for path, body in (
            ("/api/workers/w1@h/control", {"action": "shutdown"}),
            ("/api/task-types/control", {"action": "rate_limit", "task": "t", "rate": "1/s"}),
            ("/api/tasks/t-1/revoke", {}),
            ("/api/tasks/t-1/rerun", {}),
            ("/api/bulk", {"action": "revoke", "filters": {}, "dry_run": True}),
        ):
            resp = client.post(path, json=body)
            assert resp.status_code == 403 and "read-only" in resp.get_json()["error"], path
        assert client.get("/api/audit").get_json() == {"entries": []}
    finally:
        ro.extensions["dashboard"].stop()


@pytest.mark.unit
def test_unreachable_broker_is_503_and_audited() -> None:
    down = create_app(
        {"ASYNC_MODE": "threading", "INGEST_ENABLED": False, "BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}
    )
    try:
        _known(down)
        client = down.test_client()
        for path, body in (
            ("/api/workers/w1@h/control", {"action": "pool_grow", "n": 1}),
            ("/api/tasks/t-1/revoke", {}),
            ("/api/tasks/t-1/rerun", {}),
        ):
            started = time.monotonic()
            resp = client.post(path, json=body)
            assert resp.status_code == 503 and "unreachable" in resp.get_json()["error"], path
            assert isinstance(resp.get_json()["audit_id"], int)
            assert time.monotonic() - started < 3
        entries = client.get("/api/audit").get_json()["entries"]
        assert [(e["action"], e["ok"]) for e in entries] == [("rerun", False), ("revoke", False), ("pool_grow", False)]
        assert all("unreachable" in e["message"] and e["remote_addr"] == "127.0.0.1" for e in entries)
    finally:
        down.extensions["dashboard"].stop()


# -- with a real worker ----------------------------------------------------------------------------
class Ctl:
    """This module's dashboard (db 11, inspect every second, audit file, BULK_MAX=4) and worker."""

    def __init__(self, server: DashboardServer, hostname: str, audit_path: Path, url: str) -> None:
        self.server, self.hostname, self.audit_path, self.url = server, hostname, audit_path, url
        self.started = time.time()

    def post(self, path: str, body: Any) -> requests.Response:
        return requests.post(self.server.base_url + path, json=body, timeout=15)

    def control(self, **body: Any) -> dict[str, Any]:
        resp = self.post(f"/api/workers/{self.hostname}/control", body)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def worker(self, refresh: bool = False) -> dict[str, Any]:
        return self.server.get(f"/api/workers/{self.hostname}" + ("?refresh=1" if refresh else "")).json()

    def processes(self) -> int | None:
        row = next(w for w in self.server.get("/api/workers").json()["workers"] if w["hostname"] == self.hostname)
        return (row["pool"] or {}).get("processes")

    def inspect_until(self, method: str, predicate: Any, message: str, timeout: float = 15) -> Any:
        def check() -> Any:
            entry = self.worker(refresh=True)["inspect"][method]
            return entry["status"] == "ok" and predicate(entry["reply"]) and entry

        return wait_for(check, timeout=timeout, interval=0.5, message=message)


@pytest.fixture(scope="module")
def ctl(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ctl]:
    url = redis_server.url_db(11)
    audit_path = tmp_path_factory.mktemp("audit") / "audit.jsonl"
    server = DashboardServer(
        url,
        env={
            "DASHBOARD_INSPECT_INTERVAL": "1",
            "DASHBOARD_AUDIT_LOG": str(audit_path),
            "DASHBOARD_BULK_MAX": str(BULK_MAX),
        },
    )
    hostname = f"ctl-{os.getpid()}@localhost"
    proc = start_worker(
        url, concurrency=2, hostname=hostname, quiet=True, extra_env={"DASHBOARD_DEMO_SLEEP": WORK_SECONDS}
    )
    try:
        c = Ctl(server, hostname, audit_path, url)
        wait_for(lambda: c.processes() == 2, timeout=60, interval=0.3, message="worker online with its pool inspected")
        yield c
    finally:
        stop_process(proc)
        server.stop()


@pytest.mark.integration
def test_shrink_and_grow_the_pool(ctl: Ctl) -> None:
    shrink = ctl.control(action="pool_shrink", n=1)
    assert shrink["ok"] and shrink["replies"] == {ctl.hostname: {"ok": "pool will shrink"}}
    assert "pool will shrink" in shrink["message"] and isinstance(shrink["audit_id"], int)
    wait_for(lambda: ctl.processes() == 1, timeout=20, interval=0.3, message="the list shows 1 process")
    grow = ctl.control(action="pool_grow", n=2)
    assert grow["ok"] and grow["replies"][ctl.hostname] == {"ok": "pool will grow"}
    wait_for(lambda: ctl.processes() == 3, timeout=20, interval=0.3, message="the list shows 3 processes")
    ctl.control(action="pool_shrink", n=1)
    wait_for(lambda: ctl.processes() == 2, timeout=20, interval=0.3, message="back to 2 processes")


@pytest.mark.integration
def test_pool_restart_and_autoscale_replies(ctl: Ctl) -> None:
    restart = ctl.control(action="pool_restart")
    assert restart["ok"] and restart["replies"][ctl.hostname] == {"ok": "reload started"}
    autoscale = ctl.control(action="autoscale", max=4, min=1)  # the worker runs without --autoscale
    assert not autoscale["ok"] and "Autoscale not enabled" in autoscale["message"]
    assert "error" in autoscale["replies"][ctl.hostname]
    wait_for(lambda: ctl.processes() == 2, timeout=20, interval=0.3, message="pool back after the restart")


@pytest.mark.integration
def test_add_and_cancel_a_consumer(ctl: Ctl) -> None:
    queue = f"extra-{uuid.uuid4().hex[:6]}"
    added = ctl.control(action="add_consumer", queue=queue)
    assert added["ok"] and added["replies"][ctl.hostname] == {"ok": f"add consumer {queue}"}
    ctl.inspect_until("active_queues", lambda r: queue in [q["name"] for q in r], "the new queue in active_queues")
    cancelled = ctl.control(action="cancel_consumer", queue=queue)
    assert cancelled["ok"] and cancelled["replies"][ctl.hostname] == {"ok": f"no longer consuming from {queue}"}
    ctl.inspect_until("active_queues", lambda r: [q["name"] for q in r] == ["celery"], "the queue gone again")


@pytest.mark.integration
def test_rate_and_time_limits(ctl: Ctl) -> None:
    rate = ctl.post(
        "/api/task-types/control",
        {"action": "rate_limit", "task": "dashboard.demo.tsum", "rate": "10/m", "workers": [ctl.hostname]},
    ).json()
    assert rate["ok"] and rate["replies"] == {ctl.hostname: {"ok": "new rate limit set successfully"}}
    limits = ctl.post(
        "/api/task-types/control", {"action": "time_limit", "task": "dashboard.demo.tsum", "soft": 5, "hard": 10}
    ).json()  # every worker
    assert limits["ok"] and limits["replies"] == {ctl.hostname: {"ok": "time limits set successfully"}}
    ctl.inspect_until(
        "registered",
        lambda r: "dashboard.demo.tsum [rate_limit=10/m time_limit=10 soft_time_limit=5]" in r,
        "registered shows the new limits",
    )
    unknown = ctl.post(
        "/api/task-types/control", {"action": "rate_limit", "task": "no.such.task", "rate": "1/s"}
    ).json()
    assert not unknown["ok"] and "unknown task" in unknown["message"]


@pytest.mark.integration
def test_revoke_before_it_runs(ctl: Ctl) -> None:
    [task_id] = ctl.server.launch("dashboard.demo.add", args=[4, 4], countdown=3)
    wait_for(lambda: ctl.server.task(task_id), timeout=10, message="the dashboard sees the task")
    resp = ctl.post(f"/api/tasks/{task_id}/revoke", {}).json()
    assert resp["ok"] and "revoke of" in resp["message"]
    assert ctl.hostname in resp["replies"] and "revoked" in resp["replies"][ctl.hostname]["ok"]
    task = ctl.server.wait_task(task_id, "REVOKED", timeout=15)
    time.sleep(1.0)
    task = ctl.server.task(task_id)
    assert task["state"] == "REVOKED" and task["started"] is None and task["result"] is None
    assert "started" not in [h["event"] for h in task["history"]]


@pytest.mark.integration
def test_terminate_a_running_task(ctl: Ctl) -> None:
    # Its first progress event comes after 4 s: killed before, it shows REVOKED. (After a task-progress
    # event the state keeps the custom PROGRESS state, which outranks REVOKED as in Celery's State.)
    [task_id] = ctl.server.launch("dashboard.demo.progress", kwargs={"steps": 5, "delay": 4})
    ctl.server.wait_task(task_id, "STARTED", timeout=15)
    started = time.monotonic()
    resp = ctl.post(f"/api/tasks/{task_id}/revoke", {"terminate": True, "signal": "SIGKILL"}).json()
    assert resp["ok"] and "terminate with SIGKILL" in resp["message"]
    assert resp["replies"][ctl.hostname] == {"ok": f"terminate: {task_id}"}  # the worker killed it
    task = ctl.server.wait_task(task_id, "REVOKED", timeout=10)
    assert time.monotonic() - started < 4 and task["succeeded"] is None  # it would run 20 s


@pytest.mark.integration
def test_rerun_a_failure_and_a_success(ctl: Ctl) -> None:
    [failed] = ctl.server.launch("dashboard.demo.send_email", args=["no-at-sign", "hello"])
    original = ctl.server.wait_task(failed, "FAILURE")
    plan = ctl.server.get(f"/api/tasks/{failed}/rerun").json()
    assert plan == {
        "possible": True,
        "reason": None,
        "name": "dashboard.demo.send_email",
        "args": ["no-at-sign", "hello"],
        "kwargs": {},
        "queue": "celery",
    }
    resp = ctl.post(f"/api/tasks/{failed}/rerun", {})
    assert resp.status_code == 200 and resp.json()["ok"]
    again = ctl.server.wait_task(resp.json()["task_id"], "FAILURE")
    assert (again["args"], again["kwargs"], again["name"]) == (original["args"], original["kwargs"], original["name"])
    assert "invalid email address 'no-at-sign'" in again["exception"]

    [ok] = ctl.server.launch("dashboard.demo.add", args=[20, 22])
    first = ctl.server.wait_task(ok, "SUCCESS")
    new_id = ctl.post(f"/api/tasks/{ok}/rerun", {}).json()["task_id"]
    second = ctl.server.wait_task(new_id, "SUCCESS")
    assert new_id != ok and second["result"] == first["result"] == "42" and second["args"] == first["args"]


@pytest.mark.integration
def test_bulk_dry_run_then_rerun_within_the_cap(ctl: Ctl) -> None:
    marker = f"bulk-{uuid.uuid4().hex[:8]}"
    ids = [ctl.server.launch("dashboard.demo.fail", kwargs={"card": marker, "amount": i})[0] for i in range(5)]
    for task_id in ids:
        ctl.server.wait_task(task_id, "FAILURE")
    filters = {"q": marker, "state": "FAILURE"}
    listed = ctl.server.get("/api/tasks", params=filters).json()["total"]
    dry = ctl.post("/api/bulk", {"action": "rerun", "filters": filters, "dry_run": True}).json()
    assert isinstance(dry.pop("cursor"), int)
    assert dry == {
        "matched": listed,
        "eligible": 5,
        "cap": BULK_MAX,
        "will_act_on": BULK_MAX,
        "skipped": {},
        "sample": ids[::-1],
    }
    over = ctl.post("/api/bulk", {"action": "rerun", "filters": filters, "dry_run": False, "limit": BULK_MAX + 1})
    assert over.status_code == 400 and f"from 1 to {BULK_MAX}" in over.json()["error"]

    run = ctl.post("/api/bulk", {"action": "rerun", "filters": filters, "dry_run": False, "limit": 3}).json()
    assert run["ok"] and run["acted_on"] == 3 and len(set(run["task_ids"])) == 3 and run["failed"] == []
    for new_id in run["task_ids"]:
        assert marker in ctl.server.wait_task(new_id, "FAILURE")["kwargs"]
    # Newest first: the re-runs are of the three latest tasks.
    amounts = sorted(ctl.server.task(t)["kwargs"] for t in run["task_ids"])
    assert amounts == sorted(ctl.server.task(t)["kwargs"] for t in ids[-3:])
    assert ctl.server.get("/api/tasks", params={"q": marker}).json()["total"] == 8

    # A revoke of the same set: finished tasks are skipped, counted by reason.
    dry_revoke = ctl.post("/api/bulk", {"action": "revoke", "filters": {"q": marker}, "dry_run": True}).json()
    assert dry_revoke["eligible"] == 0 and dry_revoke["skipped"] == {"already finished": 8}

    # The same failures as one failure group.
    groups = ctl.server.get("/api/failures", params={"limit": 500}).json()["groups"]
    gid = next(g["id"] for g in groups if "dashboard.demo.fail" in json.dumps(g["task_names"]))
    by_group = ctl.post("/api/bulk", {"action": "rerun", "group": gid, "dry_run": True}).json()
    assert by_group["matched"] == ctl.server.get("/api/tasks", params={"group": gid}).json()["total"] >= 8


@pytest.mark.integration
def test_bulk_revoke_in_one_broadcast(ctl: Ctl) -> None:
    marker = f"later-{uuid.uuid4().hex[:8]}"
    ids = [
        ctl.server.launch("dashboard.demo.send_email", args=[f"{marker}@x", "hi"], countdown=60)[0] for _ in range(3)
    ]
    wait_for(lambda: all(ctl.server.task(t) for t in ids), timeout=10, message="the tasks are seen")
    body = {"action": "revoke", "filters": {"q": marker}}
    dry = ctl.post("/api/bulk", dict(body, dry_run=True)).json()
    assert (dry["matched"], dry["eligible"], dry["will_act_on"]) == (3, 3, 3)
    run = ctl.post("/api/bulk", dict(body, dry_run=False, limit=3)).json()
    assert run["ok"] and sorted(run["revoked"]) == sorted(ids) and run["acted_on"] == 3
    ctl.inspect_until("revoked", lambda r: set(ids) <= set(r), "the worker lists them as revoked")


@pytest.mark.integration
def test_audit_lists_every_action_and_the_file_matches(ctl: Ctl) -> None:
    entries = ctl.server.get("/api/audit", params={"limit": 1000}).json()["entries"]
    actions = [e["action"] for e in entries][::-1]
    for expected in (
        "pool_shrink",
        "pool_grow",
        "pool_restart",
        "autoscale",
        "add_consumer",
        "cancel_consumer",
        "rate_limit",
        "time_limit",
        "revoke",
        "terminate",
        "rerun",
        "bulk_rerun",
        "bulk_revoke",
    ):
        assert expected in actions
    assert actions.index("pool_shrink") < actions.index("pool_grow") < actions.index("bulk_revoke")
    for e in entries:
        assert ctl.started - 1 <= e["time"] <= time.time() and e["user"] is None and e["remote_addr"] == "127.0.0.1"
    autoscale = next(e for e in entries if e["action"] == "autoscale")
    assert (
        autoscale["ok"] is False and autoscale["target"] == ctl.hostname and autoscale["params"] == {"max": 4, "min": 1}
    )
    bulk = next(e for e in entries if e["action"] == "bulk_rerun")
    assert bulk["params"]["acted_on"] == 3 and len(bulk["params"]["task_ids"]) == 3
    lines = [json.loads(line) for line in ctl.audit_path.read_text(encoding="utf-8").splitlines()]
    assert lines == entries[::-1]
    assert [e["id"] for e in entries] == sorted((e["id"] for e in entries), reverse=True)


@pytest.mark.integration
def test_shutdown_takes_the_worker_offline(ctl: Ctl) -> None:
    hostname = f"doomed-{os.getpid()}@localhost"
    proc = start_worker(ctl.url, concurrency=1, hostname=hostname, quiet=True)
    try:

        def row() -> dict[str, Any] | None:
            return next(
                (w for w in ctl.server.get("/api/workers").json()["workers"] if w["hostname"] == hostname), None
            )

        wait_for(lambda: (r := row()) and r["online"], timeout=60, message="second worker online")
        resp = ctl.post(f"/api/workers/{hostname}/control", {"action": "shutdown"}).json()
        assert resp["ok"] and "shutdown sent" in resp["message"]
        wait_for(lambda: not row()["online"], timeout=20, message="the worker shown offline")
        assert proc.wait(20) == 0
        wait_for(lambda: ctl.processes() == 2, timeout=15, message="the other worker untouched")
    finally:
        stop_process(proc)
