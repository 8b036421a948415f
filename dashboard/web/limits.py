"""Request limits: body size (413), JSON nesting depth (400), and how many exports run at once (429).

- Bodies: MAX_REQUEST_BYTES (default 1 MiB) is Flask's MAX_CONTENT_LENGTH; a larger JSON or form body is
  a 413 with a message (JSON `{"error"}` on /api/ paths and for JSON requests, plain text elsewhere).
- JSON: Python's json parser recurses once per nesting level, so `[[[[…]]]]` 100,000 deep raised
  RecursionError (not ValueError) out of `request.get_json(silent=True)`: a 500. Every JSON text the app
  parses goes through `loads()`, which refuses more than MAX_DEPTH levels with JSONTooDeep (a ValueError),
  and state-changing JSON requests are checked before any view runs, so the answer is a 400 that says why.
- Exports (a CSV of 100,000 tasks takes a core for a second): at most EXPORT_SLOTS at a time; the next one
  is a 429 with Retry-After instead of a queue of CPU-bound requests.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from flask import Flask, Response, current_app, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import RequestEntityTooLarge

from ..core.jsondepth import MAX_DEPTH, JSONTooDeep, loads, too_deep
from .errors import render
from .security import MUTATING

log = logging.getLogger(__name__)

EXPORT_SLOTS = 2
EXPORT_RETRY_AFTER = 2  # seconds
EXPORTS_BUSY_MESSAGE = f"{EXPORT_SLOTS} exports are already running; try again in a few seconds"


class DepthLimitedJSONProvider(DefaultJSONProvider):
    """Flask's JSON, with request bodies parsed by limits.loads (at most MAX_DEPTH levels)."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        """Parse JSON; JSONTooDeep (a ValueError, so Flask's get_json treats it as bad JSON) past MAX_DEPTH."""
        return loads(s, **kwargs)


def _check_json_depth() -> Response | None:
    """Before the views: a state-changing JSON request nested too deep is a 400 that says so.

    (Views read bodies with get_json(silent=True), which would only see None and say "not an object".)
    Broken JSON is left to the views, which say what they expect. Reading the body here also applies
    MAX_CONTENT_LENGTH (413) before anything else happens.
    """
    if request.method not in MUTATING or not request.is_json:
        return None
    try:
        loads(request.get_data(cache=True))
    except JSONTooDeep as exc:
        log.info("refused %s %s from %s: %s", request.method, request.path, request.remote_addr, exc)
        return render(400, str(exc))
    except ValueError:
        return None
    return None


def _too_large(exc: RequestEntityTooLarge) -> Response:
    limit = int(current_app.config["MAX_CONTENT_LENGTH"])
    shown = f"{limit / (1 << 20):g} MiB" if limit % (1 << 20) == 0 else f"{limit} bytes"
    log.info("refused %s %s from %s: body over %d bytes", request.method, request.path, request.remote_addr, limit)
    return render(413, f"the request body is too large: at most {shown} is accepted (DASHBOARD_MAX_REQUEST_BYTES)")


class SocketIOJSON:
    """The JSON of Socket.IO packets: orjson to encode (a room's update is encoded once per tick, however many
    watch it) and the depth-limited `loads` for what clients send."""

    @staticmethod
    def dumps(obj: Any, **_: Any) -> str:
        """Compact JSON text (python-socketio asks for compact separators anyway)."""
        import orjson

        return orjson.dumps(obj, default=str, option=orjson.OPT_NON_STR_KEYS).decode()

    @staticmethod
    def loads(text: str | bytes, **_: Any) -> Any:
        """A client's packet, refused (JSONTooDeep: the connection is closed) past MAX_DEPTH levels."""
        return loads(text)


class ExportSlots:
    """At most EXPORT_SLOTS exports at once; `try_acquire` never waits."""

    def __init__(self, slots: int = EXPORT_SLOTS) -> None:
        self.semaphore = threading.BoundedSemaphore(slots)

    def try_acquire(self) -> bool:
        """Take a slot if one is free (release() it when done)."""
        return self.semaphore.acquire(blocking=False)

    def release(self) -> None:
        """Give the slot back."""
        self.semaphore.release()


def busy_exports() -> Response:
    """The 429 for an export that found no free slot."""
    response = render(429, EXPORTS_BUSY_MESSAGE)
    response.headers["Retry-After"] = str(EXPORT_RETRY_AFTER)
    return response


def export_slots() -> ExportSlots:
    """The current app's export slots."""
    return current_app.extensions["dashboard_exports"]


def init_app(app: Flask) -> None:
    """Body size limit, depth-limited JSON parsing (and its 400), and the export slots."""
    app.config["MAX_CONTENT_LENGTH"] = int(app.config["MAX_REQUEST_BYTES"])
    # Werkzeug also refuses a multipart field over MAX_FORM_MEMORY_SIZE (500 kB) with a 413: the body's limit is
    # the only one, so the 413's message is always right.
    app.config["MAX_FORM_MEMORY_SIZE"] = int(app.config["MAX_REQUEST_BYTES"])
    app.json = DepthLimitedJSONProvider(app)
    app.before_request(_check_json_depth)
    app.register_error_handler(RequestEntityTooLarge, _too_large)
    app.extensions["dashboard_exports"] = ExportSlots()


__all__ = ["MAX_DEPTH", "JSONTooDeep", "busy_exports", "export_slots", "init_app", "loads", "too_deep"]
