"""The gate: WSGI middleware in front of everything the server answers, Socket.IO included.

Flask's before_request never sees Socket.IO's requests (engine.io answers /socket.io/ first), so
what must hold for every request is checked here, before any page, API call, long-poll or
websocket upgrade: the Host header is one this dashboard answers to (DNS rebinding), the client
signed in when auth is on (an unauthenticated client never gets an engine.io session to hold),
failed sign-ins are throttled per client address and per user name, and every response carries
the protective headers.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.wrappers import Request

from ..concurrency import offload

log = logging.getLogger(__name__)

LOOPBACK_NAMES = frozenset(("localhost", "localhost.localdomain", "ip6-localhost"))
THROTTLE_WINDOW = 60.0  # seconds over which failed sign-ins are counted
THROTTLE_KEYS = 10_000  # addresses and user names remembered at most (the oldest is forgotten first)
# Every response: no framing by another site (clickjacking), no MIME sniffing, no referrer to other sites.
# Everything the pages load is their own: ES modules and stylesheets from /static, JSON and the Socket.IO
# connection from the same origin ('self' covers ws:/wss: to it), the favicon is a data: URL. No inline
# script, handler or style attribute anywhere (uPlot sizes its chart through the CSSOM, which CSP allows).
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = (("X-Frame-Options", "DENY"), ("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "same-origin"))


def is_loopback(host: str) -> bool:
    """Whether a bind address or host name is this machine only."""
    name = host.strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _ip(name: str) -> Any:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


class HostAllowlist:
    """The Host names this dashboard answers to.

    A page of another site can make a browser send requests here under that site's own name (DNS
    rebinding): such a Host is refused. IP addresses cannot be rebound, so they are answered when the
    server listens on every interface (or on that address); loopback names always; names given in
    ALLOWED_HOSTS (`*` for any, `.example.com` for a domain and its subdomains); when listening beyond
    loopback, this machine's own host names too."""

    def __init__(self, configured: str, bind: str) -> None:
        names = [n.strip().lower() for n in configured.split(",") if n.strip()]
        self.any = "*" in names
        self.suffixes = tuple(n for n in names if n.startswith("."))
        self.names = {n.strip("[]") for n in names if not n.startswith(".") and n != "*"} | LOOPBACK_NAMES
        bind_ip = _ip(bind.strip("[]"))
        self.loopback_only = is_loopback(bind)
        self.any_address = bind_ip is not None and bind_ip.is_unspecified
        self.bind_ip = bind_ip
        if not self.loopback_only:
            for own in {socket.gethostname(), socket.getfqdn()}:
                if own:
                    self.names.add(own.lower())

    def allows(self, host_header: str | None) -> bool:
        """Whether a request with this Host header is answered."""
        if self.any:
            return True
        if not host_header:
            return False
        name = _hostname(host_header)
        if name is None:
            return False
        if name in self.names or any(name.endswith(s) or name == s[1:] for s in self.suffixes):
            return True
        ip = _ip(name)
        if ip is None:
            return False
        return ip.is_loopback or self.any_address or ip == self.bind_ip


def _hostname(host_header: str) -> str | None:
    host = host_header.strip().lower()
    if host.startswith("["):  # [::1]:5000
        end = host.find("]")
        return host[1:end] if end > 0 else None
    name, _, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
    if port and not port.isdigit():
        return None
    return name or None


class Throttle:
    """Failed sign-ins per key (a client address, a user name) in a sliding window; thread-safe."""

    def __init__(self, limit: int, window: float = THROTTLE_WINDOW, keys: int = THROTTLE_KEYS) -> None:
        self.limit = limit
        self.window = window
        self.keys = keys
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()
        self.refused = 0

    def wait(self, keys: Iterable[str], now: float | None = None) -> float:
        """Seconds until one more attempt under these keys is allowed (0: allowed now)."""
        now = time.monotonic() if now is None else now
        longest = 0.0
        with self._lock:
            for key in keys:
                times = self._failures.get(key)
                if times is None:
                    continue
                while times and now - times[0] >= self.window:
                    times.popleft()
                if len(times) >= self.limit:
                    longest = max(longest, self.window - (now - times[0]))
        if longest:
            self.refused += 1
        return longest

    def failed(self, keys: Iterable[str], now: float | None = None) -> None:
        """Count one failed attempt under each key."""
        now = time.monotonic() if now is None else now
        with self._lock:
            for key in keys:
                times = self._failures.get(key)
                if times is None:
                    times = self._failures[key] = deque(maxlen=self.limit)
                    while len(self._failures) > self.keys:
                        self._failures.popitem(last=False)
                else:
                    self._failures.move_to_end(key)
                times.append(now)


