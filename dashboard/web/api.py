"""JSON API and /healthz: a stable contract that tooling relies on."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from flask import Blueprint, Response, jsonify, request

from ..core.query import SORTS, find, parse_filters, workflow_tree
from ..core.records import LONG_FIELDS, TaskRecord, derived_runtime, task_detail
from ..live.readmodels import MAX_LIMIT
from . import launches, limits
from .errors import Invalid, NotFound, TaskNotSeen, whole_number
from .security import control_endpoint
from .services import Services, services

log = logging.getLogger(__name__)
bp = Blueprint("api", __name__)


@bp.get("/healthz")
def healthz() -> Any:
    """Broker connection, event counters, retained tasks and workers online.

    Always 200 while the process serves: `ok` says whether the broker is connected, because
    restarting the dashboard would not bring a broker back.
    """
    svc = services()
    status = svc.views.status()
    now = time.time()
    with svc.state.lock:
        tasks = {
            "retained": len(svc.state.tasks),
            "evicted": svc.state.evicted,
            "max": svc.state.max_tasks,
            "lost": svc.state.lost,
            "from_backend": svc.state.from_backend,
            "unreported": svc.state.unreported,
        }
        workers = {"online": svc.state.workers_online(now), "known": len(svc.state.workers)}
    body = {
        "ok": status["broker"]["connected"],
        "broker": status["broker"],
        "events": status["events"],
        "tasks": tasks,
        "workers": workers,
        "server": _server(svc),
        "snapshot": svc.snapshots.status() if svc.snapshots is not None else None,
        "clients": {
            "subscribed": len(svc.rooms.subs),
            "rooms": len(svc.rooms.rooms),
            "lagging": len(svc.rooms.lagging),
            "times_lagged": svc.rooms.skipped,
            "tick": svc.rooms.tick_cost(),
        },
    }
    return jsonify(body), 200


def _server(svc: Services) -> dict[str, Any]:
    out: dict[str, Any] = {"async_mode": svc.config["ASYNC_MODE"], "idle_sessions_closed": svc.rooms.idle_closed}
    if svc.connections is not None:
        out["connections"] = svc.connections.status()
    if svc.reader is not None:
        out["reader_starts"] = svc.reader.starts
    return out


def _list_request() -> dict[str, Any]:
    """The task-list parameters shared by /api/tasks and its export (Invalid when one is wrong)."""
    args = request.args
    limit = whole_number(args.get("limit", "50"), "limit", 1, MAX_LIMIT)
    offset = whole_number(args.get("offset", "0"), "offset", 0, sys.maxsize)
    sort = args.get("sort") or None
    if sort is not None and sort not in SORTS:
        raise Invalid.field("sort", f"sort must be one of {', '.join(SORTS)} (default: newest first)")
    order = args.get("order", "desc")
    if order not in ("asc", "desc"):
        raise Invalid.field("order", "order must be asc or desc")
    cursor = args.get("cursor") or None
    before = None
    if cursor is not None:
        if not (cursor.isascii() and cursor.isdecimal()) or sort is not None:
            raise Invalid.field("cursor", "cursor must be a next_cursor of an earlier answer (newest-first order only)")
        before = int(cursor)
    filters, error = parse_filters(args)
    if filters is None:
        raise Invalid(error or "bad filter")
    return {"f": filters, "limit": limit, "offset": offset, "sort": sort, "ascending": order == "asc", "before": before}


@bp.get("/api/tasks")
def tasks() -> Any:
    """Tasks: ?state=&name=&worker=&queue=&q=&since=&until=&sort=&order=&limit=&offset=&cursor= ->
    {total, tasks, next_cursor}."""
    return jsonify(services().views.tasks_snapshot(**_list_request()))


EXPORT_FIELDS = (
    "uuid",
    "name",
    "state",
    "hostname",
    "queue",
    "args",
    "kwargs",
    "result",
    "exception",
    "retries",
    "sent",
    "received",
    "started",
    "succeeded",
    "failed",
    "runtime",
    "runtime_derived",
    "parent_id",
    "root_id",
)


EXPORT_CHUNK = 1_000  # rows built per step: between steps the hub serves everyone else (pause)


@bp.get("/api/tasks/export")
def export() -> Any:
    """Every task matching the list filters (up to the retained ones) as ?format=csv or json, a download."""
    fmt = request.args.get("format", "csv")
    if fmt not in ("csv", "json"):
        raise Invalid.field("format", "format must be csv or json")
    params = _list_request()
    slots = limits.export_slots()
    if not slots.try_acquire():  # each export holds a core for up to a second: a few at a time, never a queue
        return limits.busy_exports()
    try:
        svc = services()
        with svc.state.lock:
            _, recs = find(
                svc.state,
                params["f"],
                limit=len(svc.state.tasks) or 1,
                text_index=svc.views.text_index,
                sort=params["sort"],
                ascending=params["ascending"],
            )
    except BaseException:
        slots.release()
        raise
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return Response(
        _export_chunks(fmt, recs, svc, slots.release),
        mimetype="application/json" if fmt == "json" else "text/csv",
        headers={"Content-Disposition": f'attachment; filename="tasks-{stamp}.{fmt}"', "X-Total-Count": str(len(recs))},
    )


def _export_chunks(fmt: str, recs: list[TaskRecord], svc: Services, done: Callable[[], None]) -> Iterator[str]:
    """The export, streamed a chunk of rows at a time (each copied under the state lock, then serialised),
    pausing between chunks so that a 100,000-task export never holds the server; `done()` at the end."""
    try:
        yield "[" if fmt == "json" else ",".join(EXPORT_FIELDS) + "\r\n"
        for start in range(0, len(recs), EXPORT_CHUNK):
            if start:
                svc.runtime.pause()
            with svc.state.lock:
                rows = [_export_row(r) for r in recs[start : start + EXPORT_CHUNK]]
            if fmt == "json":
                body = json.dumps([dict(zip(EXPORT_FIELDS, row)) for row in rows], default=str)[1:-1]
                yield ("," if start and body else "") + body
            else:
                yield "".join(",".join([_csv_cell(v) for v in row]) + "\r\n" for row in rows)
        if fmt == "json":
            yield "]"
    finally:
        done()


def _export_row(rec: TaskRecord) -> list[Any]:
    return [derived_runtime(rec) if field == "runtime_derived" else getattr(rec, field) for field in EXPORT_FIELDS]


# Task data is untrusted and a spreadsheet runs a cell starting with = + - @ (or tab, CR) as a formula. A
# spreadsheet in a ';' or tab locale splits a ','-file's lines at its own separator, ignoring quotes that
# do not open a field, so every segment after , ; tab or a line break counts as a cell start (quotes that
# such a reader may strip skipped). Those get OWASP's ' prefix: text, and still readable.
_FORMULA_AT_START = re.compile(r'\A"*(?=[=+\-@\t\r])|(?<=[,;\t\r\n])"*(?=[=+\-@])')
# csv.QUOTE_MINIMAL quotes only the file's own delimiter: a ';' or a tab inside a cell must be quoted too.
_NEEDS_QUOTES = re.compile(r'[,;\t\r\n"]')
_PLAIN = re.compile(r'[^,;\t\r\n"=+\-@][^,;\t\r\n"]*')  # most cells: one match and they are written as they are


def _csv_cell(value: Any) -> str:
    """One CSV field: formula starts defused with ', quoted when it holds any locale's separator or a line break."""
    if value is None:
        return ""
    if not isinstance(value, str):
        return str(value) if isinstance(value, (int, float)) else _csv_cell(str(value))
    if _PLAIN.fullmatch(value):
        return value
    text = _FORMULA_AT_START.sub(lambda m: m.group(0) + "'", value)
    if _NEEDS_QUOTES.search(text):
        return '"' + text.replace('"', '""') + '"'
    return text


@bp.get("/api/tasks/<uuid>")
def task(uuid: str) -> Any:
    """One task with traceback, history, attempts and children; 404 when never seen."""
    svc = services()
    with svc.state.lock:
        rec = svc.state.tasks.get(uuid)
        if rec is None:
            raise TaskNotSeen(uuid)
        return jsonify(task_detail(rec, svc.state.children_of(uuid), full=request.args.get("full") == "1"))


@bp.get("/api/tasks/<uuid>/fields/<name>")
def task_field(uuid: str, name: str) -> Any:
    """One long field of a task (args, kwargs, result, exception, traceback) whole, as plain text."""
    if name not in LONG_FIELDS:
        raise NotFound(f"no field {name!r}: one of {', '.join(LONG_FIELDS)}")
    svc = services()
    with svc.state.lock:
        rec = svc.state.tasks.get(uuid)
        value = getattr(rec, name) if rec is not None else None
    if rec is None:
        raise TaskNotSeen(uuid)
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    # Untrusted text: plain, never sniffed as HTML, shown inline rather than downloaded.
    return Response(
        text,
        mimetype="text/plain",
        headers={
            "X-Content-Type-Options": "nosniff",
            "Content-Disposition": f'inline; filename="{name}.txt"',
            "Content-Security-Policy": "default-src 'none'",
        },
    )


@bp.get("/api/tasks/<uuid>/workflow")
def workflow(uuid: str) -> Any:
    """The task's whole workflow from its root: {root, nodes: [{uuid, parent, name, state}], truncated}."""
    svc = services()
    with svc.state.lock:
        if uuid not in svc.state.tasks:
            raise TaskNotSeen(uuid)
        tree = workflow_tree(svc.state, uuid)
    return jsonify(tree or {"root": uuid, "nodes": [], "truncated": False})


