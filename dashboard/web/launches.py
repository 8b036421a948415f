"""One launch flow for the form and the API: validate, send, audit; errors in the contract's shape."""

from __future__ import annotations

from typing import Any

from flask import request

from ..cluster import launch as launching
from ..cluster.errors import BrokerUnavailable
from .errors import Invalid, Unavailable
from .security import current_user
from .services import services


def submit(data: Any, via: str) -> tuple[list[str], int]:
    """Validate `data` and send the task(s): (task ids, audit id).

    Invalid (400, per-field messages) sends nothing and writes no audit entry; Unavailable (503) when the
    broker failed, with the ids sent before it did and the audit entry that records it.
    """
    if not isinstance(data, dict):
        raise Invalid.field("form", "the body must be a JSON object")
    req, errors = launching.validate(data)
    if req is None:
        name, first = next(iter(errors.items()))
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise Invalid(f"nothing was sent: {name}: {first}{more}", fields=errors)
    svc = services()
    try:
        return launching.send_audited(
            svc.celery, req, svc.audit, user=current_user(), remote_addr=request.remote_addr, via=via
        )
    except BrokerUnavailable as exc:
        raise Unavailable(str(exc), fields={"form": str(exc)}, task_ids=exc.sent, audit_id=exc.audit_id) from exc