def wants_json(request: Request) -> bool:
    """Whether a refusal should be JSON (the API, /healthz, Socket.IO, JSON clients) rather than text."""
    path = request.path
    return (
        path.startswith(("/api/", "/socket.io"))
        or path == "/healthz"
        or request.is_json
        or request.accept_mimetypes.best == "application/json"
    )


def wsgi_refusal(request: Request, status: int, message: str, headers: Iterable[tuple[str, str]] = ()) -> Any:
    """A WSGI response refusing the request: {"error": message} or the message as text."""
    from werkzeug.wrappers import Response

    if wants_json(request):
        response = Response(json.dumps({"error": message}), status=status, mimetype="application/json")
    else:
        response = Response(message[0].upper() + message[1:] + ".\n", status=status, mimetype="text/plain")
    for name, value in headers:
        response.headers[name] = value
    return response


class Gate:
    """The WSGI middleware: Host check, sign-in with throttling, protective headers on every response."""

    def __init__(
        self,
        app: Callable[..., Any],
        *,
        hosts: HostAllowlist,
        auth: Any,
        throttle: Throttle,
        challenge: Callable[[Request], Any],
        session_exists: Callable[[str], bool],
        socketio_path: str = "/socket.io",
    ) -> None:
        self.app = app
        self.hosts = hosts
        self.auth = auth
        self.throttle = throttle
        self.challenge = challenge  # the 401 response for a request without valid credentials
        self.session_exists = session_exists
        self.socketio_path = socketio_path
        self.refused_hosts = 0

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        def with_headers(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            present = {name.lower(): i for i, (name, _) in enumerate(headers)}
            headers.extend((n, v) for n, v in HEADERS if n.lower() not in present)
            csp = present.get("content-security-policy")
            if csp is None:
                headers.append(("Content-Security-Policy", CSP))
            elif "frame-ancestors" not in headers[csp][1]:
                # A response with a stricter policy of its own (a task field as plain text: default-src
                # 'none') keeps it, and is not to be framed either.
                headers[csp] = (headers[csp][0], headers[csp][1] + "; frame-ancestors 'none'")
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        request = Request(environ, shallow=True)
        if not self.hosts.allows(environ.get("HTTP_HOST")):
            self.refused_hosts += 1
            log.info(
                "refused Host %r from %s (not in ALLOWED_HOSTS)",
                str(environ.get("HTTP_HOST"))[:100],
                environ.get("REMOTE_ADDR"),
            )
            return wsgi_refusal(
                request,
                400,
                f"this dashboard does not answer to the host name "
                f"{str(environ.get('HTTP_HOST') or '(none)')[:100]!r}: add it to "
                "DASHBOARD_ALLOWED_HOSTS",
            )(environ, with_headers)
        if self.auth.enabled:
            refused = self._sign_in(request, environ)
            if refused is not None:
                return refused(environ, with_headers)
        return self.app(environ, with_headers)

    def _sign_in(self, request: Request, environ: dict[str, Any]) -> Any:
        creds = request.authorization
        address = str(environ.get("REMOTE_ADDR") or "")
        if creds is None:
            # A later request of an engine.io session (a long-poll, the websocket upgrade) names its
            # session id, an unguessable secret only a signed-in handshake was given: clients other than
            # browsers send their credentials on the handshake alone.
            sid = request.args.get("sid") if request.path.startswith(self.socketio_path) else None
            if sid and self.session_exists(sid):
                return None
            return self.challenge(request)
        name = (creds.username or "") if creds.type == "basic" else f"<{creds.type}>"
        keys = (f"addr:{address}", f"user:{name[:200]}")
        wait = self.throttle.wait(keys)
        if wait:
            log.info("refused sign-in as %r from %s: too many failed attempts", name[:64], address)
            seconds = max(1, math.ceil(wait))
            return wsgi_refusal(
                request,
                429,
                f"too many failed sign-ins from this address or for this user: try again in {seconds} s",
                [("Retry-After", str(seconds))],
            )
        user = self.auth.user_of(creds, address, slow=offload)  # a password hash costs ~50 ms: off the hub
        if user is None:
            self.throttle.failed(keys)
            return self.challenge(request)
        environ["dashboard.user"] = user
        return None
