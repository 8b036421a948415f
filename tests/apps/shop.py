"""A user's Celery app for the tests, not dashboard.demo: its own task names, queue and broker setting.

Its broker is SHOP_BROKER_URL (not DASHBOARD_BROKER_URL): the dashboard must find it through the app.
Tasks go to the `shop` queue (task_default_queue), which only this app's workers consume; a dashboard that
sent through its own client instead of this app would put them on `celery`, where nothing runs them.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.schedules import crontab

app = Celery("shop", broker=os.environ.get("SHOP_BROKER_URL", "redis://127.0.0.1:6399/0"))
app.conf.update(
    task_default_queue="shop",
    task_serializer="json",
    worker_send_task_events=True,
    task_send_sent_event=True,
    worker_hijack_root_logger=False,
    include=["tests.apps.shop_reports"],  # a task module only `include` names (as a worker imports it)
    # The Beat page's schedule: an interval, a crontab, and one with a secret among its kwargs (masked).
    beat_schedule={
        "charge-every-10s": {"task": "shop.charge", "schedule": 10.0, "args": (1, 2.5)},
        "nightly-report": {
            "task": "shop.reports.daily",
            "schedule": crontab(hour=3, minute=30),
            "args": ["yesterday"],
            "kwargs": {"notes": "nightly"},
        },
        "ship-express": {
            "task": "shop.ship",
            "schedule": crontab(minute="*/15", day_of_week="mon-fri"),
            "kwargs": {"order_id": 3, "address": {"city": "Paris", "api_token": "s3cret"}, "express": True},
            "options": {"priority": 5},
        },
    },
)


@app.task(name="shop.charge")
def charge(order_id: int, amount: float, currency: str = "EUR", capture: bool = True) -> dict[str, Any]:
    """Charge an order (pretend)."""
    return {"order_id": order_id, "amount": amount, "currency": currency, "captured": capture}


@app.task(name="shop.ship")
def ship(order_id: int, address: dict[str, Any], express: bool = False) -> str:
    """Ship an order to an address (pretend)."""
    return f"order {order_id} to {address.get('city', '?')}{' (express)' if express else ''}"


@app.task(name="shop.reports.daily")
def daily_report(day, *, notes="none"):  # no annotations: the form asks for JSON
    """A task without annotations and with a keyword-only parameter."""
    return f"report for {day}: {notes}"


def start_worker(broker_url: str, hostname: str) -> Any:
    """A worker of this app (events on) as a subprocess, on the `shop` queue only."""
    import subprocess
    import sys

    from dashboard.processes import _die_with_parent

    env = dict(os.environ, SHOP_BROKER_URL=broker_url)
    cmd = [sys.executable, "-m", "celery", "-A", "tests.apps.shop", "worker", "-E", "--loglevel", "WARNING"]
    cmd += ["--concurrency", "1", "--hostname", hostname, "--without-mingle", "--without-gossip"]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return subprocess.Popen(cmd, env=env, cwd=root, preexec_fn=_die_with_parent)
