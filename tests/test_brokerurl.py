"""Broker URL secrets masked in every URL form, and on every surface the URL (or an error about it) reaches:
/healthz, the websocket status, pages, the queues API, launch and audit answers, and the log."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
import requests
import socketio
from conftest import ROOT, wait_for
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dashboard.core.brokerurl import mask_url, scrub, secrets_of, well_formed
from dashboard.processes import free_port, redis_executable, stop_process

# (URL, what the page shows, secrets that must not show). Secrets are 4+ characters: shorter ones are
# not scrubbed from free text (see brokerurl.MIN_SCRUBBED), and a URL shows none at all anyway.
FORMS = [
    ("redis://:hunter22@cache:6379/0", "redis://:***@cache:6379/0", ["hunter22"]),
    ("redis://alice:hunter22@cache/1", "redis://alice:***@cache/1", ["hunter22"]),
    ("redis://cache:6379/0", "redis://cache:6379/0", []),
    ("redis://cache:6379/0?password=hunter22&db=2", "redis://cache:6379/0?password=***&db=2", ["hunter22"]),
    ("redis://cache/0?PassWord=hunter22", "redis://cache/0?PassWord=***", ["hunter22"]),
    (
        "redis://cache/0?client_secret=hunter22&x_auth=lemon88&api_token=kiwi99&apikey=fig777",
        "redis://cache/0?client_secret=***&x_auth=***&api_token=***&apikey=***",
        ["hunter22", "lemon88", "kiwi99", "fig777"],
    ),
    (
        "sentinel://:hunter22@s1:26379;sentinel://:lemon888@s2:26379",
        "sentinel://:***@s1:26379;sentinel://:***@s2:26379",
        ["hunter22", "lemon888"],
    ),
    (
        (
            "rediss://:hunter22@cache:6380/0?ssl_cert_reqs=required&ssl_keyfile=/etc/tls/key.pem"
            "&ssl_certfile=/etc/tls/cert.pem&ssl_ca_certs=/etc/tls/ca.pem&ssl_password=lemon888"
        ),
        (
            "rediss://:***@cache:6380/0?ssl_cert_reqs=required&ssl_keyfile=/etc/tls/key.pem"
            "&ssl_certfile=/etc/tls/cert.pem&ssl_ca_certs=/etc/tls/ca.pem&ssl_password=***"
        ),
        ["hunter22", "lemon888"],
    ),
    (
        "rediss://cache:6380/0?ssl_keyfile_password=lemon888",
        "rediss://cache:6380/0?ssl_keyfile_password=***",
        ["lemon888"],
    ),
    ("amqp://guest:hunter22@rabbit:5672//prod", "amqp://guest:***@rabbit:5672//prod", ["hunter22"]),
    ("redis://:hunter22@[::1]:6379/0", "redis://:***@[::1]:6379/0", ["hunter22"]),
    ("redis://bob:hunter22@[fe80::1%25eth0]:6379/0", "redis://bob:***@[fe80::1%25eth0]:6379/0", ["hunter22"]),
    ("redis://bob:p%40ss%2Fw%3Ard@cache/0", "redis://bob:***@cache/0", ["p%40ss%2Fw%3Ard", "p@ss/w:rd"]),
    ("redis://:p@ssw0rd@cache/0", "redis://:***@cache/0", ["p@ssw0rd", "ssw0rd"]),
    ("redis://tokenonly99@cache/0", "redis://***@cache/0", ["tokenonly99"]),  # a lone word may be a token
    ("unix:///run/redis.sock?password=hunter22&db=1", "unix:///run/redis.sock?password=***&db=1", ["hunter22"]),
    ("unix://:hunter22@/run/redis.sock", "unix://:***@/run/redis.sock", ["hunter22"]),
    ("redis://redis_1:6379/0", "redis://redis_1:6379/0", []),  # compose service names keep their '_'
    ("redis://user:@cache/0", "redis://user:@cache/0", []),  # an empty password is no secret
    # Malformed: an unencoded '/', '?', '#', ';' or '@' in a password. The host stays when it can be told.
    ("redis://:hunt/er22@cache:6379/0", "redis://***@cache:6379/0", ["hunt/er22", "er22"]),
    ("redis://bob:1234/lemon888@cache/0", "redis://***@cache/0", ["1234/lemon888", "lemon888"]),
    ("redis://bob:12?a=lemon888@cache/0", "redis://***", ["lemon888"]),
    ("redis://:hunt#er22@cache/0", "redis://***@cache/0", ["er22"]),
    ("redis://bob:hunter22;lemon888@cache/0", "redis://***", ["hunter22", "lemon888"]),
    ("redis://bob:1234;abcd:lemon888@cache/0", "redis://***", ["1234", "abcd", "lemon888"]),
    ("redis://cache/0?password=hunt#er22", "redis://cache/0?password=***#***", ["hunt", "er22"]),
    ("redis://:hunter22@[::1:6379/0", "redis://***@[::1:6379/0", ["hunter22"]),  # no ']'
    ("redis://cache:port/0", "redis://***", []),
    ("not a url", "***", []),
    ("", "", []),
]


@pytest.mark.unit
@pytest.mark.parametrize("url, shown, secrets", FORMS, ids=[f[0] or "empty" for f in FORMS])
def test_every_url_form_shows_no_secret(url: str, shown: str, secrets: list[str]) -> None:
    """Each form is shown as expected (host, port, db, paths of TLS files stay) and no secret is left."""
    assert mask_url(url) == shown
    for secret in secrets:
        assert secret not in mask_url(url)
        assert secret not in scrub(f"could not connect ('{secret}')", url), secret


@pytest.mark.unit
@pytest.mark.parametrize(
    "url",
    ["redis://:hunt/er22@cache:6379/0", "redis://bob:hunter22;lemon888@cache/0", "redis://cache:port/0", "not a url"],
)
def test_a_url_that_does_not_parse_cleanly_is_said_to(url: str) -> None:
    assert not well_formed(url)


@pytest.mark.unit
def test_clean_urls_are_well_formed() -> None:
    for url, _shown, _secrets in FORMS[:19]:
        assert well_formed(url), url


@pytest.mark.unit
def test_scrub_takes_the_fragment_redis_py_quotes_out_of_its_error() -> None:
    """redis-py's parse error for an unencoded '/' in a password quotes the part before it."""
    url = "redis://:Fr4gment/Tail5ecret@127.0.0.1:6379/0"
    with pytest.raises(ValueError) as info:
        redis.Redis.from_url(url)
    assert "Fr4gment" in str(info.value)  # what would leak without scrub
    assert scrub(str(info.value), url) == "Port could not be cast to integer value as '***'"


