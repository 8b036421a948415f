"""The figures: one function per figure and round, each on a fresh target and a flushed Redis."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import requests

from . import events as E
from .publish import PacedPublisher, announce_workers, pack_burst, publish_burst, publish_workers
from .targets import Dashboard, Redis, Target, cpu_delta, cpu_sample, machine_cpu, rss_kb, run_delay

log = logging.getLogger(__name__)

# The state the last event of a stream leaves its task in (how we know the dashboard applied it).
LAST_STATE = {
    "task-received": "RECEIVED",
    "task-started": "STARTED",
    "task-succeeded": "SUCCESS",
    "task-failed": "FAILURE",
    "task-retried": "RETRY",
}
POLL = {"dashboard": 0.025, "flower": 0.1}  # counter polls: /metrics is heavier on Flower's loop
STALL_SECONDS = 30.0  # a burst whose counter does not move this long is reported as stalled


@dataclass
class Context:
    redis: Redis
    workers: list[E.Worker]
    pools: dict[str, E.Pool]
    timeout: float  # the longest a burst may take to be counted
    salt: int = 0


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0-100); None without samples."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


@contextmanager
def fresh(ctx: Context, cls: type[Target]) -> Iterator[Target]:
    """A new target process on a flushed Redis, its workers announced and counted."""
    ctx.redis.flush()
    before = ctx.redis.subscribers()
    target = cls(ctx.redis.url)
    try:
        target.wait_ready(ctx.redis, before)
        n = announce_workers(ctx.redis.client, ctx.workers)
        if target.counts_heartbeats:
            wait_until(lambda: target.counter() >= n, 10)
        else:
            time.sleep(0.5)
        ctx.salt += 1
        yield target
    finally:
        target.stop()


def wait_until(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    """Poll `predicate` until it is true (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


class Burst:
    """Publish one rendered pass as fast as possible, then poll until the target has counted it all."""

    def __init__(self, ctx: Context, target: Target, pool: E.Pool) -> None:
        self.ctx, self.target, self.pool = ctx, target, pool
        self.renderer = E.Renderer(pool, salt=ctx.salt * 1000)
        self.packed = pack_burst(ctx.redis.client, E.render_all(self.renderer))  # encoded before timing
        self.last_uuid = self.renderer.uuid_of(pool.last_task, 0)
        self.last_state = LAST_STATE[pool.last_type]

    def run(self) -> dict[str, Any]:
        target, ctx = self.target, self.ctx
        base = target.counter()
        beats = E.Heartbeats(ctx.workers)
        beats.next_at = time.time() + E.HEARTBEAT_FREQ  # announce_workers sent the first ones
        poll = POLL.get(target.name, 0.05)
        redis_pid = {ctx.redis.proc.pid: "redis"}
        cpu_before = cpu_sample(target.processes())
        redis_before = cpu_sample(redis_pid)
        t0 = time.perf_counter()
        publish_s = publish_burst(ctx.redis.client, self.packed)
        counted, done, stalled = base, False, False
        deadline = t0 + ctx.timeout
        progress_at, last = time.perf_counter(), base
        while time.perf_counter() < deadline:
            publish_workers(ctx.redis.client, beats.due())
            expected = base + self.pool.events + (beats.sent if target.counts_heartbeats else 0)
            counted = target.counter()
            now = time.perf_counter()
            if counted >= expected and self._applied():
                done = True
                break
            if counted != last:
                progress_at, last = now, counted
            elif now - progress_at > STALL_SECONDS:
                stalled = True
                break
            time.sleep(poll)
        elapsed = time.perf_counter() - t0
        # CPU from right before the first PUBLISH to the poll that saw the total (counter polls included)
        cpu = cpu_delta(cpu_before, cpu_sample(target.processes()), self.pool.events)
        cpu["redis_per_100k"] = cpu_delta(redis_before, cpu_sample(redis_pid), self.pool.events)["per_100k"]
        got = counted - base - (beats.sent if target.counts_heartbeats else 0)
        result = {
            "events": self.pool.events,
            "counted": got,
            "complete": done,
            "seconds": round(elapsed, 3),
            "rate": round(min(got, self.pool.events) / elapsed),
            "publish_seconds": round(publish_s, 4),
            "generator_rate": round(self.pool.events / publish_s),
            "messages": len(self.pool.templates),
            "cpu": cpu,
        }
        if not done:
            result["stalled"] = stalled
            result["target_log"] = target.output()[-4000:]
            log.warning(
                "%s counted %d of %d events%s; its output ends with:\n%s",
                target.name,
                got,
                self.pool.events,
                f" and made no progress for {STALL_SECONDS:.0f}s" if stalled else "",
                result["target_log"][-2000:] or "(nothing)",
            )
        return result

    def _applied(self) -> bool:
        # The dashboard counts a batch before applying it: wait for the last event's effect too.
        if isinstance(self.target, Dashboard):
            return self.target.task_state(self.last_uuid) == self.last_state
        return True


# -- burst ingest ---------------------------------------------------------------------------------


def burst(ctx: Context, cls: type[Target], pool: str = "burst") -> dict[str, Any]:
    """One burst of the pool `pool` on a fresh target: events/s, CPU per 100k events, RSS."""
    with fresh(ctx, cls) as target:
        result = Burst(ctx, target, ctx.pools[pool]).run()
        result["rss_kb"] = target.rss_kb()
    log.info(
        "burst %s (%s): %s events/s, %s CPU s per 100k events %s",
        cls.name,
        pool,
        result["rate"],
        result["cpu"]["per_100k"],
        result["cpu"]["by_process_per_100k"],
    )
    return result


# -- memory ---------------------------------------------------------------------------------------


def memory(ctx: Context, cls: type[Target], rate: float | None = None) -> dict[str, Any]:
    """RSS growth per retained task: the lifecycles as one burst, or paced at `rate` events/s (then
    the target's transient read buffers stay small and the figure is closer to the records' cost)."""
    pool = ctx.pools["life"]
    with fresh(ctx, cls) as target:
        time.sleep(1.0)
        start = target.rss_kb()
        if rate:
            result = _paced_load(ctx, target, pool, rate)
        else:
            result = Burst(ctx, target, pool).run()
        time.sleep(1.0)
        end = target.rss_kb()
        retained = target.retained()
        result.update(
            {
                "tasks": pool.n_tasks,
                "rss_start_kb": start,
                "rss_end_kb": end,
                "retained": retained,
                "bytes_per_task": round((end - start) * 1024 / pool.n_tasks),
            }
        )
    log.info("memory %s: %s", cls.name, result)
    return result


def _paced_load(ctx: Context, target: Target, pool: E.Pool, rate: float) -> dict[str, Any]:
    base = target.counter()
    t0 = time.perf_counter()
    with PacedPublisher(
        ctx.redis.url,
        pool,
        rate,
        duration=pool.events / rate + 0.2,
        salt=ctx.salt * 1000,
        first_pass=0,
        heartbeats=False,
    ) as pub:
        while pub.alive() and time.perf_counter() - t0 < ctx.timeout:
            time.sleep(0.2)
        published = pub.published()
    done = wait_until(lambda: target.counter() - base >= published, ctx.timeout)
    return {"events": published, "complete": done, "rate": rate, "seconds": round(time.perf_counter() - t0, 1)}


# -- responsiveness -------------------------------------------------------------------------------


class Requester(threading.Thread):
    """GETs the given paths one after another, in a loop, with its own session."""

    def __init__(self, base: str, paths: list[str], max_requests: int = 100_000) -> None:
        super().__init__(daemon=True, name="bench-requester")
        self.base, self.paths, self.max_requests = base, paths, max_requests
        self.samples: list[tuple[str, float, float, int]] = []  # (path, started, ms, status)
        self.stop_event = threading.Event()

    def run(self) -> None:
        with requests.Session() as session:
            i = 0
            while not self.stop_event.is_set() and i < self.max_requests:
                path = self.paths[i % len(self.paths)]
                i += 1
                started = time.perf_counter()
                try:
                    status = session.get(self.base + path, timeout=60).status_code
                except requests.RequestException:
                    status = 0
                self.samples.append((path, started, (time.perf_counter() - started) * 1000, status))

    def stop(self) -> None:
        self.stop_event.set()
        self.join(70)


def responsiveness(ctx: Context, cls: type[Target]) -> dict[str, Any]:
    with fresh(ctx, cls) as target:
        run = Burst(ctx, target, ctx.pools["burst"])
        paths = [*target.pages, target.api]
        requester = Requester(target.base, paths)
        requester.start()
        t0 = time.perf_counter()
        try:
            result = run.run()
        finally:
            t_done = time.perf_counter()
            requester.stop()
    per_path: dict[str, Any] = {}
    for path in paths:
        during = [ms for p, s, ms, st in requester.samples if p == path and t0 <= s <= t_done]
        errors = sum(1 for p, s, ms, st in requester.samples if p == path and t0 <= s <= t_done and st != 200)
        per_path[path] = {
            "n": len(during),
            "errors": errors,
            "p50_ms": _r(percentile(during, 50)),
            "p99_ms": _r(percentile(during, 99)),
            "max_ms": _r(max(during) if during else None),
        }
    result["paths"] = per_path
    log.info("responsiveness %s: %s", cls.name, result)
    return result


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


# -- query ----------------------------------------------------------------------------------------


def queries(pool: E.Pool) -> dict[str, str]:
    """The /api/tasks filters measured (label -> query string)."""
    names = sorted(pool.stats["names"].items(), key=lambda kv: kv[1])
    mid_name = names[len(names) // 2][0]  # a task name of middling frequency
    return {
        "state=FAILURE": "state=FAILURE",
        f"name={mid_name}": f"name={mid_name}",
        f"worker={pool.workers[2].hostname}": f"worker={pool.workers[2].hostname}",
        f"q={E.RARE_WORD}": f"q={E.RARE_WORD}",
        f"q={E.EXCEPTION_WORD}": f"q={E.EXCEPTION_WORD}",
    }


def query(ctx: Context, cls: type[Target], requests_per_query: int, background_rate: float) -> dict[str, Any]:
    pool = ctx.pools["life"]
    out: dict[str, Any] = {}
    with fresh(ctx, cls) as target:
        load = Burst(ctx, target, pool).run()
        out["load"] = load
        with PacedPublisher(
            ctx.redis.url, pool, background_rate, duration=600, salt=ctx.salt * 1000, first_pass=1
        ) as pub:
            time.sleep(1.0)
            session = target.session
            everything = session.get(target.base + "/api/tasks?limit=1", timeout=30).json()["total"]
            out["unfiltered_total"] = everything
            for label, qs in queries(pool).items():
                url = f"{target.base}/api/tasks?limit=50&{qs}"
                first = session.get(url, timeout=30)
                entry: dict[str, Any] = {"status": first.status_code}
                if first.status_code != 200:
                    entry["note"] = f"HTTP {first.status_code}: {first.text[:120]}"
                    out[label] = entry
                    continue
                total = first.json().get("total")
                entry["total"] = total
                if isinstance(total, int) and total >= 0.9 * everything:
                    entry["note"] = f"filter ignored? total {total} of {everything}"
                times = []
                for _ in range(requests_per_query):
                    t = time.perf_counter()
                    session.get(url, timeout=30)
                    times.append((time.perf_counter() - t) * 1000)
                entry.update(
                    {
                        "n": len(times),
                        "p50_ms": _r(percentile(times, 50)),
                        "p95_ms": _r(percentile(times, 95)),
                        "max_ms": _r(max(times)),
                    }
                )
                out[label] = entry
            out["background_published"] = pub.published()
    log.info("query %s: %s", cls.name, out)
    return out


# -- sustained ------------------------------------------------------------------------------------


def _pubsub_clients(client: Any) -> list[dict[str, Any]]:
    """Redis's view of each pattern subscriber: output buffer (omem), query buffer, total memory."""
    return [
        {k: int(c[k]) for k in ("omem", "qbuf", "tot-mem", "oll") if k in c}
        for c in client.client_list()
        if int(c.get("psub", 0))
    ]


def _trace_point(ctx: Context, target: Target, pub: PacedPublisher, t: float) -> dict[str, Any]:
    """What is sampled beside the lag (to explain it): the target's RSS and CPU seconds so far by
    process, Redis's buffers for the subscriber, the publisher's progress and worst backlog, and the
    dashboard's retained/evicted tasks."""
    cpu = cpu_sample(target.processes())
    by_label: dict[str, float] = {}
    for v in cpu.values():
        by_label[v["label"]] = by_label.get(v["label"], 0) + v["ticks"]
    point: dict[str, Any] = {
        "t": t,
        "published": pub.published(with_workers=False),
        "behind_max": round(pub.behind.value),
        "rss_kb": {
            label: rss_kb(int(key[key.rfind("[") + 1 : -1])) for key, label in ((k, v["label"]) for k, v in cpu.items())
        },
        "cpu_ticks": by_label,
        "run_delay_s": {v["label"]: round(run_delay(int(k[k.rfind("[") + 1 : -1])), 3) for k, v in cpu.items()},
        "machine_busy_ticks": machine_cpu(),
        "publisher_cpu_ticks": cpu_sample({pub.pid: "publisher"}).get(f"publisher[{pub.pid}]", {}).get("ticks"),
        "pubsub": _pubsub_clients(ctx.redis.client),
    }
    point["pids"] = {v["label"]: k for k, v in cpu.items()}
    if isinstance(target, Dashboard) and target.last_health:
        health = target.last_health
        point["tasks"] = {k: health["tasks"][k] for k in ("retained", "evicted")}
        point["broker"] = health["broker"]
        point["reader_starts"] = health.get("server", {}).get("reader_starts")
    return point


def sustained_step(
    ctx: Context, cls: type[Target], rate: float, seconds: float, pool_key: str = "life", trace: bool = True
) -> dict[str, Any]:
    """Publish at `rate` for `seconds`; lag = published - counted, sampled twice a second (with a
    trace of RSS, CPU, Redis's buffers and the publisher's pace when `trace`)."""
    pool = ctx.pools[pool_key]
    samples: list[tuple[float, int]] = []
    points: list[dict[str, Any]] = []
    with fresh(ctx, cls) as target:
        base = target.counter()
        give_up = 5.0 * rate  # clearly not keeping up: stop early
        with PacedPublisher(ctx.redis.url, pool, rate, duration=seconds, salt=ctx.salt * 1000) as pub:
            t0 = time.perf_counter()

            def sample() -> int:
                # published is read before and after the counter (an HTTP round trip): take the middle
                before = pub.published(with_workers=target.counts_heartbeats)
                counted = target.counter() - base
                after = pub.published(with_workers=target.counts_heartbeats)
                lag = max(0, (before + after) // 2 - counted)
                t = round(time.perf_counter() - t0, 2)
                samples.append((t, lag))
                if trace:
                    points.append(_trace_point(ctx, target, pub, t))
                return lag

            unanswered = None
            try:
                while pub.alive() and time.perf_counter() - t0 < seconds - 0.5:
                    time.sleep(0.5)
                    if sample() > give_up:
                        log.info("sustained %s at %d/s: lag > %d events, giving up", cls.name, rate, give_up)
                        break
                else:
                    time.sleep(max(0.0, seconds - (time.perf_counter() - t0)))
                    sample()  # at the end of the run
            except requests.RequestException as exc:
                # a target too busy to answer its counter within 10 s is not keeping up either
                unanswered = f"{type(exc).__name__}: {exc}"
                log.info("sustained %s at %d/s: the counter did not answer (%s)", cls.name, rate, unanswered)
            elapsed = time.perf_counter() - t0
        published = pub.published(with_workers=target.counts_heartbeats)
        pub_rate = pub.task_events.value / max(min(elapsed, seconds), 1e-9)
        # Lag is events behind or events lost: once the publisher has stopped and the counter has
        # settled, what is still missing never arrived (a consumer that was not subscribed misses
        # what Redis published meanwhile). Give a lagging target time to catch up first.
        try:
            settled = _settled(
                target, base, published, timeout=min(30.0, 5.0 + (samples[-1][1] if samples else 0) / rate)
            )
            lost: int | None = max(0, published - settled)
        except requests.RequestException:
            lost = None
        reconnects = None
        if isinstance(target, Dashboard) and target.last_health:
            reconnects = {
                k: target.last_health["broker"].get(k) for k in ("reconnects", "outages", "error", "last_outage")
            }
        target_log = target.output()
        final_lag = samples[-1][1] if samples else None
    second_half = [lag for t, lag in samples if t >= seconds / 2]
    bound = rate * 1.0
    kept = (
        unanswered is None
        and bool(samples)
        and elapsed >= seconds * 0.98
        and bool(second_half)
        and max(second_half) <= bound
    )
    result = {
        "rate": rate,
        "seconds": round(elapsed, 1),
        "published": published,
        "publisher_rate": round(pub_rate),
        "final_lag": final_lag,
        "max_lag_second_half": max(second_half) if second_half else None,
        "kept": kept,
        "lag_samples": samples,
        "publisher_behind_max": round(pub.behind.value),
        "lost": lost,
        "unanswered": unanswered,
        "stream_reconnects": reconnects,
        "trace": points,
    }
    if not kept:
        result["target_log"] = target_log[-4000:]
    log.info(
        "sustained %s at %d/s: kept=%s final lag %s, max lag (2nd half) %s, publisher %d/s, lost %s events%s",
        cls.name,
        rate,
        kept,
        final_lag,
        result["max_lag_second_half"],
        pub_rate,
        lost,
        f", stream reconnects {reconnects}" if reconnects else "",
    )
    return result


def _settled(target: Target, base: int, published: int, timeout: float) -> int:
    """The target's count once it has everything or has not moved for 2 s (at most `timeout` s)."""
    deadline = time.monotonic() + timeout
    last, moved_at = -1, time.monotonic()
    while time.monotonic() < deadline:
        counted = target.counter() - base
        if counted >= published:
            return counted
        if counted != last:
            last, moved_at = counted, time.monotonic()
        elif time.monotonic() - moved_at > 2.0:
            break
        time.sleep(0.2)
    return target.counter() - base


def sustained(
    ctx: Context, cls: type[Target], rates: list[float], seconds: float, pool_key: str = "life"
) -> dict[str, Any]:
    """The highest of `rates` (tried upward until one fails) the target keeps up with."""
    steps = []
    best = 0.0
    for rate in rates:
        step = sustained_step(ctx, cls, rate, seconds, pool_key)
        steps.append(step)
        if not step["kept"]:
            break
        best = rate
    return {"best": best, "steps": steps}
