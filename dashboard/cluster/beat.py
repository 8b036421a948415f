"""The periodic schedule: the user's app's `beat_schedule`, and RedBeat's entries in Redis when RedBeat is used.

Schedules are Celery's own classes (`celery.schedules`: schedule, crontab, solar), so next runs and due times
are what beat computes. RedBeat need not be installed: its keys (`redbeat:<name>` hashes with a `definition`
JSON, `meta` with `last_run_at`, the `redbeat::schedule` zset of next runs) are read as JSON. Run now sends the
entry's task through the app with its arguments and options. Pure rules are in core/beat.py.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any

from ..concurrency import offload
from ..core import beat as rules
from ..core.brokerurl import scrub
from .errors import BrokerUnavailable

log = logging.getLogger(__name__)

WINDOW = 25 * 3600.0  # due times are computed over at most the last 25 hours
MAX_DUES = 2000


@dataclass
class Entry:
    """One periodic entry: what beat sends and when."""

    name: str
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    options: dict[str, Any]
    schedule: Any  # a celery.schedules object, or None when it could not be read
    source: str  # "app" | "redbeat"
    kind: str  # "interval" | "crontab" | "solar" | other class name
    text: str  # the schedule in words
    period: float | None = None  # seconds, for an interval
    last_run_at: float | None = None  # what RedBeat's meta says
    next_run_at: float | None = None  # what RedBeat's zset says
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def next_after(self, when: float) -> float | None:
        """The first due time after `when` (epoch seconds), by Celery's schedule class."""
        if self.schedule is None:
            return None
        if self.period is not None:
            return when + self.period
        sched = self.schedule
        now = sched.maybe_make_aware(sched.now())
        last = sched.maybe_make_aware(dt.datetime.fromtimestamp(when, dt.UTC))
        remaining = sched.remaining_estimate(last)
        # Whole seconds: `now` moves while this runs, and a due time a microsecond early is due again.
        return float(round(now.timestamp() + remaining.total_seconds()))

    def due_between(self, start: float, end: float) -> list[float]:
        """Due times in (start, end]: an interval counts from `start` (its last run), a crontab or solar
        schedule fires at its own times; at most the last 25 hours, at most the last MAX_DUES."""
        if self.schedule is None:
            return []
        if self.period is not None:
            last = math.floor((end - start) / self.period)
            first_k = max(1, last - MAX_DUES + 1, math.ceil((end - WINDOW - start) / self.period))
            return [start + k * self.period for k in range(first_k, last + 1)]
        out: list[float] = []
        t = max(start, end - WINDOW)
        try:
            while len(out) < MAX_DUES:
                nxt = self.next_after(t)
                if nxt is None or nxt > end or nxt <= t + 0.5:
                    break
                out.append(nxt)
                t = nxt
        except Exception as exc:  # noqa: BLE001 - a solar schedule without `ephem`, a broken crontab
            log.debug("due times of %s: %s", self.name, exc)
        return out


# -- describing schedules ---------------------------------------------------------------------------


def describe(sched: Any) -> tuple[str, str, float | None]:
    """(kind, text, period in seconds or None) of a Celery schedule object."""
    from celery.schedules import crontab, schedule, solar

    if isinstance(sched, crontab):
        fields = [
            str(getattr(sched, f"_orig_{n}", "*"))
            for n in ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")
        ]
        return "crontab", rules.crontab_words(*fields), None
    if isinstance(sched, solar):
        return "solar", rules.solar_words(str(sched.event), float(sched.lat), float(sched.lon)), None
    if isinstance(sched, schedule):
        seconds = float(sched.run_every.total_seconds())
        return "interval", rules.interval_words(seconds), seconds
    return type(sched).__name__, str(sched), None


def _bind(sched: Any, app: Any) -> Any:
    if getattr(sched, "_app", "unset") is None:
        sched.app = app  # crontab(...) made at import time without an app: use the user's (its timezone)
    return sched


