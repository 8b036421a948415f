"""One launch flow for the form and the API: the catalogue, validate, send, audit; errors in the contract's shape."""

from __future__ import annotations

import time
from typing import Any

from flask import request

from ..cluster import launch as launching
from ..cluster.errors import BrokerUnavailable
from .errors import Invalid, Unavailable
from .security import current_user
from .services import services


def catalogue() -> list[launching.TaskSpec]:
    """What may be launched now: the app's tasks (or, without an app, the demo tasks and the names online
    workers report registered), with the online workers that have each, narrowed by LAUNCHABLE."""
    svc = services()
    now = time.time()
    with svc.state.lock:
        online = {h for h, w in svc.state.workers.items() if w.alive(now)}
    registered = {
        host: launching.registered_names(reply)
        for host, reply in svc.inspector.replies("registered").items()
        if host in online
    }
    return launching.catalogue(svc.app_tasks, registered, str(svc.config["LAUNCHABLE"]))


def submit(data: Any, via: str) -> tuple[list[str], int, str | None]:
    """Validate `data` and send the task(s): (task ids, audit id, the task's warning or None).

    Invalid (400, per-field messages) sends nothing and writes no audit entry; Unavailable (503) when the
    broker failed, with the ids sent before it did and the audit entry that records it. A task no online
    worker has registered is sent only once confirmed (`unregistered_ok`, the form's "Launch it anyway"):
    until then a 400 on `task` carries the warning, from the form and the API alike.
    """
    if not isinstance(data, dict):
        raise Invalid.field("form", "the body must be a JSON object")
    req, errors = launching.validate(data, catalogue(), confirm=True)
    if req is None:
        name, first = next(iter(errors.items()))
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        asks = errors.get("task", "").endswith(launching.CONFIRM)
        extra: dict[str, Any] = {"confirm": launching.UNREGISTERED_OK} if asks else {}  # the field that confirms it
        raise Invalid(f"nothing was sent: {name}: {first}{more}", fields=errors, **extra)
    svc = services()
    try:
        ids, audit_id = launching.send_audited(
            svc.celery, req, svc.audit, user=current_user(), remote_addr=request.remote_addr, via=via
        )
    except BrokerUnavailable as exc:
        raise Unavailable(str(exc), fields={"form": str(exc)}, task_ids=exc.sent, audit_id=exc.audit_id) from exc
    return ids, audit_id, req.warning
