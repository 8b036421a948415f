"""In Debian's Chromium: what a user sees and does, against the real server and worker."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
import requests
from conftest import DashboardServer, RedisServer, event_envelope, open_live, wait_for
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def test_overview_counts_and_failures_update_live(page: Any, dashboard: DashboardServer, worker: str) -> None:
    """A failure launched elsewhere shows up in the overview's counter and failure list without a reload."""
    open_live(page, dashboard, "/")
    count = page.locator('#counts [data-state="FAILURE"] .count')
    expect(count).not_to_have_text("–")  # the snapshot has arrived
    before = int(count.inner_text().replace(",", "") or 0)
    page.evaluate("window.__sameDocument = true")
    (uuid,) = dashboard.launch("dashboard.demo.fail", kwargs={"card": "overview-card"})
    row = page.locator(f'#latest-failures tr[data-uuid="{uuid}"]')
    expect(row.locator(".exception")).to_contain_text("card overview-card was declined")
    expect(count).not_to_have_text(str(before))
    assert int(count.inner_text().replace(",", "")) >= before + 1
    expect(page.locator("#workers-online")).not_to_have_text("0")
    assert page.evaluate("window.__sameDocument") is True, "the page was not reloaded"


def test_launch_failing_task_from_the_form_and_read_its_traceback(
    page: Any, dashboard: DashboardServer, worker: str
) -> None:
    """Launch fail() from the form, watch it turn FAILURE in the live list, open it, read the traceback."""
    open_live(page, dashboard, "/tasks")
    page.evaluate("window.__sameDocument = true")
    page.locator("#launch-panel > summary").click()
    page.select_option("#launch-task", "dashboard.demo.fail")
    expect(page.locator("#launch-kwargs")).to_have_value('{"card": "4000-0000-0000-0002", "amount": 42}')
    page.fill("#launch-kwargs", '{"card": "form-card", "amount": 13}')
    page.locator("#launch-form button[type=submit]").click()
    link = page.locator("#launch-result a").first
    expect(link).to_be_visible()
    uuid = link.inner_text().strip()
    row = page.locator(f'#task-table tbody tr[data-uuid="{uuid}"]')
    expect(row).to_have_attribute("data-state", "FAILURE", timeout=20_000)
    expect(row.locator(".info")).to_contain_text("PaymentDeclined")
    assert page.evaluate("window.__sameDocument") is True, "the list updated without a reload"
    # task-failed carries no runtime: the list and the task page show the same derived one, marked so
    runtime = row.locator("td.runtime")
    expect(runtime).to_contain_text("(started → failed)")
    shown = runtime.inner_text()
    row.locator(".uuid a").click()
    expect(page).to_have_url(f"{dashboard.base_url}/tasks/{uuid}")
    expect(page.locator("#task-state")).to_have_text("FAILURE")
    expect(page.locator('#task-fields [data-field="runtime"]')).to_have_text(shown)
    expect(page.locator("#task-exception")).to_contain_text("card form-card was declined for amount 13")
    traceback = page.locator("#task-traceback")
    expect(traceback).to_contain_text("Traceback (most recent call last):")
    expect(traceback).to_contain_text("in _authorize")
    expect(traceback).to_contain_text("PaymentDeclined: card form-card was declined")
    events = page.locator("#timeline li").evaluate_all("els => els.map(e => e.dataset.event)")
    assert events == ["sent", "received", "started", "failed"]


