"""Every setting in one place: defaults, then environment (DASHBOARD_*), then CLI/test overrides."""
from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Setting:
    """One setting: its default, environment variable, CLI flag and meaning (rendered in the README)."""

    name: str
    default: Any
    help: str
    flag: str | None = None


# A table, one setting a line (as the README renders it): the formatter leaves it so.
# fmt: off
SETTINGS: tuple[Setting, ...] = (
    Setting("BROKER_URL", "redis://127.0.0.1:6379/0", "Celery broker to monitor (Redis URL; other brokers use Celery's generic receiver).", "--broker"),
    Setting("HOST", "127.0.0.1", "Address the web server binds to.", "--host"),
    Setting("PORT", 5000, "Port of the web server.", "--port"),
    Setting("ASYNC_MODE", "gevent", "How the server runs: `gevent` (one hub holds every socket; the default) or `threading` (development: each websocket holds one of THREADS threads).", "--async-mode"),
    Setting("MAX_TASKS", 100_000, "Tasks kept in memory; the oldest is evicted first.", "--max-tasks"),
    Setting("MAX_WORKERS", 1_000, "Workers kept in memory; the longest-offline is evicted first.", "--max-workers"),
    Setting("PUSH_INTERVAL", 0.2, "Seconds between two websocket updates (events within one tick are batched)."),
    Setting("ENABLE_EVENTS_INTERVAL", 30.0, "Seconds between `enable_events` broadcasts to workers (0 turns it off)."),
    Setting("RECONNECT_MIN", 0.5, "First reconnect delay after a broker error, in seconds (doubles up to the max)."),
    Setting("RECONNECT_MAX", 2.0, "Longest reconnect delay, in seconds (short: events resume within seconds of the broker's return; a refused connection costs nothing)."),
    Setting("INGEST", "auto", "Event reader: `auto` (direct Redis pub/sub for redis:// URLs), `redis` or `kombu` (Celery's EventReceiver)."),
    Setting("INGEST_ENABLED", True, "Start the event consumer with the app (tests turn it off)."),
    Setting("LAUNCH_TIMEOUT", 5.0, "Seconds a task launch may wait for the broker before it fails."),
    Setting("SECRET_KEY", "", "Flask secret key for sessions and CSRF tokens (random per process when empty)."),
    Setting("THREADS", 64, "Threads of the server in threading mode (each open websocket holds one).", "--threads"),
    Setting("MAX_CONNECTIONS", 10_000, "Open client connections in all (gevent mode); past it the oldest one still sending its headers is closed, else new ones are refused."),
    Setting("MAX_CONNECTIONS_PER_ADDRESS", 2_000, "Open connections from one client address (gevent mode), with the same rule; raise it behind a proxy that hides client addresses."),
    Setting("HEADER_TIMEOUT", 10.0, "Seconds a client has to send a request's line and headers (slow clients are closed; also ends idle keep-alive connections)."),
    Setting("LOG_LEVEL", "INFO", "Log level of the dashboard.", "--log-level"),
    Setting("DEMO_WORKER_CONCURRENCY", 2, "Pool size of the demo worker started by `celery-dashboard demo`."),
    # -- security (dashboard/web/security.py, dashboard/core/masking.py) --
    Setting("READ_ONLY", False, "Turn every control off: buttons hidden, control and launch endpoints refuse (403).", "--read-only"),
    Setting("AUTH_USERS", "", "Basic-auth users `name:password` (or `name:<werkzeug hash>`), comma-separated; when set, every page, API call and websocket needs them."),
    Setting("ALLOWED_HOSTS", "", "Host names the dashboard answers to besides loopback names and IP addresses, comma-separated (`.example.com` includes subdomains, `*` any); other Host headers get 400 (DNS rebinding). Listening beyond loopback adds this machine's host names."),
    Setting("SIGNIN_FAILURES_PER_MINUTE", 10, "Failed sign-ins allowed per client address and per user name in a minute; more get 429 until the minute has passed."),
    Setting("AUTH_TOKEN", "", "Bearer token accepted for the API and websocket (`Authorization: Bearer …`); when set, auth is on."),
    Setting("MASK_PATTERNS", "password,passwd,secret,token,api_key,apikey,authorization,credential",
            "Comma-separated key patterns whose values are masked in task args/kwargs everywhere (empty: no masking)."),
    Setting("MAX_REQUEST_BYTES", 1_048_576, "Largest request body accepted, in bytes (JSON or form); a larger one is refused with 413."),
    # -- control, inspect, audit (dashboard/cluster/control.py, inspector.py, audit.py, control_api.py) --
    Setting("CONTROL_TIMEOUT", 2.0, "Seconds to wait for workers' replies to a control command."),
    Setting("INSPECT_INTERVAL", 10.0, "Seconds between background `inspect` refreshes of online workers (0 turns it off)."),
    Setting("INSPECT_TIMEOUT", 1.0, "Seconds to wait for workers' replies to one `inspect` call."),
    Setting("BULK_MAX", 500, "Most tasks one bulk re-run or revoke acts on."),
    Setting("AUDIT_LOG", "", "File the audit log of control actions is appended to as JSON lines (empty: memory only)."),
    Setting("HIDE_OFFLINE_AFTER", 3600.0, "Seconds after which an offline worker is hidden from the workers list (0: never)."),
    # -- queues and metrics (dashboard/web/queues.py, dashboard/web/metrics.py) --
    Setting("QUEUE_POLL_INTERVAL", 2.0, "Seconds between two reads of queue lengths from the broker."),
    Setting("SNAPSHOT_PATH", "", "File the state is saved to (atomically, every SNAPSHOT_INTERVAL and at shutdown) and restored from at start (empty: no snapshot).", "--snapshot"),
    Setting("SNAPSHOT_INTERVAL", 60.0, "Seconds between two snapshot saves."),
    Setting("QUEUES", "", "Queues to watch besides the ones seen in events and workers' consumers, comma-separated."),
)
# fmt: on

