"""HTML pages: server-rendered Jinja, enhanced by the ES modules in static/js/."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, jsonify, render_template, request
from flask_wtf.csrf import CSRFError

from ..core.query import Filters, parse_filters
from ..core.records import STATES
from . import launches
from .errors import ApiError, Invalid, respond
from .gate import wants_json
from .security import controls_enabled, current_user
from .services import services

log = logging.getLogger(__name__)
bp = Blueprint("views", __name__)


@bp.app_context_processor
def _globals() -> dict[str, Any]:
    return {
        "push_interval": services().config["PUSH_INTERVAL"],
        "states": STATES,
        # Read-only mode hides every control (and the endpoints refuse them: security.control_endpoint).
        "controls_enabled": controls_enabled(),
        "launchable": services().config["LAUNCHABLE"],
        "app_name": services().config["APP"],
        "has_app": services().user_app is not None,  # the Beat page and the overview's beat notice need it
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
    return render_template(
        "tasks.html", f=filters, workers=workers, catalogue=_catalogue(), form={}, errors={}, launched=[]
    )


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


def _catalogue() -> list[dict[str, Any]]:
    """The launch form's tasks (dashboard/web/launches.py), as the template and launch.js read them."""
    return [t.as_dict() for t in launches.catalogue()]


def _picked() -> dict[str, Any]:
    """`?task=NAME` picks the form's task (how the form changes task without JavaScript)."""
    task = request.args.get("task")
    return {"task": task} if task else {}


def _launch_page(form: dict[str, Any], errors: dict[str, str], launched: list[str], **more: Any) -> str:
    return render_template("launch.html", catalogue=_catalogue(), form=form, errors=errors, launched=launched, **more)


@bp.route("/launch", methods=["GET", "POST"])
def launch() -> Any:
    """The launch form: validated on the server; nothing is sent when any field is wrong.

    A JSON client gets the API's answers (the error contract); a browser gets the page again with the
    form as it was and each field's message. A task no online worker has registered is sent only once the
    form confirms it (the page then shows the warning and the box that confirms it).
    """
    if request.method == "GET":
        return _launch_page(_picked(), {}, [])
    # (Read-only mode and cross-site posts never get here: security's guard refuses them first.)
    data: Any = request.get_json(silent=True) if request.is_json else request.form.to_dict()
    try:
        launched, audit_id, _ = launches.submit(data, via="form")
    except ApiError as exc:
        if wants_json(request):
            raise
        form = data if isinstance(data, dict) else {}
        return _launch_page(
            form,
            exc.fields,
            exc.context.get("task_ids", []),
            audit_id=exc.context.get("audit_id"),
            confirm=bool(exc.context.get("confirm")),
        ), exc.status
    if wants_json(request):
        return jsonify({"task_ids": launched, "audit_id": audit_id})  # (a warning was confirmed to get here)
    return _launch_page(data, {}, launched, audit_id=audit_id)


@bp.app_errorhandler(CSRFError)
def _csrf_error(exc: CSRFError) -> Any:
    message = f"{exc.description} Reload the page and try again."
    if wants_json(request):
        return respond(Invalid.field("form", message))
    return _launch_page(request.form.to_dict(), {"form": message}, []), 400
