"""Tests for `dashboard.stats.TaskStats`: counts, percentiles against exact ones, windows, bounds, garbage."""

from __future__ import annotations

import math
import random
import statistics
from fractions import Fraction
from typing import Any

import pytest

from dashboard.core.stats import (
    OTHER,
    RELATIVE_ERROR,
    UNKNOWN,
    TaskStats,
)

pytestmark = pytest.mark.unit

T0 = 1_700_000_000.0  # a realistic epoch start for synthetic event timestamps


def lognormal(seed: int, n: int, mu: float = math.log(0.2), sigma: float = 1.0) -> list[float]:
    """Seeded log-normal samples (median 0.2 s), well inside the 100 us .. 1 day bucket range."""
    rnd = random.Random(seed)
    return [rnd.lognormvariate(mu, sigma) for _ in range(n)]


def exact(samples: list[float], pct: int) -> float:
    """The exact percentile the module's interpolation mirrors."""
    return statistics.quantiles(samples, n=100, method="inclusive")[pct - 1]


def assert_close(estimate: float | None, true: float) -> None:
    """Within the documented relative error (plus float noise)."""
    assert estimate is not None
    assert abs(estimate - true) <= RELATIVE_ERROR * true * (1 + 1e-9), (estimate, true)


def test_counts_failure_rate_and_retries() -> None:
    stats = TaskStats()
    for i in range(7):
        stats.finished("app.add", "SUCCESS", 0.5, T0, T0 + 1, None, T0 + i)
    for i in range(3):
        stats.finished("app.add", "FAILURE", 0.5, T0, T0 + 1, None, T0 + 10 + i)
    stats.retried("app.add", T0 + 20)
    stats.retried("app.add", T0 + 21)
    row = stats.row("app.add")
    assert row is not None
    assert (row["count"], row["succeeded"], row["failed"], row["retried"]) == (10, 7, 3, 2)
    assert row["failure_rate"] == pytest.approx(0.3)
    assert row["last_seen"] == T0 + 21
    assert row["name"] == "app.add"


def test_no_finished_tasks_means_no_rate_and_empty_percentiles() -> None:
    stats = TaskStats()
    stats.retried("app.flaky", T0)
    row = stats.row("app.flaky")
    assert row is not None
    assert row["count"] == 0 and row["retried"] == 1
    assert row["failure_rate"] is None
    assert row["runtime"] == {"p50": None, "p95": None, "p99": None, "max": None, "mean": None}
    assert row["queue_wait"] == {"p50": None, "p95": None}
    assert row["queue_wait_sent"] == {"p50": None, "p95": None}


@pytest.mark.parametrize("seed,n", [(1, 5000), (2, 2000), (3, 300), (4, 37)])
def test_runtime_percentiles_within_documented_error(seed: int, n: int) -> None:
    samples = lognormal(seed, n)
    stats = TaskStats()
    for i, rt in enumerate(samples):
        stats.finished("app.work", "SUCCESS", rt, None, None, None, T0 + i)
    runtime = stats.row("app.work")["runtime"]
    for pct in (50, 95, 99):
        assert_close(runtime[f"p{pct}"], exact(samples, pct))
    # max and mean are kept exactly, not estimated from buckets.
    assert runtime["max"] == max(samples)
    assert runtime["mean"] == pytest.approx(statistics.fmean(samples), rel=1e-12)


def test_relative_error_is_documented_as_about_five_percent() -> None:
    assert 0.04 < RELATIVE_ERROR <= 0.05


def test_wide_range_of_runtimes_from_sub_millisecond_to_hours() -> None:
    samples = lognormal(5, 3000, mu=math.log(1.0), sigma=3.0)
    samples = [min(max(x, 1e-4), 86_000.0) for x in samples]  # stay inside the bounded range
    stats = TaskStats()
    for i, rt in enumerate(samples):
        stats.finished("app.wide", "SUCCESS", rt, None, None, None, T0 + i)
    runtime = stats.row("app.wide")["runtime"]
    for pct in (50, 95, 99):
        assert_close(runtime[f"p{pct}"], exact(samples, pct))


