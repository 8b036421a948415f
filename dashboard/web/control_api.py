"""Control endpoints: worker and task-type control, revoke/terminate/re-run, bulk actions, audit log.

Every POST is refused in read-only mode or cross-site by security's guard, and needs JSON
(security.control_endpoint). Input is validated first (400/404, not audited); an accepted action is
audited exactly once, whether it
succeeded, failed on the broker (503) or found nothing to do. Inspect replies come from the
inspector's cache: no request waits for a worker.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any, NamedTuple

from flask import Blueprint, jsonify, request

from ..cluster import control
from ..cluster.errors import BrokerUnavailable
from ..cluster.inspector import LIST_METHODS
from ..core import rerun
from ..core.query import TEXT_FILTERS, TIME_FILTERS, Filters, find, parse_filters
from .errors import Invalid, NotFound, TaskNotSeen, Unavailable, WorkerNotSeen, whole_number
from .security import control_endpoint, current_user
from .services import Services, services

log = logging.getLogger(__name__)
bp = Blueprint("control", __name__)

UNFINISHED = ("PENDING", "RECEIVED", "STARTED", "RETRY")  # what a bulk revoke may act on
SAMPLE = 10
BULK_FILTERS = frozenset((*TEXT_FILTERS, *TIME_FILTERS))  # the task list's filters, nothing else
AUDIT_SHOWN_MAX = 1000
_POOL_ACTIONS = ("pool_grow", "pool_shrink", "autoscale", "pool_restart")


# -- helpers ---------------------------------------------------------------------------------------
def _body() -> dict[str, Any]:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise Invalid("the body must be a JSON object")
    return data


def _audit(
    svc: Services,
    action: str,
    target: Any,
    params: dict[str, Any],
    ok: bool,
    message: str,
    replies: dict[str, Any] | None = None,
) -> int:
    entry = svc.audit.record(
        action, target, params, ok, message, replies, user=current_user(), remote_addr=request.remote_addr
    )
    return entry["id"]


def _online(svc: Services) -> int:
    with svc.state.lock:
        return svc.state.workers_online(time.time())


def _outcome(svc: Services, action: str, target: Any, params: dict[str, Any], run: Any) -> tuple[Any, Any]:
    """Run a broker action, audit it once, and answer with the contract's reply shape."""
    try:
        outcome = run()
    except BrokerUnavailable as exc:
        raise Unavailable(str(exc), audit_id=_audit(svc, action, target, params, False, str(exc))) from exc
    audit_id = _audit(svc, action, target, params, outcome.ok, outcome.message, outcome.replies)
    return outcome, jsonify(
        {"ok": outcome.ok, "replies": outcome.replies, "audit_id": audit_id, "message": outcome.message}
    )


# -- workers ---------------------------------------------------------------------------------------
@bp.get("/api/workers/<path:hostname>")  # path: a hostname may hold a "/"
def worker(hostname: str) -> Any:
    """One worker: summary, every inspect method's cached reply; ?refresh=1 refreshes in the background."""
    svc = services()
    now = time.time()
    with svc.state.lock:
        rec = svc.state.workers.get(hostname)
        if rec is None:
            raise WorkerNotSeen(hostname)
        row = svc.views.worker_row(rec, now)
    refresh = request.args.get("refresh", "") in ("1", "true", "yes")
    if refresh:
        svc.inspector.request_refresh(hostname)
    return jsonify(
        {
            "worker": row,
            "inspect": svc.inspector.worker(hostname),
            "refreshing": refresh or svc.inspector.refreshing(hostname),
        }
    )


