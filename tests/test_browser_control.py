"""In Chromium: the control UI, as a user drives it, against its own dashboard and demo worker (Redis db 7,
so pool changes and revokes never disturb the session worker): pool shrink and grow from the worker page,
revoke, re-run (and why not), bulk re-run of a failure group, the audit log, read-only mode, and markup
in hostnames, queue names and task names shown as text."""

from __future__ import annotations

import json
import os
import re
import time
import uuid as uuidlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import requests
from conftest import WORK_SECONDS, DashboardServer, RedisServer, event_envelope, open_live, wait_for
from playwright.sync_api import expect

from dashboard.processes import start_worker, stop_process

pytestmark = pytest.mark.browser

DB = 7
XSS = "<img src=x onerror=window.__xss=1>"
XSS_QUEUE = "<img/src=x/onerror=window.__xss=2>"  # queue names may not contain spaces


@pytest.fixture(scope="module")
def ctl(redis_server: RedisServer) -> Iterator[DashboardServer]:
    """A dashboard of this module, inspecting workers every second."""
    server = DashboardServer(redis_server.url_db(DB), env={"DASHBOARD_INSPECT_INTERVAL": "1"})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ctl_worker(redis_server: RedisServer, ctl: DashboardServer) -> Iterator[str]:
    """A demo worker (prefork, 2 processes) of this module; yields its hostname once it is online."""
    hostname = f"ctl-{os.getpid()}@localhost"
    proc = start_worker(
        redis_server.url_db(DB),
        concurrency=2,
        hostname=hostname,
        quiet=True,
        extra_env={"DASHBOARD_DEMO_SLEEP": WORK_SECONDS},
    )
    wait_for(lambda: ctl.worker_online(hostname), timeout=60, message=f"worker {hostname} online")
    yield hostname
    stop_process(proc)


def _worker_path(hostname: str) -> str:
    return "/workers/" + quote(hostname, safe="")


def _publish(redis_server: RedisServer, *events: dict[str, Any]) -> None:
    """Publish crafted events as a worker would, on this module's database."""
    import redis

    raw = redis.Redis.from_url(redis_server.url_db(DB))
    raw.publish(f"/{DB}.celeryev/task.multi", event_envelope(*events))
    raw.close()


def _confirm(page: Any, *expected: str) -> None:
    """The confirmation dialog is open, says what will happen, and is confirmed."""
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_be_visible()
    for text in expected:
        expect(dialog).to_contain_text(text)
    dialog.locator(".confirm-ok").click()
    expect(dialog).to_have_count(0)


def _pool_after_refresh(page: Any, size: int) -> None:
    """Refresh the inspect answers until the pool shows `size` processes (a stopped process takes a moment)."""
    pool = page.locator("#worker-pool")
    deadline = time.monotonic() + 30
    while not re.search(rf"prefork · {size}\b", pool.inner_text()):
        assert time.monotonic() < deadline, f"pool still shows {pool.inner_text()!r}, expected {size}"
        page.locator("#inspect-refresh").click()
        expect(page.locator("#inspect-refresh")).to_be_enabled(timeout=15_000)
        page.wait_for_timeout(300)


def test_shrink_and_grow_the_pool_from_the_worker_page(page: Any, ctl: DashboardServer, ctl_worker: str) -> None:
    """Shrink by one: the dialog says from 2 to 1, the result shows the worker's reply, the pool shows 1;
    growing it back shows 2 again."""
    open_live(page, ctl, _worker_path(ctl_worker))
    expect(page.locator("#worker-name")).to_have_text(ctl_worker)
    expect(page.locator("#worker-status")).to_have_text("online")
    expect(page.locator("#worker-pool")).to_have_text(re.compile(r"prefork · 2\b"), timeout=20_000)
    expect(page.locator("#inspect-stats .inspect-age")).to_contain_text("fetched")
    expect(page.locator("#inspect-registered")).to_contain_text("dashboard.demo.add")

    shrink = page.locator('form[data-action="pool_shrink"]')
    shrink.locator('input[name="n"]').fill("1")
    shrink.locator("button").click()
    _confirm(page, f"Worker {ctl_worker} will stop 1 idle pool process: from 2 to 1")
    result = page.locator("#control-result")
    expect(result).to_have_attribute("data-ok", "true", timeout=10_000)
    reply = result.locator(f'.replies li[data-hostname="{ctl_worker}"]')
    expect(reply.locator(".reply-host")).to_have_text(ctl_worker)
    expect(reply.locator(".reply-text")).to_contain_text("shrink")
    expect(result.locator("a.audit-link")).to_have_attribute("href", re.compile(r"^/audit#entry-"))
    _pool_after_refresh(page, 1)

    grow = page.locator('form[data-action="pool_grow"]')
    grow.locator('input[name="n"]').fill("1")
    grow.locator("button").click()
    _confirm(page, "from 1 to 2")
    expect(result).to_have_attribute("data-ok", "true", timeout=10_000)
    expect(result.locator(f'.replies li[data-hostname="{ctl_worker}"] .reply-text')).to_contain_text("grow")
    _pool_after_refresh(page, 2)


