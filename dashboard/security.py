"""Who may see and do what: auth (basic users, bearer token), read-only mode, cross-site refusal.

One guard runs before everything else on every Flask request (pages, API, /healthz, /metrics,
static files): credentials when auth is on, then, for state-changing methods, read-only mode and
cross-site refusal. Socket.IO requests never reach Flask's before_request (the engine.io middleware
answers /socket.io/ first), so the connect handler asks `socket_allowed()` instead.

The broker URL's secrets (dashboard/brokerurl.py) are taken out of every log record of the process.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import wraps
from typing import Any, Callable
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, g, has_app_context, has_request_context, jsonify, request
from flask.sessions import SecureCookieSessionInterface
from werkzeug.security import check_password_hash, generate_password_hash

from .brokerurl import MASK, mask_url, secrets_of, well_formed

log = logging.getLogger(__name__)

REALM = "Celery Live Dashboard"
MUTATING = frozenset(("POST", "PUT", "PATCH", "DELETE"))
READ_ONLY_MESSAGE = "the dashboard is read-only: controls are turned off"
CROSS_SITE_MESSAGE = "cross-origin requests are refused"
# A werkzeug hash as generate_password_hash writes it: "scrypt:32768:8:1$salt$hex", "pbkdf2:sha256:600000$…".
_HASH = re.compile(r"(?:scrypt|pbkdf2)(?::[\w.-]+)*\$[^$]+\$[0-9a-f]+")
_VERIFIED_CACHE = 256  # (user, password) pairs that passed a slow hash check, remembered in memory


def _digest(value: str) -> bytes:
    # Compare digests, not the strings: compare_digest's time still depends on the lengths it gets.
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


def parse_users(raw: str) -> dict[str, str]:
    """`name:password` or `name:<werkzeug hash>` entries, comma-separated -> {name: password or hash}."""
    users: dict[str, str] = {}
    for number, entry in enumerate((e.strip() for e in (raw or "").split(",")), start=1):
        if not entry:
            continue  # a trailing comma
        name, sep, secret = entry.partition(":")
        name, secret = name.strip(), secret.strip()  # "ada: pw" is what people type; hashes have no blanks
        # Never echo the entry: without a ':' it may well be a password.
        if not sep:
            raise ValueError(f"DASHBOARD_AUTH_USERS: entry {number} has no ':' (expected name:password "
                             "or name:<hash>, comma-separated)")
        if not name:
            raise ValueError(f"DASHBOARD_AUTH_USERS: entry {number} has an empty user name")
        if not secret:
            raise ValueError(f"DASHBOARD_AUTH_USERS: user {name!r} has an empty password")
        if name in users:
            raise ValueError(f"DASHBOARD_AUTH_USERS: user {name!r} is listed twice")
        users[name] = secret
    return users


def is_password_hash(secret: str) -> bool:
    """Whether a configured password is a werkzeug hash (else it is the password itself)."""
    return _HASH.fullmatch(secret) is not None


@dataclass
class Auth:
    """The configured credentials and their checks (all in constant time for a given user kind)."""

    users: dict[str, str]
    token: str
    _plain: dict[str, bytes] = field(init=False, default_factory=dict)
    _hashed: dict[str, str] = field(init=False, default_factory=dict)
    _dummy_hash: str | None = field(init=False, default=None)
    _dummy_plain: bytes = field(init=False, default=b"")
    _verified: OrderedDict[bytes, str] = field(init=False, default_factory=OrderedDict)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)
    # One hash check at a time: a flood of bogus sign-ins costs one core, not every core (ingest and the
    # pages keep theirs); it queues up the guesses instead.
    _hash_slot: threading.Semaphore = field(init=False, default_factory=lambda: threading.Semaphore(1))

    def __post_init__(self) -> None:
        for name, secret in self.users.items():
            if is_password_hash(secret):
                self._hashed[name] = secret
            else:
                self._plain[name] = _digest(secret)
        self._dummy_plain = _digest(secrets.token_hex(16))
        if self._hashed:
            # Unknown users and plain-password users pay for one hash check too: how long a refusal
            # takes does not tell which user names exist.
            method = next(iter(self._hashed.values())).split("$", 1)[0]
            self._dummy_hash = generate_password_hash(secrets.token_hex(16), method=method)

    @property
    def enabled(self) -> bool:
        """Whether any credentials are configured (then every request needs them)."""
        return bool(self.users or self.token)

    def check_password(self, name: str, password: str) -> bool:
        """Whether `name` may sign in with `password`."""
        cache_key = hashlib.sha256(f"{name}\0{password}".encode("utf-8", "surrogatepass")).digest()
        with self._lock:
            if cache_key in self._verified:  # hash checks cost ~50 ms: not for every static file
                self._verified.move_to_end(cache_key)
                return True
        stored_hash = self._hashed.get(name)
        if stored_hash is not None:
            with self._hash_slot:
                ok = check_password_hash(stored_hash, password)
        else:
            ok = hmac.compare_digest(_digest(password), self._plain.get(name, self._dummy_plain))
            ok = ok and name in self._plain
            if self._dummy_hash is not None:
                with self._hash_slot:
                    check_password_hash(self._dummy_hash, password)
        if ok and (stored_hash is not None or self._dummy_hash is not None):  # whenever a hash was paid for
            with self._lock:
                self._verified[cache_key] = name
                while len(self._verified) > _VERIFIED_CACHE:
                    self._verified.popitem(last=False)
        return ok

    def check_token(self, token: str) -> bool:
        """Whether `token` is the configured bearer token."""
        return bool(self.token) and hmac.compare_digest(_digest(token), _digest(self.token))

    def user_of_request(self) -> str | None:
        """The user the request's Authorization header proves, "token" for the bearer token, else None."""
        creds = request.authorization
        if creds is None:
            return None
        if creds.type == "basic" and self.users:
            name, password = creds.username or "", creds.password or ""
            if self.check_password(name, password):
                return name
            log.info("refused sign-in as %r from %s: wrong user name or password", name[:64], request.remote_addr)
            return None
        if creds.type == "bearer" and self.token:
            if self.check_token(creds.token or ""):
                return "token"
            log.info("refused bearer token from %s: wrong token", request.remote_addr)
            return None
        log.info("refused %s credentials from %s: not configured", creds.type, request.remote_addr)
        return None


