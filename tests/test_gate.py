"""The gate in front of every request: Host allowlist (DNS rebinding), throttled sign-in, protective headers."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import RedisServer

from dashboard.web.gate import HostAllowlist, Throttle


@pytest.mark.unit
@pytest.mark.parametrize(
    "bind, configured, host, allowed",
    [
        ("127.0.0.1", "", "127.0.0.1:5000", True),
        ("127.0.0.1", "", "localhost:5000", True),
        ("127.0.0.1", "", "[::1]:5000", True),
        ("127.0.0.1", "", "LOCALHOST", True),
        ("127.0.0.1", "", "rebind.evil.example:5000", False),
        ("127.0.0.1", "", "192.168.1.20:5000", False),  # loopback-bound: no other address reaches it
        ("127.0.0.1", "", None, False),
        ("127.0.0.1", "", "", False),
        ("127.0.0.1", "", "localhost:notaport", False),
        ("127.0.0.1", "dash.example.com", "dash.example.com", True),
        ("127.0.0.1", "dash.example.com", "evil.dash.example.com", False),
        ("127.0.0.1", ".example.com", "dash.example.com:443", True),
        ("127.0.0.1", ".example.com", "example.com", True),
        ("127.0.0.1", ".example.com", "example.com.evil.net", False),
        ("127.0.0.1", "*", "anything.example", True),
        ("0.0.0.0", "", "192.168.1.20:5000", True),  # every interface: an address cannot be rebound
        ("0.0.0.0", "", "[fd00::2]:5000", True),
        ("0.0.0.0", "", "rebind.evil.example", False),
        ("192.168.1.20", "", "192.168.1.20:5000", True),
        ("192.168.1.20", "", "10.0.0.1:5000", False),
    ],
)
def test_host_allowlist(bind: str, configured: str, host: str | None, allowed: bool) -> None:
    """Loopback names always; IP addresses the server listens on; configured names and domains; nothing else."""
    assert HostAllowlist(configured, bind).allows(host) is allowed


@pytest.mark.unit
def test_throttle_counts_failures_in_a_sliding_window() -> None:
    """The limit-th failure within the window blocks further attempts until the oldest one ages out."""
    throttle = Throttle(3, window=60.0)
    keys = ("addr:1.2.3.4", "user:ada")
    for t in (0.0, 1.0, 2.0):
        assert throttle.wait(keys, now=t) == 0
        throttle.failed(keys, now=t)
    assert throttle.wait(keys, now=3.0) == pytest.approx(57.0)
    assert throttle.wait(("addr:1.2.3.4",), now=30.0) == pytest.approx(30.0)
    assert throttle.wait(("addr:5.6.7.8",), now=3.0) == 0  # another address, another user: free
    assert throttle.wait(keys, now=60.5) == 0  # the first failure has aged out


@pytest.mark.unit
def test_throttle_forgets_the_oldest_keys_beyond_its_bound() -> None:
    """A flood of distinct addresses cannot grow the throttle's memory without bound."""
    throttle = Throttle(1, keys=100)
    for n in range(1000):
        throttle.failed((f"addr:{n}",), now=0.0)
    assert len(throttle._failures) == 100
    assert throttle.wait(("addr:999",), now=1.0) > 0 and throttle.wait(("addr:0",), now=1.0) == 0


def _app(redis_server: RedisServer, **config: Any) -> Any:
    from dashboard import create_app

    return create_app(
        {"ASYNC_MODE": "threading", "INGEST_ENABLED": False, "BROKER_URL": redis_server.url_db(1), **config}
    )


@pytest.mark.integration
def test_a_rebound_host_name_is_refused_before_anything_runs(redis_server: RedisServer) -> None:
    """A Host the dashboard does not answer to gets 400 with a message, for pages, the API and Socket.IO."""
    app = _app(redis_server)
    try:
        client = app.test_client()
        evil = {"Host": "rebind.evil.example:5000", "Origin": "http://rebind.evil.example:5000"}
        resp = client.post(
            "/api/launch", json={"unregistered_ok": True, "task": "dashboard.demo.add", "args": [1, 2]}, headers=evil
        )
        assert resp.status_code == 400 and "DASHBOARD_ALLOWED_HOSTS" in resp.get_json()["error"]
        assert client.get("/", headers=evil).status_code == 400
        assert client.get("/socket.io/?EIO=4&transport=polling", headers=evil).status_code == 400
        assert client.get("/healthz", headers={"Host": "localhost:5000"}).status_code == 200
    finally:
        app.extensions["dashboard"].stop()


@pytest.mark.integration
def test_failed_sign_ins_are_throttled_with_a_clear_429(redis_server: RedisServer) -> None:
    """After the limit of wrong passwords from one address, even the right one waits: 429 with Retry-After."""
    app = _app(redis_server, AUTH_USERS="ada:right-password", SIGNIN_FAILURES_PER_MINUTE=3)
    try:
        client = app.test_client()
        here = {"REMOTE_ADDR": "203.0.113.7"}
        for _ in range(3):
            assert client.get("/api/tasks", auth=("ada", "guess"), environ_base=here).status_code == 401
        resp = client.get("/api/tasks", auth=("ada", "right-password"), environ_base=here)
        assert resp.status_code == 429
        assert "too many failed sign-ins" in resp.get_json()["error"]
        assert 1 <= int(resp.headers["Retry-After"]) <= 60
        # The user name is throttled too: guessing ada's password from many addresses is as slow.
        assert (
            client.get(
                "/api/tasks", auth=("ada", "right-password"), environ_base={"REMOTE_ADDR": "198.51.100.1"}
            ).status_code
            == 429
        )
        assert (
            client.get("/api/tasks", auth=("bob", "x"), environ_base={"REMOTE_ADDR": "198.51.100.1"}).status_code == 401
        )
    finally:
        app.extensions["dashboard"].stop()