def test_escape_in_the_confirmation_sends_nothing(page: Any, ctl: DashboardServer, ctl_worker: str) -> None:
    """Escape in the confirmation dialog sends nothing."""
    open_live(page, ctl, _worker_path(ctl_worker))
    before = len(ctl.get("/api/audit").json()["entries"])
    page.locator('form[data-action="shutdown"] button').click()
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_contain_text("will shut down")
    assert page.evaluate("document.activeElement.className") == "confirm-cancel", "a dangerous action starts on Cancel"
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)
    expect(page.locator("#control-result")).to_be_hidden()
    time.sleep(0.5)
    assert len(ctl.get("/api/audit").json()["entries"]) == before
    assert ctl.get(f"/api/workers/{quote(ctl_worker, safe='')}").json()["worker"]["online"]


def test_a_worker_never_seen_says_so(page: Any, ctl: DashboardServer) -> None:
    """A mistyped hostname: the page says the worker was never seen, and offers no control."""
    open_live(page, ctl, _worker_path("nobody@nowhere"))
    unknown = page.locator("#worker-unknown")
    expect(unknown).to_be_visible()
    expect(unknown).to_contain_text("Never seen")
    expect(unknown).to_contain_text("nobody@nowhere")
    expect(page.locator("#worker-body")).to_be_hidden()


def test_revoke_a_task_waiting_for_its_countdown_and_find_it_in_the_audit_log(
    page: Any, ctl: DashboardServer, ctl_worker: str
) -> None:
    """A task held by the worker for its countdown is revoked from its page and turns REVOKED without ever
    starting (a worker reports the revoke when the countdown ends); the result's audit link leads to its
    highlighted entry."""
    (uid,) = ctl.launch("dashboard.demo.add", args=[2, 3], countdown=8)
    ctl.wait_task(uid, "RECEIVED")
    open_live(page, ctl, f"/tasks/{uid}")
    expect(page.locator("#task-terminate-box")).to_be_hidden()
    page.locator("#task-revoke").click()
    _confirm(page, "will be revoked")
    result = page.locator("#task-control-result")
    expect(result).to_have_attribute("data-ok", "true", timeout=10_000)
    expect(result).to_contain_text("until its ETA")
    expect(page.locator("#task-state")).to_have_text("REVOKED", timeout=20_000)
    expect(page.locator("#task-revoke-box")).to_be_hidden()
    expect(page.locator('#timeline li[data-event="revoked"]')).to_have_count(1)
    expect(page.locator('#timeline li[data-event="started"]')).to_have_count(0)

    result.locator("a.audit-link").click()
    expect(page).to_have_url(re.compile(r"/audit#entry-"))
    row = page.locator("#audit-table tr.targeted")
    expect(row).to_have_count(1)
    expect(row.locator(".target")).to_contain_text(uid)
    expect(row.locator(".action")).to_contain_text("revoke")
    expect(row.locator(".user")).to_have_text("anonymous")
    expect(row.locator(".result")).to_have_text("ok")


def test_terminate_a_running_task_with_a_chosen_signal(page: Any, ctl: DashboardServer, ctl_worker: str) -> None:
    """A task that would run 20 s is killed from its page with SIGKILL: the worker's reply names it, the
    state turns REVOKED and the buttons for unfinished tasks go away."""
    (uid,) = ctl.launch("dashboard.demo.progress", kwargs={"steps": 200, "delay": 0.1})
    ctl.wait_task(uid, "STARTED")
    open_live(page, ctl, f"/tasks/{uid}")
    expect(page.locator("#task-terminate-box")).to_be_visible()
    page.locator("#task-signal").select_option("SIGKILL")
    page.locator("#task-terminate").click()
    _confirm(page, "is sent SIGKILL", "SIGKILL stops it at once")
    result = page.locator("#task-control-result")
    expect(result).to_have_attribute("data-ok", "true", timeout=10_000)
    expect(result.locator(f'.replies li[data-hostname="{ctl_worker}"] .reply-text')).to_have_text(f"terminate: {uid}")
    expect(page.locator("#task-state")).to_have_text("REVOKED", timeout=10_000)
    expect(page.locator("#task-terminate-box")).to_be_hidden()
    expect(page.locator("#task-revoke-box")).to_be_hidden()