def test_bad_json_shows_a_field_error_and_sends_nothing(page: Any, dashboard: DashboardServer) -> None:
    """Broken JSON in args is reported under the args field by the server, and no task is launched."""
    total = requests.get(dashboard.base_url + "/api/tasks", timeout=5).json()["total"]
    open_live(page, dashboard, "/launch")
    page.select_option("#launch-task", "dashboard.demo.add")
    page.fill("#launch-args", "[1, ")
    page.fill("#launch-count", "3")
    with page.expect_response(lambda r: r.url.endswith("/launch") and r.request.method == "POST") as info:
        page.locator("#launch-form button[type=submit]").click()
    assert info.value.status == 400
    error = page.locator('.field-error[data-field="args"]')
    expect(error).to_be_visible()
    expect(error).to_contain_text("not valid JSON")
    expect(page.locator("#launch-args")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#launch-result a")).to_have_count(0)
    page.wait_for_timeout(500)
    assert requests.get(dashboard.base_url + "/api/tasks", timeout=5).json()["total"] == total


def test_task_page_follows_a_running_task_live(page: Any, dashboard: DashboardServer, worker: str) -> None:
    """A task page opened while the task runs shows its progress, then SUCCESS, without a reload."""
    (uuid,) = dashboard.launch("dashboard.demo.progress", kwargs={"steps": 6, "delay": 0.4})
    open_live(page, dashboard, f"/tasks/{uuid}")
    expect(page.locator("#task-progress")).to_be_visible(timeout=10_000)
    expect(page.locator("#task-state")).to_have_text("SUCCESS", timeout=20_000)
    expect(page.locator("#task-progress .progress-text")).to_contain_text("6")
    expect(page.locator('#task-fields dd[data-field="result"]')).to_contain_text("'steps': 6")


def test_timeline_shows_events_in_the_order_they_happened(
    page: Any, dashboard: DashboardServer, redis_server: RedisServer
) -> None:
    """task-sent (from the client) delivered after task-received (from the worker), and stamped a
    moment after it (the client stamps it once the task is published), still comes first."""
    import uuid as uuidlib

    import redis

    uid, t0 = str(uuidlib.uuid4()), time.time() - 5
    raw = redis.Redis.from_url(redis_server.url)
    for event in (
        {
            "type": "task-received",
            "uuid": uid,
            "name": "proj.late_sent",
            "hostname": "w@h",
            "timestamp": t0 + 1,
            "utcoffset": 0,
        },
        {
            "type": "task-sent",
            "uuid": uid,
            "name": "proj.late_sent",
            "hostname": "client@h",
            "timestamp": t0 + 1.002,
            "utcoffset": 0,
        },
        {"type": "task-started", "uuid": uid, "hostname": "w@h", "timestamp": t0 + 2, "utcoffset": 0},
    ):
        raw.publish("/0.celeryev/task.multi", event_envelope(event))
    wait_for(lambda: (t := dashboard.task(uid)) and len(t["history"]) == 3, message="the three events")
    open_live(page, dashboard, f"/tasks/{uid}")
    expect(page.locator("#timeline li")).to_have_count(3)
    events = page.locator("#timeline li").evaluate_all("els => els.map(e => e.dataset.event)")
    assert events == ["sent", "received", "started"]


def test_task_data_is_shown_as_text_never_as_html(page: Any, dashboard: DashboardServer, worker: str) -> None:
    """Markup in args and exceptions appears literally on every page and no script runs."""
    payload = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'
    (uuid,) = dashboard.launch("dashboard.demo.send_email", args=[payload, "<b>bold</b>"])
    dashboard.wait_task(uuid, "FAILURE")
    for path in ("/", "/tasks", f"/tasks/{uuid}"):
        open_live(page, dashboard, path)
        expect(page.get_by_text("onerror=", exact=False).first).to_be_visible()
        assert page.locator("main img, main script, main b").count() == 0, f"markup injected on {path}"
        assert page.evaluate("window.__xss") is None, f"script ran on {path}"
    expect(page.locator("#task-exception")).to_contain_text("<script>window.__xss=2</script>")


def test_workers_page_shows_the_worker_online(page: Any, dashboard: DashboardServer, worker: str) -> None:
    """The demo worker is listed online with a ticking heartbeat age."""
    open_live(page, dashboard, "/workers")
    row = page.locator(f'#worker-table tbody tr[data-hostname="{worker}"]')
    expect(row.locator(".online")).to_have_text("online")
    expect(row.locator(".heartbeat")).to_contain_text("s ago")
    expect(page.locator("#empty-workers")).to_be_hidden()


def test_broker_outage_shows_a_banner_then_the_missed_window(page: Any, own_redis: RedisServer) -> None:
    """Redis goes away: the open page says so at once (banner, badge, the empty workers panel), and after
    Redis returns it says when events may have been missed — never a silently stale dashboard."""
    dash = DashboardServer(own_redis.url, env={"DASHBOARD_RECONNECT_MAX": "1"})
    try:
        open_live(page, dash, "/")
        banner = page.locator("#broker-banner")
        badge = page.locator("#conn-status")
        empty = page.locator("#empty-workers")  # no worker on this Redis
        expect(banner).to_be_hidden()
        expect(empty).to_contain_text("No worker is reporting events")
        own_redis.stop()
        expect(banner).to_be_visible(timeout=10_000)
        expect(banner).to_have_attribute("data-kind", "down")
        expect(banner).to_contain_text("Broker unreachable")
        # The socket is live but the broker is not: the badge and the overview blame the broker, not the workers.
        expect(badge).to_have_attribute("data-state", "broker-down")
        expect(badge).to_have_text("broker unreachable")
        expect(empty.get_by_role("heading", name="The broker is unreachable")).to_be_visible()
        expect(empty.get_by_text("No worker is reporting events")).to_be_hidden()
        own_redis.start()
        expect(banner).to_have_attribute("data-kind", "recovered", timeout=20_000)
        expect(banner).to_contain_text("may have been missed")
        expect(badge).to_have_attribute("data-state", "live")
        expect(empty.get_by_role("heading", name="No worker is reporting events")).to_be_visible()
    finally:
        dash.stop()


def test_chord_workflow_view_shows_every_node_with_its_final_state(
    page: Any, dashboard: DashboardServer, worker: str
) -> None:
    """From the chord's callback, the task page shows the whole workflow from its root, every node
    finished, and leads back to the root."""
    (root,) = dashboard.launch("dashboard.demo.workflow", kwargs={"n": 3})

    def callback() -> str | None:
        tasks = dashboard.get("/api/tasks?name=demo.tsum&state=SUCCESS&limit=500").json()["tasks"]
        for t in tasks:
            if dashboard.task(t["uuid"])["root_id"] == root:
                return t["uuid"]
        return None

    tsum = wait_for(callback, timeout=60, message="the chord callback to succeed")
    open_live(page, dashboard, f"/tasks/{tsum}")
    nodes = page.locator("#workflow-tree li")
    expect(nodes).to_have_count(6)  # workflow -> add -> 3 adds (group) -> tsum (chord callback)
    expect(page.locator('#workflow-tree li[data-state="SUCCESS"]')).to_have_count(6, timeout=20_000)
    expect(page.locator('#workflow-tree li[aria-current="true"]')).to_contain_text("dashboard.demo.tsum")
    expect(page.locator("#workflow-summary")).to_contain_text("6 of 6 finished")
    page.locator(f'#workflow-tree li[data-uuid="{root}"] > a').click()
    expect(page).to_have_url(f"{dashboard.base_url}/tasks/{root}")
    expect(page.locator("#task-name")).to_have_text("dashboard.demo.workflow")
    expect(page.locator("#workflow-tree li")).to_have_count(6)


def test_failures_page_groups_alike_failures_and_lists_their_tasks(
    page: Any, dashboard: DashboardServer, worker: str
) -> None:
    """Failures with different cards and amounts are one group; its count leads to exactly its tasks."""
    ids = [dashboard.launch("dashboard.demo.fail", kwargs={"card": f"4000-{i}", "amount": i})[0] for i in (3, 17, 250)]
    for uid in ids:
        dashboard.wait_task(uid, "FAILURE")
    open_live(page, dashboard, "/failures")
    # Other tests' cards ("form-card", 16-digit numbers) have other shapes, hence other groups.
    row = page.locator("#failure-groups tbody tr[data-group]").filter(
        has_text="card <n>-<n> was declined for amount <n>: insufficient funds"
    )
    expect(row).to_have_count(1)
    expect(row.locator(".exc-type")).to_have_text("PaymentDeclined")
    expect(row.locator(".frame")).to_contain_text("dashboard/demo.py:_authorize")
    count = int(row.locator(".count").inner_text().replace(",", ""))
    assert count >= 3
    row.get_by_role("button", name="Traceback").click()
    expect(page.locator("#failure-groups .group-detail pre")).to_contain_text("in _authorize")
    row.locator(".count a").click()
    expect(page).to_have_url(re.compile(r"/tasks\?group="))
    table = page.locator("#task-table tbody tr[data-uuid]")
    expect(table.first).to_be_visible()
    shown = set(table.evaluate_all("rows => rows.map(r => r.dataset.uuid)"))
    assert set(ids) <= shown and all(
        r == "FAILURE" for r in table.evaluate_all("rows => rows.map(r => r.dataset.state)")
    )


def test_failures_page_tells_groups_that_only_retried_from_real_failures(
    page: Any, dashboard: DashboardServer, worker: str
) -> None:
    """A group whose tasks retried and recovered says so in its row, and the toggle hides it (kept in the
    URL) while groups with a final failure stay."""
    (flaky,) = dashboard.launch("dashboard.demo.flaky", kwargs={"fail_times": 1})
    (failed,) = dashboard.launch("dashboard.demo.fail", kwargs={"card": "toggle-card"})
    dashboard.wait_task(flaky, "SUCCESS")
    dashboard.wait_task(failed, "FAILURE")
    open_live(page, dashboard, "/failures")
    groups = page.locator("#failure-groups tbody tr[data-group]")
    retried = groups.filter(has_text="upstream unavailable on attempt")
    real = groups.filter(has_text="card toggle-card was declined")
    expect(retried).to_have_count(1)
    expect(retried).to_have_attribute("data-final", "0")
    expect(retried.locator(".outcomes")).to_contain_text("failed 0")
    expect(retried.locator('.outcome[data-outcome="RECOVERED"]')).not_to_have_text("recovered 0")
    expect(retried.locator(".outcomes")).to_contain_text("no final failure")
    expect(real.locator(".outcomes")).to_contain_text("failed 1")
    expect(real.locator(".outcomes")).not_to_contain_text("no final failure")
    page.check("#failure-final-only")
    expect(retried).to_have_count(0)
    expect(real).to_have_count(1)
    expect(page.locator("#failure-hidden")).to_contain_text("hidden")
    expect(page).to_have_url(re.compile(r"/failures\?final=1$"))
    page.reload()
    expect(page.locator("#failure-final-only")).to_be_checked()
    expect(real).to_have_count(1)
    expect(retried).to_have_count(0)


def test_stats_page_shows_failure_rate_and_runtimes(page: Any, dashboard: DashboardServer, worker: str) -> None:
    (uid,) = dashboard.launch("dashboard.demo.add", args=[1, 2])
    dashboard.wait_task(uid, "SUCCESS")
    open_live(page, dashboard, "/stats")
    add = page.locator('#stats-table tbody tr[data-name="dashboard.demo.add"]')
    expect(add).to_be_visible()
    cells = add.locator("td")
    assert int(cells.nth(1).inner_text().replace(",", "")) >= 1
    expect(cells.nth(5)).to_contain_text("ms")  # runtime p50 of a 0.3 s sleep
    # Two different waits, two names: the worker wait (received → started) here, the queue wait
    # (sent → started) on hover, on the Queues page and both on the task page.
    expect(page.locator("#stats-table thead")).to_contain_text("Worker wait p50")
    expect(page.locator("#stats-table thead")).not_to_contain_text("Queue wait")
    expect(cells.nth(8)).to_have_attribute("title", re.compile(r"^Queue wait \(sent → started\): p50 \d"))
    page.goto(f"{dashboard.base_url}/queues")
    expect(page.locator("#queue-table thead")).to_contain_text("Queue wait p50")
    open_live(page, dashboard, f"/tasks/{uid}")
    fields = page.locator("#task-fields")
    expect(fields.locator('div:has(> [data-field="queue_wait_sent"]) dt')).to_have_text("Queue wait")
    expect(fields.locator('div:has(> [data-field="queue_wait"]) dt')).to_have_text("Worker wait")
    expect(fields.locator('[data-field="queue_wait_sent"]')).to_have_text(re.compile(r"^\d+(\.\d+)? (ms|s)$"))
    expect(fields.locator('[data-field="queue_wait"]')).to_have_text(re.compile(r"^\d+(\.\d+)? (ms|s)$"))


def test_flaky_task_shows_each_attempt_and_copies_its_uuid(page: Any, dashboard: DashboardServer, worker: str) -> None:
    """A task retried by autoretry_for shows each attempt's own exception, and its uuid is copyable."""
    (uuid,) = dashboard.launch("dashboard.demo.flaky", kwargs={"fail_times": 2})
    dashboard.wait_task(uuid, "SUCCESS", timeout=40)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    open_live(page, dashboard, f"/tasks/{uuid}")
    attempts = page.locator("#task-attempts .attempts > li")
    expect(attempts).to_have_count(2)
    expect(attempts.nth(0)).to_contain_text("upstream unavailable on attempt 1")
    expect(attempts.nth(1)).to_contain_text("upstream unavailable on attempt 2")
    page.locator("#copy-uuid").click()
    expect(page.locator("#copy-uuid-status")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == uuid


def test_a_launch_is_on_the_audit_page_with_links_to_its_tasks(page: Any, dashboard: DashboardServer) -> None:
    """Launch from the form, follow the result's audit link: the entry says who, what and that it was sent,
    and its details link to each task sent (no worker-reply section: a launch has none)."""
    open_live(page, dashboard, "/launch")
    page.select_option("#launch-task", "dashboard.demo.add")
    page.fill("#launch-args", "[20, 22]")
    page.fill("#launch-count", "2")
    page.locator("#launch-form button[type=submit]").click()
    expect(page.locator("#launch-result li a")).to_have_count(2)
    ids = page.locator("#launch-result li a").all_inner_texts()
    page.locator("#launch-result a.audit-link").click()
    expect(page).to_have_url(re.compile(r"/audit#entry-\d+$"))
    row = page.locator("#audit-table tr.targeted")
    expect(row.locator(".action")).to_have_text("launch")
    expect(row.locator(".target")).to_have_text("dashboard.demo.add")
    expect(row.locator(".user")).to_have_text("anonymous")
    expect(row.locator(".remote")).to_have_text("127.0.0.1")
    expect(row.locator(".result")).to_have_text("ok")
    expect(row.locator(".message")).to_have_text("sent 2 × dashboard.demo.add")
    detail = page.locator("tr.audit-detail")  # a targeted entry opens by itself
    expect(detail.locator(".audit-sent")).to_contain_text("Tasks sent (2)")
    hrefs = detail.locator(".audit-sent a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
    assert hrefs == [f"/tasks/{uuid}" for uuid in ids]
    expect(detail.locator("code")).to_have_text('{"count":2,"countdown":0,"via":"form"}')
    expect(detail.locator(".replies-empty")).to_have_count(0)
