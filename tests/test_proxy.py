"""Behind a reverse proxy: URL_PREFIX and trusted X-Forwarded-* headers, through Flask's test client
(dashboard/web/proxy.py; the real nginx in front of the real server is test_browser_proxy.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from dashboard import create_app

pytestmark = pytest.mark.unit

URL_ATTR = re.compile(r'(?<![\w-])(?:href|src|action|data-base)="([^"]*)"')
PAGES = ("/", "/tasks", "/tasks/6b1e7c52-0000-4000-8000-00000000abcd", "/failures", "/stats", "/workers")
PAGES += ("/workers/celery@nowhere", "/queues", "/beat", "/audit", "/launch")
# What a proxy that strips /celery sends on (nginx's example in docs/operations.md).
STRIPPED = {"X-Forwarded-Prefix": "/celery", "X-Forwarded-Host": "dash.example.com", "X-Forwarded-Proto": "https"}


@pytest.fixture
def make_app() -> Iterator[Any]:
    """create_app(**settings) without ingest (nothing talks to the broker); every app is stopped after."""
    apps = []

    def make(**config: Any) -> Any:
        app = create_app(
            {"ASYNC_MODE": "threading", "INGEST_ENABLED": False, "BROKER_URL": "redis://127.0.0.1:9/0", **config}
        )
        app.testing = True
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["dashboard"].stop()


def urls_of(html: str) -> list[str]:
    """Every URL a page links to, loads or posts to (data: URLs aside)."""
    return [u for u in URL_ATTR.findall(html) if not u.startswith("data:")]


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no csrf_token on the page"
    return match.group(1)


@pytest.mark.parametrize("path", PAGES)
@pytest.mark.parametrize("stripped", [False, True], ids=["prefix-kept", "prefix-stripped"])
def test_every_url_of_every_page_carries_the_prefix(make_app: Any, path: str, stripped: bool) -> None:
    """With URL_PREFIX=/celery, a page asked for under the prefix or without it (a proxy stripped it) links,
    loads and posts only under /celery/, and tells its scripts the base."""
    client = make_app(URL_PREFIX="/celery").test_client()
    resp = client.get(path if stripped else "/celery" + path)
    assert resp.status_code == 200
    html = resp.get_data(as_text=True)
    assert 'data-base="/celery/"' in html
    urls = urls_of(html)
    assert len(urls) > 8
    assert all(u.startswith("/celery/") for u in urls), [u for u in urls if not u.startswith("/celery/")]


def test_without_a_prefix_urls_stay_at_the_root(make_app: Any) -> None:
    """The default: data-base is "/", links start at the root, nothing under /celery answers."""
    client = make_app().test_client()
    html = client.get("/tasks").get_data(as_text=True)
    assert 'data-base="/"' in html
    assert "/static/js/tasks.js" in urls_of(html)
    assert not any(u.startswith("/celery") for u in urls_of(html))
    assert client.get("/celery/tasks").status_code == 404


@pytest.mark.parametrize(
    "path, kind",
    [
        ("/healthz", "application/json"),
        ("/api/tasks", "application/json"),
        ("/api/tasks/export?format=csv", "text/csv"),
        ("/api/queues", "application/json"),
        ("/metrics", "text/plain"),
        ("/static/js/live.js", "text/javascript"),
        ("/static/vendor/socket.io.esm.min.js", "text/javascript"),
        ("/socket.io/?EIO=4&transport=polling", "text/plain"),
    ],
)
def test_the_api_static_files_and_socketio_answer_under_the_prefix(make_app: Any, path: str, kind: str) -> None:
    """The JSON API, /healthz, /metrics, downloads, static files and engine.io's handshake, under /celery."""
    client = make_app(URL_PREFIX="/celery").test_client()
    for url in ("/celery" + path, path):  # kept, or stripped by the proxy
        resp = client.get(url)
        assert resp.status_code == 200, (url, resp.get_data(as_text=True)[:200])
        assert resp.mimetype == kind, url
    assert client.get("/celery/api/nothing-here").get_json()["error"]  # the error contract under the prefix too