@bp.post("/api/workers/<path:hostname>/control")
@control_endpoint
def worker_control(hostname: str) -> Any:
    """{"action", "n" | "max"/"min" | "queue"} -> {"ok", "replies", "audit_id", "message"}."""
    svc = services()
    body = _body()
    with svc.state.lock:
        known = hostname in svc.state.workers
    if not known:
        raise WorkerNotSeen(hostname)
    action, arguments = control.worker_command(body)
    params = {k: v for k, v in arguments.items() if k in ("n", "max", "min", "queue")}
    timeout = float(svc.config["CONTROL_TIMEOUT"])
    outcome, response = _outcome(
        svc, action, hostname, params, lambda: control.control_worker(svc.celery, hostname, action, arguments, timeout)
    )
    if outcome is not None and outcome.ok:
        if action in _POOL_ACTIONS:
            svc.inspector.watch(hostname)  # the pool changes within seconds: show the new size soon
        elif action in ("add_consumer", "cancel_consumer"):
            svc.inspector.request_refresh(hostname, LIST_METHODS)
    return response


@bp.post("/api/task-types/control")
@control_endpoint
def task_type_control() -> Any:
    """{"action": "rate_limit"|"time_limit", "task", "rate" | "soft"/"hard", "workers"?} -> reply shape."""
    svc = services()
    action, arguments, workers = control.task_type_command(_body())
    params = (
        {"rate": arguments["rate_limit"]}
        if action == "rate_limit"
        else {"soft": arguments["soft"], "hard": arguments["hard"]}
    )
    if workers:
        params["workers"] = workers
    timeout = float(svc.config["CONTROL_TIMEOUT"])
    online = _online(svc)
    outcome, response = _outcome(
        svc,
        action,
        arguments["task_name"],
        params,
        lambda: control.control_task_type(svc.celery, action, arguments, workers, timeout, online),
    )
    if outcome is not None and outcome.ok and outcome.replies:
        # One broadcast to every worker that replied (not one thread and connection per worker).
        svc.inspector.request_refresh_many(list(outcome.replies), ("registered",))  # shows "[rate_limit=10/m]"
    return response


# -- tasks -----------------------------------------------------------------------------------------
@bp.post("/api/tasks/<uuid>/revoke")
@control_endpoint
def revoke(uuid: str) -> Any:
    """{"terminate": bool, "signal": name} -> reply shape (revoke is broadcast to every worker)."""
    svc = services()
    terminate, signal = control.revoke_options(_body())
    with svc.state.lock:
        if uuid not in svc.state.tasks:
            raise TaskNotSeen(uuid)
    params = {"terminate": terminate, "signal": signal} if terminate else {"terminate": False}
    timeout = float(svc.config["CONTROL_TIMEOUT"])
    online = _online(svc)
    _, response = _outcome(
        svc,
        "terminate" if terminate else "revoke",
        uuid,
        params,
        lambda: control.revoke(svc.celery, [uuid], terminate, signal, timeout, online),
    )
    return response


def _plan(svc: Services, uuid: str) -> rerun.RerunPlan | None:
    with svc.state.lock:
        rec = svc.state.tasks.get(uuid)
        return None if rec is None else rerun.plan(rec)


@bp.get("/api/tasks/<uuid>/rerun")
def rerun_plan(uuid: str) -> Any:
    """Whether the task can be re-run with its exact args and kwargs, and why not."""
    plan = _plan(services(), uuid)
    if plan is None:
        raise TaskNotSeen(uuid)
    return jsonify(plan.as_dict())


def _send(svc: Services, plan: rerun.RerunPlan) -> str:
    return control.send_again(
        svc.celery, plan.name or "", plan.args or [], plan.kwargs or {}, plan.queue, plan.exchange, plan.routing_key
    )


@bp.post("/api/tasks/<uuid>/rerun")
@control_endpoint
def rerun_task(uuid: str) -> Any:
    """{} -> {"ok": true, "task_id", "audit_id"}; 400 with the reason when the args are not exact."""
    svc = services()
    _body()
    plan = _plan(svc, uuid)
    if plan is None:
        raise TaskNotSeen(uuid)
    if not plan.possible:
        raise Invalid(f"cannot re-run: {plan.reason}")
    params = {"name": plan.name, "queue": plan.queue}
    try:
        new_id = _send(svc, plan)
    except BrokerUnavailable as exc:
        raise Unavailable(str(exc), audit_id=_audit(svc, "rerun", uuid, params, False, str(exc))) from exc
    params["task_id"] = new_id
    audit_id = _audit(svc, "rerun", uuid, params, True, f"re-run of {plan.name} sent as {new_id}")
    return jsonify({"ok": True, "task_id": new_id, "audit_id": audit_id})


