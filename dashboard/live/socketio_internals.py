"""The few places the dashboard reads python-socketio / python-engineio internals, all in one module.

Neither library exposes an engine.io session's send queue, whether a session has connected a
namespace, or a way to close a session by its engine.io id. tests/test_socketio_internals.py
runs each function against the installed libraries, so an upgrade that changes them fails there,
not in production.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

NAMESPACE = "/"
CLOSE_CONNECTION = "dashboard.close_connection"  # set by dashboard/web/server.py's handler


def session_exists(server: Any, eio_sid: str) -> bool:
    """Whether an engine.io session with this id is open (its id is issued only to a signed-in handshake)."""
    return eio_sid in server.eio.sockets


def backlog(server: Any, sid: str) -> int:
    """Packets queued for one Socket.IO client and not yet written to its socket (0 when it is gone)."""
    eio_sid = server.manager.eio_sid_from_sid(sid, NAMESPACE)
    sock = server.eio.sockets.get(eio_sid) if eio_sid is not None else None
    return sock.queue.qsize() if sock is not None else 0


def sessions(server: Any) -> Iterator[tuple[str, bool]]:
    """(engine.io id, whether it has connected the dashboard's namespace) for every open session."""
    for eio_sid in list(server.eio.sockets):
        yield eio_sid, server.manager.sid_from_eio_sid(eio_sid, NAMESPACE) is not None


def close_session(server: Any, eio_sid: str) -> None:
    """Close an engine.io session at once: its websocket closes, its next long-poll is refused, and the
    connection of its handshake is ended when the server offers a way (the environ's CLOSE_CONNECTION).

    Not `eio.disconnect()`: that waits until the client has read what is queued, which a client that
    never polls never does. And a closed websocket alone does not end its connection: simple-websocket
    sends the close frame, then waits for the client's, which a hostile client never sends."""
    environ = server.environ.get(eio_sid) or {}
    sock = server.eio.sockets.pop(eio_sid, None)
    if sock is not None:
        sock.close(wait=False, abort=True, reason=server.eio.reason.SERVER_DISCONNECT)
    end = environ.get(CLOSE_CONNECTION)
    if callable(end):
        end()