def test_rate_limit_a_registered_task_from_the_worker_page(page: Any, ctl: DashboardServer, ctl_worker: str) -> None:
    """Rate limit… on a registered task: the worker replies, and its registered list then shows the limit."""
    try:
        open_live(page, ctl, _worker_path(ctl_worker))
        item = page.locator('#inspect-registered li[data-task="dashboard.demo.add"]')
        item.get_by_role("button", name="Rate limit…").click()
        item.locator('input[name="rate"]').fill("10/m")
        item.get_by_role("button", name="Apply…").click()
        _confirm(page, f"Task dashboard.demo.add will start at most 10/m on {ctl_worker}")
        result = page.locator("#control-result")
        expect(result).to_have_attribute("data-ok", "true", timeout=10_000)
        expect(result.locator(f'.replies li[data-hostname="{ctl_worker}"] .reply-text')).to_contain_text("rate limit")
        expect(page.locator('#inspect-registered li[data-task="dashboard.demo.add"]')).to_contain_text(
            "rate_limit=10/m", timeout=20_000
        )
    finally:
        requests.post(
            ctl.base_url + "/api/task-types/control",
            timeout=10,
            json={"action": "rate_limit", "task": "dashboard.demo.add", "rate": "0"},
        )


def test_bulk_revoke_from_the_filtered_task_list(page: Any, ctl: DashboardServer, ctl_worker: str) -> None:
    """ "Act on these N tasks…" uses the list's filters: the dry run finds exactly the two waiting tasks,
    and the run revokes those two."""
    marker = f"bulkrv{uuidlib.uuid4().hex[:8]}"
    ids = ctl.launch("dashboard.demo.send_email", args=[f"{marker}@x", "hi"], count=2, countdown=60)
    for uid in ids:
        ctl.wait_task(uid, "RECEIVED")
    open_live(page, ctl, f"/tasks?q={marker}")
    expect(page.locator("#bulk-count")).to_have_text("2")
    page.locator("#bulk-open").click()
    page.locator('#bulk-panel input[value="revoke"]').check()
    page.locator("#bulk-dry-run").click()
    _confirm(page, "Matched: 2 tasks", "Eligible: 2", "2 tasks will be revoked")
    result = page.locator("#bulk-result")
    expect(result).to_have_attribute("data-ok", "true", timeout=15_000)
    expect(result.locator(".bulk-acted")).to_have_text("2 tasks revoked.")
    revoked = result.locator(".bulk-ids a").evaluate_all("els => els.map(e => e.textContent)")
    assert sorted(revoked) == sorted(ids)


def test_rerun_a_failed_task_from_its_page(page: Any, ctl: DashboardServer, ctl_worker: str) -> None:
    """Re-run: the dialog shows the original args, the result links to a new task with the same args,
    which fails the same way."""
    (uid,) = ctl.launch("dashboard.demo.fail", kwargs={"card": "rerun-card", "amount": 7})
    ctl.wait_task(uid, "FAILURE")
    open_live(page, ctl, f"/tasks/{uid}")
    expect(page.locator("#task-revoke-box")).to_be_hidden()
    button = page.locator("#task-rerun")
    expect(button).to_be_enabled()
    expect(page.locator("#task-rerun-reason")).to_have_text("")
    button.click()
    _confirm(page, "rerun-card")
    expect(page.locator("#task-control-result")).to_have_attribute("data-ok", "true", timeout=10_000)
    link = page.locator("#rerun-link")
    new_id = link.inner_text()
    assert new_id and new_id != uid
    link.click()
    expect(page).to_have_url(re.compile(re.escape(f"/tasks/{new_id}")))
    expect(page.locator("#task-state")).to_have_text("FAILURE", timeout=20_000)
    expect(page.locator('#task-fields dd[data-field="kwargs"]')).to_contain_text("'card': 'rerun-card'")
    expect(page.locator("#task-exception")).to_contain_text("rerun-card")


