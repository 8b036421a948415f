"""Control endpoints: worker and task-type control, revoke/terminate/re-run, bulk actions, audit log.

(Skeleton: the control helper fills this in.)
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask

bp = Blueprint("control", __name__)


def init_app(app: Flask, svc: Any) -> None:
    """Create this module's services on `svc` and start their background loops when ingest is enabled."""
