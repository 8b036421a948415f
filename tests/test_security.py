"""Auth (basic users, bearer token, websocket), read-only mode, cross-site refusal, the bind warning."""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

import pytest
import redis
import requests
import socketio
from conftest import ROOT, DashboardServer, RedisServer
from werkzeug.security import generate_password_hash

from dashboard import create_app
from dashboard.web.security import Auth, parse_users

PASSWORD = "correct horse"
HASHED_PASSWORD = "battery staple"
TOKEN = "t0k3n-for-the-api"
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
# A body that would make any control endpoint act if it were not refused first.
ACTION_BODY = {
    "unregistered_ok": True,  # no worker in these tests: a task nobody has registered is confirmed
    "task": "dashboard.demo.add",
    "args": [1, 2],
    "kwargs": {},
    "count": 1,
    "countdown": 0,
    "action": "shutdown",
    "n": 1,
    "max": 2,
    "min": 1,
    "queue": "celery",
    "rate": "1/m",
    "soft": 1,
    "hard": 2,
    "terminate": True,
    "signal": "SIGKILL",
    "filters": {},
    "dry_run": False,
    "limit": 1,
    "workers": None,
}


def basic(user: str, password: str) -> dict[str, str]:
    """An Authorization header for HTTP basic auth."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    """An Authorization header with a bearer token."""
    return {"Authorization": f"Bearer {token}"}


def build_app(redis_server: RedisServer, db: int, **config: Any) -> Any:
    """An app without ingest on its own Redis db."""
    app = create_app(
        {"ASYNC_MODE": "threading", "INGEST_ENABLED": False, "BROKER_URL": redis_server.url_db(db), **config}
    )
    app.testing = True
    return app


def rule_requests(app: Any, methods: set[str]) -> Iterator[tuple[str, str, str]]:
    """(method, url, endpoint) for every rule of the URL map accepting one of `methods`, args filled in."""
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods & methods):
            values = {}
            for arg in rule.arguments:
                kind = type(rule._converters[arg]).__name__  # werkzeug keeps no public map
                if kind in ("IntegerConverter", "FloatConverter"):
                    values[arg] = 1
                elif kind == "PathConverter":
                    values[arg] = "css/dashboard.css"
                elif "host" in arg:
                    values[arg] = "celery@nowhere"
                else:
                    values[arg] = "6b1e7c52-0000-4000-8000-00000000abcd"
            with app.test_request_context():
                from flask import url_for

                yield method, url_for(rule.endpoint, **values), rule.endpoint


class BrokerWatch:
    """What an app sent to its Redis db: keys and list lengths, and pub/sub messages (broadcasts)."""

    def __init__(self, redis_server: RedisServer, db: int) -> None:
        self.db = db
        self.client = redis.Redis.from_url(redis_server.url_db(db))
        self.client.flushdb()
        self.messages: list[str] = []
        self._pubsub = self.client.pubsub()
        self._pubsub.psubscribe(f"/{db}.*")  # kombu's fanout channels of this db (control broadcasts)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while not self._stop.is_set():
            msg = self._pubsub.get_message(timeout=0.1)
            if msg and msg["type"] == "pmessage":
                self.messages.append(msg["channel"].decode())

    def snapshot(self) -> dict[str, Any]:
        """Every key of the db with its list length (or type)."""
        out: dict[str, Any] = {}
        for key in self.client.keys("*"):
            kind = self.client.type(key).decode()
            out[key.decode()] = self.client.llen(key) if kind == "list" else kind
        return out

    def close(self) -> None:
        """Stop listening."""
        self._stop.set()
        self._thread.join(2)
        self._pubsub.close()
        self.client.close()


# -- configuration --------------------------------------------------------------------------------


@pytest.mark.unit
def test_users_parse_plain_and_hashed_entries() -> None:
    """Users are `name:password` or `name:<hash>` (a hash has ':' in it too), comma-separated."""
    digest = generate_password_hash("pw")
    assert parse_users(f" ada : {PASSWORD} ,bob: {digest},") == {"ada": PASSWORD, "bob": digest}
    assert parse_users("") == {}


@pytest.mark.integration
@pytest.mark.parametrize(
    "raw, fragment",
    [
        ("ada", "entry 1 has no ':'"),
        ("ada:x,hunter2", "entry 2 has no ':'"),
        (":x", "entry 1 has an empty user name"),
        ("ada:", "user 'ada' has an empty password"),
        ("ada:x,ada:y", "user 'ada' is listed twice"),
    ],
)
def test_malformed_users_are_refused_at_startup(redis_server: RedisServer, raw: str, fragment: str) -> None:
    """A typo in AUTH_USERS stops the app from starting with a message that names the setting."""
    with pytest.raises(ValueError) as info:
        build_app(redis_server, 1, AUTH_USERS=raw)
    assert "DASHBOARD_AUTH_USERS" in str(info.value) and fragment in str(info.value)
    assert "hunter2" not in str(info.value)  # an entry without ':' may be a password: never echoed


@pytest.mark.integration
def test_malformed_users_stop_the_command_line_server(redis_server: RedisServer) -> None:
    """`celery-dashboard run` with a bad DASHBOARD_AUTH_USERS exits with an error that names it."""
    proc = subprocess.run(
        [sys.executable, "-m", "dashboard.cli", "run", "--broker", redis_server.url_db(1), "--port", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DASHBOARD_AUTH_USERS": "ada:ok,s3cr3t"},
    )
    assert proc.returncode != 0
    assert "DASHBOARD_AUTH_USERS: entry 2 has no ':'" in proc.stderr
    assert "s3cr3t" not in proc.stderr


@pytest.mark.integration
@pytest.mark.parametrize(
    "host, warned",
    [
        ("0.0.0.0", True),
        ("::", True),
        ("192.168.1.20", True),
        ("dashboard.example.com", True),
        ("127.0.0.1", False),
        ("localhost", False),
        ("::1", False),
        ("127.0.0.2", False),
    ],
)
def test_a_public_bind_without_auth_is_warned_about(
    redis_server: RedisServer, caplog: Any, host: str, warned: bool
) -> None:
    """Binding beyond loopback with no auth logs a WARNING at startup; loopback does not."""
    with caplog.at_level(logging.INFO, logger="dashboard.web.security"):
        app = build_app(redis_server, 1, HOST=host)
    app.extensions["dashboard"].stop()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "without authentication" in r.message]
    assert bool(warnings) == warned
    if warned:
        assert host in warnings[0].message and "DASHBOARD_AUTH_USERS" in warnings[0].message


@pytest.mark.integration
def test_a_public_bind_with_auth_is_not_warned_about(redis_server: RedisServer, caplog: Any) -> None:
    """With auth on, a public bind is what the user wants: no warning."""
    with caplog.at_level(logging.INFO, logger="dashboard.web.security"):
        app = build_app(redis_server, 1, HOST="0.0.0.0", AUTH_TOKEN=TOKEN)
    app.extensions["dashboard"].stop()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# -- auth on a Flask app ---------------------------------------------------------------------------


@pytest.fixture
def auth_app(redis_server: RedisServer) -> Iterator[Any]:
    """Auth on: a plain-password user, a hashed one, and a bearer token."""
    digest = generate_password_hash(HASHED_PASSWORD)
    app = build_app(redis_server, 1, AUTH_USERS=f"ada:{PASSWORD},bob:{digest}", AUTH_TOKEN=TOKEN)
    yield app
    app.extensions["dashboard"].stop()


@pytest.mark.integration
def test_every_get_route_needs_credentials(auth_app: Any) -> None:
    """Pages, API, /healthz, /metrics and static files all answer 401 without credentials."""
    client = auth_app.test_client()
    seen = set()
    for _method, url, endpoint in rule_requests(auth_app, {"GET"}):
        seen.add(endpoint)
        resp = client.get(url)
        assert resp.status_code == 401, url
        assert resp.headers["WWW-Authenticate"] == 'Basic realm="Celery Live Dashboard"', url
        if url.startswith("/api/") or url == "/healthz":
            assert "authentication required" in resp.get_json()["error"], url
        assert "task" not in resp.get_data(as_text=True).lower(), url  # nothing of the dashboard leaks
    assert {"static", "api.healthz", "metrics.metrics", "views.overview", "api.tasks"} <= seen
    assert client.get("/no/such/page").status_code == 401  # not even which paths exist


@pytest.mark.integration
def test_every_state_change_needs_credentials(auth_app: Any, redis_server: RedisServer) -> None:
    """A POST without credentials is a 401, before CSRF or validation say anything; nothing is sent."""
    watch = BrokerWatch(redis_server, 1)
    try:
        client = auth_app.test_client()
        for method, url, _endpoint in rule_requests(auth_app, MUTATING):
            resp = client.open(url, method=method, json=ACTION_BODY)
            assert resp.status_code == 401, url
        assert client.post("/launch", data={"task": "dashboard.demo.add", "args": "[1, 2]"}).status_code == 401
        assert watch.snapshot() == {}
    finally:
        watch.close()


@pytest.mark.integration
@pytest.mark.parametrize(
    "headers, user",
    [
        (basic("ada", PASSWORD), "ada"),
        (basic("bob", HASHED_PASSWORD), "bob"),
        (bearer(TOKEN), "token"),
    ],
)
def test_valid_credentials_open_everything(auth_app: Any, headers: dict[str, str], user: str) -> None:
    """Basic auth (plain or hashed password) or the bearer token: every GET route answers as without auth."""
    client = auth_app.test_client()
    for _method, url, _endpoint in rule_requests(auth_app, {"GET"}):
        assert client.get(url, headers=headers).status_code in (200, 404), url  # 404: the sample uuid
    page = client.get("/", headers=headers).get_data(as_text=True)
    assert f"signed in as <strong>{user}</strong>" in page


@pytest.mark.integration
@pytest.mark.parametrize(
    "headers",
    [
        basic("ada", "wrong"),
        basic("ada", PASSWORD.upper()),
        basic("bob", PASSWORD),
        basic("nobody", PASSWORD),
        basic("", ""),
        bearer("wrong"),
        bearer(TOKEN + "x"),
        {"Authorization": f"Token {TOKEN}"},
        {"Authorization": "Basic !!!not-base64"},
        basic("token", TOKEN),
    ],
)
def test_wrong_credentials_are_refused(auth_app: Any, headers: dict[str, str]) -> None:
    """Wrong passwords, unknown users, wrong tokens and other schemes get 401."""
    resp = auth_app.test_client().get("/api/tasks", headers=headers)
    assert resp.status_code == 401
    assert resp.get_json() == {"error": "authentication required: sign in with a dashboard user name and password"}


@pytest.mark.integration
def test_failed_sign_ins_are_logged_with_the_address_not_the_password(auth_app: Any, caplog: Any) -> None:
    """Each refused attempt is an INFO line with the remote address; the password is not in the log."""
    with caplog.at_level(logging.INFO, logger="dashboard.web.security"):
        auth_app.test_client().get(
            "/", headers=basic("ada", "hunter2-guess"), environ_base={"REMOTE_ADDR": "203.0.113.9"}
        )
        auth_app.test_client().get("/", headers=bearer("hunter2-token"), environ_base={"REMOTE_ADDR": "203.0.113.9"})
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("'ada'" in line and "203.0.113.9" in line for line in lines), lines
    assert any("bearer" in line and "203.0.113.9" in line for line in lines), lines
    assert not any("hunter2" in line for line in lines)


@pytest.mark.integration
def test_token_only_asks_for_a_bearer_token(redis_server: RedisServer) -> None:
    """With only a token configured there is no user to sign in as: the 401 asks for a bearer token."""
    app = build_app(redis_server, 1, AUTH_TOKEN=TOKEN)
    try:
        resp = app.test_client().get("/metrics")
        assert resp.status_code == 401
        assert resp.headers["WWW-Authenticate"] == 'Bearer realm="Celery Live Dashboard"'
        assert "Authorization: Bearer" in resp.get_data(as_text=True)
        assert app.test_client().get("/metrics", headers=bearer(TOKEN)).status_code == 200
        assert app.test_client().get("/metrics", headers=basic("ada", TOKEN)).status_code == 401
    finally:
        app.extensions["dashboard"].stop()


@pytest.mark.integration
def test_without_auth_nothing_asks_for_credentials(app: Any) -> None:
    """Auth off (the default): pages answer and nobody is signed in."""
    resp = app.test_client().get("/")
    assert resp.status_code == 200 and "signed in as" not in resp.get_data(as_text=True)


@pytest.mark.integration
@pytest.mark.parametrize("user, password", [("bob", HASHED_PASSWORD), ("ada", PASSWORD)])
def test_a_hash_check_is_paid_once_not_per_request(auth_app: Any, user: str, password: str) -> None:
    """A page's static files and API polls do not each pay for a ~75 ms scrypt check (nor does a
    plain-password user, who pays a dummy one while hashed users exist)."""
    client = auth_app.test_client()
    headers = basic(user, password)
    assert client.get("/healthz", headers=headers).status_code == 200
    started = time.perf_counter()
    for _ in range(20):
        assert client.get("/static/css/dashboard.css", headers=headers).status_code == 200
    assert time.perf_counter() - started < 0.5


def _median_seconds(fn: Any, runs: int = 7) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


@pytest.mark.unit
def test_refusal_time_does_not_reveal_which_users_exist() -> None:
    """With hashed users, an unknown or plain-password user costs the same hash check as a hashed one."""
    auth = Auth(parse_users(f"ada:{PASSWORD},bob:{generate_password_hash(HASHED_PASSWORD)}"), "")
    hashed_user = _median_seconds(lambda: auth.check_password("bob", "wrong"))
    unknown_user = _median_seconds(lambda: auth.check_password("nobody", "wrong"))
    plain_user = _median_seconds(lambda: auth.check_password("ada", "wrong"))
    assert hashed_user > 0.005  # scrypt
    for other in (unknown_user, plain_user):
        assert 0.4 < other / hashed_user < 2.5, (hashed_user, unknown_user, plain_user)


# -- websocket --------------------------------------------------------------------------------------


class AuthedServer(DashboardServer):
    """A DashboardServer whose own requests carry credentials."""

    def __init__(self, broker_url: str, *extra: str, auth: tuple[str, str] | None, env: dict[str, str]) -> None:
        self.auth = auth
        super().__init__(broker_url, *extra, env=env)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        """GET with the server's credentials unless others are given."""
        kwargs.setdefault("auth", self.auth)
        return super().get(path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        """POST with the server's credentials unless others are given."""
        kwargs.setdefault("auth", self.auth)
        return requests.post(self.base_url + path, timeout=10, **kwargs)


@pytest.fixture(scope="module")
def auth_server(redis_server: RedisServer) -> Iterator[AuthedServer]:
    """A real dashboard (gunicorn) with a basic user and a token, on db 8 of the session Redis."""
    # Many refusals from this one address follow: the sign-in throttle is tested on its own below.
    server = AuthedServer(
        redis_server.url_db(8),
        auth=("ada", PASSWORD),
        env={
            "DASHBOARD_AUTH_USERS": f"ada:{PASSWORD}",
            "DASHBOARD_AUTH_TOKEN": TOKEN,
            "DASHBOARD_SIGNIN_FAILURES_PER_MINUTE": "1000",
        },
    )
    yield server
    server.stop()


def _socket(server: DashboardServer, **connect: Any) -> socketio.Client:
    client = socketio.Client(reconnection=False)
    client.connect(server.base_url, wait_timeout=5, **connect)
    return client


@pytest.mark.integration
@pytest.mark.parametrize("transport", ["polling", "websocket"])
@pytest.mark.parametrize(
    "connect",
    [
        {},
        {"headers": basic("ada", "wrong")},
        {"headers": bearer("wrong")},
        {"auth": {"token": TOKEN}},
        {"auth": {"user": "ada", "password": PASSWORD}},
        {"auth": "not a dict"},
    ],
    ids=["nothing", "wrong-password", "wrong-bearer", "token-payload", "password-payload", "junk"],
)
def test_websocket_without_valid_credentials_is_refused(
    auth_server: AuthedServer, transport: str, connect: dict[str, Any]
) -> None:
    """The Socket.IO connection is refused at its handshake (credentials in the CONNECT payload come too late):
    no engine.io session, no snapshot, no live updates."""
    client = socketio.Client(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        client.connect(auth_server.base_url, wait_timeout=5, transports=[transport], **connect)
    assert not client.connected


@pytest.mark.integration
@pytest.mark.parametrize("transport", ["polling", "websocket"])
def test_socketio_handshake_without_credentials_is_a_401_before_any_session(
    auth_server: AuthedServer, transport: str
) -> None:
    """The engine.io handshake itself answers 401 with a message: nothing is upgraded, nothing long-polls."""
    headers = (
        {
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        }
        if transport == "websocket"
        else {}
    )
    resp = requests.get(f"{auth_server.base_url}/socket.io/?EIO=4&transport={transport}", headers=headers, timeout=5)
    assert resp.status_code == 401
    assert "authentication required" in resp.json()["error"]
    assert resp.headers["WWW-Authenticate"].startswith("Basic")
    assert resp.headers["X-Frame-Options"] == "DENY" and "script-src 'self'" in resp.headers["Content-Security-Policy"]


@pytest.mark.integration
@pytest.mark.parametrize("transport", ["polling", "websocket"])
@pytest.mark.parametrize(
    "connect",
    [
        {"headers": basic("ada", PASSWORD)},
        {"headers": bearer(TOKEN)},
    ],
    ids=["basic", "bearer"],
)
def test_websocket_with_credentials_gets_live_data(
    auth_server: AuthedServer, transport: str, connect: dict[str, Any]
) -> None:
    """With basic auth or the bearer header on the handshake, subscribing returns the snapshot."""
    client = _socket(auth_server, transports=[transport], **connect)
    try:
        snapshot = client.call("subscribe", {"view": "overview"}, timeout=5)
        assert "counts" in snapshot and snapshot["status"]["broker"]["connected"] is True
    finally:
        client.disconnect()


@pytest.mark.integration
def test_real_server_refuses_every_kind_of_request_without_credentials(auth_server: AuthedServer) -> None:
    """Against the real server: page, API, health, metrics, static file all 401; with a token all 200."""
    for path in (
        "/",
        "/tasks",
        "/api/tasks",
        "/healthz",
        "/metrics",
        "/static/css/dashboard.css",
        "/static/js/live.js",
        "/static/vendor/socket.io.esm.min.js",
    ):
        assert auth_server.get(path, auth=None).status_code == 401, path
        assert auth_server.get(path, auth=None, headers=bearer(TOKEN)).status_code == 200, path
    resp = auth_server.post(
        "/api/launch", auth=None, json={"unregistered_ok": True, "task": "dashboard.demo.add", "args": [1, 2]}
    )
    assert resp.status_code == 401


@pytest.mark.integration
def test_cross_origin_websocket_is_refused(dashboard: DashboardServer) -> None:
    """A page on another origin cannot open the dashboard's socket (auth off: only Origin protects it)."""
    import websocket

    resp = requests.get(
        f"{dashboard.base_url}/socket.io/?EIO=4&transport=polling", headers={"Origin": "http://evil.example"}, timeout=5
    )
    assert resp.status_code == 400 and "sid" not in resp.text  # no engine.io session was opened
    url = dashboard.base_url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    with pytest.raises(websocket.WebSocketBadStatusException):
        websocket.create_connection(url, origin="http://evil.example", timeout=5)
    websocket.create_connection(url, origin=dashboard.base_url, timeout=5).close()  # the page's own origin
    _socket(dashboard, transports=["polling"], headers={"Origin": dashboard.base_url}).disconnect()


# -- read-only ---------------------------------------------------------------------------------------


@pytest.fixture
def ro_app(redis_server: RedisServer) -> Iterator[Any]:
    """A read-only app on db 7 (nothing else uses it: every key there would be this app's doing)."""
    app = build_app(redis_server, 7, READ_ONLY=True)
    yield app
    app.extensions["dashboard"].stop()


@pytest.mark.integration
def test_read_only_refuses_every_state_changing_route(ro_app: Any, redis_server: RedisServer) -> None:
    """Every POST/PUT/PATCH/DELETE of the URL map (endpoints added later too) is a 403 that says why,
    and nothing reaches the broker: no queued task, no key, no control broadcast."""
    watch = BrokerWatch(redis_server, 7)
    try:
        client = ro_app.test_client()
        tried = []
        for method, url, endpoint in rule_requests(ro_app, MUTATING):
            tried.append(endpoint)
            for kwargs in ({"json": ACTION_BODY}, {"data": {k: json.dumps(v) for k, v in ACTION_BODY.items()}}):
                resp = client.open(url, method=method, headers={"Accept": "application/json"}, **kwargs)
                assert resp.status_code == 403, (method, url, resp.status_code)
                assert resp.get_json()["error"] == "the dashboard is read-only: controls are turned off"
        assert {"api.launch", "views.launch"} <= set(tried)
        time.sleep(0.3)  # a broadcast would have arrived by now
        assert watch.snapshot() == {} and watch.messages == []
    finally:
        watch.close()


@pytest.mark.integration
def test_read_only_refuses_the_launch_form_even_with_a_valid_token(ro_app: Any, redis_server: RedisServer) -> None:
    """A form left open in a tab from before read-only mode: 403 with a message, nothing queued."""
    watch = BrokerWatch(redis_server, 7)
    try:
        client = ro_app.test_client()
        page = client.get("/tasks").get_data(as_text=True)
        token = re.search(r'data-csrf-token="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        resp = client.post("/launch", data={"csrf_token": token, "task": "dashboard.demo.add", "args": "[1, 2]"})
        assert resp.status_code == 403
        assert "read-only" in resp.get_data(as_text=True)
        assert watch.snapshot() == {}
    finally:
        watch.close()


@pytest.mark.integration
def test_every_state_changing_api_endpoint_is_a_control_endpoint(app: Any) -> None:
    """Each JSON POST/PUT/PATCH/DELETE view is wrapped by security.control_endpoint (read-only, cross-site
    and content-type checks at the endpoint too, not only in the app-wide guard)."""
    missing = [
        url
        for _method, url, endpoint in rule_requests(app, MUTATING)
        if url.startswith("/api/") and not getattr(app.view_functions[endpoint], "control_endpoint", False)
    ]
    assert missing == []


@pytest.mark.integration
def test_read_only_pages_offer_no_launch(ro_app: Any) -> None:
    """No Launch link, no launch form on the task list, a note instead of the form on /launch."""
    client = ro_app.test_client()
    for path in ("/", "/tasks", "/launch"):
        page = client.get(path).get_data(as_text=True)
        assert 'href="/launch"' not in page and 'id="launch-form"' not in page, path
        assert 'data-controls="off"' in page
    assert "launching tasks is turned off" in client.get("/launch").get_data(as_text=True)


# -- cross-site -------------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "http://localhost.evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},  # another port or subdomain is another origin
        {"Origin": "http://localhost", "Sec-Fetch-Site": "cross-site"},
    ],
)
def test_cross_site_json_is_refused_on_every_endpoint(app: Any, queue: redis.Redis, headers: dict[str, str]) -> None:
    """A JSON state change from another origin is a 403 on every state-changing route; nothing launched."""
    client = app.test_client()
    for method, url, _endpoint in rule_requests(app, MUTATING):
        resp = client.open(url, method=method, json=ACTION_BODY, headers=headers)
        assert resp.status_code == 403, (url, headers)
        assert resp.get_json()["error"] == "cross-origin requests are refused"
    assert queue.llen("celery") == 0


@pytest.mark.integration
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Origin": "http://localhost"},
        {"Sec-Fetch-Site": "same-origin"},
        {"Origin": "http://proxy.example", "Sec-Fetch-Site": "same-origin"},  # Host rewritten by a proxy
    ],
)
def test_same_origin_json_launches(app: Any, queue: redis.Redis, headers: dict[str, str]) -> None:
    """The same request from the dashboard's own origin (or curl, which sends neither header) works."""
    resp = app.test_client().post(
        "/api/launch", json={"unregistered_ok": True, "task": "dashboard.demo.add", "args": [1, 2]}, headers=headers
    )
    assert resp.status_code == 200, resp.get_json()
    assert queue.llen("celery") == 1