ENV_PREFIX = "DASHBOARD_"


def _coerce(raw: str, default: Any, name: str) -> Any:
    """Convert an environment string to the type of the default, with a clear error."""
    try:
        if isinstance(default, bool):
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError:
        raise ValueError(f"{ENV_PREFIX}{name}={raw!r} is not a valid {type(default).__name__}") from None
    return raw


def load_config(overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Defaults, then DASHBOARD_* environment variables, then explicit overrides (CLI flags, tests)."""
    env = os.environ if environ is None else environ
    config: dict[str, Any] = {}
    for setting in SETTINGS:
        value = setting.default
        raw = env.get(ENV_PREFIX + setting.name)
        if raw is not None and raw != "":
            value = _coerce(raw, setting.default, setting.name)
        config[setting.name] = value
    for key, value in (overrides or {}).items():
        if value is not None:
            config[key] = value
    if not config["SECRET_KEY"]:
        config["SECRET_KEY"] = secrets.token_hex(32)
    if config["ASYNC_MODE"] not in ("gevent", "threading"):
        raise ValueError(f"ASYNC_MODE must be 'gevent' or 'threading', not {config['ASYNC_MODE']!r}")
    if config["INGEST"] not in ("auto", "redis", "kombu"):
        raise ValueError(f"INGEST must be 'auto', 'redis' or 'kombu', not {config['INGEST']!r}")
    _check_ranges(config)
    parse_users(config["AUTH_USERS"])  # checked here: a bad entry is a clean exit 2, not a server traceback
    return config


# name -> (lowest allowed, whether the lowest itself is allowed); NaN fails every comparison.
_RANGES = {
    "MAX_TASKS": (1, True), "MAX_WORKERS": (1, True), "THREADS": (1, True), "PORT": (0, True),
    "PUSH_INTERVAL": (0.0, False), "RECONNECT_MIN": (0.0, False), "RECONNECT_MAX": (0.0, False),
    "LAUNCH_TIMEOUT": (0.0, False), "ENABLE_EVENTS_INTERVAL": (0.0, True), "DEMO_WORKER_CONCURRENCY": (1, True),
    "CONTROL_TIMEOUT": (0.0, False), "INSPECT_INTERVAL": (0.0, True), "INSPECT_TIMEOUT": (0.0, False),
    "BULK_MAX": (1, True), "HIDE_OFFLINE_AFTER": (0.0, True), "QUEUE_POLL_INTERVAL": (0.0, False),
    "SNAPSHOT_INTERVAL": (0.0, False), "MAX_CONNECTIONS": (16, True), "MAX_CONNECTIONS_PER_ADDRESS": (1, True),
    "HEADER_TIMEOUT": (0.0, False), "SIGNIN_FAILURES_PER_MINUTE": (1, True), "MAX_REQUEST_BYTES": (1, True),
}


def _check_ranges(config: dict[str, Any]) -> None:
    for name, (low, inclusive) in _RANGES.items():
        value = config[name]
        ok = isinstance(value, (int, float)) and (value >= low if inclusive else value > low) and value < float("inf")
        if not ok:
            bound = f"at least {low}" if inclusive else f"more than {low}"
            raise ValueError(f"{ENV_PREFIX}{name}={value!r} must be a finite number {bound}")
    if config["PORT"] > 65535:
        raise ValueError(f"{ENV_PREFIX}PORT={config['PORT']!r} must be at most 65535")
    if config["RECONNECT_MAX"] < config["RECONNECT_MIN"]:
        raise ValueError(f"{ENV_PREFIX}RECONNECT_MAX must be at least {ENV_PREFIX}RECONNECT_MIN")


def settings_table() -> str:
    """The settings as a Markdown table, for the README."""
    rows = ["| environment variable | flag | default | meaning |", "|---|---|---|---|"]
    for s in SETTINGS:
        default = "random" if s.name == "SECRET_KEY" else "empty" if s.default == "" else f"`{s.default}`"
        rows.append(f"| `{ENV_PREFIX}{s.name}` | {f'`{s.flag}`' if s.flag else ''} | {default} | {s.help} |")
    return "\n".join(rows)


__all__ = ["SETTINGS", "Setting", "load_config", "settings_table"]


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