def test_single_sample_is_exact() -> None:
    stats = TaskStats()
    stats.finished("one", "SUCCESS", 1.2345, None, None, None, T0)
    runtime = stats.row("one")["runtime"]
    assert runtime == {"p50": 1.2345, "p95": 1.2345, "p99": 1.2345, "max": 1.2345, "mean": 1.2345}


def test_failure_without_runtime_uses_timestamp_minus_started() -> None:
    stats = TaskStats()
    stats.finished("app.fail", "FAILURE", None, T0, T0 + 1.0, None, T0 + 3.5)
    runtime = stats.row("app.fail")["runtime"]
    assert runtime["max"] == 2.5 and runtime["mean"] == 2.5
    # Neither runtime nor started: counted as a failure, but no runtime sample.
    stats.finished("app.fail", "FAILURE", None, None, None, None, T0 + 4)
    row = stats.row("app.fail")
    assert row["failed"] == 2 and row["runtime"]["max"] == 2.5


def test_queue_wait_received_and_sent_to_started() -> None:
    waits = lognormal(6, 2000, mu=math.log(0.05))
    since_sent = [w + extra for w, extra in zip(waits, lognormal(7, 2000, mu=math.log(0.01)))]
    stats = TaskStats()
    for i, (w, s) in enumerate(zip(waits, since_sent)):
        started = T0 + i
        stats.started("app.q", started - w, started - s, started)
    row = stats.row("app.q")
    for pct in (50, 95):
        assert_close(row["queue_wait"][f"p{pct}"], exact(waits, pct))
        assert_close(row["queue_wait_sent"][f"p{pct}"], exact(since_sent, pct))
    # Waits are recorded at start: nothing has finished yet.
    assert row["count"] == 0 and row["last_seen"] == T0 + 1999


def test_queue_wait_sent_is_none_without_task_sent_events() -> None:
    stats = TaskStats()
    for i in range(10):
        stats.started("app.nosent", T0 + i, None, T0 + i + 0.25)
    row = stats.row("app.nosent")
    assert row["queue_wait"]["p50"] == pytest.approx(0.25, rel=RELATIVE_ERROR)
    assert row["queue_wait_sent"] == {"p50": None, "p95": None}


def test_negative_queue_wait_from_clock_skew_is_ignored() -> None:
    stats = TaskStats()
    stats.started("app.skew", T0 + 5, T0 + 6, T0)  # received and sent after started
    row = stats.row("app.skew")
    assert row["queue_wait"]["p50"] is None and row["queue_wait_sent"]["p50"] is None


def test_recent_window_forgets_old_data_while_all_keeps_it() -> None:
    stats = TaskStats(window_seconds=300.0, slot_seconds=60.0)
    t = 6_000.0  # a slot boundary, so the arithmetic below is exact
    for i in range(10):
        stats.finished("app.old", "FAILURE", 1.0, None, None, None, t + i)
    stats.started("app.old", t - 1, None, t)
    # Still inside the window a few minutes later.
    recent = stats.row("app.old", now=t + 200, window="recent")
    assert recent is not None and recent["count"] == 10 and recent["failed"] == 10
    assert recent["queue_wait"]["p50"] == pytest.approx(1.0)

    # New traffic for another name advances time; the old name falls out of "recent".
    for i in range(5):
        stats.finished("app.new", "SUCCESS", 2.0, None, None, None, t + 400 + i)
    assert stats.row("app.old", now=t + 404, window="recent") is None
    assert [r["name"] for r in stats.table(now=t + 404, window="recent")] == ["app.new"]
    # now=None means "the newest event time seen".
    assert [r["name"] for r in stats.table(window="recent")] == ["app.new"]
    # Lifetime keeps everything.
    assert stats.row("app.old")["count"] == 10
    assert {r["name"] for r in stats.table()} == {"app.old", "app.new"}


def test_recent_window_rotates_slot_by_slot() -> None:
    stats = TaskStats(window_seconds=300.0, slot_seconds=60.0)
    t = 6_000.0
    # One finished task per minute for 10 minutes.
    for minute in range(10):
        stats.finished("app.tick", "SUCCESS", 0.1, None, None, None, t + minute * 60 + 1)
    # At the end, only the last 5 one-minute slots (minutes 5..9) are in the window.
    assert stats.row("app.tick", window="recent")["count"] == 5
    assert stats.row("app.tick", now=t + 9 * 60 + 30, window="recent")["count"] == 5
    # Reading as of an earlier time only includes slots the ring still holds (recycled ones are gone).
    assert stats.row("app.tick", now=t + 7 * 60, window="recent")["count"] == 3
    # Far in the future, nothing is recent.
    assert stats.row("app.tick", now=t + 3600, window="recent") is None
    assert stats.table(now=t + 3600, window="recent") == []
    assert stats.row("app.tick")["count"] == 10


