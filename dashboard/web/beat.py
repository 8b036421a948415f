"""The Beat page and its API: the periodic schedule (dashboard/cluster/beat.py) with next runs, the last run
seen and missed runs (dashboard/live/beat.py), and Run now, confirmed in the browser and audited."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, jsonify, render_template, request

from ..cluster.beat import BeatSchedule
from ..cluster.errors import BrokerUnavailable
from ..live.beat import beat_view
from .errors import Invalid, NotFound, Unavailable
from .security import control_endpoint, current_user
from .services import Services, services

bp = Blueprint("beat", __name__)


def _schedule(svc: Services) -> BeatSchedule:
    return svc.beat or BeatSchedule(None, 0.0)


@bp.get("/beat")
def page() -> str:
    """The periodic entries, their next and last runs, missed runs, and Run now."""
    return render_template("beat.html")


@bp.get("/api/beat")
def api_beat() -> Any:
    """{"entries": [...], "beat_down", "note", "grace"} (docs/api.md)."""
    svc = services()
    now = time.time()
    since = None
    listening = svc.reader is None or svc.ingest.connected  # without ingest (tests) the state is all there is
    if svc.reader is not None:
        since = svc.ingest.since if listening else now  # runs sent while nobody listened are not missed
    view = beat_view(svc.state, _schedule(svc), float(svc.config["BEAT_GRACE"]), now=now, since=since)
    if not listening:
        view["note"] = " ".join(
            filter(None, [view["note"], "The event stream is not connected: missed runs are not judged meanwhile."])
        )
    return jsonify(view)


@bp.post("/api/beat/<path:name>/run")
@control_endpoint
def run_now(name: str) -> Any:
    """{} -> {"ok": true, "task_id", "audit_id", "message"}: the entry's task sent with its args and options."""
    svc = services()
    if not isinstance(request.get_json(silent=True), dict):
        raise Invalid("the body must be a JSON object")
    schedule = _schedule(svc)
    entries, _ = schedule.entries()
    entry = next((e for e in entries if e.name == name), None)
    if entry is None:
        raise NotFound(f"no periodic entry named {name!r}")
    if not entry.task:
        raise Invalid(f"the entry {name!r} names no task")
    params: dict[str, Any] = {"task": entry.task, "source": entry.source}
    user, remote = current_user(), request.remote_addr
    try:
        task_id = schedule.run_now(entry)
    except BrokerUnavailable as exc:
        audit_id = svc.audit.record("beat_run", name, params, False, str(exc), user=user, remote_addr=remote)["id"]
        raise Unavailable(str(exc), audit_id=audit_id) from exc
    params["task_id"] = task_id
    message = f"{entry.task} of {name} sent as {task_id}"
    audit_id = svc.audit.record("beat_run", name, params, True, message, user=user, remote_addr=remote)["id"]
    return jsonify({"ok": True, "task_id": task_id, "audit_id": audit_id, "message": message})
