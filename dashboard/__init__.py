"""Celery Live Dashboard: create_app() builds the Flask app; `socketio` is bound in it."""
from __future__ import annotations

import os

if os.environ.get("DASHBOARD_ASYNC_MODE") == "eventlet":  # pragma: no cover - exercised in a subprocess
    # Must precede every import that touches sockets (redis, kombu, celery) or the server freezes.
    import eventlet

    eventlet.monkey_patch()

import logging  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Mapping  # noqa: E402

from flask import Flask  # noqa: E402
from flask_socketio import SocketIO  # noqa: E402
from flask_wtf.csrf import CSRFProtect  # noqa: E402

from .config import load_config  # noqa: E402

log = logging.getLogger(__name__)
socketio = SocketIO()
csrf = CSRFProtect()
ROOT = Path(__file__).resolve().parent.parent


def _asset_dir(name: str) -> str:
    # A source checkout (or editable install) has templates/ and static/ beside dashboard/;
    # a wheel installs them as data files under <prefix>/share/celery-dashboard/.
    here = ROOT / name
    if here.is_dir():
        return str(here)
    import sys

    return str(Path(sys.prefix) / "share" / "celery-dashboard" / name)


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app: settings, socketio, blueprints, and (unless disabled) ingest and push loops."""
    from . import api, control_api, limits, metrics, queues, security, views
    from .control import EventsEnabler, make_celery
    from .masking import make_masker
    from .gcpolicy import GcPolicy
    from .ingest import Ingest
    from .push import Push
    from .seed import seed_in_flight
    from .services import Services
    from .snapshot import Snapshots
    from .state import State

    cfg = load_config(config)
    app = Flask(__name__, template_folder=_asset_dir("templates"), static_folder=_asset_dir("static"))
    app.config.update(cfg)
    app.config["WTF_CSRF_TIME_LIMIT"] = None  # a dashboard tab stays open for days
    csrf.init_app(app)
    socketio.init_app(app, async_mode=cfg["ASYNC_MODE"])
    security.init_app(app)  # before the blueprints: auth guards every page, API call and socket
    limits.init_app(app)  # body size, JSON depth, concurrent exports
    app.register_blueprint(views.bp)
    for bp in (api.bp, control_api.bp, queues.bp, metrics.bp):
        app.register_blueprint(bp)
        csrf.exempt(bp)  # JSON endpoints: security's guard refuses cross-origin requests instead

    state = State(max_tasks=int(cfg["MAX_TASKS"]), max_workers=int(cfg["MAX_WORKERS"]),
                  mask=make_masker(cfg["MASK_PATTERNS"]))
    celery_app = make_celery(cfg["BROKER_URL"], float(cfg["LAUNCH_TIMEOUT"]))
    ingest = Ingest(state, cfg["BROKER_URL"], mode=cfg["INGEST"], reconnect_min=float(cfg["RECONNECT_MIN"]),
                    reconnect_max=float(cfg["RECONNECT_MAX"]))
    push = Push(socketio, state, ingest if cfg["INGEST_ENABLED"] else None, float(cfg["PUSH_INTERVAL"]))
    push.register()
    svc = Services(cfg, state, ingest, push, celery_app)
    if cfg["SNAPSHOT_PATH"]:
        svc.snapshots = Snapshots(state, cfg["SNAPSHOT_PATH"], float(cfg["SNAPSHOT_INTERVAL"]))
        svc.snapshots.load()  # before ingest starts: events then apply on top of the restored state
    app.extensions["dashboard"] = svc
    app.before_request_funcs[None].insert(0, svc.inflight.enter)  # first: teardown's leave() follows even a refusal
    app.teardown_request(svc.inflight.leave)
    ingest.busy = svc.inflight.busy
    for module in (control_api, queues, metrics):
        module.init_app(app, svc)  # their background loops start below with the rest, or not at all

    for name in app.jinja_env.list_templates(extensions=["html"]):
        app.jinja_env.get_template(name)  # compile now: a first page view during a burst stays fast
    socketio.start_background_task(push.run)
    if cfg["INGEST_ENABLED"]:
        ingest.after_batch = GcPolicy().tick  # see dashboard/gcpolicy.py: no full-heap GC pauses
        if float(cfg["ENABLE_EVENTS_INTERVAL"]) > 0:
            # Broadcasts run on their own thread: broker I/O for control never stalls the event stream.
            svc.enabler = EventsEnabler(celery_app, float(cfg["ENABLE_EVENTS_INTERVAL"]), lambda: ingest.connected)
            ingest.on_connect = ingest.on_worker_arrival = svc.enabler.poke
            socketio.start_background_task(svc.enabler.run)
        socketio.start_background_task(ingest.run)
        if svc.snapshots is not None:
            socketio.start_background_task(svc.snapshots.run)
        # Tasks already running or waiting show up at once, not only at their next (maybe last) event.
        socketio.start_background_task(seed_in_flight, celery_app, state, float(cfg["INSPECT_TIMEOUT"]),
                                       lambda: ingest.connected)
    return app
