"""`--profile`: py-spy (from .bench-venv) samples the dashboard's worker process during a burst of
full lifecycles and during filtered queries; the top functions go to the log and the JSON."""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from .measure import Burst, Context, fresh, queries
from .publish import PacedPublisher
from .targets import BENCH_VENV, Dashboard, rss_kb

log = logging.getLogger(__name__)

PY_SPY = BENCH_VENV / "bin" / "py-spy"
RESULTS = Path(__file__).resolve().parent / "results"


def _worker_pid(target: Dashboard) -> int:
    """The process holding the state (the dashboard itself, not its reader): the largest of the tree."""
    return max(target.pids(), key=rss_kb)


def _function(frame: str) -> str:
    # "name (path/file.py:123)" -> "name (path/file.py)"
    head, sep, _ = frame.rpartition(":")
    return head + ")" if sep and frame.endswith(")") else frame


def summarize(raw: Path, top: int = 15) -> dict[str, Any]:
    """Sample shares (%) from py-spy's collapsed stacks: self time per function and per line, and
    inclusive time per function."""
    own: Counter[str] = Counter()
    own_lines: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own_lines[frames[-1]] += n
        own[_function(frames[-1])] += n
        for func in {_function(f) for f in frames}:
            inclusive[func] += n
    if not total:
        return {"samples": 0}

    def share(c: Counter[str]) -> list[tuple[str, float]]:
        return [(f, round(100 * n / total, 1)) for f, n in c.most_common(top)]

    return {
        "samples": total,
        "self_pct": share(own),
        "self_lines_pct": share(own_lines),
        "inclusive_pct": share(inclusive),
    }


class _Spy:
    def __init__(self, pid: int, name: str) -> None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        self.out = RESULTS / f"profile-{name}.txt"
        # --gil: only samples of the thread holding the GIL, i.e. where the Python CPU time goes
        cmd = [
            str(PY_SPY),
            "record",
            "--pid",
            str(pid),
            "--rate",
            "250",
            "--format",
            "raw",
            "--output",
            str(self.out),
            "--nonblocking",
            "--gil",
            "--duration",
            "120",
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)  # py-spy attaches

    def stop(self) -> dict[str, Any]:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        if not self.out.exists():
            return {"error": (self.proc.stderr.read() if self.proc.stderr else b"").decode()[-500:]}
        return summarize(self.out)


def profile_burst(ctx: Context) -> dict[str, Any]:
    if not PY_SPY.exists():
        return {"error": f"{PY_SPY} is missing (make bench installs it into .bench-venv)"}
    out: dict[str, Any] = {}
    with fresh(ctx, Dashboard) as target:
        run = Burst(ctx, target, ctx.pools.get("life") or ctx.pools["burst"])
        spy = _Spy(_worker_pid(target), "ingest")
        try:
            out["burst"] = run.run()
        finally:
            out["ingest"] = spy.stop()
        if "life" in ctx.pools:
            with PacedPublisher(
                ctx.redis.url, ctx.pools["life"], 10_000, duration=120, salt=ctx.salt * 1000, first_pass=1
            ):
                spy = _Spy(_worker_pid(target), "query")
                try:
                    for qs in queries(ctx.pools["life"]).values():
                        for _ in range(30):
                            target.session.get(f"{target.base}/api/tasks?limit=50&{qs}", timeout=30)
                finally:
                    out["query"] = spy.stop()
    for name in ("ingest", "query"):
        if name in out and "self_pct" in out[name]:
            log.info(
                "profile %s (%d samples holding the GIL), self %%: %s",
                name,
                out[name]["samples"],
                out[name]["self_pct"][:10],
            )
            log.info("profile %s inclusive %%: %s", name, out[name]["inclusive_pct"][:12])
    return out