def test_late_event_older_than_window_is_kept_only_in_lifetime() -> None:
    stats = TaskStats(window_seconds=300.0, slot_seconds=60.0)
    t = 6_000.0
    stats.finished("app.x", "SUCCESS", 0.1, None, None, None, t + 600)
    stats.finished("app.x", "SUCCESS", 0.1, None, None, None, t)  # 10 minutes late
    stats.retried("app.x", t + 1)
    assert stats.row("app.x", window="recent")["count"] == 1
    assert stats.row("app.x", window="recent")["retried"] == 0
    assert stats.row("app.x")["count"] == 2 and stats.row("app.x")["retried"] == 1


def test_recent_percentiles_only_cover_recent_samples() -> None:
    stats = TaskStats(window_seconds=300.0, slot_seconds=60.0)
    t = 6_000.0
    for i in range(100):
        stats.finished("app.slowdown", "SUCCESS", 0.01, None, None, None, t + i)
    for i in range(100):
        stats.finished("app.slowdown", "SUCCESS", 5.0, None, None, None, t + 1000 + i)
    assert stats.row("app.slowdown", window="recent")["runtime"]["p50"] == 5.0
    assert stats.row("app.slowdown")["runtime"]["p50"] == pytest.approx(2.505, rel=RELATIVE_ERROR)


def test_names_past_max_names_go_to_other() -> None:
    stats = TaskStats(max_names=3)
    for i in range(6):
        stats.finished(f"app.t{i}", "SUCCESS", 0.1, None, None, None, T0 + i)
    stats.finished("app.t0", "FAILURE", 0.1, None, None, None, T0 + 10)  # a tracked name stays itself
    names = {r["name"] for r in stats.table()}
    assert names == {"app.t0", "app.t1", "app.t2", OTHER}
    assert stats.row(OTHER)["count"] == 3
    assert stats.row("app.t0")["count"] == 2
    assert stats.row("app.t5") is None
    # The recent window uses the same folded names.
    assert {r["name"] for r in stats.table(window="recent")} == names


def test_name_normalisation() -> None:
    stats = TaskStats()
    stats.finished(None, "SUCCESS", 0.1, None, None, None, T0)
    stats.finished(12345, "SUCCESS", 0.1, None, None, None, T0)
    stats.finished(["x" * 1000], "SUCCESS", 0.1, None, None, None, T0)
    names = {r["name"] for r in stats.table()}
    assert UNKNOWN in names and "12345" in names
    long_name = next(n for n in names if n.startswith("['x"))
    assert len(long_name) == 200
    assert stats.row(None)["count"] == 1


class Hostile:
    """An object whose every protocol method raises."""

    def __repr__(self) -> str:
        raise RuntimeError("repr")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("eq")

    def __hash__(self) -> int:
        raise RuntimeError("hash")

    def __float__(self) -> float:
        raise RuntimeError("float")

    def __lt__(self, other: object) -> bool:
        raise RuntimeError("lt")


GARBAGE: list[Any] = [
    None,
    "1.5",
    "",
    b"2",
    True,
    False,
    -1,
    -0.5,
    math.nan,
    math.inf,
    -math.inf,
    10**400,
    [1],
    {"a": 1},
    object(),
    Hostile(),
    complex(1, 1),
]


