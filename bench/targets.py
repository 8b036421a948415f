"""The processes under test: a throwaway Redis, the dashboard and Flower; their counters and RSS."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
import requests

from dashboard.processes import free_port, start_redis, stop_process

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_BIN = ROOT / ".venv" / "bin" / "celery-dashboard"
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


class Target:
    """A server under test, started fresh for each round."""

    name = "target"
    counts_heartbeats = True  # whether its counter includes worker events

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
        return [
            str(DASHBOARD_BIN),
            "run",
            "--broker",
            self.broker_url,
            "--port",
            str(self.port),
            "--log-level",
            "WARNING",
        ]

    def environment(self) -> dict[str, str]:
        return {"DASHBOARD_MAX_TASKS": "100000", "DASHBOARD_ENABLE_EVENTS_INTERVAL": "0"}

    def health(self) -> dict[str, Any]:
        return self.session.get(self.base + "/healthz", timeout=10).json()

    def ready(self) -> bool:
        return bool(self.health()["broker"]["connected"])

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
            "--max_tasks=100000",
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


TARGETS = {"dashboard": Dashboard, "flower": Flower}


def check_flower_installed() -> str | None:
    """None when Flower is usable, else what to do."""
    if not CELERY_BIN.exists():
        return f"{CELERY_BIN} is missing: run `make bench` (it creates .bench-venv with flower)"
    return None
