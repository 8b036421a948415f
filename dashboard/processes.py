"""Child processes the demo command (and the test suite) starts: a local Redis and the demo worker."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

REDIS_CANDIDATES = ("redis-server", "/usr/bin/redis-server", "/usr/sbin/redis-server", "/usr/local/bin/redis-server")


class ProcessError(RuntimeError):
    """A child process could not be started; the message says what to do."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def listen_problem(host: str, port: int) -> str | None:
    """Why a server could not listen on host:port right now ("Address already in use", …), or None.
    Binds and closes a socket the way the servers do (SO_REUSEADDR); port 0 (any free port) always can."""
    if not port:
        return None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    """Whether a Redis server answers PING at `url`."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - any failure means "not usable"
        return False


def is_local(url: str) -> bool:
    """Whether a broker URL points at this machine (where we may start Redis ourselves)."""
    host = urlsplit(url).hostname or "localhost"
    return host in ("localhost", "127.0.0.1", "::1")


def _die_with_parent() -> None:
    # Linux only: children get SIGTERM if the dashboard dies abruptly, so nothing is left running.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def redis_executable() -> str:
    """The redis-server binary, or a ProcessError saying how to install it."""
    for candidate in REDIS_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    raise ProcessError(
        "redis-server is not installed: run `apt-get install redis-server` "
        "(or `make setup` as root), or pass --broker redis://HOST:PORT/0 of a running Redis"
    )


def start_redis(port: int | None = None, pubsub_limit: str = "256mb 64mb 60") -> tuple[subprocess.Popen, str]:
    """Start a throwaway redis-server on a free loopback port; returns (process, broker URL)."""
    port = port or free_port()
    workdir = tempfile.mkdtemp(prefix="celery-dashboard-redis-")
    cmd = [
        redis_executable(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        workdir,
        "--client-output-buffer-limit",
        f"pubsub {pubsub_limit}",
        "--loglevel",
        "warning",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, preexec_fn=_die_with_parent)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while not redis_answers(url, timeout=0.2):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            raise ProcessError(f"redis-server did not start on port {port}")
        time.sleep(0.05)
    log.info("started redis-server on 127.0.0.1:%d (pid %d)", port, proc.pid)
    return proc, url


def start_worker(
    broker_url: str,
    concurrency: int = 2,
    hostname: str = "demo@%h",
    extra_env: dict[str, str] | None = None,
    quiet: bool = False,
) -> subprocess.Popen:
    """Start the demo Celery worker (events on) against `broker_url`, named `hostname` with Celery's %h,
    %n and %d expanded here, so that the log names the worker as the dashboard will show it."""
    from celery.utils.nodenames import host_format

    hostname = host_format(hostname)
    env = dict(os.environ, DASHBOARD_BROKER_URL=broker_url, **(extra_env or {}))
    env.pop("DASHBOARD_ASYNC_MODE", None)  # the worker never runs under the web server's eventlet
    events = ["-E"] if env.get("DASHBOARD_DEMO_EVENTS", "1") != "0" else []
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "dashboard.demo",
        "worker",
        *events,
        "--loglevel",
        "INFO",
        "--concurrency",
        str(concurrency),
        "--hostname",
        hostname,
        "--without-mingle",
        "--without-gossip",
    ]
    out = subprocess.DEVNULL if quiet else None
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=out, preexec_fn=_die_with_parent)
    log.info("started demo worker %s (pid %d)", hostname, proc.pid)
    return proc


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM, wait, then SIGKILL: a child never outlives its parent's clean-up."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
