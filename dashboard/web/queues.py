"""The queues page's API: what the queue monitor (dashboard/cluster/queues.py) last read."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from .services import services

bp = Blueprint("queues", __name__)


@bp.get("/api/queues")
def api_queues() -> Any:
    """Queue lengths (total and per priority), consumers, oldest waiting task and queue wait per queue."""
    monitor = services().queues
    return jsonify(monitor.snapshot())