def _auth() -> Auth:
    return current_app.extensions["dashboard_auth"]


def _wants_json() -> bool:
    path = request.path
    return (path.startswith("/api/") or path == "/healthz" or request.is_json
            or request.accept_mimetypes.best == "application/json")


def refusal(status: int, message: str) -> Response:
    """An error answer: JSON {"error"} for the API, /healthz and JSON requests, a plain-text sentence elsewhere."""
    if _wants_json():
        response = jsonify({"error": message})
    else:
        response = Response(message[0].upper() + message[1:] + ".\n", mimetype="text/plain")
    response.status_code = status
    return response


def _unauthorized() -> Response:
    auth = _auth()
    if auth.users:
        message = "authentication required: sign in with a dashboard user name and password"
        challenge = f'Basic realm="{REALM}"'
    else:
        message = ("authentication required: send the API token as 'Authorization: Bearer <token>' "
                   "(browsers need DASHBOARD_AUTH_USERS)")
        challenge = f'Bearer realm="{REALM}"'
    response = refusal(401, message)
    response.headers["WWW-Authenticate"] = challenge
    return response


def _guard() -> Response | None:
    """Before every request: credentials, then read-only and cross-site refusal of state changes."""
    auth = _auth()
    if auth.enabled:
        user = auth.user_of_request()
        if user is None:
            return _unauthorized()
        g.dashboard_user = user
    if request.method in MUTATING:
        # Here, once for every route: a state-changing view added later is covered without a decorator.
        if not controls_enabled():
            return refusal(403, READ_ONLY_MESSAGE)
        if cross_site():
            log.info("refused cross-site %s %s from %s (Origin %r, Sec-Fetch-Site %r)", request.method,
                     request.path, request.remote_addr, request.headers.get("Origin"),
                     request.headers.get("Sec-Fetch-Site"))
            return refusal(403, CROSS_SITE_MESSAGE)
    return None


def _is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


_log_secrets: tuple[str, ...] = ()  # broker URL secrets taken out of every log record, longest first
_log_lock = threading.Lock()


def _scrub_record(record: logging.LogRecord) -> None:
    secrets = _log_secrets
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a bad format string: logging reports it when the record is emitted
        return
    if any(s in message for s in secrets):
        for secret in secrets:
            message = message.replace(secret, MASK)
        record.msg, record.args = message, ()
    if record.exc_info and record.exc_info[0] is not None:
        text = logging.Formatter().formatException(record.exc_info)
        if any(s in text for s in secrets):
            for secret in secrets:
                text = text.replace(secret, MASK)
            record.exc_text = text  # formatters use it instead of formatting the exception again


def scrub_logs(broker_url: str) -> None:
    """From now on, every log record of the process has the broker URL's secrets replaced by ***.

    Every record, libraries' too: kombu's and redis-py's errors for a malformed URL quote part of its
    password ("Port could not be cast to integer value as '…'"), and they are logged from their threads.
    """
    global _log_secrets
    new = set(secrets_of(broker_url))
    with _log_lock:
        if new <= set(_log_secrets):
            return
        first = not _log_secrets
        _log_secrets = tuple(sorted(new.union(_log_secrets), key=len, reverse=True))
        if first:  # a record factory, not a handler filter: it sees records whatever handler logs them
            previous = logging.getLogRecordFactory()

            def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
                record = previous(*args, **kwargs)
                _scrub_record(record)
                return record

            logging.setLogRecordFactory(factory)


