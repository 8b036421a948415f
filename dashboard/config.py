"""Every setting in one place: defaults, then a TOML config file, then environment (DASHBOARD_*), then CLI/test
overrides (docs/configuration.md)."""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Setting:
    """One setting: its default, meaning and flag (when not derived from the name; docs/configuration.md)."""

    name: str
    default: Any
    help: str
    flag: str | None = None

    @property
    def option(self) -> str:
        """The command-line flag: `flag`, else derived from the name (MAX_TASKS -> --max-tasks)."""
        return self.flag or "--" + self.name.lower().replace("_", "-")

    @property
    def env_var(self) -> str:
        """The environment variable: DASHBOARD_<NAME>."""
        return ENV_PREFIX + self.name

    @property
    def file_key(self) -> str:
        """The key in the config file: the name in lower case."""
        return self.name.lower()


# A table, one setting a line (as docs/configuration.md renders it): the formatter leaves it so.
# fmt: off
SETTINGS: tuple[Setting, ...] = (
    Setting("BROKER_URL", "redis://127.0.0.1:6379/0", "Celery broker to monitor (Redis URL; other brokers use Celery's generic receiver). With APP and no broker set here, the app's `broker_url`.", "--broker"),
    Setting("APP", "", "Your Celery app, as `celery -A` takes it (`proj`, `proj.celery:app`): its broker, configuration and task registry are used; its tasks never run here (empty: no app).", "--app"),
    Setting("HOST", "127.0.0.1", "Address the web server binds to.", "--host"),
    Setting("PORT", 5000, "Port of the web server.", "--port"),
    Setting("ASYNC_MODE", "gevent", "How the server runs: `gevent` (one hub holds every socket; the default) or `threading` (development: each websocket holds one of THREADS threads).", "--async-mode"),
    Setting("MAX_TASKS", 100_000, "Tasks kept in memory; the oldest is evicted first.", "--max-tasks"),
    Setting("MAX_WORKERS", 1_000, "Workers kept in memory; the longest-offline is evicted first.", "--max-workers"),
    Setting("PUSH_INTERVAL", 0.2, "Seconds between two websocket updates of a page (events within one interval are batched)."),
    Setting("PUSH_AT_ONCE", True, "Send a change at once to a page that got no update for a PUSH_INTERVAL, then batch (off: every page waits for a fixed tick every PUSH_INTERVAL)."),
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
    Setting("LAUNCHABLE", "", "Task name patterns that may be launched, comma-separated (`*` and `?`, e.g. `proj.reports.*,proj.ping`); empty: every task the form offers."),
    Setting("READ_ONLY", False, "Turn every control off: buttons hidden, control and launch endpoints refuse (403).", "--read-only"),
    Setting("AUTH_USERS", "", "Basic-auth users `name:password` (or `name:<werkzeug hash>`), comma-separated; when set, every page, API call and websocket needs them."),
    Setting("ALLOWED_HOSTS", "", "Host names the dashboard answers to besides loopback names and IP addresses, comma-separated (`.example.com` includes subdomains, `*` any); other Host headers get 400 (DNS rebinding). Listening beyond loopback adds this machine's host names."),
    Setting("SIGNIN_FAILURES_PER_MINUTE", 10, "Failed sign-ins allowed per client address and per user name in a minute; more get 429 until the minute has passed."),
    Setting("AUTH_TOKEN", "", "Bearer token accepted for the API and websocket (`Authorization: Bearer …`); when set, auth is on."),
    Setting("MASK_PATTERNS", "password,passwd,secret,token,api_key,apikey,authorization,credential",
            "Comma-separated key patterns whose values are masked in task args/kwargs everywhere (empty: no masking)."),
    Setting("MAX_REQUEST_BYTES", 1_048_576, "Largest request body accepted, in bytes (JSON or form); a larger one is refused with 413."),
    # -- behind a reverse proxy (dashboard/web/proxy.py, docs/operations.md#behind-a-reverse-proxy) --
    Setting("URL_PREFIX", "", "Path the browser reaches the dashboard under, e.g. `/celery` (empty: the root); requests may arrive with it (it is taken off) or without it (a proxy stripped it): every link, API call and the websocket carry it.", "--url-prefix"),
    Setting("TRUSTED_PROXIES", 0, "How many reverse proxies in front of the dashboard to trust: their X-Forwarded-For, -Proto, -Host and -Prefix headers are honoured (Werkzeug's ProxyFix, that many values from the right); 0 trusts none (docs/operations.md#behind-a-reverse-proxy)."),
    # -- control, inspect, audit (dashboard/cluster/control.py, inspector.py, audit.py, control_api.py) --
    Setting("CONTROL_TIMEOUT", 2.0, "Seconds to wait for workers' replies to a control command."),
    Setting("INSPECT_INTERVAL", 10.0, "Seconds between background `inspect` refreshes of online workers (0 turns it off)."),
    Setting("INSPECT_TIMEOUT", 1.0, "Seconds to wait for workers' replies to one `inspect` call."),
    Setting("BULK_MAX", 500, "Most tasks one bulk re-run or revoke acts on."),
    Setting("AUDIT_LOG", "", "File the audit log of control actions is appended to as JSON lines (empty: memory only)."),
    Setting("HIDE_OFFLINE_AFTER", 3600.0, "Seconds after which an offline worker is hidden from the workers list (0: never)."),
    # -- reconciliation (dashboard/cluster/reconcile.py) --
    Setting("RECONCILE_INTERVAL", 10.0, "Seconds between checks for tasks whose final event never came (0 turns them off)."),
    Setting("RECONCILE_AFTER", 20.0, "Seconds without an event before a running or received task is checked against what its worker holds."),
    Setting("RESULT_BACKEND", "", "Celery result backend URL to take a lost task's outcome from (empty: such tasks show 'outcome not reported')."),
    # -- queues and metrics (dashboard/web/queues.py, dashboard/web/metrics.py) --
    Setting("QUEUE_POLL_INTERVAL", 2.0, "Seconds between two reads of queue lengths from the broker."),
    Setting("SNAPSHOT_PATH", "", "File the state is saved to (atomically, every SNAPSHOT_INTERVAL and at shutdown) and restored from at start (empty: no snapshot).", "--snapshot"),
    Setting("SNAPSHOT_INTERVAL", 60.0, "Seconds between two snapshot saves."),
    Setting("QUEUES", "", "Queues to watch besides the ones seen in events and workers' consumers, comma-separated."),
    # -- beat (dashboard/cluster/beat.py, dashboard/core/beat.py) --
    Setting("BEAT_GRACE", 60.0, "Seconds a periodic entry's due time may pass without its task seen before the run counts as missed (at most half the period of a shorter interval)."),
)
# fmt: on

