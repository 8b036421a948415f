"""A Celery app whose beat_schedule is made of markup and script: the Beat page must show it as text."""

from __future__ import annotations

import os

from celery import Celery

PAYLOAD = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script><b id="injected">b</b>"\'>'

app = Celery("hostile", broker=os.environ.get("HOSTILE_BROKER_URL", "redis://127.0.0.1:6399/0"))
app.conf.update(
    beat_schedule={
        f"entry {PAYLOAD}": {
            "task": f"tasks.{PAYLOAD}",
            "schedule": 3600.0,
            "args": [PAYLOAD],
            "kwargs": {PAYLOAD: PAYLOAD},
            "options": {"queue": f"q{PAYLOAD}"},
        }
    }
)