def init_app(app: Flask) -> None:
    """Install the guard in front of every Flask request; the Socket.IO connect asks socket_allowed()."""
    broker_url = str(app.config.get("BROKER_URL", ""))
    scrub_logs(broker_url)
    if not well_formed(broker_url):
        log.warning("the broker URL does not parse cleanly, so it is shown as %s: characters such as / ? # @ ; "
                    "in a password must be percent-encoded (%%2F %%3F %%23 %%40 %%3B)", mask_url(broker_url))
    auth = Auth(parse_users(str(app.config.get("AUTH_USERS", ""))), str(app.config.get("AUTH_TOKEN", "")))
    app.extensions["dashboard_auth"] = auth
    # First of all before_request functions: before CSRF (an unauthenticated POST must get 401, not
    # a CSRF page) and before anything that does work for the request.
    app.before_request_funcs.setdefault(None, []).insert(0, _guard)
    host = str(app.config.get("HOST", "127.0.0.1"))
    if auth.enabled:
        log.info("auth on: %d user(s)%s", len(auth.users), ", bearer token" if auth.token else "")
    elif not _is_loopback(host):
        log.warning("listening on %s without authentication: anyone who can reach this address can see "
                    "every task and use every control. Set DASHBOARD_AUTH_USERS and/or DASHBOARD_AUTH_TOKEN "
                    "(or --read-only), or bind to 127.0.0.1.", host)
    if app.config.get("READ_ONLY"):
        log.info("read-only mode: every control is turned off")
    # The session cookie carries the CSRF token's secret: never readable by scripts, not sent on cross-site
    # subrequests or posts, and Secure whenever the page itself came over TLS.
    app.config.update(SESSION_COOKIE_SAMESITE="Lax", SESSION_COOKIE_HTTPONLY=True)
    app.session_interface = TlsAwareSessionInterface()
    app.after_request(_protective_headers)


class TlsAwareSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with a Secure cookie whenever the request came over TLS."""

    def get_cookie_secure(self, app: Flask) -> bool:
        """Secure when configured so, or when this request is https (a plain-http one could not send it back)."""
        return bool(super().get_cookie_secure(app) or (has_request_context() and request.is_secure))


# Everything the pages load is their own: ES modules and stylesheets from /static, JSON and the Socket.IO
# connection from the same origin ('self' covers ws:/wss: to it), the favicon is a data: URL. No inline
# script, handler or style attribute anywhere (uPlot sizes its chart through the CSSOM, which CSP allows).
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
                           "form-action 'self'; frame-ancestors 'none'")


def _protective_headers(response: Response) -> Response:
    """The CSP, no framing (a page of another site cannot overlay the controls: clickjacking), no MIME sniffing."""
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    csp = response.headers.get("Content-Security-Policy")
    # A response with a policy of its own (a task field as plain text: default-src 'none') keeps its stricter
    # one, and is not to be framed either.
    response.headers["Content-Security-Policy"] = f"{csp}; frame-ancestors 'none'" if csp else CONTENT_SECURITY_POLICY
    return response


def socket_allowed(auth: Any) -> bool:
    """Whether a websocket connection may open (called from the Socket.IO connect handler)."""
    config = _auth()
    if not config.enabled:
        return True
    # The connect handler runs in a request context built from the engine.io handshake, so the
    # browser's cached basic credentials (or an API client's header) are in request.authorization.
    user = config.user_of_request()
    if user is None and isinstance(auth, dict) and isinstance(auth.get("token"), str):
        if config.check_token(auth["token"]):
            user = "token"
        else:
            log.info("refused websocket token from %s: wrong token", request.remote_addr)
    if user is None:
        log.info("refused websocket from %s: no valid credentials", request.remote_addr)
        return False
    return True


def current_user() -> str | None:
    """The authenticated user of this request ("token" for the bearer token), or None without auth."""
    return g.get("dashboard_user") if has_app_context() else None


def controls_enabled() -> bool:
    """False in read-only mode: control and launch endpoints refuse, buttons are hidden."""
    return not current_app.config.get("READ_ONLY", False)


def cross_site() -> bool:
    """Whether this request comes from another origin (JSON endpoints refuse those)."""
    # Sec-Fetch-Site is computed by the browser and cannot be set by a page: when present it is the
    # answer, and it stays right behind a proxy that rewrites Host. Older browsers send only Origin.
    # Clients that send neither (curl, scripts) are not browsers a cross-site page could drive.
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site not in ("same-origin", "none")
    origin = request.headers.get("Origin")
    return bool(origin) and urlsplit(origin).netloc != request.host


def control_endpoint(view: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a state-changing JSON endpoint: 415 unless JSON. (Read-only mode and cross-site requests
    are refused for every state-changing request by the guard, before any view runs.)"""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not request.is_json:
            return jsonify({"error": "send JSON with Content-Type: application/json"}), 415
        return view(*args, **kwargs)

    wrapper.control_endpoint = True  # type: ignore[attr-defined]  # tests check every POST view has it
    return wrapper
