"""The demo-task catalogue, the validation of the launch form and of POST /api/launch, and the audited send."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..concurrency import offload
from ..core.brokerurl import scrub
from ..core.jsondepth import MAX_DEPTH, JSONTooDeep, loads
from ..core.numbers import number
from .errors import BrokerUnavailable

log = logging.getLogger(__name__)

MAX_COUNT = 1000
MAX_COUNTDOWN = 86_400.0
MAX_JSON_CHARS = 100_000


@dataclass(frozen=True)
class DemoTask:
    """A task of dashboard/demo.py as the form offers it (the web process never imports demo.py)."""

    name: str
    label: str
    hint: str
    params: tuple[str, ...]  # parameter names, in order
    required: int  # how many of them have no default
    example_args: tuple[Any, ...] = ()
    example_kwargs: Mapping[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The entry as the template and the front end use it."""
        return {
            "name": self.name,
            "label": self.label,
            "hint": self.hint,
            "params": list(self.params),
            "example_args": json.dumps(list(self.example_args)),
            "example_kwargs": json.dumps(dict(self.example_kwargs or {})),
        }


CATALOGUE: tuple[DemoTask, ...] = (
    DemoTask(
        "dashboard.demo.add",
        "add(x, y)",
        "Adds two numbers after sleeping, to simulate long work.",
        ("x", "y"),
        2,
        (2, 3),
    ),
    DemoTask(
        "dashboard.demo.send_email",
        "send_email(address, message)",
        "Pretends to send an email; an address without @ fails with ValueError.",
        ("address", "message"),
        2,
        ("ada@example.com", "Your report is ready"),
    ),
    DemoTask(
        "dashboard.demo.fail",
        "fail(card, amount)",
        "Always raises PaymentDeclined from a few frames deep: a real traceback.",
        ("card", "amount"),
        0,
        (),
        {"card": "4000-0000-0000-0002", "amount": 42},
    ),
    DemoTask(
        "dashboard.demo.flaky",
        "flaky(fail_times)",
        "Raises ConnectionError fail_times times; autoretry_for retries it with backoff (max 3 retries).",
        ("fail_times",),
        0,
        (),
        {"fail_times": 2},
    ),
    DemoTask(
        "dashboard.demo.progress",
        "progress(steps, delay)",
        "Runs for steps × delay seconds and reports its progress as it goes.",
        ("steps", "delay"),
        0,
        (),
        {"steps": 10, "delay": 0.5},
    ),
    DemoTask(
        "dashboard.demo.workflow",
        "workflow(n)",
        "Starts a chain: add → group of n adds → tsum (a chord), as children of this task.",
        ("n",),
        0,
        (),
        {"n": 4},
    ),
)
BY_NAME = {t.name: t for t in CATALOGUE}


@dataclass(frozen=True)
class LaunchRequest:
    """A validated launch: what to send, how many times, and when."""

    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    count: int
    countdown: float


def _json_field(raw: Any, kind: type, empty: Any, label: str) -> tuple[Any, str | None]:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return empty, None
    if isinstance(raw, str):
        if len(raw) > MAX_JSON_CHARS:
            return None, f"too long (at most {MAX_JSON_CHARS} characters)"
        try:
            raw = loads(raw)  # depth-limited: a field of 50,000 nested '[' must not recurse the parser to death
        except JSONTooDeep:
            return None, f"nested too deeply: at most {MAX_DEPTH} levels"
        except json.JSONDecodeError as exc:
            return None, f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    if not isinstance(raw, kind):
        return None, f"must be a JSON {label}"
    return raw, None


def validate(data: Mapping[str, Any]) -> tuple[LaunchRequest | None, dict[str, str]]:
    """Check a launch form or API body; returns (request, {}) or (None, {field: message})."""
    errors: dict[str, str] = {}
    name = data.get("task")
    spec = BY_NAME.get(name) if isinstance(name, str) else None
    if spec is None:
        errors["task"] = "choose one of: " + ", ".join(t.name for t in CATALOGUE)
    args, err = _json_field(data.get("args"), list, [], "array, e.g. [2, 3]")
    if err:
        errors["args"] = err
    kwargs, err = _json_field(data.get("kwargs"), dict, {}, 'object, e.g. {"x": 1}')
    if err:
        errors["kwargs"] = err
    raw_count = data.get("count", 1)
    count = 1 if raw_count in (None, "") else number(raw_count, integer=True)
    if count is None or not 1 <= count <= MAX_COUNT:
        errors["count"] = f"a whole number from 1 to {MAX_COUNT}"
    raw_cd = data.get("countdown", 0)
    countdown = 0.0 if raw_cd in (None, "") else number(raw_cd, integer=False)
    if countdown is None or not 0 <= countdown <= MAX_COUNTDOWN:
        errors["countdown"] = f"seconds from 0 to {int(MAX_COUNTDOWN)}"
    if spec is not None and "args" not in errors and "kwargs" not in errors:
        errors.update(_check_signature(spec, args, kwargs))
    if errors:
        return None, errors
    assert spec is not None and count is not None and countdown is not None  # each None left an error above
    return LaunchRequest(spec.name, args, kwargs, int(count), float(countdown)), {}


