"""HTML pages: server-rendered Jinja, enhanced by the ES modules in static/js/."""
from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, jsonify, render_template, request
from flask_wtf.csrf import CSRFError

from ..cluster import launch as launching
from ..core.query import Filters, parse_filters
from ..core.state import STATES
from .security import controls_enabled, current_user
from .services import services

log = logging.getLogger(__name__)
bp = Blueprint("views", __name__)


@bp.app_context_processor
def _globals() -> dict[str, Any]:
    return {
        "push_interval": services().config["PUSH_INTERVAL"],
        "catalogue": [t.as_dict() for t in launching.CATALOGUE],
        "states": STATES,
        # Read-only mode hides every control (and the endpoints refuse them: security.control_endpoint).
        "controls_enabled": controls_enabled(),
        "current_user": current_user(),
    }


@bp.get("/")
def overview() -> str:
    """Counts, workers, throughput and latest failures."""
    return render_template("overview.html")


@bp.get("/tasks")
def tasks() -> str:
    """The live task list, with filters and the launch form."""
    filters, error = parse_filters(request.args)
    if filters is None:  # a hand-edited URL: show everything rather than an error page
        log.info("ignoring bad task filters: %s", error)
        filters = Filters()
    state = services().state
    with state.lock:
        workers = sorted(state.workers)
    return render_template("tasks.html", f=filters, workers=workers, form={}, errors={}, launched=[])


@bp.get("/tasks/<uuid>")
def task(uuid: str) -> str:
    """One task: fields, exception, traceback, timeline, relatives."""
    return render_template("task.html", uuid=uuid)


@bp.get("/failures")
def failures() -> str:
    """Failures grouped by signature, with outcomes (recovered, gave up)."""
    return render_template("failures.html")


@bp.get("/stats")
def stats() -> str:
    """Per-task-name statistics: failure rate, runtime and queue-wait percentiles."""
    return render_template("stats.html")


@bp.get("/workers")
def workers() -> str:
    """Workers and their heartbeats."""
    return render_template("workers.html")


@bp.get("/workers/<path:hostname>")  # path: a hostname may hold a "/"
def worker(hostname: str) -> str:
    """One worker: heartbeat, what `inspect` returns (cached), and its controls."""
    return render_template("worker.html", hostname=hostname)


@bp.get("/queues")
def queues() -> str:
    """Queue lengths from the broker, consumers, oldest waiting task, queue-wait percentiles."""
    return render_template("queues.html")


@bp.get("/audit")
def audit() -> str:
    """The audit log: every control action, who did it, when, and what the workers replied."""
    return render_template("audit.html")


def _wants_json() -> bool:
    return request.is_json or request.accept_mimetypes.best == "application/json"


@bp.route("/launch", methods=["GET", "POST"])
def launch() -> Any:
    """The launch form: validated on the server; nothing is sent when any field is wrong."""
    if request.method == "GET":
        return render_template("launch.html", form={}, errors={}, launched=[])
    # (Read-only mode and cross-site posts never get here: security's guard refuses them first.)
    data = request.get_json(silent=True) if request.is_json else request.form.to_dict()
    if not isinstance(data, dict):
        data, errors = {}, {"form": "the body must be a JSON object"}
        req = None
    else:
        req, errors = launching.validate(data)
    status = 200
    launched: list[str] = []
    audit_id: int | None = None
    if req is not None:
        svc = services()
        try:  # audited like a control action, sent or not (a refused form sends nothing and is not audited)
            launched, audit_id = launching.send_audited(svc.celery, req, svc.audit, user=current_user(),
                                                        remote_addr=request.remote_addr, via="form")
        except launching.BrokerUnavailable as exc:
            errors, status, launched, audit_id = {"form": str(exc)}, 503, exc.sent, exc.audit_id
    else:
        status = 400
    if _wants_json():
        body: dict[str, Any] = {"task_ids": launched} if status == 200 else {"errors": errors, "task_ids": launched}
        if audit_id is not None:
            body["audit_id"] = audit_id
        return jsonify(body), status
    return render_template("launch.html", form=data, errors=errors, launched=launched, audit_id=audit_id), status


@bp.app_errorhandler(CSRFError)
def _csrf_error(exc: CSRFError) -> Any:
    message = f"{exc.description} Reload the page and try again."
    if _wants_json():
        return jsonify({"error": message, "errors": {"form": message}}), 400
    return render_template("launch.html", form=request.form.to_dict(), errors={"form": message},
                           launched=[]), 400