def test_rerun_is_disabled_with_a_visible_reason_when_args_are_not_literal(
    page: Any, ctl: DashboardServer, redis_server: RedisServer
) -> None:
    """A task whose args repr is not a literal cannot be re-run exactly: the button says why, as text."""
    uid = str(uuidlib.uuid4())
    _publish(
        redis_server,
        {
            "type": "task-received",
            "uuid": uid,
            "name": "proj.opaque",
            "args": "(<object object at 0x7f3a2c1b0>,)",
            "kwargs": "{}",
            "hostname": "crafted@host",
            "timestamp": time.time(),
            "utcoffset": 0,
        },
    )
    wait_for(lambda: ctl.task(uid), message="the crafted task")
    open_live(page, ctl, f"/tasks/{uid}")
    expect(page.locator("#task-rerun")).to_be_disabled()
    reason = page.locator("#task-rerun-reason")
    expect(reason).to_be_visible()
    expect(reason).to_contain_text("Cannot re-run")
    assert len(reason.inner_text()) > len("Cannot re-run: ")


def test_bulk_rerun_of_a_failure_group_counts_first(page: Any, ctl: DashboardServer, ctl_worker: str) -> None:
    """Re-run a whole failure group: the dry run's count is in the dialog, exactly that many new tasks
    are sent, and they fail like the originals."""
    ids = ctl.launch("dashboard.demo.send_email", args=["bulk-nobody", "hello"], count=2)
    for uid in ids:
        ctl.wait_task(uid, "FAILURE")
    groups = ctl.get("/api/failures").json()["groups"]
    group = next(g for g in groups if "dashboard.demo.send_email" in json.dumps(g["task_names"]))
    count = group["retained"]
    open_live(page, ctl, "/failures")
    row = page.locator(f'#failure-groups tr[data-group="{group["id"]}"]')
    row.locator('button[data-bulk="rerun"]').click()
    _confirm(page, f"Matched: {count} task", f"{count} new task", f"Re-run {count}")
    result = page.locator("#bulk-result")
    expect(result).to_have_attribute("data-ok", "true", timeout=15_000)
    expect(result.locator(".bulk-acted")).to_have_text(f"{count} task{'s' if count != 1 else ''} re-run.")
    links = result.locator(".bulk-ids a")
    expect(links).to_have_count(count)
    new_ids = links.evaluate_all("els => els.map(e => e.textContent)")
    assert not set(new_ids) & set(ids)
    for uid in new_ids:
        task = ctl.wait_task(uid, "FAILURE")
        assert "bulk-nobody" in str(task["args"])


def test_read_only_mode_shows_data_but_no_control(
    page: Any, redis_server: RedisServer, ctl_worker: str, ctl: DashboardServer
) -> None:
    """DASHBOARD_READ_ONLY=1: the workers list (pool, uptime, hidden offline workers), worker, task,
    failures and tasks pages show their data and not one control."""
    ro = DashboardServer(
        redis_server.url_db(DB),
        env={"DASHBOARD_READ_ONLY": "1", "DASHBOARD_INSPECT_INTERVAL": "1", "DASHBOARD_HIDE_OFFLINE_AFTER": "2"},
    )
    try:
        gone = f"gone-{uuidlib.uuid4().hex[:6]}@host"
        now = time.time()
        _publish(
            redis_server,
            {"type": "worker-online", "hostname": gone, "timestamp": now - 5, "utcoffset": 0, "freq": 2.0},
            {"type": "worker-offline", "hostname": gone, "timestamp": now - 4, "utcoffset": 0, "freq": 2.0},
        )
        open_live(page, ro, "/workers")
        row = page.locator(f'#worker-table tbody tr[data-hostname="{ctl_worker}"]')
        expect(row.locator(".pool")).to_have_text(re.compile(r"prefork · \d"), timeout=20_000)
        expect(row.locator(".uptime")).to_have_text(re.compile(r"\d+ (s|min)"))
        expect(row.locator("a.worker-link")).to_have_attribute("href", _worker_path(ctl_worker))
        expect(row.locator("a.tasks-link")).to_have_attribute("href", f"/tasks?worker={quote(ctl_worker, safe='')}")
        expect(page.locator("#workers-hidden")).to_have_text(
            "· 1 offline worker hidden (offline for more than 2 s)", timeout=10_000
        )
        assert page.locator(f'#worker-table tr[data-hostname="{gone}"]').count() == 0

        (uid,) = ctl.launch("dashboard.demo.add", args=[1, 1], countdown=60)
        wait_for(
            lambda: (t := ro.task(uid)) and t["state"] == "RECEIVED", message="the task on the read-only dashboard"
        )
        open_live(page, ro, _worker_path(ctl_worker))
        expect(page.locator("#worker-pool")).to_have_text(re.compile(r"prefork · \d"), timeout=20_000)
        expect(page.locator("#inspect-registered")).to_contain_text("dashboard.demo.add", timeout=20_000)
        assert page.locator("#worker-controls").count() == 0
        assert page.locator("#inspect-registered button").count() == 0
        assert page.locator("#control-result").count() == 0

        open_live(page, ro, f"/tasks/{uid}")
        expect(page.locator("#task-state")).to_have_text("RECEIVED")
        assert page.locator("#task-controls, #task-revoke, #task-rerun").count() == 0

        open_live(page, ro, "/failures")
        expect(page.locator("#failure-groups tbody tr").first).not_to_contain_text("Loading")
        assert page.locator("#failure-groups button[data-bulk]").count() == 0

        open_live(page, ro, "/tasks")
        expect(page.locator("#task-total")).not_to_have_text("–")
        assert page.locator("#bulk-open, #bulk-panel").count() == 0
        assert page.locator('a[href="/launch"]').count() == 0
    finally:
        ro.stop()
        requests.post(ctl.base_url + f"/api/tasks/{uid}/revoke", json={}, timeout=10)


