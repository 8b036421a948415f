"""In Debian's Chromium: the Tasks page as the way to find any task among 10 000.

A dashboard of its own (and its own Redis) is filled with 10 000 finished tasks by publishing
pre-built Celery events straight into Redis, as a prefork worker batches them (task.multi); then a
user filters, searches, shares a link, pages, exports and picks columns, while new tasks arrive.
"""

from __future__ import annotations

import csv
import re
import time
import uuid as uuidlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from conftest import DashboardServer, RedisServer, event_envelope, wait_for
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

N = 10_000
WORD = "zebracorn"  # in the args of exactly a few tasks
NAMES = (
    "proj.media.resize_image",
    "proj.billing.send_invoice",
    "proj.accounts.sync_account",
    "proj.billing.charge_card",
)
# index -> (state, runtime): the tasks whose args hold WORD
SPECIAL = {
    1230: ("FAILURE", 4.5),
    3141: ("SUCCESS", 1.1),
    5925: ("FAILURE", 0.7),
    7777: ("SUCCESS", 3.3),
    8888: ("FAILURE", 2.0),
    9995: ("FAILURE", 9.1),
}
SPAN = 48 * 3600  # the tasks were first seen over the last two days, oldest first
CHANNEL = "/0.celeryev/task.multi"
NS = uuidlib.UUID("6b1e7c52-0000-4000-8000-00000000beef")


@dataclass
class Task:
    """One generated task, as the dashboard should report it."""

    i: int
    uuid: str
    name: str
    state: str
    queue: str
    sent: float
    runtime: float
    args: str


def _task(i: int, t0: float) -> Task:
    state, runtime = SPECIAL.get(i, ("FAILURE" if i % 10 == 0 else "SUCCESS", round(0.01 + (i * 7919 % 997) / 100, 2)))
    args = f"({i}, '{WORD}-{i}')" if i in SPECIAL else f"({i}, 'user-{i}')"
    return Task(
        i=i,
        uuid=str(uuidlib.uuid5(NS, f"task-{i}")),
        name=NAMES[i % 4],
        state=state,
        queue="priority" if i % 5 == 0 else "default",
        sent=t0 + i * SPAN / N,
        runtime=runtime,
        args=args,
    )


def _events(t: Task) -> list[dict[str, Any]]:
    worker = f"w{t.i % 3}@host"
    end = (
        {"type": "task-succeeded", "result": f"'ok {t.i}'"}
        if t.state == "SUCCESS"
        else {"type": "task-failed", "exception": f"ValueError('bad input {t.i}')", "traceback": "Traceback ..."}
    )
    return [
        {
            "type": "task-sent",
            "uuid": t.uuid,
            "name": t.name,
            "args": t.args,
            "kwargs": "{}",
            "retries": 0,
            "queue": t.queue,
            "routing_key": t.queue,
            "exchange": "",
            "hostname": "client@host",
            "timestamp": t.sent,
        },
        {
            "type": "task-received",
            "uuid": t.uuid,
            "name": t.name,
            "args": t.args,
            "kwargs": "{}",
            "hostname": worker,
            "timestamp": t.sent + 0.05,
        },
        {"type": "task-started", "uuid": t.uuid, "hostname": worker, "timestamp": t.sent + 0.1},
        {**end, "uuid": t.uuid, "hostname": worker, "runtime": t.runtime, "timestamp": t.sent + 0.1 + t.runtime},
    ]


def _publish(client: redis.Redis, events: list[dict[str, Any]], batch: int = 24) -> None:
    pipe = client.pipeline(transaction=False)
    for start in range(0, len(events), batch):
        pipe.publish(CHANNEL, event_envelope(*events[start : start + batch]))
        if len(pipe) >= 500:
            pipe.execute()
    pipe.execute()


