"""The processes under test: a throwaway Redis, the dashboard and Flower; their counters and RSS."""

from __future__ import annotations

import logging
import mmap
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
import requests

from dashboard.processes import free_port, start_redis, stop_process

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
BENCH_VENV = ROOT / ".bench-venv"
CELERY_BIN = BENCH_VENV / "bin" / "celery"
START_TIMEOUT = 60.0


def subscriptions(client: redis.Redis) -> int:
    """Channels and patterns subscribed, summed over every client connection."""
    return sum(int(c.get("psub", 0)) + int(c.get("sub", 0)) for c in client.client_list())


class Redis:
    """A redis-server of the bench alone, with an unlimited pub/sub output buffer."""

    def __init__(self) -> None:
        self.proc, self.url = start_redis(pubsub_limit="0 0 0")
        self.client = redis.Redis.from_url(self.url)

    def flush(self) -> None:
        self.client.flushall()

    def subscribers(self) -> int:
        """Subscriptions held by connected clients (NUMPAT counts distinct patterns, not clients)."""
        return subscriptions(self.client)

    def stop(self) -> None:
        try:
            self.client.close()
        finally:
            stop_process(self.proc)


def _die_with_parent() -> None:
    # Linux: the child gets SIGTERM if the bench dies without its clean-up (e.g. SIGKILL).
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # the command may hold spaces and parentheses: fields start after the last ')'
        fields = stat[stat.rfind(b")") + 2 :].split()
        if int(fields[1]) == pid:
            kids.append(int(entry))
    return kids


def tree(pid: int) -> list[int]:
    """pid and all its descendants."""
    out, todo = [], [pid]
    while todo and len(out) < 256:
        p = todo.pop()
        out.append(p)
        todo.extend(_children(p))
    return out


def rss_kb(pid: int) -> int:
    """VmRSS of one process in KiB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_ticks(path: str) -> tuple[str, int] | None:
    """(comm, utime + stime in clock ticks) from a /proc stat file, None when it is gone."""
    try:
        with open(path, "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # the comm may hold spaces and parentheses: it ends at the last ')'
    comm = stat[stat.find(b"(") + 1 : stat.rfind(b")")].decode("utf-8", "replace")
    fields = stat[stat.rfind(b")") + 2 :].split()
    return comm, int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)


def run_delay(pid: int) -> float:
    """Seconds this process's threads have waited for a CPU while runnable (/proc/<pid>/task/*/schedstat):
    what distinguishes a process starved by others on a busy machine from one that is idle or blocked."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            pass
    return total / 1e9


