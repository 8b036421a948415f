"""Redis pub/sub read straight off the socket: many messages per `recv`, parsed by hiredis in C.

redis-py's `PubSub.get_message()` costs about 9 µs per message in Python (a readiness poll, a
response object, a dict per message, the ignore-subscribe logic); a real prefork worker sends one
`task.multi` message per one to three events, so that per-message cost was most of the event
reader's CPU. Here redis-py only does what it does well: the connection (TCP, TLS, unix socket,
AUTH, SELECT, client name) and the PSUBSCRIBE command. After that the socket belongs to this
module: each `recv` takes whatever the kernel holds (up to RECV_BYTES), hiredis' `Reader` splits it
into replies, and every complete `pmessage` is handed on as its payload bytes, one list per `recv`.

The connection's health is checked as redis-py's pub/sub does: after HEALTH_INTERVAL seconds
without a byte, a PING (answered in subscribed mode); no answer within another HEALTH_INTERVAL
is a dead connection (a broker behind a dropped NAT entry sends no RST).
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

import hiredis
import redis

log = logging.getLogger(__name__)

RECV_BYTES = 256 << 10  # a busy stream fills this; an idle one returns what one message brought
POLL_SECONDS = 1.0  # how often a blocked read looks at the stop flag and the health clock
HEALTH_INTERVAL = 10.0
PING = b"*1\r\n$4\r\nPING\r\n"


class StreamError(ConnectionError):
    """The pub/sub connection broke, or Redis answered with an error."""


def connection_socket(conn: Any) -> socket.socket:
    """The connected socket of a redis-py connection (TCP, TLS or unix).

    redis-py keeps it in `_sock` (since 2.x; tests/test_pubsub.py checks the installed version):
    the one private name this module relies on, kept here alone."""
    sock = getattr(conn, "_sock", None)
    if sock is None:
        raise StreamError("the redis connection has no socket")
    return sock


class PubSubStream:
    """One PSUBSCRIBE on its own connection; `read()` returns the payloads of the messages received."""

    def __init__(self, broker_url: str, pattern: str, *, connect_timeout: float = 5.0) -> None:
        self.broker_url = broker_url
        self.pattern = pattern
        self.connect_timeout = connect_timeout
        self._conn: Any = None
        self._sock: socket.socket | None = None
        self._parser = hiredis.Reader()
        self._last_data = 0.0
        self._ping_sent: float | None = None
        self._pending: list[bytes] = []  # messages that came in the same read as the confirmation

    def open(self) -> None:
        """Connect, subscribe, and wait for Redis to confirm the subscription."""
        client = redis.Redis.from_url(
            self.broker_url, socket_connect_timeout=self.connect_timeout, socket_keepalive=True
        )
        conn = client.connection_pool.make_connection()
        conn.connect()  # TCP/TLS/unix, then AUTH, SELECT, CLIENT SETINFO: every reply read, nothing pending
        self._conn = conn
        conn.send_command("PSUBSCRIBE", self.pattern)
        sock = self._sock = connection_socket(conn)
        sock.settimeout(POLL_SECONDS)
        self._last_data = time.monotonic()
        deadline = self._last_data + self.connect_timeout
        # The first reply is the subscription's; messages cannot precede it.
        while True:
            if time.monotonic() > deadline:
                raise StreamError(f"no PSUBSCRIBE confirmation within {self.connect_timeout:.0f}s")
            try:
                data = sock.recv(RECV_BYTES)
            except TimeoutError:
                continue
            if not data:
                raise StreamError("connection closed by the server")
            self._parser.feed(data)
            reply = self._gets()
            if reply is False:
                continue
            if isinstance(reply, list) and reply and reply[0] == b"psubscribe":
                self._pending = self._drain()
                return
            raise StreamError(f"unexpected reply to PSUBSCRIBE: {_describe(reply)}")

    def read(self) -> list[bytes] | None:
        """Payloads of the messages complete after one `recv` (maybe none); None if nothing came for a poll.

        Raises StreamError when the connection is gone or Redis answered with an error."""
        sock = self._sock
        if sock is None:
            raise StreamError("not connected")
        if self._pending:
            out, self._pending = self._pending, []
            return out
        try:
            data = sock.recv(RECV_BYTES)
        except TimeoutError:
            self._check_health(sock)
            return None
        except OSError as exc:  # a reset, or close() from another thread
            raise StreamError(f"connection lost: {exc}") from None
        if not data:
            raise StreamError("connection closed by the server")
        self._last_data = time.monotonic()
        self._ping_sent = None
        self._parser.feed(data)
        return self._drain()

    def close(self) -> None:
        """Close the connection; a `read()` blocked in another thread returns with StreamError."""
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.disconnect()
            except Exception:  # noqa: BLE001 - the connection may already be broken; we are leaving it
                pass

    def _gets(self) -> Any:
        try:
            return self._parser.gets()
        except hiredis.ProtocolError as exc:
            raise StreamError(f"not a Redis reply stream: {exc}") from None

    def _drain(self) -> list[bytes]:
        return payloads(self._parser)

    def _check_health(self, sock: socket.socket) -> None:
        now = time.monotonic()
        if self._ping_sent is not None:
            if now - self._ping_sent > HEALTH_INTERVAL:
                raise StreamError(f"no answer to PING within {HEALTH_INTERVAL:.0f}s")
        elif now - self._last_data > HEALTH_INTERVAL:
            try:
                sock.sendall(PING)
            except OSError as exc:
                raise StreamError(f"connection lost: {exc}") from None
            self._ping_sent = now


def payloads(parser: Any) -> list[bytes]:
    """The payloads of every complete pmessage in a hiredis Reader, in order (other replies skipped).

    Raises StreamError for an error reply or bytes that are not RESP."""
    out: list[bytes] = []
    append = out.append
    gets = parser.gets
    try:
        reply = gets()
        while reply is not False:
            # [b"pmessage", pattern, channel, payload]; under RESP3 (redis-py 8 speaks it when the server
            # does) the same as a push, a list subclass.
            if isinstance(reply, list) and len(reply) == 4 and reply[0] == b"pmessage":
                append(reply[3])
            elif isinstance(reply, Exception):
                raise StreamError(f"redis replied with an error: {reply}")
            # else: a PING's pong or a (p)subscribe confirmation: nothing to hand on
            reply = gets()
    except hiredis.ProtocolError as exc:
        raise StreamError(f"not a Redis reply stream: {exc}") from None
    return out


def _describe(reply: Any) -> str:
    text = repr(reply)
    return text if len(text) <= 200 else text[:200] + "…"
