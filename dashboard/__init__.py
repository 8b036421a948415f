"""Celery Live Dashboard: `create_app()` builds the Flask app; `socketio` is bound in it (dashboard/factory.py).

They are imported on first use, so that importing `dashboard.cli` stays cheap: `celery` loads it as the
`celery dashboard` plugin for every one of its commands, workers included.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .factory import create_app, csrf, socketio

_LAZY = frozenset({"create_app", "socketio", "csrf", "ROOT"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import factory

        return getattr(factory, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["create_app", "csrf", "socketio"]
