"""dashboard/live/socketio_internals.py against the installed python-socketio and python-engineio.

These functions read the libraries' internals; an upgrade that changes them must fail here."""

from __future__ import annotations

import json
from typing import Any

import pytest
import socketio
from werkzeug.test import EnvironBuilder

from dashboard.live.socketio_internals import backlog, close_session, session_exists, sessions

pytestmark = pytest.mark.unit


def _request(server: socketio.Server, method: str = "GET", query: str = "", body: str | None = None) -> str:
    environ = EnvironBuilder(
        path="/socket.io/", method=method, query_string=f"EIO=4&transport=polling{query}", data=body
    ).get_environ()
    status: list[str] = []
    out = b"".join(server.handle_request(environ, lambda s, h: status.append(s)))
    assert status and status[0].startswith("200"), (status, out)
    return out.decode()


def _handshake(server: socketio.Server) -> str:
    return json.loads(_request(server)[1:])["sid"]


@pytest.fixture
def server() -> Any:
    """A python-socketio server (no HTTP server: requests are handed to it as WSGI environs)."""
    srv = socketio.Server(async_mode="threading")
    srv.on("connect", lambda sid, environ, auth=None: None)
    return srv


def test_a_handshake_opens_a_session_without_the_namespace(server: socketio.Server) -> None:
    """After the engine.io handshake the session exists and has not connected "/"; a made-up id does not."""
    eio_sid = _handshake(server)
    assert session_exists(server, eio_sid)
    assert not session_exists(server, "not-a-session")
    assert dict(sessions(server)) == {eio_sid: False}


def test_connecting_the_namespace_is_seen_and_packets_queue_up(server: socketio.Server) -> None:
    """A CONNECT packet connects "/"; emits to that client queue up until it polls; close ends the session."""
    eio_sid = _handshake(server)
    _request(server, "POST", f"&sid={eio_sid}", "40")
    assert dict(sessions(server)) == {eio_sid: True}
    sid = server.manager.sid_from_eio_sid(eio_sid, "/")
    before = backlog(server, sid)
    for n in range(3):
        server.emit("tick", {"n": n}, to=sid)
    assert backlog(server, sid) == before + 3
    assert backlog(server, "gone") == 0
    close_session(server, eio_sid)
    assert not session_exists(server, eio_sid)
    assert dict(sessions(server)) == {}
