"""Event published -> the browser's DOM, under background load of other tasks, in two figures.

The /tasks page row: the page is filtered on the marker task name: a busy unfiltered list shows only
the newest 100 rows (and a tick sends at most the newest changed tasks), so a marker among thousands of
new tasks a second may rightly never be shown. With the filter, every marker must appear, through the
same path (ingest -> state -> push tick -> Socket.IO -> tasks.js).

A task's own page (/tasks/<uuid>): Chromium opens a marker task's page once it is received (the
navigation is not timed), then the bench publishes its task-started and, a moment after the page shows
it, its task-succeeded; a MutationObserver stamps when the page's state badge shows each state.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import redis

from . import events as E
from .measure import Context, _r, fresh, percentile
from .publish import PacedPublisher
from .targets import Target

log = logging.getLogger(__name__)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
MARKER_NAME = "bench.marker"
MARKER_INTERVAL = 0.2
PAGE_MARKER_NAME = "bench.page_marker"
PAGE_STATES = ("STARTED", "SUCCESS")

OBSERVER = """() => {
  window.__seen = {};
  const tbody = document.querySelector('#task-table tbody');
  new MutationObserver((mutations) => {
    const now = Date.now();
    for (const m of mutations) for (const node of m.addedNodes) {
      const uuid = node.nodeType === 1 && node.dataset ? node.dataset.uuid : null;
      if (uuid && !(uuid in window.__seen)) window.__seen[uuid] = now;
    }
  }).observe(tbody, {childList: true});
  return true;
}"""


# Stamps (page clock, ms) when the task page's state badge first shows each state.
PAGE_OBSERVER = """() => {
  window.__states = {};
  const badge = document.getElementById('task-state');
  const stamp = () => {
    const state = badge.dataset.state;
    if (state && !(state in window.__states)) window.__states[state] = Date.now();
  };
  new MutationObserver(stamp).observe(badge, {attributes: true, attributeFilter: ['data-state']});
  stamp();
  return true;
}"""


def _task_message(w: E.Worker, type_: str, uuid: str, **fields: Any) -> tuple[bytes, bytes]:
    """A task.multi of one event of the marker task, encoded now (as marker_message does for task-received)."""
    w.clock += 1
    ev = E.event(type_, w.hostname, w.pid, w.clock, time.time(), E.utcoffset(), uuid=uuid, **fields)
    return E.channel(E.TASK_MULTI), E.envelope([ev], w.hostname, E.TASK_MULTI)


def task_page(ctx: Context, target: Target, client: redis.Redis, browser: Any, seconds: float) -> dict[str, Any]:
    """Event -> a task's own page: p50/p95 over the task-started and task-succeeded of marker tasks."""
    page = browser.new_page(bypass_csp=True)  # the bench injects its own observer script
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    worker = ctx.workers[0]
    rng = random.Random(ctx.salt)
    delays: dict[str, list[float]] = {state: [] for state in PAGE_STATES}
    markers = missed = 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            uuid = E.new_marker_uuid()
            markers += 1
            client.publish(*E.marker_message(worker, uuid, PAGE_MARKER_NAME))
            page.goto(f"{target.base}/tasks/{uuid}")
            try:
                page.wait_for_selector('#task-state[data-state="RECEIVED"]', state="attached", timeout=10_000)
                page.evaluate(PAGE_OBSERVER)
                # A random pause: the publish must not keep one phase to the dashboard's push ticks.
                time.sleep(rng.uniform(0.05, 0.25))
                for state, type_, fields in (
                    ("STARTED", "task-started", {}),
                    ("SUCCESS", "task-succeeded", {"result": "'ok'", "runtime": 0.05}),
                ):
                    published = time.time()
                    client.publish(*_task_message(worker, type_, uuid, **fields))
                    page.wait_for_function(f"() => '{state}' in window.__states", timeout=10_000, polling=5)
                    seen: float = page.evaluate(f"window.__states['{state}']")
                    delays[state].append(seen - published * 1000)
                    time.sleep(rng.uniform(0.0, 0.1))  # a task that runs a moment: its end follows soon
            except Exception as exc:  # noqa: BLE001 - one marker lost is a figure, not a crash
                missed += 1
                log.warning("task page marker %s: %s", uuid, exc)
    finally:
        page.close()
    both = delays["STARTED"] + delays["SUCCESS"]
    return {
        "markers": markers,
        "missed": missed,
        "events": len(both),
        "p50_ms": _r(percentile(both, 50)),
        "p95_ms": _r(percentile(both, 95)),
        "max_ms": _r(max(both) if both else None),
        "started_p95_ms": _r(percentile(delays["STARTED"], 95)),
        "succeeded_p95_ms": _r(percentile(delays["SUCCESS"], 95)),
        "page_errors": errors[:5],
    }


def latency(ctx: Context, cls: type[Target], background_rate: float, seconds: float) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    pool = ctx.pools["life"]
    published: dict[str, float] = {}
    rng = random.Random(ctx.salt)
    with fresh(ctx, cls) as target, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        client = redis.Redis.from_url(ctx.redis.url)
        try:
            page = browser.new_page(bypass_csp=True)  # the bench injects its own observer script
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            with PacedPublisher(
                ctx.redis.url, pool, background_rate, duration=2 * seconds + 60, salt=ctx.salt * 1000
            ) as pub:
                page.goto(f"{target.base}/tasks?name={MARKER_NAME}")
                page.wait_for_function("document.getElementById('conn-status')?.textContent === 'live'", timeout=20_000)
                page.evaluate(OBSERVER)
                time.sleep(1.0)  # the subscription's snapshot is in; the load is steady
                worker = ctx.workers[0]
                deadline = time.monotonic() + seconds
                while time.monotonic() < deadline:
                    uuid = E.new_marker_uuid()
                    ch, msg = E.marker_message(worker, uuid, MARKER_NAME)
                    published[uuid] = time.time()
                    client.publish(ch, msg)
                    # Jittered: markers exactly one push interval apart would keep one phase to the ticks.
                    time.sleep(MARKER_INTERVAL * rng.uniform(0.75, 1.25))
                time.sleep(2.0)  # the last markers' ticks
                seen: dict[str, float] = page.evaluate("window.__seen")
                page.close()
                own_page = task_page(ctx, target, client, browser, seconds)
                background = pub.published()
            rss = target.rss_kb()
        finally:
            client.close()
            browser.close()
    delays = [seen[u] - published[u] * 1000 for u in published if u in seen]
    result = {
        "markers": len(published),
        "seen": len(delays),
        "background_rate": background_rate,
        "background_published": background,
        "p50_ms": _r(percentile(delays, 50)),
        "p95_ms": _r(percentile(delays, 95)),
        "max_ms": _r(max(delays) if delays else None),
        "page_errors": errors[:5],
        "rss_kb": rss,
        "task_page": own_page,
    }
    log.info("latency %s: %s", cls.name, dict(result))
    return result
