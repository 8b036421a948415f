"""create_app() builds the Flask app; `socketio` is bound in it (`dashboard.create_app` and `dashboard.socketio`
are these: the package imports this module only when they are asked for)."""

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


def create_app(config: Mapping[str, Any] | None = None, celery_app: Any = None) -> Flask:
    """Build the app: settings, socketio, the gate, blueprints, services, and (unless disabled) their loops.

    `celery_app` is the user's app when the caller has loaded it (`celery -A proj dashboard`, the CLI);
    otherwise APP names it and it is loaded here (ValueError when it cannot be)."""
    from .cluster import userapp
    from .live.namespace import DashboardNamespace
    from .live.socketio_internals import session_exists
    from .web import api, beat, control_api, errors, limits, metrics, proxy, queues, security, views
    from .web.services import build_services

    cfg = load_config(config)
    if celery_app is None and cfg["APP"]:
        celery_app = userapp.load_app(cfg["APP"])
    if celery_app is not None and not cfg["BROKER_URL"]:
        cfg["BROKER_URL"] = userapp.broker_url(celery_app)  # BROKER_URL set nowhere: the app's
    app = Flask(__name__, template_folder=_asset_dir("templates"), static_folder=_asset_dir("static"))
    app.config.update(cfg)
    app.config["WTF_CSRF_TIME_LIMIT"] = None  # a dashboard tab stays open for days
    csrf.init_app(app)
    # engine.io's gevent driver uses gevent's queues and events directly: no monkey-patching needed (the
    # hub is dashboard/web/server.py's).
    socketio.init_app(app, async_mode=cfg["ASYNC_MODE"], json=limits.SocketIOJSON)
    # Before the blueprints, after socketio: the gate guards every page, API call and socket.
    security.init_app(app, session_exists=lambda sid: session_exists(socketio.server, sid))
    proxy.init_app(app)  # outside the gate: URL_PREFIX, and X-Forwarded-* from trusted proxies
    limits.init_app(app)  # body size, JSON depth, concurrent exports
    errors.init_app(app)  # one JSON error shape for every endpoint
    app.register_blueprint(views.bp)
    for bp in (api.bp, beat.bp, control_api.bp, queues.bp, metrics.bp):
        app.register_blueprint(bp)
        csrf.exempt(bp)  # JSON endpoints: security's guard refuses cross-origin requests instead

    svc = build_services(cfg, socketio, user_app=celery_app)
    socketio.on_namespace(DashboardNamespace(svc.rooms, allowed=security.socket_allowed))
    app.extensions["dashboard"] = svc
    app.before_request_funcs[None].insert(0, svc.inflight.enter)  # first: teardown's leave() follows a refusal
    app.teardown_request(svc.inflight.leave)
    for name in app.jinja_env.list_templates(extensions=["html"]):
        app.jinja_env.get_template(name)  # compile now: a first page view during a burst stays fast
    svc.start()
    return app