def test_the_prefix_alone_is_the_overview(make_app: Any) -> None:
    """/celery (no trailing slash) is the overview, like /celery/."""
    client = make_app(URL_PREFIX="/celery/").test_client()  # a trailing slash in the setting is dropped
    resp = client.get("/celery")
    assert resp.status_code == 200
    assert 'data-base="/celery/"' in resp.get_data(as_text=True)


def test_a_trusted_proxy_names_the_prefix_host_and_scheme(make_app: Any) -> None:
    """TRUSTED_PROXIES=1 and no URL_PREFIX: the proxy's X-Forwarded-Prefix is the base, its Host and https
    make the session cookie Secure, with the prefix as its path."""
    client = make_app(TRUSTED_PROXIES=1, ALLOWED_HOSTS="dash.example.com").test_client()
    resp = client.get("/launch", headers=STRIPPED)
    assert resp.status_code == 200
    html = resp.get_data(as_text=True)
    assert 'data-base="/celery/"' in html
    assert all(u.startswith("/celery/") for u in urls_of(html))
    cookie = resp.headers["Set-Cookie"]
    assert "; Secure" in cookie
    assert "; Path=/celery" in cookie
    assert client.get("/healthz", headers=STRIPPED).get_json()["broker"]


def test_without_trust_forwarded_headers_change_nothing(make_app: Any) -> None:
    """TRUSTED_PROXIES=0 (the default): X-Forwarded-Prefix, -Proto and -Host from a client are ignored."""
    client = make_app().test_client()
    resp = client.get("/launch", headers=STRIPPED)
    assert resp.status_code == 200
    html = resp.get_data(as_text=True)
    assert 'data-base="/"' in html
    cookie = resp.headers["Set-Cookie"]
    assert "Secure" not in cookie
    assert "; Path=/;" in cookie or cookie.endswith("; Path=/")


def test_an_untrusted_forwarded_host_does_not_pass_the_host_allowlist(make_app: Any) -> None:
    """Without trust, the gate checks the Host header itself: X-Forwarded-Host naming an allowed host does
    not let a rebound name in (nor does one naming a foreign host shut a good request out)."""
    client = make_app(ALLOWED_HOSTS="dash.example.com").test_client()
    evil = client.get("/api/tasks", headers={"Host": "rebind.evil.example", "X-Forwarded-Host": "dash.example.com"})
    assert evil.status_code == 400
    assert "rebind.evil.example" in evil.get_json()["error"]
    fine = client.get("/api/tasks", headers={"Host": "dash.example.com", "X-Forwarded-Host": "rebind.evil.example"})
    assert fine.status_code == 200


def test_behind_a_trusted_proxy_the_forwarded_host_is_what_the_allowlist_checks(make_app: Any) -> None:
    """TRUSTED_PROXIES=1: the Host the browser sent to the proxy (X-Forwarded-Host) is checked, so a rebound
    name is refused through the proxy too; a client's own X-Forwarded-Host before the proxy's is not read."""
    client = make_app(TRUSTED_PROXIES=1, ALLOWED_HOSTS="dash.example.com").test_client()
    via_proxy = {"Host": "127.0.0.1:5000"}
    assert client.get("/api/tasks", headers={**via_proxy, "X-Forwarded-Host": "dash.example.com"}).status_code == 200
    rebound = client.get("/api/tasks", headers={**via_proxy, "X-Forwarded-Host": "rebind.evil.example"})
    assert rebound.status_code == 400
    # The client sent "X-Forwarded-Host: dash.example.com"; the proxy appended the Host it really got.
    spoofed = client.get(
        "/api/tasks", headers={**via_proxy, "X-Forwarded-Host": "dash.example.com, rebind.evil.example"}
    )
    assert spoofed.status_code == 400


