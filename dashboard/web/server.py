"""The production web server: gevent's WSGI server on one hub, with limits on what a client may hold.

Every connection is a greenlet, so a thousand websockets cost memory, not threads. What a client
may hold is bounded: connections per client address and in all (past the cap, the oldest
connection of that address still sending its request line and headers is closed to make room:
that is what a slowloris client holds), and the time to send a request's line and headers
(`HEADER_TIMEOUT`, which also ends idle keep-alive connections). See dashboard/concurrency.py
for what runs where.
"""

from __future__ import annotations

import logging
import resource
import signal
import socket
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from gevent import Timeout, pywsgi
from gevent.event import Event

from ..live.socketio_internals import CLOSE_CONNECTION  # environ key: a callable that ends the request's connection

log = logging.getLogger(__name__)

FD_MARGIN = 256  # descriptors kept for Redis connections, files and the reader beyond client sockets
STOP_TIMEOUT = 3.0  # seconds open connections get to finish at shutdown
CLOSE_GRACE = 0.5  # seconds a websocket closed by the server has to answer its close frame
_REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 50\r\n\r\nToo many connections from your address: retry later\n"
)
_TIMED_OUT = (
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 42\r\n\r\nThe request's headers took too long: bye.\n"
)


class HeaderTimeout(socket.timeout):
    """A client did not send a request's line and headers within HEADER_TIMEOUT."""


@dataclass(eq=False)
class Conn:
    """One client connection; `pending` until its request headers are in (and again between requests)."""

    address: str
    sock: Any
    pending: bool = True
    opened: float = field(default_factory=time.monotonic)


class ConnectionLimits:
    """Connections per client address and in all; makes room by closing the oldest pending one.

    Runs on the hub only (one thread): no lock."""

    def __init__(self, max_total: int, max_per_address: int) -> None:
        self.max_total = max_total
        self.max_per_address = max_per_address
        self._all: OrderedDict[Conn, None] = OrderedDict()
        self._by_address: dict[str, OrderedDict[Conn, None]] = {}
        self.refused = 0
        self.evicted = 0

    def admit(self, address: str, sock: Any) -> Conn | None:
        """Register a new connection, or None when it must be refused (everything is busy)."""
        mine = self._by_address.get(address)
        if mine is not None and len(mine) >= self.max_per_address and not self._evict(mine):
            self.refused += 1
            return None
        if len(self._all) >= self.max_total and not self._evict(self._all):
            self.refused += 1
            return None
        conn = Conn(address, sock)
        self._all[conn] = None
        self._by_address.setdefault(address, OrderedDict())[conn] = None
        return conn

    def release(self, conn: Conn) -> None:
        """The connection is closed."""
        self._all.pop(conn, None)
        mine = self._by_address.get(conn.address)
        if mine is not None:
            mine.pop(conn, None)
            if not mine:
                del self._by_address[conn.address]

    def _evict(self, conns: OrderedDict[Conn, None]) -> bool:
        victim = next((c for c in conns if c.pending), None)
        if victim is None:
            return False
        self.release(victim)
        self.evicted += 1
        try:
            victim.sock.shutdown(socket.SHUT_RDWR)  # its greenlet reads EOF and ends
        except OSError:
            pass
        return True

    def status(self) -> dict[str, Any]:
        """Open connections, the busiest address's share, refusals and evictions (for /healthz)."""
        # O(addresses), not O(connections): /healthz is polled, and a thousand viewers share one address.
        busiest = max((len(c) for c in self._by_address.values()), default=0)
        return {
            "open": len(self._all),
            "busiest_address": busiest,
            "max": self.max_total,
            "max_per_address": self.max_per_address,
            "refused": self.refused,
            "evicted": self.evicted,
        }