def test_markup_in_queue_hostname_and_task_names_is_shown_as_text(
    page: Any, ctl: DashboardServer, ctl_worker: str, redis_server: RedisServer
) -> None:
    """A queue named like an <img> tag is added and cancelled from the worker page, a worker whose hostname
    is markup is controlled, a rate limit names a markup task: results and the audit log show it all as
    text, and no script runs."""
    open_live(page, ctl, _worker_path(ctl_worker))
    expect(page.locator("#inspect-active_queues")).to_contain_text("celery", timeout=20_000)
    consumer = page.locator('form[data-action="add_consumer"]')
    consumer.locator('input[name="queue"]').fill(XSS_QUEUE)
    consumer.locator("button").click()
    _confirm(page, f"queue “{XSS_QUEUE}”")
    result = page.locator("#control-result")
    expect(result).to_have_attribute("data-ok", "true", timeout=10_000)
    expect(result.locator(".reply-text")).to_contain_text(XSS_QUEUE)
    cancel = page.locator(f'#consumer-list button[data-queue="{XSS_QUEUE}"]')
    expect(cancel).to_be_visible(timeout=20_000)
    cancel.click()
    _confirm(page, f"stop taking tasks from queue “{XSS_QUEUE}”")
    expect(result).to_have_attribute("data-ok", "true", timeout=10_000)
    expect(result.locator(".reply-text")).to_contain_text(XSS_QUEUE)

    evil = f"{XSS}@evil"
    _publish(
        redis_server,
        {
            "type": "worker-heartbeat",
            "hostname": evil,
            "timestamp": time.time(),
            "utcoffset": 0,
            "freq": 2.0,
            "active": 0,
            "processed": 0,
            "loadavg": [0.1, 0.1, 0.1],
            "sw_ident": "py-celery",
            "sw_ver": "5.7.0",
            "sw_sys": "Linux",
            "pid": 1,
        },
    )
    wait_for(
        lambda: any(w["hostname"] == evil for w in ctl.get("/api/workers").json()["workers"]), message="evil worker"
    )
    open_live(page, ctl, _worker_path(evil))
    expect(page.locator("#worker-name")).to_have_text(evil)
    page.locator('form[data-action="pool_restart"] button').click()
    _confirm(page, f"Worker {evil} will replace every pool process")
    expect(result).to_have_attribute("data-ok", "false", timeout=15_000)
    assert page.locator("img").count() == 0

    resp = requests.post(
        ctl.base_url + "/api/task-types/control",
        timeout=10,
        json={"action": "rate_limit", "task": XSS_QUEUE, "rate": "1/m", "workers": [ctl_worker]},
    )
    assert resp.status_code == 200, resp.text
    open_live(page, ctl, "/audit")
    table = page.locator("#audit-table")
    expect(table.locator(".target", has_text=evil).first).to_be_visible()
    expect(table.locator(".target", has_text=XSS_QUEUE).first).to_be_visible()
    added = table.locator("tbody tr[data-id]", has=page.locator(".action", has_text="add_consumer")).first
    added.locator(".toggle button").click()
    detail = page.locator("tr.audit-detail")
    expect(detail).to_contain_text(XSS_QUEUE)
    expect(detail.locator(f'.replies li[data-hostname="{ctl_worker}"]')).to_contain_text(XSS_QUEUE)
    assert page.locator("img").count() == 0, "markup was rendered as HTML"
    assert page.evaluate("window.__xss") is None, "a script ran"
