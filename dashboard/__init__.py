"""Celery Live Dashboard: create_app() builds the Flask app; `socketio` is bound in it."""
from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask
from flask_socketio import SocketIO
from flask_wtf.csrf import CSRFProtect

from .config import load_config

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
    from .cluster.control import EventsEnabler, make_celery
    from .concurrency import Runtime, start_thread
    from .core.masking import make_masker
    from .core.state import State
    from .ingest.gcpolicy import GcPolicy
    from .ingest.process import ReaderProcess
    from .ingest.seed import seed_in_flight
    from .ingest.snapshot import Snapshots
    from .ingest.stream import Ingest
    from .live.push import Push
    from .live.socketio_internals import session_exists
    from .web import api, control_api, limits, metrics, queues, security, views
    from .web.services import Inflight, Services

    cfg = load_config(config)
    app = Flask(__name__, template_folder=_asset_dir("templates"), static_folder=_asset_dir("static"))
    app.config.update(cfg)
    app.config["WTF_CSRF_TIME_LIMIT"] = None  # a dashboard tab stays open for days
    csrf.init_app(app)
    # engine.io's gevent driver uses gevent's queues and events directly: no monkey-patching needed (the
    # hub is dashboard/web/server.py's).
    socketio.init_app(app, async_mode=cfg["ASYNC_MODE"], json=limits.SocketIOJSON)
    # Before the blueprints, after socketio: the gate guards every page, API call and socket.
    security.init_app(app, session_exists=lambda sid: session_exists(socketio.server, sid))
    limits.init_app(app)  # body size, JSON depth, concurrent exports
    app.register_blueprint(views.bp)
    for bp in (api.bp, control_api.bp, queues.bp, metrics.bp):
        app.register_blueprint(bp)
        csrf.exempt(bp)  # JSON endpoints: security's guard refuses cross-origin requests instead

    inflight = Inflight()
    runtime = Runtime(cfg["ASYNC_MODE"], busy=inflight.busy)
    state = State(max_tasks=int(cfg["MAX_TASKS"]), max_workers=int(cfg["MAX_WORKERS"]),
                  mask=make_masker(cfg["MASK_PATTERNS"]))
    celery_app = make_celery(cfg["BROKER_URL"], float(cfg["LAUNCH_TIMEOUT"]))
    ingest_on = bool(cfg["INGEST_ENABLED"])
    enabler = None
    if ingest_on and float(cfg["ENABLE_EVENTS_INTERVAL"]) > 0:
        # Broadcasts run on their own thread: broker I/O for control never stalls the event stream.
        enabler = EventsEnabler(celery_app, float(cfg["ENABLE_EVENTS_INTERVAL"]), lambda: ingest.connected)
    ingest = Ingest(state, cfg["BROKER_URL"], mode=cfg["INGEST"], reconnect_min=float(cfg["RECONNECT_MIN"]),
                    reconnect_max=float(cfg["RECONNECT_MAX"]), pause=runtime.pause,
                    after_batch=GcPolicy().tick if ingest_on else None,  # ingest/gcpolicy.py: no long GC pauses
                    on_connect=enabler.poke if enabler else None,
                    on_worker_arrival=enabler.poke if enabler else None)
    reader = ReaderProcess(ingest, log_level=str(cfg["LOG_LEVEL"]), wrap_socket=runtime.wrap_socket,
                           sleep=runtime.sleep) if ingest_on else None
    push = Push(socketio, state, ingest if ingest_on else None, float(cfg["PUSH_INTERVAL"]), sleep=runtime.sleep)
    push.register()
    connections = None
    if runtime.green:
        from .web.server import ConnectionLimits, descriptor_budget

        connections = ConnectionLimits(descriptor_budget(int(cfg["MAX_CONNECTIONS"])),
                                       int(cfg["MAX_CONNECTIONS_PER_ADDRESS"]))
    svc = Services(cfg, state, ingest, push, celery_app, runtime=runtime, reader=reader, enabler=enabler,
                   inflight=inflight, connections=connections)
    if cfg["SNAPSHOT_PATH"]:
        svc.snapshots = Snapshots(state, cfg["SNAPSHOT_PATH"], float(cfg["SNAPSHOT_INTERVAL"]))
        svc.snapshots.load()  # before ingest starts: events then apply on top of the restored state
    app.extensions["dashboard"] = svc
    app.before_request_funcs[None].insert(0, inflight.enter)  # first: teardown's leave() follows even a refusal
    app.teardown_request(inflight.leave)
    for module in (control_api, queues, metrics):
        module.init_app(app, svc)  # their background loops start below with the rest, or not at all

    for name in app.jinja_env.list_templates(extensions=["html"]):
        app.jinja_env.get_template(name)  # compile now: a first page view during a burst stays fast
    # The push tick and the event feed run where the sockets are (the hub); the rest are native threads
    # that mostly wait on the broker (dashboard/concurrency.py says why).
    runtime.spawn(push.run, name="push")
    if reader is not None:
        if enabler is not None:
            start_thread(enabler.run, name="enable-events")
        runtime.spawn(reader.run, name="ingest")
        if svc.snapshots is not None:
            start_thread(svc.snapshots.run, name="snapshots")
        # Tasks already running or waiting show up at once, not only at their next (maybe last) event.
        start_thread(seed_in_flight, celery_app, state, float(cfg["INSPECT_TIMEOUT"]), lambda: ingest.connected,
                     name="seed")
    return app