@pytest.mark.unit
@pytest.mark.parametrize("value", [None, 42, b"redis://:pw@h", "\x00\udcff;;;@@@???###", "redis://" + "@" * 10_000])
def test_mask_url_never_raises(value: Any) -> None:
    mask_url(value)
    secrets_of(value)
    well_formed(value)


TEMPLATES = [
    "redis://bob:{pw}@cache.local:6379/0",
    "redis://:{pw}@cache.local:6379/0",
    "amqp://bob:{pw}@mq.local//vh",
    "redis://cache.local:6379/0?password={pw}&db=1",
    "sentinel://:{pw}@s1:1;sentinel://:{pw}@s2:2",
    "redis://:{pw}@[::1]:6379/0",
    "rediss://cache.local/0?ssl_keyfile=/k.pem&ssl_password={pw}",
]
PASSWORD_CHARS = "abcdefXYZ0123456789/?#@;:%&=+ -_.~![]"


@pytest.mark.unit
@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=PASSWORD_CHARS, min_size=1, max_size=24), st.sampled_from(TEMPLATES), st.booleans())
def test_no_password_shows_encoded_or_raw(password: str, template: str, encode: bool) -> None:
    """Any password, percent-encoded (as it should be) or raw (a broken URL): neither it nor any 4+ character
    piece of it between delimiters shows, and scrub takes those pieces out of an error message."""
    if encode:
        password = quote(password, safe="")
    # Documented limit: a raw '&' in a query value followed by k=v cannot be told from two options.
    assume(encode or "?" not in template or "&" not in password)
    url = template.format(pw=password)
    around = template.replace("{pw}", "")
    shown = mask_url(url)
    if len(password) >= 4 and password.strip() == password and password not in around:
        assert password not in shown, (url, shown)
    for piece in (p for p in re.split(r"[:/@;?#&=]+", password) if len(p) >= 4):
        if piece.strip() == piece and piece not in around and piece != "***":
            assert piece not in shown, (url, shown, piece)
            assert piece not in scrub(f"error near {piece!r}", url), (url, piece)