def _entry(name: str, spec: Any, app: Any, source: str) -> Entry:
    from celery.schedules import maybe_schedule

    spec = spec if isinstance(spec, dict) else {}
    args = spec.get("args") or ()
    kwargs = spec.get("kwargs") or {}
    options = spec.get("options") or {}
    task = str(spec.get("task") or "")
    try:
        sched = _bind(maybe_schedule(spec.get("schedule"), bool(spec.get("relative", False)), app=app), app)
        kind, text, period = describe(sched)
        error = None
    except Exception as exc:  # noqa: BLE001 - the user's schedule may be anything: shown as unreadable
        sched, kind, text, period, error = None, "unknown", "unreadable schedule", None, f"{type(exc).__name__}: {exc}"
    return Entry(
        name=str(name),
        task=task,
        args=list(args) if isinstance(args, (list, tuple)) else [args],
        kwargs=dict(kwargs) if isinstance(kwargs, dict) else {},
        options=dict(options) if isinstance(options, dict) else {},
        schedule=sched,
        source=source,
        kind=kind,
        text=text,
        period=period,
        error=error,
    )


def app_entries(app: Any) -> list[Entry]:
    """The entries of the app's `beat_schedule`, by name."""
    if app is None:
        return []
    conf = app.conf.beat_schedule or {}
    return [_entry(name, spec, app, "app") for name, spec in sorted(conf.items(), key=lambda kv: str(kv[0]))]


# -- RedBeat ----------------------------------------------------------------------------------------


def redbeat_url(app: Any) -> str | None:
    """Where RedBeat keeps its entries when the app uses it: `redbeat_redis_url`, else the broker when the
    beat scheduler is RedBeat's; None otherwise."""
    if app is None:
        return None
    conf = app.conf
    url = conf.get("redbeat_redis_url")
    if url:
        return str(url)
    scheduler = conf.get("beat_scheduler") or ""
    if "redbeat" in str(scheduler).lower():
        from .userapp import broker_url

        return broker_url(app)
    return None


def _redbeat_schedule(raw: Any, app: Any) -> Any:
    """A Celery schedule from RedBeat's JSON (`{"__type__": "interval" | "crontab" | "solar", ...}`)."""
    from celery.schedules import crontab, schedule, solar

    if not isinstance(raw, dict):
        raise ValueError("no schedule")
    kind = raw.get("__type__")
    if kind == "interval":
        return schedule(dt.timedelta(seconds=float(raw["every"])), bool(raw.get("relative", False)), app=app)
    if kind == "crontab":
        keys = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")
        return crontab(**{k: raw.get(k, "*") for k in keys}, app=app)
    if kind == "solar":
        return solar(raw["event"], float(raw["lat"]), float(raw["lon"]), app=app)
    raise ValueError(f"unknown schedule type {kind!r}")


def _redbeat_time(raw: Any) -> float | None:
    """RedBeat's `{"__type__": "datetime", "year": …}` as epoch seconds (UTC when it says no zone)."""
    if not isinstance(raw, dict) or raw.get("__type__") != "datetime":
        return None
    try:
        when = dt.datetime(
            int(raw["year"]),
            int(raw["month"]),
            int(raw["day"]),
            int(raw.get("hour", 0)),
            int(raw.get("minute", 0)),
            int(raw.get("second", 0)),
            int(raw.get("microsecond", 0)),
        )
    except (KeyError, TypeError, ValueError):
        return None
    zone = raw.get("timezone", "UTC")
    if isinstance(zone, (int, float)) and not isinstance(zone, bool):  # RedBeat writes a fixed offset in seconds
        return when.replace(tzinfo=dt.timezone(dt.timedelta(seconds=float(zone)))).timestamp()
    if zone and zone != "UTC":
        try:
            from zoneinfo import ZoneInfo

            return when.replace(tzinfo=ZoneInfo(str(zone))).timestamp()
        except (ValueError, KeyError):  # an unknown zone: UTC
            pass
    return when.replace(tzinfo=dt.UTC).timestamp()