# -- bulk ------------------------------------------------------------------------------------------
def _selection(svc: Services, body: dict[str, Any]) -> tuple[Filters, dict[str, Any]]:
    group, raw = body.get("group"), body.get("filters")
    if (group is None) == (raw is None):
        raise Invalid('send either "group" (a failure group id) or "filters" (task list filters)')
    if group is not None:
        if not isinstance(group, str) or not group:
            raise Invalid("group must be a failure group id")
        with svc.state.lock:
            exists = svc.state.failure_groups.group(group, now=time.time()) is not None
        if not exists:
            raise NotFound(f"no failure group {group}")
        return Filters(group=group), {"group": group}
    if not isinstance(raw, dict):
        raise Invalid("filters must be an object like the /api/tasks query: state, name, worker, ...")
    unknown = sorted(set(raw) - BULK_FILTERS)
    if unknown:  # a typo must not widen a bulk action to every task
        raise Invalid(f"unknown filter(s) {', '.join(map(repr, unknown))}: use {', '.join(sorted(BULK_FILTERS))}")
    filters, error = parse_filters(raw)
    if filters is None:
        raise Invalid(error or "bad filters")
    return filters, {"filters": {k: v for k, v in raw.items() if v not in (None, "")}}


class _Snap(NamedTuple):
    """The fields a re-run needs, copied out of a task record (parsed outside the state lock)."""

    uuid: str
    name: Any
    args: Any
    kwargs: Any
    queue: Any
    exchange: Any
    routing_key: Any


def _eligible(
    svc: Services, action: str, f: Filters, before: int | None = None, enough: int | None = None
) -> tuple[int, list[Any], dict[str, int], int]:
    """(matched, eligible items newest first, skipped counts by reason, cursor); items are uuids or
    (uuid, plan). Only tasks first seen before `before` count (the set a dry run showed); the cursor is
    that bound for a later run. With `enough`, re-runs stop being planned once that many are eligible."""
    skipped: Counter[str] = Counter()
    eligible: list[Any] = []
    with svc.state.lock:
        st = svc.state
        cursor = before if before is not None else st.last_seq() + 1
        matched, recs = find(st, f, limit=max(1, len(st.tasks)), text_index=svc.views.text_index, before=cursor)
        if action == "revoke":
            for rec in recs:
                if rec.state in UNFINISHED:
                    eligible.append(rec.uuid)
                else:
                    skipped["already finished"] += 1
            return matched, eligible, dict(skipped), cursor
        snaps = [_Snap(r.uuid, r.name, r.args, r.kwargs, r.queue, r.exchange, r.routing_key) for r in recs]
    for snap in snaps:  # parsing thousands of reprs must not hold up ingest
        if enough is not None and len(eligible) >= enough:
            break
        plan = rerun.plan(snap)
        if plan.possible:
            eligible.append((snap.uuid, plan))
        else:
            skipped[plan.code or "not possible"] += 1
    return matched, eligible, dict(skipped), cursor


