"""The demo Celery app the demo worker runs: `celery -A dashboard.demo worker -E`.

The web process never imports this module: it launches these tasks by name.
The tasks follow the Celery + Redis guide this project grew from, plus the cases a monitor
must show well: a real traceback, retries with backoff, progress, and a chord workflow.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from celery import Celery, chain, group

log = logging.getLogger(__name__)

BROKER_URL = os.environ.get("DASHBOARD_BROKER_URL", "redis://127.0.0.1:6379/0")
# How long add() and send_email() pretend to work (tests shorten it).
WORK_SECONDS = float(os.environ.get("DASHBOARD_DEMO_SLEEP", "2"))

app = Celery("dashboard.demo", broker=BROKER_URL, backend=BROKER_URL)  # chords need a result backend
app.conf.update(
    # Same as -E; DASHBOARD_DEMO_EVENTS=0 starts a worker that only reports once asked to.
    worker_send_task_events=os.environ.get("DASHBOARD_DEMO_EVENTS", "1") != "0",
    task_send_sent_event=True,  # tasks sent from tasks (workflow) show as PENDING at once
    result_expires=3600,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    task_default_queue="celery",
    worker_pool_restarts=True,  # lets the dashboard's "pool restart" control work on the demo worker
)


class PaymentDeclined(Exception):
    """What the failing demo task raises."""


@app.task
def add(x: float, y: float) -> float:
    """Add two numbers, slowly (simulates long work)."""
    time.sleep(WORK_SECONDS)
    return x + y


@app.task
def tsum(numbers: list[float]) -> float:
    """Sum a list: the chord callback of workflow()."""
    return sum(numbers)


@app.task
def send_email(address: str, message: str) -> str:
    """Pretend to send an email; an address without '@' fails."""
    time.sleep(WORK_SECONDS / 2)
    if "@" not in str(address):
        raise ValueError(f"invalid email address {address!r}")
    log.info("email to %s: %s", address, message)
    return f"sent {len(str(message))} characters to {address}"


def _authorize(card: str, amount: float) -> None:
    raise PaymentDeclined(f"card {card} was declined for amount {amount}: insufficient funds")


def _charge(card: str, amount: float) -> str:
    _authorize(card, amount)
    return "charged"


@app.task
def fail(card: str = "4000-0000-0000-0002", amount: float = 42) -> str:
    """Always fails a few frames deep, so the dashboard has a real traceback to show."""
    return _charge(card, amount)


@app.task(
    bind=True, autoretry_for=(ConnectionError,), retry_backoff=1, retry_backoff_max=8, retry_jitter=False, max_retries=3
)
def flaky(self: Any, fail_times: int = 2) -> str:
    """Fails `fail_times` times with ConnectionError; autoretry_for retries it with backoff."""
    attempt = self.request.retries + 1
    if self.request.retries < int(fail_times):
        raise ConnectionError(f"upstream unavailable on attempt {attempt}")
    return f"succeeded on attempt {attempt}"


@app.task(bind=True)
def progress(self: Any, steps: int = 10, delay: float = 0.5) -> dict[str, int]:
    """Work in steps, reporting progress to the result backend and as task-progress events."""
    steps = int(steps)
    for done in range(1, steps + 1):
        time.sleep(float(delay))
        self.update_state(state="PROGRESS", meta={"current": done, "total": steps})
        self.send_event("task-progress", current=done, total=steps)
    return {"steps": steps}


@app.task(bind=True)
def workflow(self: Any, n: int = 4) -> str:
    """Start add -> group of n adds -> tsum (a chain whose group + callback is a chord)."""
    canvas = chain(add.si(1, 1), group(add.si(i, i) for i in range(int(n))), tsum.s())
    return canvas.apply_async().id