def machine_cpu() -> tuple[int, int]:
    """(busy, total) clock ticks of every CPU so far (/proc/stat), to tell how busy the machine is."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def cpu_sample(pids: dict[int, str]) -> dict[str, Any]:
    """CPU ticks so far of each labelled process and of each of its threads (by the thread's comm)."""
    out: dict[str, Any] = {}
    for pid, label in pids.items():
        proc = _stat_ticks(f"/proc/{pid}/stat")
        if proc is None:
            continue
        threads: dict[str, int] = {}
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            tids = []
        for tid in tids:
            t = _stat_ticks(f"/proc/{pid}/task/{tid}/stat")
            if t is not None:
                key = f"{t[0]}[{tid}]"
                threads[key] = t[1]
        out[f"{label}[{pid}]"] = {"label": label, "ticks": proc[1], "threads": threads, "run_delay": run_delay(pid)}
    return out


def cpu_delta(before: dict[str, Any], after: dict[str, Any], events: int) -> dict[str, Any]:
    """CPU seconds per 100k events between two samples: per label (processes summed), and per thread
    (threads below 1% of the total left out); and the seconds each label's threads waited for a CPU
    while runnable. A process born in between counts from zero."""
    per_label: dict[str, float] = {}
    waited: dict[str, float] = {}
    threads: dict[str, float] = {}
    for key, a in after.items():
        b = before.get(key, {"ticks": 0, "threads": {}, "run_delay": 0.0})
        secs = (a["ticks"] - b["ticks"]) / CLK_TCK
        per_label[a["label"]] = per_label.get(a["label"], 0.0) + secs
        waited[a["label"]] = waited.get(a["label"], 0.0) + a.get("run_delay", 0.0) - b.get("run_delay", 0.0)
        for tkey, ticks in a["threads"].items():
            threads[f"{a['label']}:{tkey}"] = (ticks - b["threads"].get(tkey, 0)) / CLK_TCK
    total = sum(per_label.values())
    scale = 100_000 / events if events else 0.0
    return {
        "seconds": round(total, 2),
        "per_100k": round(total * scale, 3),
        "by_process_per_100k": {k: round(v * scale, 3) for k, v in per_label.items()},
        # runnable but waiting for a CPU (others had it): a shared machine's share of the wall time
        "waited_for_cpu_per_100k": {k: round(v * scale, 3) for k, v in waited.items()},
        "by_thread_per_100k": {
            k: round(v * scale, 3) for k, v in sorted(threads.items(), key=lambda kv: -kv[1]) if v >= 0.01 * total
        },
    }


class Target:
    """A server under test, started fresh for each round."""

    name = "target"
    counts_heartbeats = True  # whether its counter includes worker events
    max_tasks = 100_000  # tasks it keeps (the bench raises it when --tasks asks for more)

    def __init__(self, broker_url: str, env: dict[str, str] | None = None) -> None:
        self.broker_url = broker_url
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.session = requests.Session()
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - the server's output for its lifetime; closed in stop()
        self.proc = subprocess.Popen(
            self.command(),
            cwd=ROOT,
            env=dict(os.environ, **self.environment(), **(env or {})),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return {}

    def wait_ready(self, redis_server: Redis, baseline_subscribers: int) -> None:
        """Until the HTTP server answers and the event consumer has subscribed on Redis."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.output()[-2000:]}")
            try:
                if self.ready() and redis_server.subscribers() > baseline_subscribers:
                    return
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not become ready in {START_TIMEOUT:.0f}s: {self.output()[-2000:]}")

    def ready(self) -> bool:
        raise NotImplementedError

    def counter(self) -> int:
        """Events counted so far."""
        raise NotImplementedError

    def rss_kb(self) -> int:
        """RSS of the whole process tree (the dashboard and its event reader), KiB."""
        return sum(rss_kb(p) for p in tree(self.proc.pid))

    def pids(self) -> list[int]:
        return tree(self.proc.pid)

    def processes(self) -> dict[int, str]:
        """Its processes now, each with a label saying which part it is (for CPU accounting)."""
        return {pid: self.label(pid) for pid in tree(self.proc.pid)}

    def label(self, pid: int) -> str:
        return self.name if pid == self.proc.pid else f"{self.name} child"

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def stop(self) -> None:
        try:
            self.session.close()
            stop_process(self.proc)
        finally:
            self._log.close()

    def __enter__(self) -> Target:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class Dashboard(Target):
    name = "dashboard"
    counts_heartbeats = True

    def command(self) -> list[str]:
        # `python -m dashboard.cli` from the checkout (cwd=ROOT), not the `celery-dashboard` script: the
        # script imports whatever copy the virtualenv was installed from, while the event reader child
        # (`python -m dashboard.ingest.process`, same cwd) imports the checkout's; with a virtualenv
        # shared between checkouts the two halves of the dashboard could be different code.
        return [
            str(VENV_PYTHON),
            "-m",
            "dashboard.cli",
            "run",
            "--broker",
            self.broker_url,
            "--port",
            str(self.port),
            "--log-level",
            "WARNING",
        ]

    def environment(self) -> dict[str, str]:
        return {"DASHBOARD_MAX_TASKS": str(self.max_tasks), "DASHBOARD_ENABLE_EVENTS_INTERVAL": "0"}

    last_health: dict[str, Any] | None = None

    def health(self) -> dict[str, Any]:
        self.last_health = self.session.get(self.base + "/healthz", timeout=10).json()
        return self.last_health

    def ready(self) -> bool:
        return bool(self.health()["broker"]["connected"])

    def label(self, pid: int) -> str:
        if pid == self.proc.pid:
            return "web/state"
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            return "child"
        return "reader" if b"dashboard.ingest.process" in cmdline else "child"

    def counter(self) -> int:
        return int(self.health()["events"]["received"])

    def retained(self) -> int:
        return int(self.health()["tasks"]["retained"])

    def task_state(self, uuid: str) -> str | None:
        resp = self.session.get(f"{self.base}/api/tasks/{uuid}", timeout=10)
        return resp.json().get("state") if resp.status_code == 200 else None

    pages = ("/", "/tasks")
    api = "/api/tasks?limit=50"


_METRIC = re.compile(r"^flower_events_total\{[^}]*\} ([0-9.e+]+)$", re.M)


class Flower(Target):
    name = "flower"
    counts_heartbeats = False  # flower_events_total counts task events only (observe_task)

    def command(self) -> list[str]:
        # --enable_events=False: no enable_events broadcast every 5 s (there are no real workers).
        return [
            str(CELERY_BIN),
            f"--broker={self.broker_url}",
            "flower",
            f"--port={self.port}",
            "--address=127.0.0.1",
            f"--max_tasks={self.max_tasks}",
            "--enable_events=False",
            "--logging=warning",
        ]

    def environment(self) -> dict[str, str]:
        # Flower 2 answers its API with 401 unless auth is configured or this is set.
        return {"FLOWER_UNAUTHENTICATED_API": "true"}

    def ready(self) -> bool:
        return self.session.get(self.base + "/healthcheck", timeout=10).status_code == 200

    def counter(self) -> int:
        text = self.session.get(self.base + "/metrics", timeout=30).text
        return int(sum(float(v) for v in _METRIC.findall(text)))

    def retained(self) -> int:
        return -1  # Flower does not expose it cheaply

    def task_state(self, uuid: str) -> str | None:
        resp = self.session.get(f"{self.base}/api/task/info/{uuid}", timeout=10)
        return resp.json().get("state") if resp.status_code == 200 else None

    pages = ("/", "/tasks")
    api = "/api/tasks?limit=50"


class Floor(Target):
    """`python -m bench.floor`: decodes every message into dicts and counts, nothing else."""

    name = "floor"
    counts_heartbeats = True

    def __init__(self, broker_url: str, env: dict[str, str] | None = None) -> None:
        from .floor import SIZE

        self._counter_file = tempfile.NamedTemporaryFile(prefix="bench-floor-")  # noqa: SIM115 - closed in stop()
        self._counter_file.write(bytes(SIZE))
        self._counter_file.flush()
        self._counter = mmap.mmap(self._counter_file.fileno(), SIZE)
        super().__init__(broker_url, env)

    def command(self) -> list[str]:
        return [sys.executable, "-m", "bench.floor", self.broker_url, self._counter_file.name]

    def _read(self) -> tuple[int, int]:
        from .floor import COUNTER

        count, subscribed = COUNTER.unpack_from(self._counter, 0)
        return count, subscribed

    def ready(self) -> bool:
        return bool(self._read()[1])

    def counter(self) -> int:
        return self._read()[0]

    def retained(self) -> int:
        return -1

    def task_state(self, uuid: str) -> str | None:
        return None

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            self._counter.close()
            self._counter_file.close()

    pages = ()
    api = ""


TARGETS = {"dashboard": Dashboard, "flower": Flower, "floor": Floor}


def check_flower_installed() -> str | None:
    """None when Flower is usable, else what to do."""
    if not CELERY_BIN.exists():
        return f"{CELERY_BIN} is missing: run `make bench` (it creates .bench-venv with flower)"
    return None