ENV_PREFIX = "DASHBOARD_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"  # the config file, when no --config is given
FILE_TABLE = "dashboard"  # a config file may hold its settings under [dashboard] (then only there)
_SECRETS = frozenset({"SECRET_KEY", "AUTH_USERS", "AUTH_TOKEN"})  # never echoed in an error
_BY_NAME = {s.name: s for s in SETTINGS}
_BY_KEY = {s.file_key: s for s in SETTINGS}

# Text settings with a fixed set of values.
CHOICES: dict[str, tuple[str, ...]] = {"ASYNC_MODE": ("gevent", "threading"), "INGEST": ("auto", "redis", "kombu")}
# name -> (lowest allowed, whether the lowest itself is allowed); NaN fails every comparison.
_RANGES = {
    "MAX_TASKS": (1, True),
    "MAX_WORKERS": (1, True),
    "THREADS": (1, True),
    "PORT": (0, True),
    "PUSH_INTERVAL": (0.0, False),
    "RECONNECT_MIN": (0.0, False),
    "RECONNECT_MAX": (0.0, False),
    "LAUNCH_TIMEOUT": (0.0, False),
    "ENABLE_EVENTS_INTERVAL": (0.0, True),
    "DEMO_WORKER_CONCURRENCY": (1, True),
    "CONTROL_TIMEOUT": (0.0, False),
    "INSPECT_INTERVAL": (0.0, True),
    "INSPECT_TIMEOUT": (0.0, False),
    "BULK_MAX": (1, True),
    "HIDE_OFFLINE_AFTER": (0.0, True),
    "RECONCILE_INTERVAL": (0.0, True),
    "RECONCILE_AFTER": (0.0, False),
    "QUEUE_POLL_INTERVAL": (0.0, False),
    "BEAT_GRACE": (0.0, False),
    "SNAPSHOT_INTERVAL": (0.0, False),
    "MAX_CONNECTIONS": (16, True),
    "MAX_CONNECTIONS_PER_ADDRESS": (1, True),
    "HEADER_TIMEOUT": (0.0, False),
    "SIGNIN_FAILURES_PER_MINUTE": (1, True),
    "MAX_REQUEST_BYTES": (1, True),
    "TRUSTED_PROXIES": (0, True),
}
_HIGHEST = {"PORT": 65535}
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# URL_PREFIX: /segment/segment (a trailing / is allowed and dropped); no empty, "." or ".." segment.
PREFIX_PATTERN = re.compile(r"(?:/(?!\.\.?(?:/|$))[A-Za-z0-9\-._~]+)+/?|/")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
# A broker URL starts with a scheme (redis://, rediss://, amqp://, sentinel://, memory://, …): kombu reads
# "localhost:6399" as a host name and fails later with "Name or service not known". ";" separates failovers.
_URL_START = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_URL_PASSWORD = re.compile(r"(?<=:)[^:@/\s]+(?=@)")
_TOML_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string (in quotes)"}