class Cluster:
    """Our own Redis and dashboard, holding the generated tasks."""

    def __init__(self) -> None:
        self.redis = RedisServer()
        self.dash = DashboardServer(self.redis.url)
        self.client = redis.Redis.from_url(self.redis.url)
        t0 = time.time() - SPAN - 60
        self.tasks = [_task(i, t0) for i in range(N)]
        _publish(self.client, [ev for t in self.tasks for ev in _events(t)])
        last = self.tasks[-1]
        wait_for(
            lambda: (t := self.dash.task(last.uuid)) and t["state"] == last.state,
            timeout=60,
            message="the 10 000 tasks to be ingested",
        )
        assert self.dash.get("/api/tasks?limit=1").json()["total"] == N

    def add(
        self,
        name: str,
        count: int,
        state: str = "RECEIVED",
        args: str = "('new',)",
        queue: str = "default",
        runtime: float = 0.2,
    ) -> list[str]:
        """Publish `count` new tasks, first seen now (RECEIVED: sent and received only; SUCCESS or FAILURE:
        their whole lifecycle); they join `tasks`. Returns their uuids, newest first."""
        now = time.time()
        new = []
        for k in range(count):
            i = len(self.tasks) + k
            new.append(
                Task(
                    i=i,
                    uuid=str(uuidlib.uuid5(NS, f"task-{i}")),
                    name=name,
                    state=state,
                    queue=queue,
                    sent=now + k * 0.001,
                    runtime=runtime,
                    args=args,
                )
            )
        self.tasks.extend(new)
        _publish(self.client, [ev for t in new for ev in (_events(t)[:2] if state == "RECEIVED" else _events(t))])
        return [t.uuid for t in reversed(new)]

    def api(self, **params: Any) -> dict[str, Any]:
        """GET /api/tasks with these parameters."""
        return self.dash.get("/api/tasks", params=params).json()

    def stop(self) -> None:
        """Stop the dashboard and Redis."""
        self.dash.stop()
        self.redis.stop()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A dashboard of this module alone with 10 000 tasks (other tests' tasks never show up here)."""
    c = Cluster()
    yield c
    c.stop()


def _open(page: Any, cluster: Cluster, path: str) -> None:
    page.goto(cluster.dash.base_url + path)
    expect(page.locator("#conn-status")).to_have_attribute("data-state", "live")
    expect(page.locator("#task-total")).not_to_have_text("–")


def _uuids(page: Any) -> list[str]:
    return page.locator("#task-table tbody tr[data-uuid]").evaluate_all("els => els.map(e => e.dataset.uuid)")


def _newest_first(tasks: list[Task]) -> list[str]:
    return [t.uuid for t in sorted(tasks, key=lambda t: t.i, reverse=True)]


def test_filter_and_search_narrow_10000_tasks_to_the_few(page: Any, cluster: Cluster) -> None:
    """A word in the args of a handful of tasks finds exactly those; a state narrows them further."""
    _open(page, cluster, "/tasks")
    expect(page.locator("#task-table tbody tr[data-uuid]")).to_have_count(100)
    expect(page.locator("#task-shown")).to_have_text("1–100")

    page.fill("#filter-text", WORD)
    page.press("#filter-text", "Enter")
    expect(page).to_have_url(f"{cluster.dash.base_url}/tasks?q={WORD}")  # no empty fields in the link
    _live_total = page.locator("#task-total")
    matching = [t for t in cluster.tasks if WORD in t.args]
    expect(_live_total).to_have_text(str(len(matching)))
    expect(page.locator("#task-table tbody tr[data-uuid]")).to_have_count(len(matching))
    assert _uuids(page) == _newest_first(matching)
    expect(page.locator("#task-shown")).to_have_text(f"1–{len(matching)}")
    expect(page.locator("#pager-top")).to_be_hidden()  # one page: nothing to page through

    page.select_option("#filter-state", "FAILURE")  # a select applies at once
    expect(page).to_have_url(re.compile(rf"/tasks\?state=FAILURE&q={WORD}$"))
    failed = [t for t in matching if t.state == "FAILURE"]
    expect(_live_total).to_have_text(str(len(failed)))
    expect(page.locator("#task-table tbody tr[data-uuid]")).to_have_count(len(failed))
    assert _uuids(page) == _newest_first(failed)
    expect(page.locator("#filter-text")).to_have_value(WORD)
    expect(page.locator('#task-table tbody tr[data-state="FAILURE"] .info').first).to_contain_text("ValueError")

    page.fill("#filter-text", "no-task-has-this-word")
    page.press("#filter-text", "Enter")
    expect(page.locator("#task-empty")).to_contain_text("No task matches these filters yet")
    expect(page.locator("#task-empty a")).to_have_attribute("href", "/tasks")

    page.goto(cluster.dash.base_url + "/tasks?since=last-tuesday")  # a hand-edited link says what is wrong
    expect(page.locator("#task-empty")).to_contain_text("These filters cannot be applied: the since filter must be")


def test_a_copied_url_restores_the_view(page: Any, cluster: Cluster) -> None:
    """Filters, time range and sort in a link reproduce the same rows, in the same order, inputs filled."""
    path = f"/tasks?state=FAILURE&q={WORD}&queue=priority&since=24h&sort=runtime&order=asc"
    _open(page, cluster, path)
    cutoff = time.time() - 24 * 3600
    want = sorted(
        (
            t
            for t in cluster.tasks
            if WORD in t.args and t.state == "FAILURE" and t.queue == "priority" and t.sent >= cutoff
        ),
        key=lambda t: t.runtime,
    )
    assert len(want) >= 2 and want != sorted(want, key=lambda t: -t.i)  # the sort is visible
    expect(page.locator("#task-table tbody tr[data-uuid]")).to_have_count(len(want))
    assert _uuids(page) == [t.uuid for t in want]
    expect(page.locator("#task-total")).to_have_text(str(len(want)))
    expect(page.locator("#filter-state")).to_have_value("FAILURE")
    expect(page.locator("#filter-text")).to_have_value(WORD)
    expect(page.locator("#filter-queue")).to_have_value("priority")
    expect(page.locator("#filter-since")).to_have_value("24h")
    expect(page.locator("#filter-sort")).to_have_value("runtime")
    expect(page.locator("#filter-order")).to_have_value("asc")
    expect(page.locator("#task-table th.col-runtime")).to_have_attribute("aria-sort", "ascending")
    expect(page.locator("#task-summary")).to_contain_text("by runtime (shortest first)")
    # Sorted, the list never inserts live rows: a new matching task is announced, and Show puts it in place.
    page.evaluate("window.__sameDocument = true")
    (late,) = cluster.add(
        "proj.reports.build", 1, state="FAILURE", args=f"('{WORD}-late',)", queue="priority", runtime=5.0
    )
    expect(page.locator("#new-tasks-text")).to_have_text("1 new task —")
    assert _uuids(page) == [t.uuid for t in want]
    page.locator("#new-tasks-show").click()
    expect(page.locator("#new-tasks")).to_be_hidden()
    expect(page.locator("#task-table tbody tr[data-uuid]")).to_have_count(len(want) + 1)
    want = sorted(want + [cluster.tasks[-1]], key=lambda t: t.runtime)
    assert late in _uuids(page) and _uuids(page) == [t.uuid for t in want]
    assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"
    # The export links carry the same view.
    href = page.locator("#export-json").get_attribute("href")
    assert href.startswith("/api/tasks/export?format=json&")
    for part in ("state=FAILURE", f"q={WORD}", "queue=priority", "since=24h", "sort=runtime", "order=asc"):
        assert part in href


def test_the_page_stays_put_while_new_tasks_arrive(page: Any, cluster: Cluster) -> None:
    """Scrolled down on page 1: 30 new matching tasks move nothing and are announced; Show puts them on top."""
    name = NAMES[0]
    _open(page, cluster, f"/tasks?name={name}")
    expect(page.locator("#task-table tbody tr[data-uuid]")).to_have_count(100)
    page.evaluate("window.__sameDocument = true")
    page.evaluate("window.scrollTo(0, 1500)")
    page.wait_for_function("window.scrollY > 1000")
    before = _uuids(page)
    new = cluster.add(name, 30)
    bar = page.locator("#new-tasks")
    expect(bar).to_be_visible()
    expect(page.locator("#new-tasks-text")).to_have_text("30 new tasks —")
    expect(page.locator("#task-total")).to_have_text(f"{sum(t.name == name for t in cluster.tasks):,}")
    assert _uuids(page) == before, "rows moved while the reader was scrolled down"
    bar.get_by_role("button", name="Show").click()
    expect(page.locator("#task-table tbody tr[data-uuid]").first).to_have_attribute("data-uuid", new[0])
    assert _uuids(page)[:30] == new
    assert _uuids(page)[30:100] == before[:70]
    expect(bar).to_be_hidden()
    assert page.evaluate("window.scrollY") == 0
    assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"


def test_older_pages_by_cursor_and_stay_put(page: Any, cluster: Cluster) -> None:
    """Older shows 101–200 (what the cursor API gives); new tasks meanwhile are counted, not inserted."""
    name = NAMES[1]
    _open(page, cluster, f"/tasks?name={name}")
    expect(page.locator("#task-table tbody tr[data-uuid]")).to_have_count(100)
    first = cluster.api(name=name, limit=100)
    second = cluster.api(name=name, limit=100, cursor=first["next_cursor"])
    page.locator("#pager-top [data-page=older]").click()
    expect(page.locator("#task-shown")).to_have_text("101–200")
    expect(page.locator("#task-table tbody tr[data-uuid]").first).to_have_attribute(
        "data-uuid", second["tasks"][0]["uuid"]
    )
    assert _uuids(page) == [t["uuid"] for t in second["tasks"]]
    expect(page.locator("#pager-bottom .pager-range")).to_have_text(f"101–200 of {first['total']:,}")

    new = cluster.add(name, 30, state="SUCCESS")
    expect(page.locator("#new-tasks-text")).to_have_text("30 new tasks —")
    assert _uuids(page) == [t["uuid"] for t in second["tasks"]], "page 2 moved"
    page.locator("#pager-top [data-page=newer]").click()  # back to page 1: the new tasks are on it now
    expect(page.locator("#task-shown")).to_have_text("1–100")
    expect(page.locator("#task-table tbody tr[data-uuid]").first).to_have_attribute("data-uuid", new[0])
    assert _uuids(page)[:30] == new
    expect(page.locator("#new-tasks")).to_be_hidden()


def test_at_the_top_a_new_task_appears_live(page: Any, cluster: Cluster) -> None:
    """At the top of the newest page, a new matching task appears at once, then updates in place."""
    name = NAMES[2]
    _open(page, cluster, f"/tasks?name={name}")
    expect(page.locator("#task-table tbody tr[data-uuid]")).to_have_count(100)
    page.evaluate("window.__sameDocument = true")
    (uid,) = cluster.add(name, 1)
    first = page.locator("#task-table tbody tr[data-uuid]").first
    expect(first).to_have_attribute("data-uuid", uid)
    expect(first).to_have_attribute("data-state", "RECEIVED")
    expect(page.locator("#task-table tbody tr[data-uuid]")).to_have_count(100)  # still one page
    expect(page.locator("#new-tasks")).to_be_hidden()
    _publish(
        cluster.client,
        [
            {
                "type": "task-succeeded",
                "uuid": uid,
                "hostname": "w9@host",
                "runtime": 0.25,
                "result": "'fine'",
                "timestamp": time.time(),
            }
        ],
    )
    expect(first).to_have_attribute("data-state", "SUCCESS")
    expect(first.locator(".info")).to_have_text("'fine'")
    # Pointing at the table freezes it: the next task is announced instead.
    page.locator("#task-table tbody tr").nth(5).hover()
    before = _uuids(page)
    (second,) = cluster.add(name, 1)
    expect(page.locator("#new-tasks-text")).to_have_text("1 new task —")
    assert _uuids(page) == before
    # Away from the table again, the next task brings the announced one along: no gap in the list.
    page.mouse.move(5, 5)
    (third,) = cluster.add(name, 1)
    expect(first).to_have_attribute("data-uuid", third)
    assert _uuids(page)[:3] == [third, second, uid]
    expect(page.locator("#new-tasks")).to_be_hidden()
    assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"


def test_export_downloads_every_filtered_task(page: Any, cluster: Cluster) -> None:
    """Export CSV gives the whole filtered set (hundreds of rows, not the first page), newest first."""
    name = NAMES[0]
    _open(page, cluster, f"/tasks?state=FAILURE&name={name}")
    want = [t for t in cluster.tasks if t.state == "FAILURE" and t.name == name]
    assert len(want) > 100
    expect(page.locator("#task-total")).to_have_text(f"{len(want):,}")
    with page.expect_download() as info:
        page.locator("#export-csv").click()
    download = info.value
    assert download.suggested_filename.endswith(".csv")
    with open(download.path(), newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["uuid"] for r in rows] == _newest_first(want)
    assert {r["state"] for r in rows} == {"FAILURE"} and {r["name"] for r in rows} == {name}


def test_hidden_columns_stay_hidden_after_a_reload(page: Any, cluster: Cluster) -> None:
    """Columns → untick Args: the column goes, and stays gone after a reload."""
    _open(page, cluster, f"/tasks?name={NAMES[3]}")
    args_head = page.locator("#task-table th.col-args")
    expect(args_head).to_be_visible()
    page.locator("#columns-menu summary").click()
    page.locator('#columns-menu input[value="args"]').uncheck()
    expect(args_head).to_be_hidden()
    expect(page.locator("#task-table tbody td.args").first).to_be_hidden()
    page.keyboard.press("Escape")
    page.reload()
    expect(page.locator("#task-table tbody tr[data-uuid]")).to_have_count(100)
    expect(args_head).to_be_hidden()
    expect(page.locator("#task-table tbody td.args").first).to_be_hidden()
    expect(page.locator("#task-table th.col-name")).to_be_visible()
    expect(page.locator('#columns-menu input[value="args"]')).not_to_be_checked()
