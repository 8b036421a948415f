"""The Content-Security-Policy in Chromium: every page of a real dashboard with a worker runs, draws its
charts and gets live rows over the websocket without a single policy violation."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from conftest import DashboardServer
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

# Registered before any page script runs: every violation the browser reports, with what was blocked.
WATCH_VIOLATIONS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(`${e.effectiveDirective} blocked ${e.blockedURI || "inline"} at ${e.sourceFile}:${e.lineNumber}`);
});
"""


def _visit(page: Any, url: str, console: list[str]) -> list[str]:
    """Open a page, let its scripts, socket and first refreshes run; its violations and CSP console messages."""
    page.goto(url)
    expect(page.locator("#conn-status")).to_have_attribute("data-state", "live")
    page.wait_for_timeout(1500)  # polls, charts and the first live ticks
    return page.evaluate("window.__csp") + [m for m in console if "Content Security Policy" in m]


def test_every_page_runs_under_the_policy_with_charts_and_live_rows(
    page: Any, dashboard: DashboardServer, worker: str
) -> None:
    """Overview (uPlot chart), tasks, a task, failures (sparklines), stats, workers, a worker, queues, audit and
    launch: no securitypolicyviolation, no "Content Security Policy" console message; the charts draw and a task
    launched meanwhile shows up in the list over the websocket."""
    console: list[str] = []
    page.on("console", lambda msg: console.append(msg.text))
    page.add_init_script(WATCH_VIOLATIONS)
    [done] = dashboard.launch("dashboard.demo.add", args=[4, 5])
    [failed] = dashboard.launch("dashboard.demo.fail", kwargs={"card": "csp-card"})
    dashboard.wait_task(done, "SUCCESS")
    dashboard.wait_task(failed, "FAILURE")

    problems: dict[str, list[str]] = {}
    paths = [
        "/",
        "/tasks",
        f"/tasks/{done}",
        "/failures",
        "/stats",
        "/workers",
        f"/workers/{quote(worker, safe='@')}",
        "/queues",
        "/beat",
        "/audit",
        "/launch",
    ]
    for path in paths:
        response = page.request.get(dashboard.base_url + path)
        assert "script-src 'self'" in response.headers["content-security-policy"], path
        found = _visit(page, dashboard.base_url + path, console)
        console.clear()
        if found:
            problems[path] = found
        if path == "/":  # uPlot sized and drew its canvas (styles set through the CSSOM are allowed)
            canvas = page.locator("#throughput-chart canvas")
            expect(canvas).to_have_count(1)
            assert canvas.evaluate("c => c.width > 0 && c.height > 0")
            assert page.locator("#throughput-chart .u-over").evaluate("e => e.style.width !== ''")
        if path == "/failures":  # the per-minute sparklines are SVG built in script
            expect(page.locator("svg.sparkline").first).to_be_visible()
        if path == f"/tasks/{done}":
            expect(page.locator("#task-state")).to_have_text("SUCCESS")
    assert problems == {}, problems

    # Live rows still arrive over the websocket (connect-src 'self' covers ws: to the same origin): the new
    # task's row is pushed in a websocket frame, not fetched by polling.
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    frames: list[str] = []
    cdp.on("Network.webSocketFrameReceived", lambda e: frames.append(e["response"]["payloadData"]))
    page.goto(dashboard.base_url + "/tasks?name=dashboard.demo.add")
    expect(page.locator("#conn-status")).to_have_attribute("data-state", "live")
    page.evaluate("window.__sameDocument = true")
    [uuid] = dashboard.launch("dashboard.demo.add", args=[1, 2])
    expect(page.locator(f'#task-table tbody tr[data-uuid="{uuid}"]')).to_be_visible()
    assert page.evaluate("window.__sameDocument") is True
    assert any(uuid in frame for frame in frames), "the row did not come over the websocket"
    assert page.evaluate("window.__csp") == [] and not [m for m in console if "Content Security Policy" in m]