def _problem(name: str, value: Any) -> str | None:
    """Why a typed value is not allowed for the setting, or None when it is."""
    if name in CHOICES and value not in CHOICES[name]:
        *first, last = (repr(c) for c in CHOICES[name])
        return f"must be {', '.join(first)} or {last}"
    if name in _RANGES:
        low, inclusive = _RANGES[name]
        ok = (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and (value >= low if inclusive else value > low)
            and value < float("inf")
        )
        if not ok:
            return f"must be a finite number {'at least' if inclusive else 'more than'} {low}"
    if name in _HIGHEST and value > _HIGHEST[name]:
        return f"must be at most {_HIGHEST[name]}"
    if name == "URL_PREFIX" and value and not PREFIX_PATTERN.fullmatch(value):
        return "must be a path such as /celery: a leading /, then segments of letters, digits and -._~"
    if name == "BROKER_URL" and (
        not isinstance(value, str)
        or not value.strip()
        or not all(_URL_START.match(u.strip()) for u in value.split(";"))
    ):
        return "is not a URL: a broker URL like redis://host:port/db is expected"
    if name == "LOG_LEVEL" and str(value).upper() not in logging.getLevelNamesMapping():
        return f"must be one of {', '.join(_LOG_LEVELS)} (in any case)"
    return None


def parse_value(setting: Setting, raw: Any) -> Any:
    """The one parser: text (environment, flag, quoted file value) or a TOML value -> the setting's type, checked.

    Raises ValueError with the reason only ("is not a valid int"); callers say where the value came from.
    """
    kind = type(setting.default)
    if isinstance(raw, str) and kind is not str:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered not in _TRUE + _FALSE:
                raise ValueError("is not a valid bool")
            value: Any = lowered in _TRUE
        else:
            try:
                value = kind(raw)
            except ValueError:
                raise ValueError(f"is not a valid {kind.__name__}") from None
    elif kind is float and isinstance(raw, int) and not isinstance(raw, bool):
        value = float(raw)
    elif type(raw) is kind:
        value = raw
    else:
        raise ValueError(f"must be {_TOML_KINDS[kind]}")
    problem = _problem(setting.name, value)
    if problem:
        raise ValueError(problem)
    return value