@bp.get("/api/failures")
def failures() -> Any:
    """Failure groups: ?sort=last_seen|count&limit= -> {groups, outcomes}."""
    sort = request.args.get("sort", "last_seen")
    if sort not in ("last_seen", "count"):
        raise Invalid.field("sort", "sort must be last_seen or count")
    limit = whole_number(request.args.get("limit", "50"), "limit", 1, MAX_LIMIT)
    return jsonify(services().views.failures_snapshot(sort=sort, limit=limit))


@bp.get("/api/failures/<gid>")
def failure_group(gid: str) -> Any:
    """One failure group with its sample traceback; its tasks are /api/tasks?group=<gid>."""
    svc = services()
    with svc.state.lock:
        group = svc.state.failure_groups.group(gid, now=time.time())
    if group is None:
        raise NotFound(f"no failure group {gid}")
    return jsonify(group)


@bp.get("/api/stats/tasks")
def task_stats() -> Any:
    """Per task name: count, failure rate, runtime p50/p95/p99, queue wait p50/p95 (?window=all|recent)."""
    window = request.args.get("window", "all")
    if window not in ("all", "recent"):
        raise Invalid.field("window", "window must be all or recent")
    snap = services().views.stats_snapshot((window,))
    return jsonify({"window": window, "window_seconds": snap["window_seconds"], "tasks": snap[window]})


@bp.get("/api/workers")
def workers() -> Any:
    """Every known worker with its heartbeat status."""
    return jsonify(services().views.workers_snapshot())


@bp.get("/api/overview")
def overview() -> Any:
    """What the overview page shows."""
    return jsonify(services().views.overview_snapshot())


@bp.post("/api/launch")
@control_endpoint
def launch() -> Any:
    """{"task", "args", "kwargs", "params", "count", "countdown", "eta", "expires", "priority", "queue"} ->
    {"task_ids", "audit_id"} (and "warning" when no online worker has the task registered); 400 with `fields`.

    The same flow as the form (dashboard/web/launches.py): audited like a control action, sent or not; a
    refused one sends nothing and is not audited.
    """
    ids, audit_id, warning = launches.submit(request.get_json(silent=True), via="api")
    body: dict[str, Any] = {"task_ids": ids, "audit_id": audit_id}
    if warning:
        body["warning"] = warning
    return jsonify(body)


@bp.get("/api/launchable")
def launchable() -> Any:
    """The tasks the launch form offers: name, module, parameters, the online workers that have each, and
    its warning (no online worker has it registered); LAUNCHABLE applied."""
    return jsonify({"tasks": [t.as_dict() for t in launches.catalogue()]})