def test_a_trusted_proxy_gives_the_client_address_to_the_sign_in_throttle(make_app: Any) -> None:
    """X-Forwarded-For from a trusted proxy: failed sign-ins are counted per client, not for the proxy."""
    import base64

    client = make_app(TRUSTED_PROXIES=1, AUTH_USERS="ada:right", SIGNIN_FAILURES_PER_MINUTE=2).test_client()

    def sign_in(password: str, client_address: str, user: str = "ada") -> int:
        creds = base64.b64encode(f"{user}:{password}".encode()).decode()
        headers = {"Authorization": f"Basic {creds}", "X-Forwarded-For": f"spoofed, {client_address}"}
        return int(client.get("/api/tasks", headers=headers).status_code)

    assert [sign_in("wrong", "203.0.113.7", user=f"u{i}") for i in range(3)] == [401, 401, 429]
    assert sign_in("right", "198.51.100.9") == 200  # another client behind the same proxy is not throttled


def test_the_csrf_check_passes_under_the_prefix_over_https(make_app: Any) -> None:
    """The launch form posted through a TLS proxy under /celery: the token of the page's session is accepted
    (Flask-WTF's strict referrer check compares the forwarded https origin), a missing one is refused."""
    client = make_app(TRUSTED_PROXIES=1, ALLOWED_HOSTS="dash.example.com").test_client(use_cookies=False)
    page_resp = client.get("/launch", headers=STRIPPED)
    html = page_resp.get_data(as_text=True)
    # The browser sends the cookie back to https://dash.example.com/celery/… (its Secure flag and Path are
    # for that URL, which Flask's test client does not know): as the browser would, by hand.
    session = page_resp.headers["Set-Cookie"].split(";", 1)[0]
    action = re.search(r'<form id="launch-form"[^>]* action="([^"]+)"', html)
    assert action and action.group(1) == "/celery/launch"
    form = {"csrf_token": csrf_of(html), "task": "no.such.task", "args": "[]", "kwargs": "{}", "count": "1"}
    referer = {
        "Referer": "https://dash.example.com/celery/launch",
        "Origin": "https://dash.example.com",
        "Cookie": session,
    }
    resp = client.post("/launch", data=form, headers={**STRIPPED, **referer})
    # Past CSRF: the form's own validation answers, about the task.
    assert resp.status_code == 400
    page = resp.get_data(as_text=True)
    assert 'data-field="task"' in page and "CSRF" not in page
    refused = client.post("/launch", data={**form, "csrf_token": "forged"}, headers={**STRIPPED, **referer})
    assert refused.status_code == 400
    assert "CSRF" in refused.get_data(as_text=True)
    http_referer = {**referer, "Referer": "http://dash.example.com/celery/launch"}  # not the page's origin
    refused = client.post("/launch", data=form, headers={**STRIPPED, **http_referer})
    assert refused.status_code == 400
    assert "The referrer does not match the host." in refused.get_data(as_text=True)
    cross = client.post("/launch", data=form, headers={**STRIPPED, **referer, "Origin": "https://evil.example"})
    assert cross.status_code == 403


def test_a_forwarded_prefix_that_is_not_a_path_is_refused(make_app: Any) -> None:
    """A trusted X-Forwarded-Prefix ends up in every link: anything but a plain path is a 400."""
    client = make_app(TRUSTED_PROXIES=1).test_client()
    for bad in ("//evil.example", "/a b", "javascript:alert(1)", "/../x"):
        resp = client.get("/api/tasks", headers={"X-Forwarded-Prefix": bad})
        assert resp.status_code == 400, bad
        assert "X-Forwarded-Prefix" in resp.get_json()["error"]
    trailing = client.get("/tasks", headers={"X-Forwarded-Prefix": "/celery/"}).get_data(as_text=True)
    assert 'data-base="/celery/"' in trailing  # a trailing slash in the header is dropped


@pytest.mark.parametrize("value", ["celery", "/a//b", "/a/../b", "/a?b", "/a b"])
def test_url_prefix_must_be_a_path(value: str) -> None:
    """URL_PREFIX is checked like every setting: a clear error naming it."""
    from dashboard.config import load_config

    with pytest.raises(ValueError, match=r"URL_PREFIX.*must be a path such as /celery"):
        load_config(environ={"DASHBOARD_URL_PREFIX": value})
