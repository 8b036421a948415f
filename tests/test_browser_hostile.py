"""Hostile data on every page, in Chromium: markup and script in task names, args, kwargs, results,
exceptions, tracebacks, worker hostnames and queue names is shown as text, never run or rendered;
an oversized traceback is shortened with its whole value one click away, as plain text."""

from __future__ import annotations

import time
import uuid as uuidlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import redis
from conftest import DashboardServer, RedisServer, event_envelope, wait_for
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

# Each part tries another way in: an event handler, a script element, plain markup, an attribute break-out.
PAYLOAD = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script><b id="injected">b</b>"\'>'
HOST = f"celery@{PAYLOAD}"
QUEUE = f"q{PAYLOAD}"
NAME = f"tasks.{PAYLOAD}"
BIG_TB = "Traceback (most recent call last):\n" + f'  File "x.py", line 1, in f {PAYLOAD}\n' * 2000


@pytest.fixture(scope="module")
def hostile(redis_server: RedisServer) -> Iterator[tuple[DashboardServer, str]]:
    """A dashboard that has seen a worker, a failed task and a queued task made of payloads."""
    url = redis_server.url_db(13)
    dash = DashboardServer(url, env={"DASHBOARD_ENABLE_EVENTS_INTERVAL": "0", "DASHBOARD_INSPECT_INTERVAL": "0"})
    raw = redis.Redis.from_url(url)
    uid, queued = str(uuidlib.uuid4()), str(uuidlib.uuid4())
    now = time.time()
    common = {"hostname": HOST, "utcoffset": 0}
    events = [
        dict(common, type="worker-online", timestamp=now, freq=60.0, sw_ident=PAYLOAD, sw_ver=PAYLOAD, sw_sys=PAYLOAD),
        dict(common, type="worker-heartbeat", timestamp=now, freq=60.0, active=0, processed=1, loadavg=[PAYLOAD]),
        {
            "type": "task-sent",
            "uuid": uid,
            "name": NAME,
            "args": f"({PAYLOAD!r},)",
            "kwargs": repr({PAYLOAD: PAYLOAD}),
            "queue": QUEUE,
            "routing_key": QUEUE,
            "exchange": PAYLOAD,
            "hostname": f"client {PAYLOAD}",
            "timestamp": now - 1,
            "utcoffset": 0,
        },
        dict(
            common,
            type="task-received",
            uuid=uid,
            name=NAME,
            args=f"({PAYLOAD!r},)",
            kwargs=repr({PAYLOAD: PAYLOAD}),
            timestamp=now - 0.9,
        ),
        dict(common, type="task-started", uuid=uid, timestamp=now - 0.8),
        dict(common, type="task-progress", uuid=uid, timestamp=now - 0.7, current=PAYLOAD, total=PAYLOAD),
        dict(
            common,
            type="task-failed",
            uuid=uid,
            timestamp=now - 0.5,
            exception=f"ValueError({PAYLOAD!r})",
            traceback=BIG_TB,
            result=PAYLOAD,
        ),
        {
            "type": "task-sent",
            "uuid": queued,
            "name": NAME,
            "args": "()",
            "kwargs": "{}",
            "queue": QUEUE,
            "routing_key": QUEUE,
            "hostname": "client",
            "timestamp": now,
            "utcoffset": 0,
        },
    ]
    for ev in events:
        raw.publish("/13.celeryev/task.multi", event_envelope(ev))
    wait_for(lambda: (t := dash.task(uid)) and t["state"] == "FAILURE", message="the hostile task")
    wait_for(lambda: dash.task(queued), message="the queued task")
    yield dash, uid
    dash.stop()


def _check(page: Any, dash: DashboardServer, path: str, *visible: str) -> None:
    page.goto(dash.base_url + path)
    expect(page.locator("#conn-status")).to_have_attribute("data-state", "live")
    for text in visible:
        expect(page.locator("main").get_by_text(text, exact=False).first).to_be_attached()
    page.wait_for_timeout(300)  # let late renders (polls, ticks) happen before looking for damage
    assert page.evaluate("window.__pwned") is None, f"a script ran on {path}"
    assert page.locator("#injected, main img[src='x'], main script").count() == 0, f"markup injected on {path}"


@pytest.mark.parametrize(
    "path, visible",
    [
        ("/", ["onerror="]),
        ("/tasks", ["onerror="]),
        ("/failures", ["onerror="]),
        ("/stats", ["onerror="]),
        ("/workers", ["onerror="]),
        ("/queues", ["onerror="]),
    ],
)
def test_payloads_are_text_on_every_list_page(
    page: Any, hostile: tuple[DashboardServer, str], path: str, visible: list[str]
) -> None:
    dash, _ = hostile
    _check(page, dash, path, *visible)


def test_payloads_are_text_on_the_task_page_and_the_long_traceback_is_one_click_away(
    page: Any, hostile: tuple[DashboardServer, str]
) -> None:
    dash, uid = hostile
    _check(page, dash, f"/tasks/{uid}", "<script>window.__pwned=2</script>")
    expect(page.locator("#task-name")).to_have_text(NAME)
    expect(page.locator('#task-fields [data-field="worker"]')).to_have_text(HOST)
    expect(page.locator('#task-fields [data-field="queue"]')).to_have_text(QUEUE)
    assert len(page.locator("#task-traceback").inner_text()) < len(BIG_TB), "shortened for display"
    link = page.locator("#whole-traceback a")
    expect(page.locator("#whole-traceback")).to_contain_text(f"{len(BIG_TB):,} characters")
    with page.expect_popup() as popup_info:
        link.click()
    whole = popup_info.value
    whole.wait_for_load_state()
    assert whole.evaluate("document.body.innerText").rstrip("\n") == BIG_TB.rstrip("\n")
    assert whole.evaluate("window.__pwned") is None and whole.locator("img, script, b").count() == 0


def test_payloads_are_text_on_the_worker_page(page: Any, hostile: tuple[DashboardServer, str]) -> None:
    dash, _ = hostile
    _check(page, dash, f"/workers/{quote(HOST, safe='')}", "onerror=")
