"""A task module of the shop app that only its `include` names: a dashboard that did not import the app's
task modules as a worker does would not know this task."""

from __future__ import annotations

from tests.apps.shop import app


@app.task(name="shop.reports.weekly")
def weekly(week: int, final: bool = False) -> str:
    """The weekly report (pretend)."""
    return f"week {week}{' (final)' if final else ''}"