@pytest.mark.unit
def test_log_lines_of_any_library_are_scrubbed(caplog: pytest.LogCaptureFixture) -> None:
    """Once an app is built for a broker URL, no log record of the process carries its secrets, whoever logs
    it and however: message arguments and tracebacks alike."""
    from dashboard import create_app

    url = f"redis://:Lo9Secret@127.0.0.1:{free_port()}/0?password=Lo9QuerySecret"
    app = create_app({"INGEST_ENABLED": False, "BROKER_URL": url})
    try:
        with caplog.at_level(logging.INFO):
            logging.getLogger("kombu.connection").warning("cannot reach %s (password %s)", url, "Lo9Secret")
            try:
                raise ValueError("AUTH Lo9QuerySecret refused")
            except ValueError:
                logging.getLogger("redis.client").exception("failed")
        text = caplog.text
        assert "cannot reach" in text and "ValueError: AUTH *** refused" in text
        assert "Lo9Secret" not in text and "Lo9QuerySecret" not in text
    finally:
        app.extensions["dashboard"].stop()


# -- a real dashboard ----------------------------------------------------------------------------------


class RedisWithPassword:
    """A redis-server that requires a password (the session Redis has none)."""

    def __init__(self, password: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                redis_executable(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--requirepass",
                password,
                "--dir",
                tempfile.mkdtemp(prefix="redis-pw-"),
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, password=password, socket_connect_timeout=0.2)
        wait_for(client.ping, timeout=10, message="redis-server with a password")
        client.close()

    def stop(self) -> None:
        """Stop it."""
        stop_process(self.proc)


class LoggedDashboard:
    """`celery-dashboard run` with its whole log (INFO) in a file, usable whether or not the broker answers."""

    def __init__(self, broker_url: str, log_path: Path) -> None:
        self.base_url = f"http://127.0.0.1:{free_port()}"
        self.log_path = log_path
        self._log = log_path.open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dashboard.cli",
                "run",
                "--broker",
                broker_url,
                "--port",
                self.base_url.rsplit(":", 1)[1],
                "--log-level",
                "INFO",
            ],
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_for(lambda: self.get("/healthz").status_code == 200, timeout=30, message="the dashboard")

    def get(self, path: str) -> requests.Response:
        """GET a path."""
        return requests.get(self.base_url + path, timeout=10)

    def log(self) -> str:
        """Everything it logged so far."""
        return self.log_path.read_text()

    def stop(self) -> None:
        """Stop it (its shutdown is logged too)."""
        stop_process(self.proc)
        self._log.close()


