"""One error contract for every endpoint, rendered in one place.

Every error answer is `{"error": "<one sentence>"}`; a request with named inputs adds
`"fields": {"<input>": "<what is wrong>"}`, and an action may add context (the audit entry it wrote, the
task ids already sent, per-item problems under "failed"). Views raise an `ApiError`; `init_app` renders
it, and every other HTTP error (404, 405, 413, 429, ...) too: JSON for the API, /healthz and JSON clients,
a plain sentence elsewhere (the gate, before Flask, answers in the same shape: dashboard/web/gate.py).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from ..cluster.errors import BrokerUnavailable, InvalidRequest
from ..core import numbers
from .gate import wants_json

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An answer that is not a success: a status, a sentence, per-field messages, and context."""

    status = 400

    def __init__(
        self,
        message: str,
        *,
        fields: dict[str, str] | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        **context: Any,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields or {}
        self.context = context
        self.headers = headers or {}
        if status is not None:
            self.status = status

    def body(self) -> dict[str, Any]:
        """The JSON body: error, fields when there are any, then the context."""
        out: dict[str, Any] = {"error": self.message}
        if self.fields:
            out["fields"] = self.fields
        out.update(self.context)
        return out


class Invalid(ApiError):
    """400: the request's input is wrong; the message (and `fields`) say what to send instead."""

    status = 400

    @classmethod
    def field(cls, name: str, message: str) -> Invalid:
        """The error of one named input: the sentence, and the same under `fields`."""
        return cls(message, fields={name: message})


class NotFound(ApiError):
    """404: nothing by that name."""

    status = 404


class TaskNotSeen(NotFound):
    """404 for a task id the dashboard has not seen (or has evicted)."""

    def __init__(self, uuid: str) -> None:
        super().__init__(f"task {uuid} has not been seen (or was evicted)")


class WorkerNotSeen(NotFound):
    """404 for a worker hostname the dashboard has not seen."""

    def __init__(self, hostname: str) -> None:
        super().__init__(f"worker {hostname} has not been seen")


class Unavailable(ApiError):
    """503: the broker could not be reached; context says what happened meanwhile (audit id, ids sent)."""

    status = 503


def whole_number(raw: Any, name: str, low: int, high: int) -> int:
    """`raw` (query text or a JSON number) as an int in [low, high], else Invalid naming `name`."""
    value = numbers.whole_number(raw, low, high)
    if value is None:
        raise Invalid.field(name, f"{name} must be a whole number from {low} to {high}")
    return value


def render(status: int, message: str, **extra: Any) -> Response:
    """An error answer in the contract's shape: JSON where a program asks, a plain sentence elsewhere."""
    if wants_json(request):
        response = jsonify({"error": message, **extra})
    else:
        response = Response(message[0].upper() + message[1:] + ".\n", mimetype="text/plain")
    response.status_code = status
    return response


def respond(exc: ApiError) -> Response:
    """The answer for an ApiError (for handlers that cannot raise: Flask does not handle errors of errors)."""
    if wants_json(request):
        response = jsonify(exc.body())
        response.status_code = exc.status
    else:
        response = render(exc.status, exc.message)
    response.headers.update(exc.headers)
    return response


def _http_error(exc: HTTPException) -> Any:
    if not wants_json(request):
        return exc  # Flask's own page for a browser
    message = (exc.description or exc.name or "error").rstrip(".")
    if exc.code == 404:
        message = f"no such endpoint: {request.path}"
    elif exc.code == 405:
        message = f"{request.method} is not allowed on {request.path}"
    response = render(exc.code or 500, message)
    for key, value in exc.get_headers():
        if key.lower() not in ("content-type", "content-length"):
            response.headers[key] = value  # Allow, Retry-After, WWW-Authenticate
    return response


def _cluster_error(exc: InvalidRequest | BrokerUnavailable) -> Response:
    # The cluster layer's own errors (a bad control request, a broker that is gone) as the contract says.
    status = 400 if isinstance(exc, InvalidRequest) else 503
    return respond(ApiError(str(exc), status=status))


def init_app(app: Flask) -> None:
    """Render ApiError, the cluster layer's errors and every HTTP error in the contract's shape."""
    app.register_error_handler(ApiError, respond)
    app.register_error_handler(InvalidRequest, _cluster_error)
    app.register_error_handler(BrokerUnavailable, _cluster_error)
    app.register_error_handler(HTTPException, _http_error)
