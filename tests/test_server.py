"""The server as `celery-dashboard run` starts it (gevent), with real clients: many live viewers over
websockets, anonymous engine.io sockets and slowloris connections held open meanwhile, connection
limits per client address, the header deadline."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from conftest import DashboardServer, RedisServer, wait_for

from bench.sockets import auth_headers, run_clients


class Clients(threading.Thread):
    """bench/sockets.py's asyncio clients in a thread: viewers, anonymous sockets, slowloris."""

    def __init__(
        self, base: str, viewers: list[dict[str, Any]], anonymous: int = 0, slowloris: int = 0, user: str | None = None
    ) -> None:
        super().__init__(daemon=True)
        self.kwargs = dict(viewers=viewers, anonymous=anonymous, slowloris=slowloris, slowloris_period=0.3, user=user)
        self.base = base
        self.ready = threading.Event()
        self.done = threading.Event()
        self.result: dict[str, Any] = {}

    def run(self) -> None:
        self.result = asyncio.run(
            run_clients(self.base, ready_cb=self.ready.set, stop_after=self.done.is_set, **self.kwargs)
        )

    def finish(self) -> dict[str, Any]:
        self.done.set()
        self.join(60)
        return self.result


def _views(n: int) -> list[dict[str, Any]]:
    rooms = [{"view": "overview"}, {"view": "tasks"}, {"view": "workers"}, {"view": "tasks", "state": "SUCCESS"}]
    return [dict(rooms[i % len(rooms)]) for i in range(n)]


@pytest.fixture(scope="module")
def tight(redis_server: RedisServer) -> Iterator[DashboardServer]:
    """A dashboard on the session Redis with a 2 s header deadline (slowloris ends quickly)."""
    server = DashboardServer(redis_server.url, env={"DASHBOARD_HEADER_TIMEOUT": "2"})
    yield server
    server.stop()


@pytest.mark.integration
def test_viewers_get_live_updates_while_anonymous_and_slowloris_clients_hold_nothing(
    tight: DashboardServer, dashboard: DashboardServer, worker: str
) -> None:
    """200 viewers in four rooms all receive their rooms' updates while tasks run; 100 engine.io sockets
    that never connect the namespace are closed within seconds; 100 slowloris connections are cut at the
    header deadline; ordinary requests keep answering all along."""
    clients = Clients(tight.base_url, _views(200), anonymous=100, slowloris=100)
    clients.start()
    assert clients.ready.wait(120), "the viewers did not subscribe"
    answered, failed = 0, []
    deadline = time.monotonic() + 8  # longer than the namespace deadline (3 s) and the header deadline (2 s)
    while time.monotonic() < deadline:
        dashboard.launch("dashboard.demo.add", args=[1, 2])
        for path in ("/", "/tasks", "/api/tasks?limit=50", "/healthz"):
            resp = requests.get(tight.base_url + path, timeout=10)
            answered += 1
            if resp.status_code != 200:
                failed.append((path, resp.status_code))
        time.sleep(0.2)
    result = clients.finish()
    assert not failed and answered > 20
    assert result["subscribed"] == 200 and result["receiving"] == 200, result
    assert result["messages"]["overview"]["count"] >= 200 and result["messages"]["tasks"]["count"] >= 100
    anonymous = result["anonymous"]
    assert anonymous["closed"] == 100 and anonymous["still_open"] == 0, anonymous
    assert anonymous["closed_after_max"] < 8
    slow = result["slowloris"]
    assert slow["opened"] == 100 and slow["closed"] == 100 and slow["finished"] == 0, slow


@pytest.fixture(scope="module")
def locked(redis_server: RedisServer) -> Iterator[DashboardServer]:
    """A dashboard with basic auth and a low sign-in throttle."""

    class Authed(DashboardServer):
        def get(self, path: str, **kwargs: Any) -> requests.Response:
            kwargs.setdefault("auth", ("ada", "pw"))
            return super().get(path, **kwargs)

    server = Authed(redis_server.url, env={"DASHBOARD_AUTH_USERS": "ada:pw"})
    yield server
    server.stop()


