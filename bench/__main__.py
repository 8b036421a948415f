"""`python -m bench`: the dashboard's performance figures, against Flower where it makes sense.

Prints one table (measured value, Flower's, ratio, target, PASS/FAIL) and writes every round's raw
numbers to bench/results/latest.json. Benches report, they never assert: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import events as E
from . import measure as M
from .targets import ROOT, Dashboard, Floor, Flower, Redis, Target, check_flower_installed

log = logging.getLogger("bench")

FIGURES = ("burst", "memory", "responsiveness", "query", "latency", "sustained")
MIXES = ("real", "24")  # task.multi sizes: a real worker's (events.REAL_SIZES), or the full 24
# per mix: (burst figure, its pool, label, sustained pool, sustained target events/s)
MIX = {
    "real": ("burst", "burst", "real-worker sizes", "life", 30_000),
    "24": ("burst24", "burst24", "24 per message", "life24", 60_000),
}
RESULTS = Path(__file__).resolve().parent / "results"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="one short round of everything (a couple of minutes)")
    p.add_argument("--rounds", type=int, help="rounds per target and figure (default 3, --quick 1)")
    p.add_argument("--only", help=f"comma-separated figures among {','.join(FIGURES)}")
    p.add_argument("--no-flower", action="store_true", help="measure the dashboard alone")
    p.add_argument("--no-floor", action="store_true", help="leave out the floor (bench/floor.py) in the burst figures")
    p.add_argument(
        "--mixes",
        default="real,24",
        help="message-size mixes of the burst and sustained figures: real (a real worker's 1-3 events per "
        "task.multi, the default mix), 24 (full buffers); default both",
    )
    p.add_argument("--workers", type=int, default=8, help="simulated Celery workers (default 8)")
    p.add_argument("--burst-events", type=int, default=100_000, help="events of a burst (default 100000)")
    p.add_argument("--tasks", type=int, help="task lifecycles for memory/query (default 100000, --quick 30000)")
    p.add_argument(
        "--memory-rate",
        type=float,
        help="publish the memory figure's lifecycles paced at this many events/s instead of as one burst",
    )
    p.add_argument("--sustained-seconds", type=float, help="seconds per sustained rate (default 60, --quick 10)")
    p.add_argument(
        "--sustained-rates",
        help="events/s tried upward, every mix (default: real 20000,30000,40000,50000,60000,80000; "
        "24 per message 40000,50000,60000,70000,80000,100000)",
    )
    p.add_argument("--sustained-flower", action="store_true", help="also search Flower's sustained rate")
    p.add_argument("--query-requests", type=int, help="requests per query filter (default 100, --quick 20)")
    p.add_argument("--query-rate", type=float, default=10_000, help="background events/s during queries")
    p.add_argument("--latency-seconds", type=float, help="seconds of markers (default 30, --quick 8)")
    p.add_argument("--latency-rate", type=float, default=5_000, help="background events/s during latency")
    p.add_argument("--profile", action="store_true", help="py-spy the dashboard during a burst (needs .bench-venv)")
    p.add_argument("--skip-check", action="store_true", help="skip the envelope format check")
    p.add_argument("--output", default=str(RESULTS / "latest.json"), help="raw results JSON")
    return p


def _options(argv: list[str]) -> argparse.Namespace:
    a = _parser().parse_args(argv)
    q = a.quick
    a.rounds = a.rounds or (1 if q else 3)
    a.tasks = a.tasks or (30_000 if q else 100_000)
    a.sustained_seconds = a.sustained_seconds or (10.0 if q else 60.0)
    defaults = {
        "real": "20000,40000" if q else "20000,30000,40000,50000,60000,80000",
        "24": "40000,60000" if q else "40000,50000,60000,70000,80000,100000",
    }
    a.sustained_rates_by_mix = {
        mix: [float(r) for r in (a.sustained_rates or defaults[mix]).split(",")] for mix in MIXES
    }
    a.mixes = [m.strip() for m in a.mixes.split(",") if m.strip()]
    if set(a.mixes) - set(MIXES):
        _parser().error(f"unknown mix(es): {', '.join(sorted(set(a.mixes) - set(MIXES)))}")
    a.query_requests = a.query_requests or (20 if q else 100)
    a.latency_seconds = a.latency_seconds or (8.0 if q else 30.0)
    a.figures = [f.strip() for f in (a.only or ",".join(FIGURES)).split(",") if f.strip()]
    unknown = set(a.figures) - set(FIGURES)
    if unknown:
        _parser().error(f"unknown figure(s): {', '.join(sorted(unknown))}")
    return a


def _median(values: list[Any]) -> Any:
    values = [v for v in values if isinstance(v, (int, float))]
    return statistics.median(values) if values else None


def _versions() -> dict[str, Any]:
    out: dict[str, Any] = {"python": platform.python_version(), "cpus": os.cpu_count()}
    try:
        out["git"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    for dist in (ROOT / ".bench-venv" / "lib").glob("python*/site-packages/flower-*.dist-info"):
        out["flower"] = dist.name[len("flower-") : -len(".dist-info")]
    import celery

    out["celery"] = celery.__version__
    return out


class Bench:
    def __init__(self, opts: argparse.Namespace) -> None:
        self.o = opts
        self.raw: dict[str, Any] = {}
        self.targets: list[type[Target]] = [Dashboard] if opts.no_flower else [Dashboard, Flower]

    def alternate(
        self, name: str, fn: Callable[[type[Target]], dict[str, Any]], targets: list[type[Target]] | None = None
    ) -> dict[str, list[dict[str, Any]]]:
        """Rounds A B A B ...: each a fresh target; failures are recorded, not raised."""
        out: dict[str, list[dict[str, Any]]] = {}
        for r in range(self.o.rounds):
            for cls in targets or self.targets:
                log.info("%s: round %d/%d, %s", name, r + 1, self.o.rounds, cls.name)
                try:
                    out.setdefault(cls.name, []).append(fn(cls))
                except Exception as exc:  # one broken round must not cost the others
                    log.exception("%s round %d on %s failed", name, r + 1, cls.name)
                    out.setdefault(cls.name, []).append({"error": f"{type(exc).__name__}: {exc}"})
        self.raw[name] = out
        return out

    def run(self) -> list[dict[str, Any]]:
        o = self.o
        figs = o.figures
        ctx = None
        redis_server = Redis()
        try:
            if not o.skip_check:
                from .formatcheck import check

                problems = check(redis_server.url)
                self.raw["format_check"] = problems or "ok"
                for p in problems:
                    log.error("format check: %s", p)
            workers = E.make_workers(o.workers)
            # Every lifecycle of --tasks stays retained (the memory figure at 1M: --tasks 1000000 --no-flower).
            Target.max_tasks = max(Target.max_tasks, o.tasks)
            pools: dict[str, E.Pool] = {}
            n_burst = o.burst_events // 3 + 1
            # the default mix (a real worker's message sizes) for every figure; full buffers where asked
            if {"burst", "responsiveness"} & set(figs):
                pools["burst"] = E.build_pool(workers, n_burst, max_events=o.burst_events, seed=11)
            if "burst" in figs and "24" in o.mixes:
                pools["burst24"] = E.build_pool(workers, n_burst, max_events=o.burst_events, seed=11, sizes=E.SIZES_24)
            if {"memory", "query", "latency"} & set(figs) or ("sustained" in figs and "real" in o.mixes):
                pools["life"] = E.build_pool(workers, o.tasks, seed=13)
            if "sustained" in figs and "24" in o.mixes:
                pools["life24"] = E.build_pool(workers, o.tasks, seed=13, sizes=E.SIZES_24)
            self.raw["pools"] = {
                k: {
                    "tasks": p.n_tasks,
                    "events": p.events,
                    "messages": len(p.templates),
                    "events_per_message": round(p.events / max(1, len(p.templates)), 3),
                    "sizes": p.stats["sizes"],
                    "failed": p.stats["failed"],
                    "retried": p.stats["retried"],
                    "rare_word_tasks": p.stats["rare"],
                }
                for k, p in pools.items()
            }
            ctx = M.Context(redis_server, workers, pools, timeout=120 if o.quick else 300)
            if "burst" in figs:
                burst_targets = self.targets + ([] if o.no_floor else [Floor])
                for mix in o.mixes:
                    fig, pool = MIX[mix][:2]
                    self.alternate(fig, lambda cls, p=pool: M.burst(ctx, cls, p), burst_targets)
            if "memory" in figs:
                self.alternate("memory", lambda cls: M.memory(ctx, cls, o.memory_rate))
            if "responsiveness" in figs:
                self.alternate("responsiveness", lambda cls: M.responsiveness(ctx, cls))
            if "query" in figs:
                self.alternate("query", lambda cls: M.query(ctx, cls, o.query_requests, o.query_rate), [Dashboard])
            if "latency" in figs:
                from .latency import latency

                self.alternate("latency", lambda cls: latency(ctx, cls, o.latency_rate, o.latency_seconds), [Dashboard])
            if "sustained" in figs:
                targets = [Dashboard, Flower] if o.sustained_flower and not o.no_flower else [Dashboard]
                for mix in o.mixes:
                    pool = MIX[mix][3]
                    out: dict[str, Any] = {}
                    for cls in targets:
                        try:
                            rates = o.sustained_rates_by_mix[mix]
                            out[cls.name] = M.sustained(ctx, cls, rates, o.sustained_seconds, pool)
                        except Exception as exc:
                            log.exception("sustained (%s) on %s failed", mix, cls.name)
                            out[cls.name] = {"error": f"{type(exc).__name__}: {exc}"}
                    self.raw["sustained" if mix == "real" else "sustained24"] = out
            if o.profile:
                from .profile import profile_burst

                self.raw["profile"] = profile_burst(ctx)
        finally:
            redis_server.stop()
        return self.table()

    # -- the table -------------------------------------------------------------------------------
    def _med(self, fig: str, target: str, key: Callable[[dict[str, Any]], Any]) -> Any:
        rounds = self.raw.get(fig, {}).get(target, [])
        vals = []
        for r in rounds:
            if "error" in r:
                continue
            try:
                vals.append(key(r))
            except (KeyError, TypeError):
                pass
        return _median(vals)

    def _burst_rows(self, row: Callable[..., None], fig: str, pool: str, label: str, vs_flower: bool) -> None:
        """The events/s row of one burst mix and its CPU-per-100k-events row."""
        rate = {t: self._med(fig, t, lambda r: r["rate"]) for t in ("dashboard", "flower", "floor")}
        d, f, fl = rate["dashboard"], rate["flower"], rate["floor"]
        raw = self.raw.get(fig, {})
        ratio = d / f if d and f else None
        incomplete = [n for n, rs in raw.items() for r in rs if not r.get("complete", False)]
        notes = [f"incomplete rounds: {', '.join(incomplete)}"] if incomplete else []
        stats = self.raw.get("pools", {}).get(pool, {})
        if stats:
            notes.append(f"{stats['events']:,} events in {stats['messages']:,} task.multi")
        for name, rs in raw.items():
            ok = [r for r in rs if "counted" in r]
            if ok:
                notes.append(f"{name} counted {sum(r['counted'] for r in ok):,}/{sum(r['events'] for r in ok):,}")
        row(
            f"burst ingest, {label}",
            "events/s",
            d,
            f,
            ratio,
            "dashboard >= 8x Flower" if vs_flower else "report",
            (None if ratio is None else ratio >= 8) if vs_flower else None,
            "; ".join(notes),
            fl,
            d / fl if d and fl else None,
        )
        cpu = {t: self._med(fig, t, lambda r: r["cpu"]["per_100k"]) for t in ("dashboard", "flower", "floor")}
        split = []
        for t in ("dashboard", "flower", "floor"):
            parts: dict[str, Any] = {}
            for r in raw.get(t, []):
                for k in r.get("cpu", {}).get("by_process_per_100k", {}):
                    parts[k] = self._med(fig, t, lambda r, k=k: r["cpu"]["by_process_per_100k"][k])
            if parts:
                split.append(f"{t}: " + " + ".join(f"{k} {v:.2f}" for k, v in parts.items() if v is not None))
        for t in ("dashboard", "flower", "floor"):
            labels = {k for r in raw.get(t, []) for k in r.get("cpu", {}).get("waited_for_cpu_per_100k", {})}
            waits = {
                k: self._med(fig, t, lambda r, k=k: r["cpu"]["waited_for_cpu_per_100k"][k]) for k in sorted(labels)
            }
            if any(waits.values()):
                split.append(
                    f"{t} waited for a CPU: " + " + ".join(f"{k} {v:.2f}" for k, v in waits.items() if v is not None)
                )
        redis_cpu = _median([r["cpu"]["redis_per_100k"] for rs in raw.values() for r in rs if "cpu" in r])
        if redis_cpu is not None:
            split.append(f"redis-server {redis_cpu:.2f}")
        dc, fc, flc = cpu["dashboard"], cpu["flower"], cpu["floor"]
        row(
            f"CPU per 100k events, burst {label}",
            "CPU s",
            dc,
            fc,
            fc / dc if dc and fc else None,
            "report",
            None,
            "; ".join(split),
            flc,
            dc / flc if dc and flc else None,
        )

    def table(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []

        def row(
            figure: str,
            unit: str,
            dash: Any,
            flower: Any,
            ratio: Any,
            target: str,
            ok: bool | None,
            note: str = "",
            floor: Any = None,
            vs_floor: Any = None,
        ) -> None:
            rows.append(
                {
                    "figure": figure,
                    "unit": unit,
                    "dashboard": dash,
                    "flower": flower,
                    "ratio": ratio,
                    "floor": floor,
                    "vs_floor": vs_floor,
                    "target": target,
                    "result": "n/a" if ok is None else ("PASS" if ok else "FAIL"),
                    "note": note,
                }
            )

        figs = self.o.figures
        if "burst" in figs:
            gens: dict[str, tuple[Any, Any]] = {}  # mix -> (generator events/s, / fastest consumer)
            for mix in self.o.mixes:
                fig, pool, label = MIX[mix][:3]
                self._burst_rows(row, fig, pool, label, mix == "real")
                g = _median(
                    [r["generator_rate"] for rs in self.raw.get(fig, {}).values() for r in rs if "generator_rate" in r]
                )
                fastest = [v for t in ("dashboard", "flower", "floor") if (v := self._med(fig, t, lambda r: r["rate"]))]
                gens[mix] = (g, g / max(fastest) if g and fastest else None)
            ratios = [r for _, r in gens.values() if r is not None]
            worst = min(ratios) if ratios else None
            row(
                "generator (burst publish)",
                "events/s",
                gens.get(self.o.mixes[0], (None, None))[0] if self.o.mixes else None,
                None,
                worst,
                ">= 5x fastest consumer",
                None if worst is None else worst >= 5,
                "one publisher process, pre-packed pipelines of 500 PUBLISH; "
                + "; ".join(
                    f"{MIX[m][2]}: {_fmt(g)}/s, {r:.1f}x the fastest consumer" for m, (g, r) in gens.items() if g and r
                ),
            )
        for mix in self.o.mixes if "sustained" in figs else ():
            fig = "sustained" if mix == "real" else "sustained24"
            goal = MIX[mix][4]
            s = self.raw.get(fig, {})
            d = s.get("dashboard", {}).get("best")
            f = s.get("flower", {}).get("best")
            steps = s.get("dashboard", {}).get("steps", [])
            note = "; ".join(
                f"{st['rate']:.0f}/s {'kept' if st['kept'] else 'lagged'} (lag {st['final_lag']}, "
                f"publisher {st['publisher_rate']}/s"
                + (f", {st['lost']:,} events lost" if st.get("lost") else "")
                + (", counter unanswered" if st.get("unanswered") else "")
                + (f", {n} reader reconnects" if (n := (st.get("stream_reconnects") or {}).get("reconnects")) else "")
                + ")"
                for st in steps
            )
            row(
                f"sustained, {MIX[mix][2]}",
                "events/s",
                d,
                f,
                d / f if d and f else None,
                f">= {goal}",
                None if d is None else d >= goal,
                note + f"; {self.o.sustained_seconds:.0f}s each" if note else "",
            )
        if "memory" in figs:
            d = self._med("memory", "dashboard", lambda r: r["bytes_per_task"])
            f = self._med("memory", "flower", lambda r: r["bytes_per_task"])
            ret = self._med("memory", "dashboard", lambda r: r["retained"])
            row(
                "memory per retained task",
                "bytes",
                d,
                f,
                f / d if d and f else None,
                "<= 1024 (1.0 KB)",
                None if d is None else d <= 1024,
                f"{self.o.tasks} lifecycles "
                + (f"paced at {self.o.memory_rate:.0f} ev/s" if self.o.memory_rate else "in one burst")
                + f"; dashboard retained {_fmt(ret)}",
            )
        if "responsiveness" in figs:
            paths = sorted(
                {p for rs in self.raw.get("responsiveness", {}).values() for r in rs for p in r.get("paths", {})},
                key=lambda p: ("/api" in p, p),
            )
            for path in paths:
                d = self._med("responsiveness", "dashboard", lambda r, p=path: r["paths"][p]["p99_ms"])
                f = self._med("responsiveness", "flower", lambda r, p=path: r["paths"][p]["p99_ms"])
                n = self._med("responsiveness", "dashboard", lambda r, p=path: r["paths"][p]["n"])
                nf = self._med("responsiveness", "flower", lambda r, p=path: r["paths"][p]["n"])
                errors = {
                    t: sum(r.get("paths", {}).get(path, {}).get("errors", 0) for r in rs)
                    for t, rs in self.raw.get("responsiveness", {}).items()
                }
                note = "requests per round: " + ", ".join(
                    f"{t} {v:.0f}" for t, v in (("dashboard", n), ("flower", nf)) if v is not None
                )
                note += "".join(f"; {t}: {e} non-200" for t, e in errors.items() if e)
                row(
                    f"p99 GET {path} during burst",
                    "ms",
                    d,
                    f,
                    f / d if d and f else None,
                    "<= 50",
                    None if d is None else d <= 50,
                    note,
                )
        if "query" in figs:
            rounds = [r for r in self.raw.get("query", {}).get("dashboard", []) if "error" not in r]
            labels = [
                k
                for k in (rounds[0] if rounds else {})
                if k not in ("load", "unfiltered_total", "background_published")
            ]
            for label in labels:
                d = self._med("query", "dashboard", lambda r, k=label: r[k]["p95_ms"])
                notes = sorted({r[label].get("note", "") for r in rounds if r.get(label, {}).get("note")})
                totals = [r[label].get("total") for r in rounds if r.get(label, {}).get("total") is not None]
                note = "; ".join(notes) or (f"matches {_median(totals):.0f} of ~{self.o.tasks}" if totals else "")
                row(
                    f"p95 /api/tasks?{label}",
                    "ms",
                    d,
                    None,
                    None,
                    "<= 20",
                    None if d is None else d <= 20,
                    note + f" ({self.o.query_rate:.0f} ev/s meanwhile)",
                )
        if "latency" in figs:
            d = self._med("latency", "dashboard", lambda r: r["p95_ms"])
            seen = sum(r.get("seen", 0) for r in self.raw.get("latency", {}).get("dashboard", []))
            sent = sum(r.get("markers", 0) for r in self.raw.get("latency", {}).get("dashboard", []))
            row(
                "p95 publish -> DOM row",
                "ms",
                d,
                None,
                None,
                "<= 300",
                None if d is None else d <= 300,
                f"{seen}/{sent} markers seen, {self.o.latency_rate:.0f} ev/s background",
            )
            pages = [r["task_page"] for r in self.raw.get("latency", {}).get("dashboard", []) if "task_page" in r]
            d = _median([p["p95_ms"] for p in pages if p.get("p95_ms") is not None])
            row(
                "p95 event -> task's own page",
                "ms",
                d,
                None,
                None,
                "<= 100",
                None if d is None else d <= 100,
                f"{sum(p['events'] for p in pages)} events of {sum(p['markers'] for p in pages)} markers "
                f"(started, succeeded), {self.o.latency_rate:.0f} ev/s of other tasks",
            )
        return rows


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2f}" if abs(v) < 100 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def print_table(rows: list[dict[str, Any]]) -> None:
    head = ("figure", "unit", "dashboard", "flower", "ratio", "floor", "dashboard/floor", "target", "result", "note")
    cells = [
        [
            r["figure"],
            r["unit"],
            _fmt(r["dashboard"]),
            _fmt(r["flower"]),
            f"{r['ratio']:.1f}x" if isinstance(r["ratio"], (int, float)) else "-",
            _fmt(r.get("floor")),
            f"{r['vs_floor']:.2f}x" if isinstance(r.get("vs_floor"), (int, float)) else "-",
            r["target"],
            r["result"],
            r["note"],
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(head)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |")  # noqa: T201 - the CLI's table
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")  # noqa: T201 - the CLI's table
    for c in cells:
        print("| " + " | ".join(v.ljust(w) for v, w in zip(c, widths)) + " |")  # noqa: T201 - the CLI's table


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("kombu", "celery", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    command = f"{sys.executable} -m bench {shlex.join(argv)}".strip()
    log.info("command: %s", command)
    opts = _options(argv)
    if not opts.no_flower and check_flower_installed():
        log.warning("%s; measuring the dashboard alone", check_flower_installed())
        opts.no_flower = True
    # SIGTERM unwinds like Ctrl-C: every `finally` stops what it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.time()
    load_before = os.getloadavg()
    bench = Bench(opts)
    rows: list[dict[str, Any]] = []
    try:
        rows = bench.run()
    except (KeyboardInterrupt, SystemExit):
        log.warning("interrupted: every process was stopped; partial results follow")
        rows = bench.table()
    finally:
        took = time.time() - started
        out = Path(opts.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "command": command,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "seconds": round(took, 1),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
            "versions": _versions(),
            "options": dict(vars(opts)),
            "table": rows,
            "raw": bench.raw,
        }
        out.write_text(json.dumps(doc, indent=1, default=str))
        log.info("raw results: %s; took %.0fs", out, took)
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