def redbeat_entries(app: Any, url: str, timeout: float = 2.0) -> list[Entry]:
    """RedBeat's entries from its keys in Redis (`<prefix><name>` hashes with a `definition`), with the last
    run from their `meta` and the next run from the `<prefix>:schedule` zset. Raises on Redis errors."""
    import redis

    prefix = str(app.conf.get("redbeat_key_prefix") or "redbeat:")
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=True)
    try:
        zkey = f"{prefix}:schedule"
        pairs: Any = client.zrange(zkey, 0, -1, withscores=True)  # [(member, score)]
        scores = {str(k): float(v) for k, v in pairs}
        keys = sorted(k for k in client.scan_iter(match=f"{prefix}*", count=500) if k != zkey)
        out = []
        for key in keys:
            try:
                if client.type(key) != "hash":
                    continue
                definition, meta = client.hmget(key, "definition", "meta")
            except redis.ResponseError:
                continue
            if not definition:
                continue
            try:
                spec = json.loads(definition)
            except ValueError:
                continue
            if not isinstance(spec, dict):
                continue
            name = str(spec.get("name") or key[len(prefix) :])
            if spec.get("enabled") is False:
                continue
            raw = spec.get("schedule")
            error = None
            try:
                spec = {**spec, "schedule": _redbeat_schedule(raw, app)}
            except Exception as exc:  # noqa: BLE001 - an entry RedBeat wrote that we cannot read: shown as such
                error = f"{type(exc).__name__}: {exc}"
            entry = _entry(name, spec, app, "redbeat")
            if error is not None:
                kind = str(raw.get("__type__")) if isinstance(raw, dict) else "unknown"
                entry.schedule, entry.kind, entry.text, entry.period, entry.error = None, kind, kind, None, error
            try:
                info = json.loads(meta) if meta else {}
            except ValueError:
                info = {}
            entry.last_run_at = _redbeat_time(info.get("last_run_at")) if isinstance(info, dict) else None
            entry.next_run_at = scores.get(key)
            out.append(entry)
        return out
    finally:
        client.close()


class BeatSchedule:
    """The entries beat runs: the app's `beat_schedule`, plus RedBeat's when the app uses RedBeat."""

    def __init__(self, app: Any, started_at: float, timeout: float = 2.0) -> None:
        self.app = app
        self.started_at = started_at  # no due time before this is judged: the dashboard was not watching
        self.timeout = timeout
        self.redbeat_url = redbeat_url(app)

    def entries(self) -> tuple[list[Entry], str | None]:
        """(entries, a sentence when the schedule is empty or RedBeat could not be read)."""
        if self.app is None:
            return [], (
                "No Celery app: start the dashboard with your app (`celery -A proj dashboard` or --app) to see "
                "its beat_schedule."
            )
        entries = app_entries(self.app)
        note = None
        if self.redbeat_url:
            try:
                found = offload(lambda: redbeat_entries(self.app, str(self.redbeat_url), self.timeout))
            except Exception as exc:  # noqa: BLE001 - Redis down, a bad URL: the app's entries still show
                note = f"RedBeat's entries could not be read: {scrub(str(exc), str(self.redbeat_url))}"
            else:
                # RedBeat copies beat_schedule into Redis and runs from there: its version of a name wins.
                names = {e.name for e in found}
                entries = sorted([e for e in entries if e.name not in names] + found, key=lambda e: e.name)
        if not entries and note is None:
            note = f"The app {self.app.main or ''} has no beat_schedule entries" + (
                " and RedBeat has no keys." if self.redbeat_url else "."
            )
        return entries, note

    def run_now(self, entry: Entry) -> str:
        """Send the entry's task with its args, kwargs and options, through the app; returns the task id."""
        from kombu.exceptions import OperationalError

        options = {k: v for k, v in entry.options.items() if isinstance(k, str)}
        try:
            return str(
                offload(lambda: self.app.send_task(entry.task, args=entry.args, kwargs=entry.kwargs, **options).id)
            )
        except (OperationalError, OSError) as exc:
            raise BrokerUnavailable(f"the broker is unreachable: {scrub(str(exc), self.app.conf.broker_url)}") from exc


__all__ = ["BeatSchedule", "Entry", "app_entries", "describe", "redbeat_entries", "redbeat_url"]