@pytest.mark.integration
def test_a_text_plain_body_is_not_taken_for_json(app: Any, queue: redis.Redis) -> None:
    """A form can post a JSON-looking text/plain body cross-site without a preflight: it is refused (415)."""
    resp = app.test_client().post(
        "/api/launch", data='{"task": "dashboard.demo.add", "args": [1, 2]}', content_type="text/plain"
    )
    assert resp.status_code == 415
    assert queue.llen("celery") == 0


@pytest.mark.integration
def test_form_post_without_csrf_token_is_refused(app: Any, queue: redis.Redis) -> None:
    """The launch form needs its CSRF token: without it a 400 and nothing launched."""
    resp = app.test_client().post(
        "/launch", data={"task": "dashboard.demo.add", "args": "[2, 3]", "unregistered_ok": "1"}
    )
    assert resp.status_code == 400 and "CSRF token is missing" in resp.get_data(as_text=True)
    assert queue.llen("celery") == 0


@pytest.mark.integration
def test_auth_does_not_replace_csrf(auth_app: Any, queue: redis.Redis) -> None:
    """A browser resends basic credentials on a forged form post: the CSRF token still stops it."""
    resp = auth_app.test_client().post(
        "/launch",
        data={"task": "dashboard.demo.add", "args": "[2, 3]", "unregistered_ok": "1"},
        headers=basic("ada", PASSWORD),
    )
    assert resp.status_code == 400
    assert queue.llen("celery") == 0


