"""`python -m bench.viewers`: many live viewers, anonymous sockets and slowloris against one dashboard.

What a team's wall screens and a hostile script do at once: N Socket.IO viewers subscribed to
rooms while tasks run (a paced event stream), M anonymous engine.io websockets that never connect
a namespace, S slowloris connections; meanwhile a prober times `/`, `/tasks`, `/api/tasks?limit=50`
and `/healthz`. Then the burst ingest rate with the viewers connected against the same burst with
none. Reports figures, never asserts (the machine is shared): read the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing as mp
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import requests

from . import events as E
from .measure import Burst, Context, fresh, percentile
from .publish import PacedPublisher
from .sockets import auth_headers, run_clients
from .targets import Dashboard, Redis

log = logging.getLogger("bench.viewers")

PROBED = ("/", "/tasks", "/api/tasks?limit=50", "/healthz")


def views(n: int, mix: str) -> list[dict[str, Any]]:
    """The views N viewers subscribe to: all on the overview, or a mix of rooms."""
    if mix == "overview":
        return [{"view": "overview"} for _ in range(n)]
    cycle = [{"view": "overview"}] * 6 + [{"view": "tasks"}] * 2 + [{"view": "workers"}, {"view": "failures"}]
    return [dict(cycle[i % len(cycle)]) for i in range(n)]


def _client_process(
    base: str,
    viewer_views: list[dict[str, Any]],
    anonymous: int,
    slowloris: int,
    user: str | None,
    ready: Any,
    stop: Any,
    out: Any,
) -> None:
    logging.basicConfig(level=logging.WARNING)
    result = asyncio.run(
        run_clients(
            base,
            viewers=viewer_views,
            anonymous=anonymous,
            slowloris=slowloris,
            user=user,
            ready_cb=ready.set,
            stop_after=stop.is_set,
        )
    )
    out.put(result)


class Clients:
    """The client process: viewers, anonymous sockets, slowloris connections."""

    def __init__(
        self,
        base: str,
        viewer_views: list[dict[str, Any]],
        anonymous: int = 0,
        slowloris: int = 0,
        user: str | None = None,
    ) -> None:
        ctx = mp.get_context("fork")
        self.ready, self.stop_event, self.out = ctx.Event(), ctx.Event(), ctx.Queue()
        self.proc = ctx.Process(
            target=_client_process,
            args=(base, viewer_views, anonymous, slowloris, user, self.ready, self.stop_event, self.out),
            daemon=True,
        )

    def __enter__(self) -> Clients:
        self.proc.start()
        if not self.ready.wait(300):
            raise RuntimeError("clients did not get ready in 300 s")
        return self

    def result(self) -> dict[str, Any]:
        self.stop_event.set()
        result = self.out.get(timeout=60)
        self.proc.join(10)
        return result

    def __exit__(self, *exc: Any) -> None:
        self.stop_event.set()
        self.proc.join(30)
        if self.proc.is_alive():
            self.proc.terminate()


class Prober(threading.Thread):
    """GETs the probed paths one after another until stopped, each on a new connection (what a slowloris
    flood would block first: accepting); one latency list per path."""

    def __init__(self, base: str, user: str | None) -> None:
        super().__init__(daemon=True)
        self.base, self.headers = base, auth_headers(user)
        self.times: dict[str, list[float]] = {p: [] for p in PROBED}
        self.failures: dict[str, int] = dict.fromkeys(PROBED, 0)
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            for path in PROBED:
                t0 = time.perf_counter()
                try:
                    ok = (
                        requests.get(
                            self.base + path, headers={**self.headers, "Connection": "close"}, timeout=15
                        ).status_code
                        == 200
                    )
                except requests.RequestException:
                    ok = False
                dt = time.perf_counter() - t0
                if ok:
                    self.times[path].append(dt)
                else:
                    self.failures[path] += 1
                self._halt.wait(0.05)

    def stop(self) -> dict[str, Any]:
        self._halt.set()
        self.join(20)
        out = {}
        for path, times in self.times.items():
            out[path] = {
                "n": len(times),
                "failed": self.failures[path],
                "p50_ms": _ms(percentile(times, 50)),
                "p95_ms": _ms(percentile(times, 95)),
                "max_ms": _ms(max(times) if times else None),
            }
        return out


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 1)


def live(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    """Viewers + anonymous sockets + slowloris while tasks run; probe the pages meanwhile."""
    with fresh(ctx, DashboardUnderTest) as target:
        with (
            PacedPublisher(ctx.redis.url, ctx.pools["paced"], args.rate, args.seconds * 4 + 600, salt=ctx.salt),
            # Viewers and hostile clients in two processes: a busy viewers' loop would notice the server
            # closing an anonymous socket late, and the figure is the server's.
            Clients(target.base, views(args.viewers, args.mix), 0, 0, args.user) as clients,
            Clients(target.base, [], args.anonymous, args.slowloris, None) as hostile,
        ):
            prober = Prober(target.base, args.user)
            prober.start()
            time.sleep(args.seconds)
            probes = prober.stop()
            health = _health(target, args.user)  # while the viewers are still there
            rss = target.rss_kb()
            result = clients.result()
            bad = hostile.result()
            result["anonymous"], result["slowloris"] = bad["anonymous"], bad["slowloris"]
        result["probes"] = probes
        result["rss_kb"] = rss
        result["health"] = health
    return result


def _health(target: Dashboard, user: str | None) -> dict[str, Any]:
    body = requests.get(target.base + "/healthz", headers=auth_headers(user), timeout=10).json()
    return {k: body.get(k) for k in ("events", "clients", "server")}


def tick_cost(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    """Push tick milliseconds with 10 viewers and with N viewers, all in one room, while tasks run."""
    out = {}
    for n in (10, args.viewers):
        with (
            fresh(ctx, DashboardUnderTest) as target,
            PacedPublisher(ctx.redis.url, ctx.pools["paced"], args.rate, 600, salt=ctx.salt),
            Clients(target.base, views(n, "overview"), 0, 0, args.user) as clients,
        ):
            time.sleep(min(args.seconds, 15))
            out[str(n)] = _health(target, args.user)["clients"]["tick"]
            clients.result()
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu(pids: dict[str, int]) -> dict[str, float]:
    out = {}
    for name, pid in pids.items():
        try:
            out[name] = cpu_seconds(pid)
        except (OSError, IndexError, ValueError):
            out[name] = 0.0
    return out


def ingest(ctx: Context, args: argparse.Namespace, with_viewers: bool) -> dict[str, Any]:
    """Burst ingest rate, with N viewers connected or none, and the CPU seconds each process spent on it."""
    with fresh(ctx, DashboardUnderTest) as target:
        burst = Burst(ctx, target, ctx.pools["burst"])
        pids = {
            ("reader" if "dashboard.ingest.process" in Path(f"/proc/{p}/cmdline").read_text() else "dashboard"): p
            for p in target.pids()
        }
        if not with_viewers:
            before = _cpu(pids)
            result = burst.run()
            after = _cpu(pids)
        else:
            with Clients(target.base, views(args.viewers, args.mix), 0, 0, args.user) as clients:
                pids["viewers' client"] = clients.proc.pid
                before = _cpu(pids)
                result = burst.run()
                after = _cpu(pids)
                result["viewers"] = {
                    k: v
                    for k, v in clients.result().items()
                    if k in ("subscribed", "receiving", "messages", "max_gap_p95", "max_gap_max")
                }
        result["cpu_seconds"] = {name: round(after[name] - before[name], 2) for name in pids}
        return result


class DashboardUnderTest(Dashboard):
    """The dashboard as `celery-dashboard run` starts it, plus the bench's extra flags."""

    extra: ClassVar[list[str]] = []  # set by main() from --arg / --env before any target starts
    extra_env: ClassVar[dict[str, str]] = {}

    def command(self) -> list[str]:
        return super().command() + self.extra

    def environment(self) -> dict[str, str]:
        return {**super().environment(), **self.extra_env}

    def health(self) -> dict[str, Any]:
        return self.session.get(self.base + "/healthz", timeout=10, headers=auth_headers(self.user)).json()

    def task_state(self, uuid: str) -> str | None:
        resp = self.session.get(f"{self.base}/api/tasks/{uuid}", timeout=10, headers=auth_headers(self.user))
        return resp.json().get("state") if resp.status_code == 200 else None

    user: str | None = None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.viewers", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--viewers", type=int, default=1000)
    p.add_argument("--anonymous", type=int, default=500)
    p.add_argument("--slowloris", type=int, default=500)
    p.add_argument("--mix", choices=("overview", "rooms"), default="rooms", help="rooms the viewers watch")
    p.add_argument("--rate", type=float, default=2000, help="events/s published while viewers watch")
    p.add_argument("--seconds", type=float, default=30, help="seconds of probing")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--burst-events", type=int, default=100_000)
    p.add_argument("--only", default="live,ingest,tick", help="live, ingest and/or tick")
    p.add_argument("--auth", action="store_true", help="turn basic auth on (user bench:bench)")
    p.add_argument("--arg", action="append", default=[], help="extra argument for celery-dashboard run")
    p.add_argument("--env", action="append", default=[], help="extra NAME=VALUE for the dashboard")
    p.add_argument("--output", help="write the raw results as JSON here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args.user = "bench:bench" if args.auth else None
    DashboardUnderTest.extra = list(args.arg)
    DashboardUnderTest.extra_env = dict(e.split("=", 1) for e in args.env)
    if args.auth:
        DashboardUnderTest.extra_env["DASHBOARD_AUTH_USERS"] = "bench:bench"
    DashboardUnderTest.user = args.user
    only = set(args.only.split(","))
    workers = E.make_workers(8)
    redis_server = Redis()
    results: dict[str, Any] = {"args": vars(args), "live": [], "ingest_alone": [], "ingest_viewers": [], "tick": []}
    try:
        pools = {
            # 24 events per task.multi, as this bench's figures have always been measured
            "paced": E.build_pool(workers, 20_000, rate=args.rate, sizes=E.SIZES_24),
            "burst": E.build_pool(workers, args.burst_events // 3, max_events=args.burst_events, sizes=E.SIZES_24),
        }
        ctx = Context(redis_server, workers, pools, timeout=300)
        for r in range(args.rounds):
            if "live" in only:
                results["live"].append(live(ctx, args))
                log.info("live round %d: %s", r + 1, json.dumps(results["live"][-1]))
            if "ingest" in only:
                results["ingest_alone"].append(ingest(ctx, args, False))
                results["ingest_viewers"].append(ingest(ctx, args, True))
                log.info(
                    "ingest round %d: alone %s (cpu %s), with viewers %s (cpu %s)",
                    r + 1,
                    results["ingest_alone"][-1]["rate"],
                    results["ingest_alone"][-1]["cpu_seconds"],
                    results["ingest_viewers"][-1]["rate"],
                    results["ingest_viewers"][-1]["cpu_seconds"],
                )
            if "tick" in only:
                results["tick"].append(tick_cost(ctx, args))
                log.info("tick round %d: %s", r + 1, results["tick"][-1])
    finally:
        redis_server.stop()
    summary = _summary(results)
    results["summary"] = summary
    print(json.dumps(summary, indent=2))  # noqa: T201 - the bench's report
    if args.output:
        with open(args.output, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


def _summary(results: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    lives = results["live"]
    if lives:
        out["receiving"] = [f"{r['receiving']}/{r['viewers']}" for r in lives]
        for path in PROBED:
            p95 = [r["probes"][path]["p95_ms"] for r in lives if r["probes"][path]["p95_ms"] is not None]
            out[f"p95_ms {path}"] = statistics.median(p95) if p95 else None
        out["anonymous"] = [r["anonymous"] for r in lives]
        out["slowloris"] = [r["slowloris"] for r in lives]
        out["max_gap_p95"] = [r["max_gap_p95"] for r in lives]
    if results["tick"]:
        out["tick_median_ms"] = {n: [r[n]["median_ms"] for r in results["tick"]] for n in results["tick"][0]}
    alone = [r["rate"] for r in results["ingest_alone"]]
    with_v = [r["rate"] for r in results["ingest_viewers"]]
    if alone and with_v:
        out["ingest_alone"] = statistics.median(alone)
        out["ingest_with_viewers"] = statistics.median(with_v)
        out["ingest_ratio"] = round(statistics.median(with_v) / statistics.median(alone), 3)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
