"""JSON API and /healthz: a stable contract that tooling relies on."""
from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, jsonify, request

from . import launch as launching
from .push import MAX_LIMIT, parse_filters
from .services import services
from .state import task_detail

log = logging.getLogger(__name__)
bp = Blueprint("api", __name__)


@bp.get("/healthz")
def healthz() -> Any:
    """Broker connection, event counters, retained tasks and workers online.

    Always 200 while the process serves: `ok` says whether the broker is connected, because
    restarting the dashboard would not bring a broker back.
    """
    svc = services()
    status = svc.push.status()
    now = time.time()
    with svc.state.lock:
        tasks = {"retained": len(svc.state.tasks), "evicted": svc.state.evicted, "max": svc.state.max_tasks}
        workers = {"online": svc.state.workers_online(now), "known": len(svc.state.workers)}
    body = {"ok": status["broker"]["connected"], "broker": status["broker"], "events": status["events"],
            "tasks": tasks, "workers": workers, "server": {"async_mode": svc.config["ASYNC_MODE"]}}
    return jsonify(body), 200


def _whole_number(raw: str) -> int | None:
    # isdecimal, not isdigit: "²" is a digit that int() refuses.
    return int(raw) if raw.isascii() and raw.isdecimal() else None


@bp.get("/api/tasks")
def tasks() -> Any:
    """Tasks newest first: ?state=&name=&worker=&q=&limit=&offset= -> {total, tasks}."""
    limit = _whole_number(request.args.get("limit", "50"))
    offset = _whole_number(request.args.get("offset", "0"))
    if limit is None or not 1 <= limit <= MAX_LIMIT:
        return jsonify({"error": f"limit must be a whole number from 1 to {MAX_LIMIT}"}), 400
    if offset is None:
        return jsonify({"error": "offset must be a whole number"}), 400
    filters, error = parse_filters(request.args)
    if filters is None:
        return jsonify({"error": error}), 400
    return jsonify(services().push.tasks_snapshot(filters, limit, offset))


@bp.get("/api/tasks/<uuid>")
def task(uuid: str) -> Any:
    """One task with traceback, history, attempts and children; 404 when never seen."""
    svc = services()
    with svc.state.lock:
        rec = svc.state.tasks.get(uuid)
        if rec is None:
            return jsonify({"error": f"task {uuid} has not been seen (or was evicted)"}), 404
        return jsonify(task_detail(rec, svc.state.children_of(uuid)))


@bp.get("/api/workers")
def workers() -> Any:
    """Every known worker with its heartbeat status."""
    return jsonify(services().push.workers_snapshot())


@bp.get("/api/overview")
def overview() -> Any:
    """What the overview page shows."""
    return jsonify(services().push.overview_snapshot())


def _cross_site() -> bool:
    # JSON is only accepted same-origin: a cross-site page can send neither this content type
    # (it needs a CORS preflight we never grant) nor a matching Origin.
    origin = request.headers.get("Origin")
    if origin and urlsplit(origin).netloc != request.host:
        return True
    return request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none")


@bp.post("/api/launch")
def launch() -> Any:
    """{"task", "args", "kwargs", "count", "countdown"} -> {"task_ids": [...]} or 400 {"errors"}."""
    if _cross_site():
        return jsonify({"error": "cross-origin requests are refused"}), 403
    if not request.is_json:
        return jsonify({"error": "send JSON with Content-Type: application/json"}), 415
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        return jsonify({"errors": {"form": "the body must be a JSON object"}}), 400
    req, errors = launching.validate(data)
    if req is None:
        return jsonify({"errors": errors}), 400
    try:
        ids = launching.launch(services().celery, req)
    except launching.BrokerUnavailable as exc:
        return jsonify({"error": str(exc), "task_ids": exc.sent}), 503
    return jsonify({"task_ids": ids})


@bp.app_errorhandler(404)
def _not_found(exc: Any) -> Any:
    # JSON for API paths (tooling parses it), Flask's page for everything else.
    if request.path.startswith("/api/"):
        return jsonify({"error": f"no such endpoint: {request.path}"}), 404
    return exc