def test_garbage_inputs_never_raise_and_are_ignored() -> None:
    stats = TaskStats()
    for g in GARBAGE:
        stats.finished("app.g", "SUCCESS", g, g, g, g, g)
        stats.finished("app.g", g, 1.0, 1.0, 2.0, 0.5, T0)  # garbage state: not counted at all
        stats.started("app.g", g, g, g)  # no start time: nothing to record
        stats.started("app.g", g, g, T0)  # start time only: no waits
        stats.retried("app.g", g)
        stats.finished(g, "FAILURE", g, None, None, None, T0)
        stats.started(g, g, g, T0)
        stats.retried(g, g)
        stats.table(now=g, window="recent")
        stats.row(g, now=g, window="recent")
        stats.row(g)
    row = stats.row("app.g")
    n = len(GARBAGE)
    # Outcomes and retries still count; every garbage value was ignored as a measurement.
    assert row["count"] == n and row["succeeded"] == n and row["retried"] == n
    assert row["runtime"]["max"] is None
    assert row["queue_wait"]["p50"] is None and row["queue_wait_sent"]["p50"] is None
    assert row["last_seen"] == T0  # only the valid start times set it
    # Garbage timestamps never reach the recent window; the valid T0 ones do.
    assert stats.row("app.g", window="recent")["count"] == 0
    total = sum(r["count"] for r in stats.table())
    assert total == 2 * n
    for r in stats.table():
        for block in ("runtime", "queue_wait", "queue_wait_sent"):
            for value in r[block].values():
                assert value is None or (math.isfinite(value) and value >= 0)


def test_absurdly_large_durations_are_ignored() -> None:
    stats = TaskStats()
    stats.finished("app.big", "SUCCESS", 1e308, None, None, None, T0)
    stats.finished("app.big", "SUCCESS", 1e308, None, None, None, T0)
    stats.finished("app.big", "FAILURE", None, None, 0.0, None, 1e300)  # timestamp - started
    stats.started("app.big", 0.0, 0.0, 1e300)
    stats.finished("app.big", "SUCCESS", 3.0, None, None, None, T0)
    row = stats.row("app.big")
    assert row["count"] == 4
    assert row["runtime"]["mean"] == 3.0 and row["runtime"]["max"] == 3.0
    assert row["queue_wait"]["p50"] is None and row["queue_wait_sent"]["p50"] is None


def test_other_real_numbers_are_accepted() -> None:
    stats = TaskStats()
    stats.finished("app.num", "SUCCESS", Fraction(1, 2), None, None, None, int(T0))
    stats.finished("app.num", "SUCCESS", 2, None, None, None, T0)
    runtime = stats.row("app.num")["runtime"]
    assert runtime["max"] == 2.0 and runtime["mean"] == 1.25


def test_table_sorted_by_count_desc_and_unknown_row_is_none() -> None:
    stats = TaskStats()
    for name, n in (("b", 2), ("a", 5), ("c", 2), ("d", 9)):
        for i in range(n):
            stats.finished(name, "SUCCESS", 0.1, None, None, None, T0 + i)
    stats.started("e", T0, None, T0 + 1)  # has data but nothing finished
    table = stats.table()
    assert [r["name"] for r in table] == ["d", "a", "b", "c", "e"]  # ties by name
    assert [r["count"] for r in table] == [9, 5, 2, 2, 0]
    assert stats.row("nope") is None
    assert stats.row("nope", window="recent") is None
    assert TaskStats().table() == [] and TaskStats().table(window="recent") == []


def test_row_matches_table_in_both_windows() -> None:
    stats = TaskStats()
    for i, rt in enumerate(lognormal(8, 500)):
        stats.finished(f"app.n{i % 4}", "SUCCESS" if i % 3 else "FAILURE", rt, None, T0 + i - 1, None, T0 + i)
        stats.started(f"app.n{i % 4}", T0 + i - 2, T0 + i - 3, T0 + i - 1)
    for window in ("all", "recent"):
        for r in stats.table(window=window):
            assert stats.row(r["name"], window=window) == r


@pytest.mark.parametrize("window", ["hourly", "", None, Hostile()])
def test_unknown_window_name_is_a_value_error(window: Any) -> None:
    stats = TaskStats()
    stats.finished("app.w", "SUCCESS", 0.1, None, None, None, T0)
    with pytest.raises(ValueError):
        stats.table(window=window)
    with pytest.raises(ValueError):
        stats.row("app.w", window=window)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_names": 0},
        {"max_names": "10"},
        {"window_seconds": 0},
        {"slot_seconds": -1},
        {"window_seconds": 60.0, "slot_seconds": 120.0},
        {"slot_seconds": math.nan},
    ],
)
def test_invalid_configuration_is_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        TaskStats(**kwargs)
