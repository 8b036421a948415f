"""Behind a real nginx under /celery/, in Chromium: the nginx block of docs/operations.md, as it is written
there, in front of the real server and worker; the page goes live over the proxied websocket, a task
launched from the form arrives live, its link opens its page, and no request leaves the prefix."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import ROOT, DashboardServer, RedisServer, wait_for
from playwright.sync_api import expect

from dashboard.processes import free_port, stop_process

pytestmark = pytest.mark.browser

DOC = ROOT / "docs" / "operations.md"
SECTION = "## Behind a reverse proxy"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
PREFIX = "/celery"


def documented_nginx_block() -> str:
    """The ```nginx block of docs/operations.md's reverse-proxy section, as written there."""
    text = DOC.read_text(encoding="utf-8")
    assert SECTION in text, f"{DOC} has no {SECTION!r} section"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```nginx\n(.*?)```", section, re.S)
    assert len(blocks) == 1, f"expected one nginx block in {SECTION!r}, found {len(blocks)}"
    return blocks[0]


def nginx_conf(block: str, listen: int, upstream: int, prefix: Path, keep_prefix: bool = False) -> str:
    """A whole nginx.conf around the documented block: its listen and upstream ports swapped for ours, every
    file nginx writes under `prefix`, one process in the foreground (the fixture owns it). `keep_prefix`:
    the doc's other variant, the path passed on unchanged and no X-Forwarded-Prefix (URL_PREFIX's case)."""
    block, listens = re.subn(r"^(\s*)listen 80;", rf"\1listen 127.0.0.1:{listen};", block, flags=re.M)
    if keep_prefix:
        block, removed = re.subn(r"^\s*proxy_set_header X-Forwarded-Prefix .*\n", "", block, flags=re.M)
        assert removed == 1
    block, upstreams = re.subn(
        r"proxy_pass http://127\.0\.0\.1:5000/;",
        f"proxy_pass http://127.0.0.1:{upstream}{'' if keep_prefix else '/'};",
        block,
    )
    assert listens == 1 and upstreams == 1, "the documented block no longer has `listen 80;` and its proxy_pass"
    temp = "\n".join(
        f"    {kind}_temp_path {prefix}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""daemon off;
master_process off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {prefix}/access.log;
{temp}
{block}
}}
"""


class Nginx:
    """Debian's nginx with its own config, pid, logs and temp files in a temp dir, on a free loopback port."""

    def __init__(self, upstream: int, keep_prefix: bool = False) -> None:
        if not os.access(NGINX, os.X_OK):
            pytest.fail("nginx is not installed: `make setup-test` installs it (apt-get install nginx)")
        self.dir = Path(tempfile.mkdtemp(prefix="dashboard-nginx-"))
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        conf = self.dir / "nginx.conf"
        conf.write_text(
            nginx_conf(documented_nginx_block(), self.port, upstream, self.dir, keep_prefix), encoding="utf-8"
        )
        subprocess.run([NGINX, "-t", "-q", "-p", str(self.dir), "-c", str(conf)], check=True)
        self.proc = subprocess.Popen([NGINX, "-p", str(self.dir), "-c", str(conf)])
        wait_for(self._answers, timeout=10, message=f"nginx on {self.base_url}")

    def _answers(self) -> bool:
        try:
            return requests.get(f"{self.base_url}{PREFIX}/healthz", timeout=2).status_code == 200
        except requests.ConnectionError:
            return self.proc.poll() is not None and pytest.fail(self.log())

    def log(self) -> str:
        """nginx's error log."""
        path = self.dir / "error.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Stop nginx and remove its files."""
        stop_process(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module", params=["prefix-stripped", "prefix-kept"])
def proxied(request: Any, redis_server: RedisServer) -> Iterator[tuple[DashboardServer, Nginx]]:
    """nginx in front of a dashboard under /celery/: the documented block and setting (the prefix stripped,
    X-Forwarded-* from one trusted proxy), or the documented variant (the path passed on as it is, no
    trusted proxy, URL_PREFIX)."""
    keep = request.param == "prefix-kept"
    env = {"DASHBOARD_URL_PREFIX": PREFIX} if keep else {"DASHBOARD_TRUSTED_PROXIES": "1"}
    server = DashboardServer(redis_server.url, env=env)
    try:
        proxy = Nginx(server.port, keep_prefix=keep)
    except BaseException:
        server.stop()
        raise
    yield server, proxy
    proxy.stop()
    server.stop()


def test_the_dashboard_works_under_a_prefix_behind_nginx(
    page: Any, proxied: tuple[DashboardServer, Nginx], worker: str
) -> None:
    """Overview live over the proxied websocket; Tasks by its link; a task launched from the form (CSRF under
    the prefix) arrives in the list live and turns SUCCESS; its link opens its page; the export downloads;
    every request the page made, the websocket's included, was under http://<nginx>/celery/."""
    server, proxy = proxied
    wait_for(lambda: server.worker_online(worker), timeout=30, message=f"{worker} online in the proxied dashboard")
    server.wait_registered(worker)  # the form sends an unregistered task only once confirmed
    base = f"{proxy.base_url}{PREFIX}/"
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    failed: list[str] = []
    page.on("requestfailed", lambda r: failed.append(f"{r.url}: {r.failure}"))
    answers: list[tuple[int, str]] = []
    page.on("response", lambda r: answers.append((r.status, r.url)))

    page.goto(base)
    expect(page.locator("#conn-status")).to_have_attribute("data-state", "live")
    expect(page.locator('#counts [data-state="SUCCESS"] .count')).not_to_have_text("–")  # the snapshot arrived
    assert page.locator("html").get_attribute("data-base") == f"{PREFIX}/"

    page.locator("nav a", has_text="Tasks").click()
    expect(page).to_have_url(f"{base}tasks")
    expect(page.locator("#conn-status")).to_have_attribute("data-state", "live")
    page.evaluate("window.__sameDocument = true")
    page.locator("#launch-panel > summary").click()
    page.select_option("#launch-task", "dashboard.demo.add")
    page.fill("#launch-args", "[20, 22]")
    page.locator("#launch-form button[type=submit]").click()
    link = page.locator("#launch-result li a").first
    expect(link).to_be_visible()
    uuid = link.inner_text().strip()
    assert link.get_attribute("href") == f"{PREFIX}/tasks/{uuid}"
    row = page.locator(f'#task-table tbody tr[data-uuid="{uuid}"]')
    expect(row).to_have_attribute("data-state", "SUCCESS", timeout=20_000)
    assert page.evaluate("window.__sameDocument") is True, "the row arrived live, without a reload"

    export = page.locator("#export-csv").get_attribute("href")
    assert export and export.startswith(f"{PREFIX}/api/tasks/export")
    download = page.request.get(proxy.base_url + export)
    assert download.status == 200 and uuid in download.text()

    row.locator(".uuid a").click()
    expect(page).to_have_url(f"{base}tasks/{uuid}")
    expect(page.locator("#conn-status")).to_have_attribute("data-state", "live")
    expect(page.locator("#task-state")).to_have_text("SUCCESS")
    expect(page.locator('#task-fields [data-field="result"]')).to_contain_text("42")

    assert not failed, f"requests failed: {failed}"
    assert not [a for a in answers if a[0] >= 400], f"error answers: {[a for a in answers if a[0] >= 400]}"
    outside = [u for u in requested + sockets if not u.startswith((base, f"ws://127.0.0.1:{proxy.port}{PREFIX}/"))]
    assert not outside, f"requests outside {base}: {outside}"
    assert any(u.startswith(f"ws://127.0.0.1:{proxy.port}{PREFIX}/socket.io/") for u in sockets), sockets
    for kind in ("/static/css/", "/static/js/", "/static/vendor/", "/api/", "/launch", "/socket.io/"):
        assert any(u.startswith(base.rstrip("/") + kind) for u in requested + sockets), f"no {kind} request"
    access = (proxy.dir / "access.log").read_text(encoding="utf-8")
    assert f"GET {PREFIX}/socket.io/?EIO=4&transport=websocket" in access  # through nginx, upgraded there