class Handler(pywsgi.WSGIHandler):
    """pywsgi's handler with a deadline for each request's line and headers."""

    conn: Conn | None = None
    _header_timer: Timeout | None = None

    def handle_one_request(self) -> Any:
        """Read and serve one request; the line and headers must arrive within the header timeout."""
        if self.conn is not None:
            self.conn.pending = True
        timer = self._header_timer = Timeout.start_new(self.server.header_timeout, HeaderTimeout)
        try:
            result = super().handle_one_request()
        finally:
            timer.close()
        if result is True and self._connection_upgrade_requested():
            # A websocket ended (the server closed it, or the client): its connection carries nothing
            # else. Left open, it would wait for a next request (pywsgi's keep-alive loop) and the
            # client for the TCP close that ends a websocket.
            return None
        return result

    def read_request(self, raw_requestline: str) -> Any:
        """Parse the headers; from here on the application has as long as it needs."""
        ok = super().read_request(raw_requestline)
        if self._header_timer is not None:
            self._header_timer.close()
        if self.conn is not None:
            self.conn.pending = False
        return ok

    def get_environ(self) -> dict[str, Any]:
        """pywsgi's environ, plus a way to end this connection (see socketio_internals.close_session)."""
        environ = super().get_environ()
        environ[CLOSE_CONNECTION] = self._shutdown
        return environ

    def _shutdown(self) -> None:
        # In a moment: the websocket's writer first sends its close frame (a polite client answers and
        # is gone by then). shutdown, not close: it ends the connection for every descriptor of it
        # (simple-websocket reads a dup of this socket) and wakes whatever greenlet is reading it.
        import gevent

        def end() -> None:
            try:
                self.socket.shutdown(socket.SHUT_RDWR)
            except (OSError, AttributeError):
                pass

        gevent.spawn_later(CLOSE_GRACE, end)

    def _handle_client_error(self, ex: BaseException) -> Any:
        if isinstance(ex, HeaderTimeout):
            return ("408", _TIMED_OUT)
        return super()._handle_client_error(ex)


class Server(pywsgi.WSGIServer):
    """gevent's WSGI server with connection limits and the header deadline."""

    handler_class = Handler

    def __init__(
        self, listener: Any, application: Any, *, limits: ConnectionLimits, header_timeout: float, **kwargs: Any
    ) -> None:
        super().__init__(listener, application, **kwargs)
        self.limits = limits
        self.header_timeout = header_timeout

    def handle(self, sock: Any, address: Any) -> None:
        """Serve one connection if the limits allow it."""
        conn = self.limits.admit(address[0] if isinstance(address, tuple) else str(address), sock)
        if conn is None:
            try:
                sock.send(_REFUSED)
            except OSError:
                pass
            sock.close()
            return
        try:
            if isinstance(address, tuple):
                # pywsgi writes a response's headers and body in separate sends: with Nagle's algorithm the
                # body waits for the client's delayed ACK (40 ms) on every keep-alive request.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            handler = self.handler_class(sock, address, self)
            handler.conn = conn
            handler.handle()
        finally:
            self.limits.release(conn)


def descriptor_budget(wanted: int) -> int:
    """Raise the soft open-files limit towards `wanted` + a margin; return how many clients fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    goal = wanted + FD_MARGIN
    if soft < goal:
        new = goal if hard == resource.RLIM_INFINITY else min(goal, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        except (ValueError, OSError):
            pass
    fits = max(16, soft - FD_MARGIN)
    if fits < wanted:
        log.warning(
            "open-files limit %d allows %d connections, not MAX_CONNECTIONS=%d (raise `ulimit -n`)", soft, fits, wanted
        )
    return min(wanted, fits)


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound now: a port in use fails here, before anything else starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(1024)
    return sock


def make_server(listener: socket.socket, app: Any, limits: ConnectionLimits, header_timeout: float) -> Server:
    """gevent's server on a bound socket, with the app's connection limits."""
    from gevent import socket as gsocket

    return Server(
        gsocket.socket(fileno=listener.detach()),
        app,
        limits=limits,
        header_timeout=header_timeout,
        log=None,
        error_log=logging.getLogger("dashboard.web.server.errors"),
    )


def serve_forever(server: Server, on_stop: Any) -> None:
    """Serve until SIGTERM or SIGINT, then stop accepting, give connections a moment, and call on_stop()."""
    import gevent

    stopping = Event()
    handlers = [gevent.signal_handler(sig, stopping.set) for sig in (signal.SIGTERM, signal.SIGINT)]
    server.start()
    try:
        stopping.wait()
    finally:
        for h in handlers:
            h.cancel()
        log.info("stopping: closing connections")
        server.stop(timeout=STOP_TIMEOUT)
        on_stop()
