"""Event published -> row in the browser's DOM, on the dashboard's /tasks page, under background load.

The page is filtered on the marker task name: a busy unfiltered list shows only the newest 100 rows
(and a tick sends at most the newest changed tasks), so a marker among thousands of new tasks a
second may rightly never be shown. With the filter, every marker must appear, through the same path
(ingest -> state -> push tick -> Socket.IO -> tasks.js).
"""

from __future__ import annotations

import logging
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


def latency(ctx: Context, cls: type[Target], background_rate: float, seconds: float) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    pool = ctx.pools["life"]
    published: dict[str, float] = {}
    with fresh(ctx, cls) as target, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        client = redis.Redis.from_url(ctx.redis.url)
        try:
            page = browser.new_page(bypass_csp=True)  # the bench injects its own observer script
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            with PacedPublisher(
                ctx.redis.url, pool, background_rate, duration=seconds + 60, salt=ctx.salt * 1000
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
                    time.sleep(MARKER_INTERVAL)
                time.sleep(2.0)  # the last markers' ticks
                seen: dict[str, float] = page.evaluate("window.__seen")
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
    }
    log.info("latency %s: %s", cls.name, dict(result))
    return result