LIVE_PASSWORD = "Liv3-Passw0rd"
CASES = {
    # No broker there: every error path runs (ingest reconnects, queue reads fail, a launch fails).
    "unreachable": (
        "redis://dash:Us3rinfo-S3cret@127.0.0.1:{free}/0?password=Qu3ry-S3cret",
        "redis://dash:***@127.0.0.1:{free}/0?password=***",
        ["Us3rinfo-S3cret", "Qu3ry-S3cret"],
    ),
    # An unencoded '/' in the password: redis-py's and kombu's parse errors quote the part before it.
    "malformed": (
        "redis://:Fr4gment/Tail5ecret@127.0.0.1:{free}/0",
        "redis://***@127.0.0.1:{free}/0",
        ["Fr4gment", "Tail5ecret"],
    ),
    # A Redis that needs the password: connected, workers asked, queues read, a task launched.
    "live": (
        "redis://default:" + LIVE_PASSWORD + "@127.0.0.1:{live}/0",
        "redis://default:***@127.0.0.1:{live}/0",
        [LIVE_PASSWORD],
    ),
}
PAGES = [
    "/",
    "/tasks",
    "/tasks/6b1e7c52-0000-4000-8000-00000000abcd",
    "/failures",
    "/stats",
    "/workers",
    "/workers/celery@nowhere",
    "/queues",
    "/audit",
    "/launch",
    "/metrics",
    "/api/overview",
    "/api/workers",
]


@pytest.fixture
def live_redis() -> Iterator[RedisWithPassword]:
    """A Redis that requires LIVE_PASSWORD."""
    server = RedisWithPassword(LIVE_PASSWORD)
    yield server
    server.stop()


def _status_over_the_websocket(base_url: str) -> dict[str, Any]:
    client = socketio.Client(reconnection=False)
    client.connect(base_url, transports=["websocket"], wait_timeout=5)
    try:
        return client.call("subscribe", {"view": "overview"}, timeout=5)["status"]
    finally:
        client.disconnect()


@pytest.mark.integration
@pytest.mark.parametrize("case", list(CASES))
def test_no_surface_shows_the_broker_secrets(case: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """A real dashboard started with secrets in its broker URL: /healthz and the websocket show the masked URL,
    and no page, API answer (queues, launch, audit), websocket message or log line holds a secret."""
    template, masked_template, secrets = CASES[case]
    free = free_port()
    live = request.getfixturevalue("live_redis").port if case == "live" else 0
    url, masked = template.format(free=free, live=live), masked_template.format(free=free, live=live)
    server = LoggedDashboard(url, tmp_path / "dashboard.log")
    try:
        if case == "live":
            wait_for(lambda: server.get("/healthz").json()["broker"]["connected"], message="connected")
        else:
            wait_for(lambda: server.get("/healthz").json()["broker"]["error"], message="the broker error")
            wait_for(lambda: server.get("/api/queues").json()["stale"], message="queue reads failing")
        health = server.get("/healthz").json()
        assert health["broker"]["url"] == masked
        status = _status_over_the_websocket(server.base_url)
        assert status["broker"]["url"] == masked
        answers = {"healthz": json.dumps(health), "websocket": json.dumps(status)}
        for path in PAGES:
            answers[path] = server.get(path).text
        queues = server.get("/api/queues").json()
        answers["queues"] = json.dumps(queues)
        launch = requests.post(
            server.base_url + "/api/launch",
            json={"unregistered_ok": True, "task": "dashboard.demo.add", "args": [1, 2]},
            timeout=30,
        )
        answers["launch"] = launch.text
        answers["audit"] = server.get("/api/audit").text
        assert json.loads(answers["audit"])["entries"][0]["action"] == "launch"  # audited, sent or not
        if case == "live":
            assert launch.status_code == 200 and queues["error"] is None
        else:
            assert launch.status_code == 503, launch.text  # says why, without the secret
            assert queues["error"] and health["broker"]["error"]
        if case == "malformed":  # the parse error is still shown, with the quoted fragment masked
            assert "Port could not be cast to integer value as '***'" in health["broker"]["error"]
            assert "Port could not be cast to integer value as '***'" in queues["error"]
    finally:
        server.stop()
    answers["log"] = log = server.log()
    assert masked in log  # the URL is logged (masked) when the stream fails or starts
    if case == "malformed":
        assert "does not parse cleanly" in log
    for surface, text in answers.items():
        for secret in secrets:
            assert secret not in text, f"{secret!r} in {surface}"