def _check_signature(spec: DemoTask, args: list[Any], kwargs: dict[str, Any]) -> dict[str, str]:
    """Arity errors a worker would raise as TypeError, caught before anything is sent."""
    if len(args) > len(spec.params):
        return {"args": f"{spec.label} takes at most {len(spec.params)} positional argument(s), got {len(args)}"}
    given = set(spec.params[: len(args)])
    unknown = [k for k in kwargs if k not in spec.params]
    if unknown:
        return {
            "kwargs": f"unknown argument(s) {', '.join(map(repr, unknown))}; "
            f"{spec.label} takes {', '.join(spec.params)}"
        }
    twice = [k for k in kwargs if k in given]
    if twice:
        return {"kwargs": f"{', '.join(twice)} already given positionally"}
    missing = [p for p in spec.params[: spec.required] if p not in given and p not in kwargs]
    if missing:
        return {"args": f"missing required argument(s): {', '.join(missing)}"}
    return {}


def _failed(sent: list[str], count: int, cause: str, what: str = "the broker is unreachable") -> BrokerUnavailable:
    """The broker refused or dropped a publish: how many of the tasks went out before."""
    return BrokerUnavailable(f"{what}: {len(sent)} of {count} task(s) sent ({cause})", sent)


def launch(celery_app: Any, req: LaunchRequest) -> list[str]:
    """Send the task `count` times; returns the task ids (BrokerUnavailable on broker errors)."""
    from kombu.exceptions import OperationalError

    ids: list[str] = []
    options: dict[str, Any] = {}
    if req.countdown:
        options["countdown"] = req.countdown

    def send_all() -> None:
        for _ in range(req.count):
            result = celery_app.send_task(req.task, args=req.args, kwargs=req.kwargs, **options)
            ids.append(result.id)

    try:
        offload(send_all)  # broker I/O (LAUNCH_TIMEOUT when the broker is gone): off the gevent hub
    except (OperationalError, OSError) as exc:
        cause = scrub(str(exc), celery_app.conf.broker_url)
        log.warning("launch of %s failed after %d sent: %s", req.task, len(ids), cause)
        raise _failed(ids, req.count, cause) from exc
    except Exception as exc:
        # Scrubbed: kombu's parse error for a malformed URL quotes part of its password.
        cause = scrub(f"{type(exc).__name__}: {exc}", celery_app.conf.broker_url)
        log.warning("launch of %s failed after %d sent: %s", req.task, len(ids), cause, exc_info=True)
        raise _failed(ids, req.count, cause, "sending to the broker failed") from exc
    log.info("launched %d × %s", len(ids), req.task)
    return ids


def send_audited(
    celery_app: Any, req: LaunchRequest, audit: Any, *, user: str | None, remote_addr: str | None, via: str
) -> tuple[list[str], int]:
    """launch() with one audit entry, sent or not: (task ids, audit id); BrokerUnavailable carries its audit_id.

    The entry has the shape of a control action's: action "launch", the task name as target, and as params
    the count and countdown asked for, `via` ("form" or "api") and the ids of the tasks sent. Arguments are
    left out: the tasks' own pages show them, masked, and the audit file keeps no secrets.
    """
    params: dict[str, Any] = {"count": req.count, "countdown": req.countdown, "via": via}
    try:
        ids = launch(celery_app, req)
    except BrokerUnavailable as exc:
        exc.audit_id = audit.record(
            "launch", req.task, {**params, "task_ids": exc.sent}, False, str(exc), user=user, remote_addr=remote_addr
        )["id"]
        raise
    message = f"sent {len(ids)} × {req.task}" + (f" with a {req.countdown:g} s countdown" if req.countdown else "")
    entry = audit.record(
        "launch", req.task, {**params, "task_ids": ids}, True, message, user=user, remote_addr=remote_addr
    )
    return ids, entry["id"]
