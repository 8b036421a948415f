"""The Beat page's pure parts: a schedule in words, which seen task is an entry's run, and the missed-run rule.

The schedule objects themselves (crontab, interval, solar) are Celery's and are read in cluster/beat.py, which
hands this module plain descriptions and due times (epoch seconds). Nothing here imports Celery.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_MISSED = 20  # the most recent missed due times listed per entry


@dataclass(frozen=True)
class Run:
    """A task of an entry's name seen in the state: when it was first seen, its state, its args repr."""

    uuid: str
    at: float
    state: str
    args: str | None = None
    kwargs: str | None = None


def _plural(n: float, unit: str) -> str:
    text = f"{n:g}"
    return f"{text} {unit}" if text == "1" else f"{text} {unit}s"


def interval_words(seconds: float) -> str:
    """`every 30 seconds`, `every 5 minutes`, `every 2 hours`, `every day`: the largest unit that divides it."""
    for size, unit in ((86_400.0, "day"), (3_600.0, "hour"), (60.0, "minute"), (1.0, "second")):
        if seconds >= size and seconds % size == 0:
            n = seconds / size
            return f"every {unit}" if n == 1 else f"every {_plural(n, unit)}"
    return f"every {_plural(round(seconds, 3), 'second')}"


_DAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")


def _field(value: str, name: str) -> str | None:
    """One crontab field in words, or None when it is `*` (any)."""
    value = str(value).strip()
    if value in ("*", ""):
        return None
    if value.startswith("*/"):
        return f"every {value[2:]} {name}s"
    return f"{name} {value}"


def crontab_words(minute: str, hour: str, day_of_week: str, day_of_month: str, month_of_year: str) -> str:
    """A crontab in words: `at 07:30`, `every 15 minutes`, `at minute 0 of every hour, on Monday`…

    The crontab's own fields follow in parentheses, so nothing is lost in the wording."""
    fields = f"{minute} {hour} {day_of_week} {day_of_month} {month_of_year}"
    parts: list[str] = []
    if minute.isdigit() and hour.isdigit():
        parts.append(f"at {int(hour):02d}:{int(minute):02d}")
    elif minute == "*" and hour == "*":
        parts.append("every minute")
    elif minute.startswith("*/") and hour == "*":
        parts.append(f"every {minute[2:]} minutes")
    elif minute.isdigit() and hour == "*":
        parts.append(f"at minute {int(minute)} of every hour")
    else:
        parts.extend(p for p in (_field(minute, "minute"), _field(hour, "hour")) if p)
    if day_of_week not in ("*", ""):
        days = [_DAYS[int(d) % 7] if d.isdigit() else d for d in day_of_week.split(",")]
        parts.append("on " + ", ".join(days))
    for value, name in ((day_of_month, "day of the month"), (month_of_year, "month")):
        words = _field(value, name)
        if words:
            parts.append(words)
    return f"{', '.join(parts)} (crontab {fields})"


def solar_words(event: str, lat: float, lon: float) -> str:
    """`at sunset at 48.85, 2.35`."""
    return f"at {event.replace('_', ' ')} at {lat:g}, {lon:g}"


def _bare(text: str | None) -> str | None:
    """An args repr without its brackets: `(1, 2)`, `[1, 2]` and `(1,)` / `[1]` compare equal."""
    if text is None:
        return None
    text = text.strip()
    if len(text) >= 2 and text[0] + text[-1] in ("()", "[]"):
        text = text[1:-1].strip().rstrip(",").strip()
    return text


def matches(run: Run, args: str | None, kwargs: str | None) -> bool:
    """Whether a seen task carries the entry's arguments (reprs compared without their brackets; a repr the
    state never saw matches anything)."""
    if run.args is not None and args is not None and _bare(run.args) != _bare(args):
        return False
    return run.kwargs is None or kwargs is None or run.kwargs.strip() == kwargs.strip()


def runs_of(runs: Iterable[Run], args: str | None, kwargs: str | None, distinguish: bool) -> list[Run]:
    """The runs of an entry, newest first: every task of its name, or, when another entry has the same task
    (`distinguish`), those whose arguments are the entry's."""
    chosen = [r for r in runs if not distinguish or matches(r, args, kwargs)]
    chosen.sort(key=lambda r: r.at, reverse=True)
    return chosen


def grace_for(grace: float, period: float | None) -> float:
    """The grace period of an entry: `grace`, but at most half the period of a short interval, so that two
    consecutive due times never share a run."""
    if period is not None and period > 0:
        return min(grace, period / 2)
    return grace


def missed(due: Sequence[float], runs: Sequence[Run], grace: float, now: float) -> list[float]:
    """The due times passed by more than `grace` with no run seen within [due - grace, due + grace]; the most
    recent MAX_MISSED of them, oldest first."""
    times = sorted(r.at for r in runs)
    out: list[float] = []
    for when in due:
        if when + grace >= now:
            continue  # not late yet
        i = bisect_left(times, when - grace)
        if i < len(times) and times[i] <= when + grace:
            continue  # a run within the grace period either side
        out.append(when)
    return out[-MAX_MISSED:]


def beat_down(entries: Iterable[Mapping[str, Any]]) -> bool:
    """Whether beat may be down: some entry has a missed run and no run of any entry was seen after the
    newest missed due time (a run seen since then means beat is sending)."""
    rows = list(entries)
    last_missed = max((max(e["missed"]) for e in rows if e.get("missed")), default=None)
    if last_missed is None:
        return False
    newest_run = max((e["last_run"]["at"] for e in rows if e.get("last_run")), default=None)
    return newest_run is None or newest_run < last_missed


__all__ = [
    "MAX_MISSED",
    "Run",
    "beat_down",
    "crontab_words",
    "grace_for",
    "interval_words",
    "matches",
    "missed",
    "runs_of",
    "solar_words",
]