@pytest.mark.integration
def test_with_auth_anonymous_sockets_are_refused_at_the_handshake(
    locked: DashboardServer, worker: str, dashboard: DashboardServer
) -> None:
    """Auth on: 100 anonymous engine.io websockets each get 401 at the handshake (no session, nothing held),
    while 50 signed-in viewers get their updates."""
    clients = Clients(locked.base_url, _views(50), anonymous=100, user="ada:pw")
    clients.start()
    assert clients.ready.wait(60)
    for _ in range(10):
        dashboard.launch("dashboard.demo.add", args=[2, 2])
        time.sleep(0.3)
    result = clients.finish()
    assert result["anonymous"]["refused"] == {"401": 100}, result["anonymous"]
    assert result["receiving"] == 50, result
    health = locked.get("/healthz").json()
    assert health["server"]["connections"]["open"] <= 5  # the viewers are gone; the refused never stayed


def _half_request(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # headers never finished
    return sock


def _closed(sock: socket.socket, timeout: float) -> bytes | None:
    """What the server sent before closing the connection, or None if it stays open for `timeout`."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return data


@pytest.mark.integration
def test_header_deadline_ends_slow_and_idle_connections(tight: DashboardServer) -> None:
    """Headers not finished within HEADER_TIMEOUT: 408 and closed; a connection that sends nothing: closed."""
    slow = _half_request(tight.port)
    idle = socket.create_connection(("127.0.0.1", tight.port), timeout=10)
    t0 = time.monotonic()
    said = _closed(slow, 10)
    assert said is not None and said.startswith(b"HTTP/1.1 408"), said
    assert _closed(idle, 10) == b""
    assert 1.5 <= time.monotonic() - t0 < 6


@pytest.mark.integration
def test_a_websocket_that_never_connects_the_namespace_is_closed_connection_and_all(tight: DashboardServer) -> None:
    """An engine.io websocket that never sends the namespace CONNECT gets a close frame within seconds, and
    its TCP connection ends with it (it does not linger as an idle keep-alive connection)."""
    sock = socket.create_connection(("127.0.0.1", tight.port), timeout=10)
    sock.sendall(
        b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    t0 = time.monotonic()
    said = _closed(sock, 15)
    assert said is not None, "still open after 15 s"
    assert b"101 Switching Protocols" in said and b"\x88\x02\x03\xe8" in said  # the open packet, then a close frame
    assert time.monotonic() - t0 < 6  # the namespace deadline (3 s) and one sweep, not the header timeout


@pytest.fixture
def capped(redis_server: RedisServer) -> Iterator[DashboardServer]:
    """A dashboard that allows 10 connections per client address."""
    server = DashboardServer(redis_server.url, env={"DASHBOARD_MAX_CONNECTIONS_PER_ADDRESS": "10"})
    yield server
    server.stop()


@pytest.mark.integration
def test_a_client_address_at_its_cap_loses_its_slowest_connection_not_its_next_request(capped: DashboardServer) -> None:
    """At the per-address cap, a new connection closes the oldest one still sending headers (slowloris);
    when every connection is busy (websockets), a new one gets 503 until one closes."""
    half = [_half_request(capped.port) for _ in range(10)]
    time.sleep(0.2)
    assert requests.get(capped.base_url + "/healthz", timeout=5).status_code == 200  # made room: one half closed
    assert _closed(half[0], 5) == b""  # the oldest went first
    for sock in half:
        sock.close()
    clients = Clients(capped.base_url, _views(10))
    clients.start()
    assert clients.ready.wait(30)
    wait_for(lambda: _busy_refused(capped), timeout=10, message="a 503 at the cap")
    result = clients.finish()
    assert result["subscribed"] == 10
    wait_for(
        lambda: requests.get(capped.base_url + "/healthz", timeout=5).status_code == 200,
        timeout=10,
        message="room again once the viewers left",
    )
    counts = requests.get(capped.base_url + "/healthz", timeout=5).json()["server"]["connections"]
    assert counts["refused"] >= 1 and counts["evicted"] >= 1


def _busy_refused(server: DashboardServer) -> bool:
    try:
        resp = requests.get(server.base_url + "/healthz", timeout=5)
    except requests.ConnectionError:
        return False
    return resp.status_code == 503 and "Too many connections" in resp.text


@pytest.mark.unit
def test_auth_headers_helper() -> None:
    """The bench's viewers sign in with basic auth (used above)."""
    assert auth_headers("ada:pw") == {"Authorization": "Basic YWRhOnB3"}
    assert auth_headers(None) == {}
