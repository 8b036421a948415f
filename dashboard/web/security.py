"""Who may see and do what: auth (basic users, bearer token), read-only mode, cross-site refusal.

Credentials are checked by the gate (dashboard/web/gate.py), a WSGI middleware in front of every request
the server answers, Socket.IO's included; it leaves the signed-in user in the WSGI environ. Then one
guard runs before everything else on every Flask request: for state-changing methods, read-only
mode and cross-site refusal.

The broker URL's secrets (dashboard/core/brokerurl.py) are taken out of every log record of the process.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, g, has_app_context, has_request_context, request
from flask.sessions import SecureCookieSessionInterface
from werkzeug.datastructures import Authorization
from werkzeug.security import check_password_hash, generate_password_hash

from ..config import parse_users
from ..core.brokerurl import MASK, mask_url, secrets_of, well_formed
from .errors import ApiError, render
from .gate import Gate, HostAllowlist, Throttle, is_loopback, wsgi_refusal

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

    def check_password(self, name: str, password: str, slow: Callable[..., Any] = lambda fn, *a: fn(*a)) -> bool:
        """Whether `name` may sign in with `password`; `slow(fn, *args)` runs the hash checks (the gate
        runs them off the gevent hub)."""
        cache_key = hashlib.sha256(f"{name}\0{password}".encode("utf-8", "surrogatepass")).digest()
        with self._lock:
            if cache_key in self._verified:  # hash checks cost ~50 ms: not for every static file
                self._verified.move_to_end(cache_key)
                return True
        stored_hash = self._hashed.get(name)
        if stored_hash is not None:
            ok = slow(self._hash_check, stored_hash, password)
        else:
            ok = hmac.compare_digest(_digest(password), self._plain.get(name, self._dummy_plain))
            ok = ok and name in self._plain
            if self._dummy_hash is not None:
                slow(self._hash_check, self._dummy_hash, password)
        if ok and (stored_hash is not None or self._dummy_hash is not None):  # whenever a hash was paid for
            with self._lock:
                self._verified[cache_key] = name
                while len(self._verified) > _VERIFIED_CACHE:
                    self._verified.popitem(last=False)
        return ok

    def _hash_check(self, stored_hash: str, password: str) -> bool:
        with self._hash_slot:
            return check_password_hash(stored_hash, password)

    def check_token(self, token: str) -> bool:
        """Whether `token` is the configured bearer token."""
        return bool(self.token) and hmac.compare_digest(_digest(token), _digest(self.token))

    def user_of(
        self, creds: Authorization, address: str, slow: Callable[..., Any] = lambda fn, *a: fn(*a)
    ) -> str | None:
        """The user an Authorization header proves, "token" for the bearer token, else None."""
        if creds.type == "basic" and self.users:
            name, password = creds.username or "", creds.password or ""
            if self.check_password(name, password, slow):
                return name
            log.info("refused sign-in as %r from %s: wrong user name or password", name[:64], address)
            return None
        if creds.type == "bearer" and self.token:
            if self.check_token(creds.token or ""):
                return "token"
            log.info("refused bearer token from %s: wrong token", address)
            return None
        log.info("refused %s credentials from %s: not configured", creds.type, address)
        return None


def _auth() -> Auth:
    return current_app.extensions["dashboard_auth"]


def challenge(auth: Auth) -> Callable[[Any], Any]:
    """The 401 response (for the gate) asking for what is configured: basic users, or the bearer token."""
    if auth.users:
        message = "authentication required: sign in with a dashboard user name and password"
        header = f'Basic realm="{REALM}"'
    else:
        message = (
            "authentication required: send the API token as 'Authorization: Bearer <token>' "
            "(browsers need DASHBOARD_AUTH_USERS)"
        )
        header = f'Bearer realm="{REALM}"'
    return lambda req: wsgi_refusal(req, 401, message, [("WWW-Authenticate", header)])


def _guard() -> Response | None:
    """Before every Flask request: read-only and cross-site refusal of state changes (the gate signed in)."""
    user = request.environ.get("dashboard.user")
    if user is not None:
        g.dashboard_user = user
    if request.method in MUTATING:
        # Here, once for every route: a state-changing view added later is covered without a decorator.
        if not controls_enabled():
            return render(403, READ_ONLY_MESSAGE)
        if cross_site():
            log.info(
                "refused cross-site %s %s from %s (Origin %r, Sec-Fetch-Site %r)",
                request.method,
                request.path,
                request.remote_addr,
                request.headers.get("Origin"),
                request.headers.get("Sec-Fetch-Site"),
            )
            return render(403, CROSS_SITE_MESSAGE)
    return None


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


def init_app(app: Flask, session_exists: Callable[[str], bool]) -> None:
    """Put the gate in front of every request (Socket.IO's too) and the guard before every Flask view."""
    cfg = app.config
    broker_url = str(cfg.get("BROKER_URL", ""))
    scrub_logs(broker_url)
    if not well_formed(broker_url):
        log.warning(
            "the broker URL does not parse cleanly, so it is shown as %s: characters such as / ? # @ ; "
            "in a password must be percent-encoded (%%2F %%3F %%23 %%40 %%3B)",
            mask_url(broker_url),
        )
    auth = Auth(parse_users(str(cfg.get("AUTH_USERS", ""))), str(cfg.get("AUTH_TOKEN", "")))
    app.extensions["dashboard_auth"] = auth
    host = str(cfg.get("HOST", "127.0.0.1"))
    # Outermost: wraps Flask-SocketIO's middleware too (socketio.init_app ran before this). (Replacing
    # wsgi_app is Flask's documented way to add middleware; mypy refuses assigning to a method.)
    app.wsgi_app = Gate(  # type: ignore[method-assign]
        app.wsgi_app,
        hosts=HostAllowlist(str(cfg.get("ALLOWED_HOSTS", "")), host),
        auth=auth,
        throttle=Throttle(int(cfg.get("SIGNIN_FAILURES_PER_MINUTE", 10))),
        challenge=challenge(auth),
        session_exists=session_exists,
    )
    # First of all before_request functions: before CSRF (a cross-site POST must get 403, not a CSRF
    # page) and before anything that does work for the request.
    app.before_request_funcs.setdefault(None, []).insert(0, _guard)
    if auth.enabled:
        log.info("auth on: %d user(s)%s", len(auth.users), ", bearer token" if auth.token else "")
    elif not is_loopback(host):
        log.warning(
            "listening on %s without authentication: anyone who can reach this address can see "
            "every task and use every control. Set DASHBOARD_AUTH_USERS and/or DASHBOARD_AUTH_TOKEN "
            "(or --read-only), or bind to 127.0.0.1.",
            host,
        )
    if cfg.get("READ_ONLY"):
        log.info("read-only mode: every control is turned off")
    # The session cookie carries the CSRF token's secret: never readable by scripts, not sent on cross-site
    # subrequests or posts, and Secure whenever the page itself came over TLS.
    app.config.update(SESSION_COOKIE_SAMESITE="Lax", SESSION_COOKIE_HTTPONLY=True)
    app.session_interface = TlsAwareSessionInterface()


class TlsAwareSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with a Secure cookie whenever the request came over TLS (behind a
    trusted proxy: X-Forwarded-Proto https), and a cookie path that is the dashboard's URL prefix."""

    def get_cookie_path(self, app: Flask) -> str:
        """SESSION_COOKIE_PATH when configured, else the prefix this request came under (URL_PREFIX, a
        trusted X-Forwarded-Prefix): the cookie is not sent to the other applications of the host."""
        if app.config.get("SESSION_COOKIE_PATH") or not has_request_context():
            return super().get_cookie_path(app)
        return request.script_root or "/"

    def get_cookie_secure(self, app: Flask) -> bool:
        """Secure when configured so, or when this request is https (a plain-http one could not send it back)."""
        return bool(super().get_cookie_secure(app) or (has_request_context() and request.is_secure))


def socket_allowed(auth: Any) -> bool:
    """Whether a Socket.IO connection may open: the gate signed the handshake in (or auth is off)."""
    if not _auth().enabled:
        return True
    return request.environ.get("dashboard.user") is not None


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
            raise ApiError("send JSON with Content-Type: application/json", status=415)
        return view(*args, **kwargs)

    wrapper.control_endpoint = True  # type: ignore[attr-defined]  # tests check every POST view has it
    return wrapper
