"""Security in Chromium: signing in with basic auth (pages and live updates), refusal without it,
read-only pages, and a real cross-site attack from a page on another origin."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis
from conftest import DashboardServer, RedisServer, wait_for
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect
from test_security import PASSWORD, TOKEN, AuthedServer

from dashboard.processes import free_port

pytestmark = pytest.mark.browser

DB = 9  # this module's Redis db: no worker consumes it, so a launched task stays in its queue
USER = "ada"
ATTACK_ARGS = [97531, 24680]  # marks the attacker's tasks (no uuid can hold ", ")


@pytest.fixture(scope="module")
def server(redis_server: RedisServer) -> Iterator[AuthedServer]:
    """A real dashboard with a basic user and a token, watching db 9."""
    srv = AuthedServer(
        redis_server.url_db(DB),
        auth=(USER, PASSWORD),
        env={"DASHBOARD_AUTH_USERS": f"{USER}:{PASSWORD}", "DASHBOARD_AUTH_TOKEN": TOKEN},
    )
    yield srv
    srv.stop()


@pytest.fixture
def queue_db() -> int:
    """`queue` (conftest) watches the `celery` list of this module's db."""
    return DB


@pytest.fixture
def signed_in(browser: Any) -> Iterator[Any]:
    """A page in a browser that has the user's basic credentials; fails the test on JS errors."""
    context = browser.new_context(http_credentials={"username": USER, "password": PASSWORD})
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def test_signed_in_browser_gets_pages_and_live_updates(server: AuthedServer, signed_in: Any) -> None:
    """Chromium resends the cached basic credentials on its XHR and websocket requests: the socket
    connects and a task launched elsewhere appears live in the list."""
    cdp = signed_in.context.new_cdp_session(signed_in)
    cdp.send("Network.enable")
    handshakes: list[dict[str, str]] = []
    cdp.on("Network.webSocketWillSendHandshakeRequest", lambda e: handshakes.append(e["request"]["headers"]))

    response = signed_in.goto(f"{server.base_url}/tasks?name=dashboard.demo.add")
    assert response.status == 200
    expect(signed_in.locator("#signed-in")).to_have_text(f"signed in as {USER}")
    expect(signed_in.locator("#conn-status")).to_have_attribute("data-state", "live")

    [uuid] = server.post(
        "/api/launch", json={"unregistered_ok": True, "task": "dashboard.demo.add", "args": [1, 2]}
    ).json()["task_ids"]
    expect(signed_in.locator(f"tr[data-uuid='{uuid}']")).to_be_visible()  # pushed over the socket
    # What Chromium really did: the websocket upgrade carried the Authorization header too.
    wait_for(lambda: handshakes, message="a websocket handshake")
    assert all(h.get("Authorization", "").startswith("Basic ") for h in handshakes), handshakes


@pytest.mark.parametrize(
    "credentials", [None, {"username": USER, "password": "wrong"}, {"username": "mallory", "password": PASSWORD}]
)
def test_browser_without_credentials_gets_401_and_nothing_else(
    server: AuthedServer, browser: Any, credentials: Any
) -> None:
    """No or wrong credentials: the page is a 401 and the browser loads nothing of the dashboard."""
    context = browser.new_context(http_credentials=credentials) if credentials else browser.new_context()
    page = context.new_page()
    seen: list[tuple[str, int]] = []
    page.on("response", lambda r: seen.append((r.url, r.status)))
    try:
        page.goto(f"{server.base_url}/tasks")
    except PlaywrightError as exc:  # headless Chromium gives up on a refused sign-in
        assert "ERR_INVALID_AUTH_CREDENTIALS" in str(exc)
    finally:
        context.close()
    assert seen and all(status == 401 for _url, status in seen), seen
    assert not [url for url, _ in seen if "/static/" in url or "/socket.io/" in url]


def test_read_only_browser_has_no_launch(redis_server: RedisServer, page: Any) -> None:
    """In read-only mode the Launch link and the launch form are gone; /launch says why."""
    srv = DashboardServer(redis_server.url_db(DB), "--read-only")
    try:
        page.goto(f"{srv.base_url}/tasks")
        expect(page.locator("#conn-status")).to_have_attribute("data-state", "live")
        expect(page.locator("header nav a")).not_to_have_count(0)
        expect(page.locator("header nav a", has_text="Launch")).to_have_count(0)
        expect(page.locator("#launch-panel")).to_have_count(0)
        expect(page.locator("#launch-form")).to_have_count(0)
        expect(page.locator("#page")).to_have_attribute("data-controls", "off")
        page.goto(f"{srv.base_url}/launch")
        expect(page.locator("#launch-off")).to_have_text("The dashboard is read-only: launching tasks is turned off.")
        expect(page.locator("#launch-form")).to_have_count(0)
    finally:
        srv.stop()