@bp.post("/api/bulk")
@control_endpoint
def bulk() -> Any:
    """Re-run or revoke a failure group or a filtered set: a dry run counts, a run acts on ≤ the cap."""
    svc = services()
    body = _body()
    action = body.get("action")
    if action not in ("rerun", "revoke"):
        raise Invalid("action must be rerun or revoke")
    dry_run = body.get("dry_run", True)
    terminate = body.get("terminate", False)
    if not isinstance(dry_run, bool) or not isinstance(terminate, bool):
        raise Invalid("dry_run and terminate must be true or false")
    cap = int(svc.config["BULK_MAX"])
    limit: Any = body.get("limit")  # an int from 1 to cap unless dry_run (checked here)
    if not dry_run and (isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= cap):
        raise Invalid(f"limit must be the confirmed count, a whole number from 1 to {cap}")
    cursor = body.get("cursor")
    if cursor is not None and (isinstance(cursor, bool) or not isinstance(cursor, int) or cursor < 1):
        raise Invalid("cursor must be the cursor of the dry run")
    f, target = _selection(svc, body)
    # The run acts on the tasks the dry run counted (first seen before its cursor), not on newer ones.
    matched, eligible, skipped, cursor = _eligible(
        svc, action, f, before=cursor, enough=None if dry_run else min(cap, limit)
    )
    ids = [item if action == "revoke" else item[0] for item in eligible]
    if dry_run:
        return jsonify(
            {
                "matched": matched,
                "eligible": len(eligible),
                "cap": cap,
                "will_act_on": min(len(eligible), cap),
                "skipped": skipped,
                "sample": ids[:SAMPLE],
                "cursor": cursor,
            }
        )
    chosen = eligible[: min(len(eligible), cap, limit)]
    params = {"limit": limit, "matched": matched, "eligible": len(eligible), "acted_on": len(chosen)}
    if action == "revoke":
        params["terminate"] = terminate
        return _bulk_revoke(svc, target, params, chosen, terminate)
    return _bulk_rerun(svc, target, params, chosen)


def _bulk_revoke(
    svc: Services, target: dict[str, Any], params: dict[str, Any], uuids: list[str], terminate: bool
) -> Any:
    replies: dict[str, Any] = {}
    failed: list[str] = []
    status = 200
    message = "nothing to revoke"
    if uuids:
        timeout = float(svc.config["CONTROL_TIMEOUT"])
        try:  # one broadcast for the whole list
            outcome = control.revoke(svc.celery, uuids, terminate, "SIGTERM", timeout, _online(svc))
            replies, message = outcome.replies, outcome.message
            if not outcome.ok:
                failed.append(outcome.message)
        except BrokerUnavailable as exc:
            failed.append(str(exc))
            message, status = str(exc), 503
    # A worker's error reply does not undo the broadcast: every listed task was revoked, the errors say
    # where a worker complained. Only a broadcast that never left (503) revoked nothing.
    revoked = uuids if status == 200 else []
    params["acted_on"] = len(revoked)
    audit_id = _audit(svc, "bulk_revoke", target, params, not failed, message, replies)
    return _bulk_answer(
        status, message, acted_on=len(revoked), task_ids=[], revoked=revoked, failed=failed, audit_id=audit_id
    )


def _bulk_rerun(
    svc: Services, target: dict[str, Any], params: dict[str, Any], chosen: list[tuple[str, rerun.RerunPlan]]
) -> Any:
    new_ids: list[str] = []
    failed: list[str] = []
    for uuid, plan in chosen:
        try:
            new_ids.append(_send(svc, plan))
        except BrokerUnavailable as exc:
            failed.append(f"{uuid}: {exc}")
            break  # the broker is gone: the rest would fail the same way
    params.update(acted_on=len(new_ids), task_ids=new_ids)
    message = f"re-ran {len(new_ids)} of {len(chosen)} task(s)" + (f"; {failed[0]}" if failed else "")
    audit_id = _audit(svc, "bulk_rerun", target, params, not failed, message)
    status = 503 if failed and not new_ids else 200
    return _bulk_answer(
        status, message, acted_on=len(new_ids), task_ids=new_ids, revoked=[], failed=failed, audit_id=audit_id
    )


def _bulk_answer(status: int, message: str, **body: Any) -> Any:
    """A bulk run's answer: acted on, ids, per-item problems under `failed`; nothing done at all is a 503
    in the error contract's shape, with the same fields as context."""
    if status != 200:
        raise Unavailable(message, ok=False, **body)
    return jsonify({"ok": not body["failed"], **body})


# -- audit -----------------------------------------------------------------------------------------
@bp.get("/api/audit")
def audit() -> Any:
    """The latest audit entries, newest first: ?limit=100 (at most 1000)."""
    limit = whole_number(request.args.get("limit", "100"), "limit", 1, AUDIT_SHOWN_MAX)
    return jsonify({"entries": services().audit.entries(limit)})
