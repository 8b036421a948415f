"""Queues: lengths read from the broker in the background, consumers, oldest waiting task, queue wait.

(Skeleton: the queues helper fills this in.)
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask

bp = Blueprint("queues", __name__)


def init_app(app: Flask, svc: Any) -> None:
    """Create this module's services on `svc` and start their background loops when ingest is enabled."""