ATTACK_PAGE = """<!doctype html><meta charset="utf-8"><title>Win a prize</title>
<iframe name="f1"></iframe><iframe name="f2"></iframe>
<form id="form" method="post" action="{target}/launch" target="f1">
  <input name="task" value="dashboard.demo.add"><input name="args" value="{args}">
  <input name="unregistered_ok" value="1">
</form>
<form id="plain" method="post" action="{target}/api/launch" target="f2" enctype="text/plain">
  <input name='{{"task": "dashboard.demo.add", "args": {args}, "unregistered_ok": true, "x": "' value='"}}'>
</form>
<script>
window.results = {{}};
// Confirmed like a real launch (no worker here has the task registered): only the origin is wrong.
const body = JSON.stringify({{task: "dashboard.demo.add", args: {args}, unregistered_ok: true}});
const note = (key) => (value) => {{ window.results[key] = String(value && value.type || value); }};
Promise.all([
  fetch("{target}/api/launch", {{method: "POST", mode: "no-cors", credentials: "include",
                                 headers: {{"Content-Type": "application/json"}}, body}})
    .then(note("no-cors"), note("no-cors")),
  fetch("{target}/api/launch", {{method: "POST", credentials: "include",
                                 headers: {{"Content-Type": "application/json"}}, body}})
    .then(note("cors"), note("cors")),
  new Promise((done) => {{
    const ws = new WebSocket("{ws}/socket.io/?EIO=4&transport=websocket");
    ws.onopen = () => {{ note("websocket")("open"); done(); }};
    ws.onerror = () => {{ note("websocket")("refused"); done(); }};
  }}),
]).then(() => {{
  // One after the other: each frame's load (the dashboard's answer, shown as a blocked frame) starts the next.
  const [f1, f2] = document.querySelectorAll("iframe");
  f1.onload = () => document.getElementById("plain").submit();
  f2.onload = () => {{ window.results.submitted = "yes"; }};
  document.getElementById("form").submit();
}});
</script>"""


class AttackerSite:
    """A page served from another origin (another port), like a site the user visits while signed in."""

    def __init__(self, target: str) -> None:
        html = ATTACK_PAGE.format(target=target, ws=target.replace("http://", "ws://"), args=str(ATTACK_ARGS)).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's name
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.end_headers()
                self.wfile.write(html)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()


def test_cross_site_attack_launches_nothing(server: AuthedServer, signed_in: Any, queue: redis.Redis) -> None:
    """A signed-in user visits another origin's page that posts the launch form, fires no-cors and CORS
    JSON posts, a text/plain "JSON" form and opens the socket: nothing is launched. The same JSON post
    from the dashboard's own page works, so the check would have seen a launch."""
    signed_in.goto(f"{server.base_url}/tasks")  # signed in, session cookie set
    expect(signed_in.locator("#conn-status")).to_have_attribute("data-state", "live")
    attacker = AttackerSite(server.base_url)
    answers: dict[str, Any] = {}  # the dashboard's answers to the forged posts (its frames show nothing)
    signed_in.on("response", lambda r: answers.setdefault(r.url, r) if r.request.method == "POST" else None)
    try:
        signed_in.goto(attacker.url)
        wait_for(lambda: signed_in.evaluate("window.results && window.results.submitted"), message="the attack")
        results = signed_in.evaluate("window.results")
        assert results["no-cors"] == "opaque", results  # sent, its answer hidden from the attacker
        assert "Failed to fetch" in results["cors"], results  # the preflight got no CORS grant: never sent
        assert results["websocket"] == "refused", results
        # Each forged post reached the dashboard, signed in (Chromium sent the cached credentials), and
        # was refused as cross-origin, not for want of credentials. (Read from the network: the dashboard
        # refuses to be framed, so the attacker's frames show nothing at all.)
        for path in ("/launch", "/api/launch"):
            answer = wait_for(
                lambda p=path: answers.get(server.base_url + p), message=f"the answer to the forged {path}"
            )
            # 403 is the cross-origin refusal: not 401 (the credentials were sent), not 400 (refused before
            # the CSRF check), not 200. (Its body is not readable: Chromium shows its framing-blocked page.)
            assert answer.status == 403, (path, answer.status)
        assert queue.llen("celery") == 0
        assert server.get("/api/tasks", params={"q": f"{ATTACK_ARGS[0]}, {ATTACK_ARGS[1]}"}).json()["total"] == 0
    finally:
        attacker.stop()

    # The same JSON post from the dashboard's own page launches a task: the check above is real.
    signed_in.goto(f"{server.base_url}/tasks")
    status = signed_in.evaluate(
        """async (args) => (await fetch("/api/launch", {method: "POST",
        headers: {"Content-Type": "application/json"},
        body: JSON.stringify({task: "dashboard.demo.add", args, unregistered_ok: true})})).status""",
        ATTACK_ARGS,
    )
    assert status == 200
    assert queue.llen("celery") == 1
