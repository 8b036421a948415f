"""Short tasks for `python -m bench.capture`: a real worker runs them while its events are recorded.

The broker comes from BENCH_CAPTURE_BROKER (set by the capture script for the worker it starts).
"""

from __future__ import annotations

import os

from celery import Celery

app = Celery("bench_capture", broker=os.environ.get("BENCH_CAPTURE_BROKER", "redis://127.0.0.1:6379/0"))
app.conf.update(
    worker_send_task_events=True,
    task_send_sent_event=False,  # the default: a client's task-sent would not come from the worker
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
)


@app.task(name="capture.add")
def add(x: int, y: int) -> int:
    """A task that returns at once."""
    return x + y


@app.task(name="capture.concat")
def concat(words: list[str], sep: str = " ") -> str:
    """A task with a list argument and a string result (a slightly larger event)."""
    return sep.join(words)