def shown_value(name: str, raw: Any, toml: bool = False) -> str:
    """A value as an error message shows it (secrets never are, nor a broker URL's password)."""
    if name in _SECRETS:
        return "(hidden)"
    if name == "BROKER_URL" and isinstance(raw, str):
        raw = _URL_PASSWORD.sub("****", raw)
    return json.dumps(raw, default=str) if toml else repr(raw)


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The settings a TOML file sets, parsed and checked, by name; ValueError names the file and the key."""
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise ValueError(f"config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config file {path}: not valid TOML ({exc})") from None
    table = data
    if isinstance(data.get(FILE_TABLE), dict):  # other tables belong to other programs
        stray = [key for key, value in data.items() if not isinstance(value, dict)]
        if stray:
            raise ValueError(
                f"config file {path}: {stray[0]!r} is outside the [{FILE_TABLE}] table, where this file's settings are"
            )
        table = data[FILE_TABLE]
    values: dict[str, Any] = {}
    for key, raw in table.items():
        setting = _BY_KEY.get(key)
        if setting is None:
            near = difflib.get_close_matches(key.lower(), _BY_KEY, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else " (keys are setting names in lower case)"
            raise ValueError(f"config file {path}: unknown key {key!r}{hint}")
        try:
            values[setting.name] = parse_value(setting, raw)
        except ValueError as exc:
            raise ValueError(f"config file {path}: {key} = {shown_value(setting.name, raw, toml=True)} {exc}") from None
    return values


def load_config(
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Defaults, then the config file (config_file, else DASHBOARD_CONFIG), then DASHBOARD_* variables, then
    explicit overrides (CLI flags, tests); ValueError says which value is wrong and where it came from."""
    env = os.environ if environ is None else environ
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    path = config_file or env.get(CONFIG_ENV) or None
    # create_app(cfg) loads again what the CLI loaded: with every setting given, nothing else is read.
    needed = [s for s in SETTINGS if s.name not in given]
    from_file = read_config_file(path) if path and needed else {}
    config: dict[str, Any] = {}
    defaulted: set[str] = set()
    for setting in needed:
        value = from_file.get(setting.name, setting.default)
        if setting.name not in from_file:
            defaulted.add(setting.name)
        raw = env.get(setting.env_var)
        if raw is not None and raw != "":
            defaulted.discard(setting.name)
            try:
                value = parse_value(setting, raw)
            except ValueError as exc:
                raise ValueError(f"{setting.env_var}={shown_value(setting.name, raw)} {exc}") from None
        config[setting.name] = value
    for name, value in given.items():
        problem = _problem(name, value) if name in _BY_NAME else None
        if problem:
            raise ValueError(f"{name}={shown_value(name, value)} {problem}")
        config[name] = value
    config["URL_PREFIX"] = url_prefix(config["URL_PREFIX"])
    if config["APP"] and "BROKER_URL" in defaulted:
        # Set nowhere: the app's broker_url, filled in when the app is loaded (cluster/userapp.py).
        config["BROKER_URL"] = ""
    if not config["SECRET_KEY"]:
        config["SECRET_KEY"] = secrets.token_hex(32)
    if config["RECONNECT_MAX"] < config["RECONNECT_MIN"]:
        raise ValueError(f"{ENV_PREFIX}RECONNECT_MAX must be at least {ENV_PREFIX}RECONNECT_MIN")
    parse_users(config["AUTH_USERS"])  # checked here: a bad entry is a clean exit 2, not a server traceback
    return config


def url_prefix(value: str) -> str:
    """URL_PREFIX as the app uses it: "" for the root, else "/a/b" (no trailing slash)."""
    return value.rstrip("/")


def _cell(text: str) -> str:
    return f"`{text}`"


def settings_table() -> str:
    """The settings as a Markdown table, for docs/configuration.md."""
    rows = ["| setting | flag | environment variable | file key | default | meaning |", "|---|---|---|---|---|---|"]
    for s in SETTINGS:
        flag = f"{s.option}/--no-{s.option[2:]}" if isinstance(s.default, bool) else s.option
        if s.name == "SECRET_KEY":
            default = "random"
        elif s.default == "":
            default = "empty"
        else:
            default = _cell(str(s.default).lower() if isinstance(s.default, bool) else str(s.default))
        rows.append(f"| `{s.name}` | {_cell(flag)} | {_cell(s.env_var)} | {_cell(s.file_key)} | {default} | {s.help} |")
    return "\n".join(rows)


__all__ = ["SETTINGS", "Setting", "load_config", "parse_value", "read_config_file", "settings_table"]


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
            raise ValueError(
                f"DASHBOARD_AUTH_USERS: entry {number} has no ':' (expected name:password "
                "or name:<hash>, comma-separated)"
            )
        if not name:
            raise ValueError(f"DASHBOARD_AUTH_USERS: entry {number} has an empty user name")
        if not secret:
            raise ValueError(f"DASHBOARD_AUTH_USERS: user {name!r} has an empty password")
        if name in users:
            raise ValueError(f"DASHBOARD_AUTH_USERS: user {name!r} is listed twice")
        users[name] = secret
    return users
