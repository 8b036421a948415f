"""`python -m bench.reliability`: the figures in docs/operations.md's Reliability section.

- broker outage: Redis stopped for 30 s (once) and for 5 s (five times): seconds from Redis answering
  again to /healthz saying the event stream is connected;
- dead worker: seconds from SIGKILL to the worker shown offline (heartbeat every 2 s), three times;
- flood: one million events through the reader's batch path into a 10,000-task state: time and memory.

Reports, never asserts (the machine is shared); the tests check the limits.
"""

from __future__ import annotations

import base64
import gc
import logging
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid as uuidlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import requests

from dashboard.processes import free_port, start_redis, start_worker, stop_process

log = logging.getLogger("bench")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _wait(predicate: Callable[[], Any], timeout: float, interval: float = 0.02) -> float:
    """Seconds until predicate() is truthy (raises after `timeout`)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if predicate():
                return time.monotonic() - started
        except requests.RequestException:
            pass
        time.sleep(interval)
    raise TimeoutError("condition not met")


class _Dashboard:
    def __init__(self, url: str) -> None:
        self.base = f"http://127.0.0.1:{free_port()}"
        port = self.base.rsplit(":", 1)[1]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dashboard.cli", "run", "--broker", url, "--port", port, "--log-level", "ERROR"],
            cwd=ROOT,
        )
        _wait(self.connected, 30)

    def health(self) -> dict[str, Any]:
        return requests.get(self.base + "/healthz", timeout=5).json()

    def connected(self) -> bool:
        return self.health()["broker"]["connected"]

    def online(self, host: str) -> bool:
        workers = requests.get(self.base + "/api/workers", timeout=5).json()["workers"]
        return any(w["hostname"] == host and w["online"] for w in workers)


def outages() -> None:
    """Seconds from Redis' return to ingest connected, after a 30 s outage and five 5 s ones."""
    proc, url = start_redis()
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    dash = _Dashboard(url)
    try:
        resumed = []
        for seconds in (30, 5, 5, 5, 5, 5):
            stop_process(proc)
            _wait(lambda: not dash.connected(), 15)
            time.sleep(seconds)
            proc, _ = start_redis(port)
            resumed.append(_wait(dash.connected, 30))
        log.info("outage of 30 s: ingest connected %.2f s after Redis returned", resumed[0])
        log.info(
            "outages of 5 s: median %.2f s, max %.2f s (%d)",
            statistics.median(resumed[1:]),
            max(resumed[1:]),
            len(resumed) - 1,
        )
    finally:
        stop_process(dash.proc)
        stop_process(proc)


def dead_worker() -> None:
    """Seconds from SIGKILL to offline, three times (Celery's default 2 s heartbeat)."""
    proc, url = start_redis()
    dash = _Dashboard(url)
    try:
        took = []
        for i in range(3):
            host = f"bench-victim-{i}@localhost"
            worker = start_worker(url, concurrency=1, hostname=host, quiet=True)
            _wait(lambda h=host: dash.online(h), 60)
            time.sleep(3)  # a few heartbeats
            children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
            worker.send_signal(signal.SIGKILL)
            took.append(_wait(lambda h=host: not dash.online(h), 30))
            for child in children:
                try:
                    os.kill(int(child), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            worker.wait(5)
        log.info(
            "SIGKILLed worker offline after: median %.2f s, max %.2f s (limit: 2 heartbeats + a tick = 4.2 s)",
            statistics.median(took),
            max(took),
        )
    finally:
        stop_process(dash.proc)
        stop_process(proc)


def million_events(every: int = 100_000) -> tuple[Any, Any, list[float], float]:
    """One million events (250k tasks: received, started, finished, progress; each failure's traceback its
    own) through the reader's batch path into a 10,000-task state -> (state, ingest, RSS in MB after every
    `every` events, seconds). Shared by this bench and tests/test_reliability.py."""
    from dashboard.core.state import State
    from dashboard.ingest.stream import Ingest

    def rss_mb() -> float:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    state = State(max_tasks=10_000)
    ingest = Ingest(state, "redis://127.0.0.1:1/0")
    levels: list[float] = []
    n = 0
    started = time.perf_counter()
    for batch in range(2_500):  # 400 events each
        events: list[dict[str, Any]] = []
        now = time.time()
        for i in range(100):
            uid, n = str(uuidlib.uuid4()), n + 1
            common = {"uuid": uid, "hostname": f"w{i % 4}@h", "timestamp": now, "utcoffset": 0}
            events += [
                dict(common, type="task-received", name=f"proj.t{i % 20}", args=f"({n},)", kwargs="{}"),
                dict(common, type="task-started"),
                dict(common, type="task-failed", exception=f"ValueError({n})", traceback=f"Traceback {n}\n" * 20)
                if i % 10 == 0
                else dict(common, type="task-succeeded", result=f"'{n}'", runtime=0.1),
                dict(common, type="task-progress", current=1, total=2),
            ]
        ingest.apply_messages(
            [
                orjson.dumps(
                    {
                        "body": base64.b64encode(orjson.dumps(events[j : j + 50])).decode(),
                        "content-type": "application/json",
                        "properties": {"body_encoding": "base64"},
                    }
                )
                for j in range(0, len(events), 50)
            ]
        )
        if (batch + 1) * 400 % every == 0:
            gc.collect()
            levels.append(rss_mb())
    return state, ingest, levels, time.perf_counter() - started


def flood() -> None:
    """One million events into a 10,000-task state: time, and memory as events go by."""
    state, _, levels, took = million_events()
    log.info(
        "1,000,000 events in %.1f s (%.0f events/s incl. building them); %d tasks kept",
        took,
        1e6 / took,
        len(state.tasks),
    )
    log.info("RSS every 100k events (MB): %s", " ".join(f"{m:.0f}" for m in levels))


def main() -> None:
    """Run the three scenarios."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    outages()
    dead_worker()
    flood()


if __name__ == "__main__":
    main()
