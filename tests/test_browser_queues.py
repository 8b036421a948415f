"""In Debian's Chromium: the queues page against a real Redis and the real dashboard server."""

from __future__ import annotations

import re
from typing import Any

import pytest
from conftest import DashboardServer, RedisServer
from playwright.sync_api import expect

from dashboard.cluster.control import make_celery

pytestmark = pytest.mark.browser


def test_queue_lengths_update_hint_goes_and_the_queue_leads_to_its_tasks(page: Any, redis_server: RedisServer) -> None:
    """A user watches a queue nobody consumes fill up: lengths per priority update in place, the
    task_send_sent_event hint disappears once task-sent events arrive, the queue links to its tasks."""
    url = redis_server.url_db(13)
    server = DashboardServer(url, env={"DASHBOARD_QUEUE_POLL_INTERVAL": "0.5"})
    client = make_celery(url)
    try:
        page.goto(server.base_url + "/queues")
        expect(page.locator("#conn-status")).to_have_attribute("data-state", "live")
        hint = page.locator("#queues-sent-hint")
        expect(hint).to_be_visible()
        expect(hint).to_contain_text("task_send_sent_event = True")
        expect(page.locator('#queue-table tr[data-queue="celery"] td.length')).to_have_text("0")
        page.evaluate("window.__sameDocument = true")

        first = client.send_task("browser.never_run", queue="bq", priority=0).id
        client.send_task("browser.never_run", queue="bq", priority=9)
        row = page.locator('#queue-table tr[data-queue="bq"]')
        expect(row.locator("td.length")).to_have_text("2")
        expect(row.locator('.prio[data-step="0"] .prio-n')).to_have_text("1")
        expect(row.locator('.prio[data-step="9"] .prio-n')).to_have_text("1")
        expect(row.locator('.prio[data-step="3"] .prio-n')).to_have_text("0")
        expect(row.locator("td.consumers")).to_have_text("none")
        expect(row.locator("td.oldest a")).to_have_text(first[:8])
        expect(row.locator("td.oldest .age")).to_contain_text("waiting")
        expect(hint).to_be_hidden()

        client.send_task("browser.never_run", queue="bq", priority=9)
        expect(row.locator("td.length")).to_have_text("3")
        expect(row.locator('.prio[data-step="9"] .prio-n')).to_have_text("2")
        assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"
        expect(page.locator("#queues-stale")).to_be_hidden()

        row.locator("a.queue-link").click()
        expect(page).to_have_url(re.compile(r"/tasks\?queue=bq$"))
        expect(page.locator(f'tr[data-uuid="{first}"]')).to_be_visible()
    finally:
        server.stop()
        client.close()


def test_stale_banner_when_the_broker_goes_away(page: Any, own_redis: RedisServer) -> None:
    """With Redis gone the page keeps the last lengths and says they are stale, with the error."""
    server = DashboardServer(own_redis.url, env={"DASHBOARD_QUEUE_POLL_INTERVAL": "0.5"})
    client = make_celery(own_redis.url)
    try:
        client.send_task("browser.never_run", queue="sq")
        page.goto(server.base_url + "/queues")
        row = page.locator('#queue-table tr[data-queue="sq"]')
        expect(row.locator("td.length")).to_have_text("1")
        own_redis.stop()
        stale = page.locator("#queues-stale")
        expect(stale).to_be_visible()
        expect(stale).to_contain_text("last known")
        expect(row.locator("td.length")).to_have_text("1")
        own_redis.start()
        expect(stale).to_be_hidden(timeout=30_000)
    finally:
        server.stop()
        client.close()