@pytest.mark.integration
def test_pages_cannot_be_framed_or_sniffed(app: Any) -> None:
    """Clickjacking: no other site may frame the dashboard (its controls); no response is MIME-sniffed."""
    client = app.test_client()
    for path in ("/", "/workers", "/api/tasks", "/healthz", "/metrics"):
        resp = client.get(path)
        assert resp.headers["X-Frame-Options"] == "DENY", path
        assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"], path
        assert resp.headers["X-Content-Type-Options"] == "nosniff", path


# -- content security policy and the session cookie ---------------------------------------------------

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


@pytest.mark.integration
def test_every_response_carries_the_content_security_policy(app: Any, auth_app: Any, ro_app: Any) -> None:
    """Pages, API, static files, 404s, auth and read-only refusals, CSRF errors, Socket.IO's own answers and
    the gate's refusals: all with the policy (and the other protective headers); a task field served as plain
    text keeps its stricter own policy."""
    client = app.test_client()
    responses = [(url, client.get(url)) for _method, url, _endpoint in rule_requests(app, {"GET"})]
    responses += [
        ("/no/such/page", client.get("/no/such/page")),
        ("/api/nope", client.get("/api/nope")),
        ("POST /launch without CSRF", client.post("/launch", data={"task": "x"})),
        ("401", auth_app.test_client().get("/")),
        ("read-only 403", ro_app.test_client().post("/api/launch", json={})),
        ("Socket.IO handshake", client.get("/socket.io/?EIO=4&transport=polling")),
        ("Socket.IO 401", auth_app.test_client().get("/socket.io/?EIO=4&transport=polling")),
        ("Host refused", client.get("/", headers={"Host": "rebind.evil.example"})),
    ]
    for name, resp in responses:
        assert resp.headers["Content-Security-Policy"] == CSP, name
        assert resp.headers["X-Frame-Options"] == "DENY" and resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Referrer-Policy"] == "same-origin", name
    now = time.time()
    app.extensions["dashboard"].state.events(
        [
            {
                "type": "task-received",
                "uuid": "t1",
                "name": "x",
                "args": "(1,)",
                "hostname": "w",
                "timestamp": now,
                "local_received": now,
            }
        ]
    )
    field = client.get("/api/tasks/t1/fields/args")
    assert field.status_code == 200
    assert field.headers["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"


class _PageScan(HTMLParser):
    """What a strict CSP would block in a page: inline scripts, event-handler attributes, style attributes
    and elements, javascript: URLs."""

    def __init__(self) -> None:
        super().__init__()
        self.blocked: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "script":
            self._in_script = True
            if not names.get("src"):
                self.blocked.append("<script> without src")
        if tag == "style":
            self.blocked.append("<style> element")
        for name, value in attrs:
            if name.startswith("on") or name == "style":
                self.blocked.append(f"{tag} {name}=")
            url = (value or "").strip().lower()
            if name in ("href", "src", "action", "formaction") and url.startswith("javascript:"):
                self.blocked.append(f"{tag} {name}=javascript:")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.blocked.append("inline script text")


@pytest.mark.integration
def test_no_page_has_inline_script_handlers_or_styles(app: Any, ro_app: Any) -> None:
    """Every page, in every state the server renders (read-only, a form with errors, a launch result): scripts
    come from files, no on*= handler, no style attribute or element: nothing the policy would block."""
    client = app.test_client()
    pages = {
        url: client.get(url).get_data(as_text=True)
        for _m, url, endpoint in rule_requests(app, {"GET"})
        if endpoint.startswith("views.")
    }
    pages.update(
        {
            f"read-only {url}": ro_app.test_client().get(url).get_data(as_text=True)
            for url in ("/", "/tasks", "/launch", "/workers/w@h")
        }
    )
    form = client.get("/launch").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
    pages["form errors"] = client.post(
        "/launch", data={"csrf_token": token, "task": "nope", "args": "[", "count": "x"}
    ).get_data(as_text=True)
    pages["csrf error"] = client.post("/launch", data={"task": "nope"}).get_data(as_text=True)
    assert len(pages) >= 14
    for name, html_text in pages.items():
        scan = _PageScan()
        scan.feed(html_text)
        assert scan.blocked == [], name


@pytest.mark.integration
@pytest.mark.parametrize("base_url, secure", [("http://localhost", False), ("https://localhost", True)])
def test_session_cookie_is_httponly_lax_and_secure_over_tls(app: Any, base_url: str, secure: bool) -> None:
    """The session cookie (it holds the CSRF secret): HttpOnly, SameSite=Lax, and Secure when the page came
    over https (a plain-http page could not send a Secure cookie back)."""
    resp = app.test_client().get("/launch", base_url=base_url)
    [cookie] = resp.headers.getlist("Set-Cookie")
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert cookie.startswith("session=")
    assert "httponly" in attributes and "samesite=lax" in cookie.lower()
    assert ("secure" in attributes) is secure
