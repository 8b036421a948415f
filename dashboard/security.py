"""Who may see and do what: auth (basic users, bearer token), read-only mode, cross-site refusal.

(Skeleton: the security helper fills this in; the names below are the contract other modules use.)
"""
from __future__ import annotations

import logging
from functools import wraps
from typing import Any, Callable
from urllib.parse import urlsplit

from flask import Flask, current_app, jsonify, request

log = logging.getLogger(__name__)


def init_app(app: Flask) -> None:
    """Install the auth check in front of every request (pages, API, static, socket.io)."""


def socket_allowed(auth: Any) -> bool:
    """Whether a websocket connection may open (called from the Socket.IO connect handler)."""
    return True


def current_user() -> str | None:
    """The authenticated user of this request ("token" for the bearer token), or None without auth."""
    return None


def controls_enabled() -> bool:
    """False in read-only mode: control and launch endpoints refuse, buttons are hidden."""
    return not current_app.config.get("READ_ONLY", False)


def cross_site() -> bool:
    """Whether this request comes from another origin (JSON endpoints refuse those)."""
    # JSON is only accepted same-origin: a cross-site page can send neither this content type
    # (it needs a CORS preflight we never grant) nor a matching Origin.
    origin = request.headers.get("Origin")
    if origin and urlsplit(origin).netloc != request.host:
        return True
    return request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none")


def control_endpoint(view: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a state-changing JSON endpoint: 403 in read-only mode or cross-site, 415 unless JSON."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not controls_enabled():
            return jsonify({"error": "the dashboard is read-only: controls are turned off"}), 403
        if cross_site():
            return jsonify({"error": "cross-origin requests are refused"}), 403
        if not request.is_json:
            return jsonify({"error": "send JSON with Content-Type: application/json"}), 415
        return view(*args, **kwargs)

    return wrapper
