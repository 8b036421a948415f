"""Prometheus /metrics with the names Celery exporters use, low label cardinality.

(Skeleton: the queues/metrics helper fills this in.)
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask

bp = Blueprint("metrics", __name__)


def init_app(app: Flask, svc: Any) -> None:
    """Create this module's services on `svc` and start their background loops when ingest is enabled."""
