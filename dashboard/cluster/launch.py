"""What may be launched (the catalogue), the validation of the launch form and of POST /api/launch, and the
audited send.

The catalogue: with the user's app (cluster/userapp.py), every task of its registry but Celery's built-ins,
with its parameters read from the task's signature; without an app, the names online workers report as
registered (their cached `inspect registered` replies) and the demo tasks of dashboard/demo.py, with free
JSON arguments. LAUNCHABLE (name patterns) narrows it. A task no online worker has registered carries a
warning: it is sent only once confirmed (`unregistered_ok`: the form's "Launch it anyway", or the API body's).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import inspect
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
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


# -- the catalogue ----------------------------------------------------------------------------------

KINDS = ("int", "float", "bool", "str", "json")  # how a parameter is typed in the form
_KIND_OF: dict[Any, str] = {int: "int", float: "float", bool: "bool", str: "str"}
_KIND_OF.update({name: name for name in ("int", "float", "bool", "str")})  # postponed annotations are text
MAX_PRIORITY = 255
MAX_EXPIRES = 30 * 86_400.0
QUEUE_MAX = 200
UNREGISTERED_OK = "unregistered_ok"  # the form's confirmation of a task no online worker has registered
CONFIRM = "Confirm to launch it anyway."  # ends the task field's message that asks for that confirmation
_TRUE, _FALSE = ("true", "1", "on", "yes"), ("false", "0", "off", "no")


@dataclass(frozen=True)
class Param:
    """One parameter of a task's signature, as the form offers it."""

    name: str
    kind: str  # one of KINDS
    annotation: str | None  # as written (`int`, `dict[str, Any]`), or None
    default: str | None  # the default as text (JSON when it is JSON), or None when required
    required: bool
    positional_only: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The entry as the template and the front end use it."""
        return {
            "name": self.name,
            "kind": self.kind,
            "annotation": self.annotation,
            "default": self.default,
            "required": self.required,
        }


@dataclass(frozen=True)
class TaskSpec:
    """A task the form offers: its parameters when its signature is known, and who has it registered."""

    name: str
    module: str  # the group it is listed under
    label: str
    hint: str
    params: tuple[Param, ...] | None  # None: unknown signature (free JSON args and kwargs)
    fields: bool = False  # one form field per parameter (the app's tasks) rather than JSON args/kwargs only
    var_args: bool = False  # takes *args
    var_kwargs: bool = False  # takes **kwargs
    example_args: tuple[Any, ...] = ()
    example_kwargs: Mapping[str, Any] | None = None
    registered_by: tuple[str, ...] = ()  # online workers that report it registered

    @property
    def required(self) -> int:
        """How many leading parameters have no default."""
        return sum(1 for p in self.params or () if p.required)

    @property
    def warning(self) -> str | None:
        """Why launching it deserves a second thought, or None."""
        if self.registered_by:
            return None
        return (
            f"No online worker has registered {self.name}: the task waits in its queue until a worker that "
            "has it starts (or forever)."
        )

    def as_dict(self) -> dict[str, Any]:
        """The entry as the template and the front end use it."""
        return {
            "name": self.name,
            "module": self.module,
            "label": self.label,
            "hint": self.hint,
            "params": [p.as_dict() for p in self.params] if self.fields and self.params is not None else None,
            "example_args": json.dumps(list(self.example_args)),
            "example_kwargs": json.dumps(dict(self.example_kwargs or {})),
            "workers": list(self.registered_by),
            "warning": self.warning,
        }


def _module_of(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else "(no module)"


def _default_text(value: Any) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _annotation(annotation: Any) -> tuple[str | None, str]:
    """(the annotation as text, the form's kind)."""
    if annotation is inspect.Parameter.empty:
        return None, "json"
    kind = _KIND_OF.get(annotation, "json") if isinstance(annotation, (type, str)) else "json"
    text = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
    return text, kind


def task_spec(name: str, task: Any, registered_by: Iterable[str] = ()) -> TaskSpec:
    """The spec of one task of the user's app, from its signature (never called, only inspected)."""
    try:
        signature = inspect.signature(task.run)
    except (TypeError, ValueError):  # a builtin or a C function: no signature to read
        signature = None
    params: list[Param] = []
    var_args = var_kwargs = signature is None
    for p in signature.parameters.values() if signature else ():
        if p.kind is p.VAR_POSITIONAL:
            var_args = True
            continue
        if p.kind is p.VAR_KEYWORD:
            var_kwargs = True
            continue
        text, kind = _annotation(p.annotation)
        required = p.default is p.empty
        if not required and kind == "json" and isinstance(p.default, (bool, int, float, str)):
            kind = _KIND_OF[type(p.default)]  # unannotated but with a plain default: type the field like it
        params.append(
            Param(
                p.name,
                kind,
                text,
                None if required else _default_text(p.default),
                required,
                p.kind is p.POSITIONAL_ONLY,
            )
        )
    shown = ", ".join(p.name for p in params) if signature else "…"
    doc = inspect.getdoc(getattr(task, "run", None)) or inspect.getdoc(task) or ""
    module = getattr(task, "__module__", None)
    if not isinstance(module, str) or module.startswith("celery."):
        module = _module_of(name)
    return TaskSpec(
        name=name,
        module=module,
        label=f"{name.rsplit('.', 1)[-1]}({shown})",
        hint=doc.strip().splitlines()[0] if doc.strip() else "",
        params=tuple(params) if signature else None,
        fields=signature is not None,
        var_args=var_args,
        var_kwargs=var_kwargs,
        registered_by=tuple(sorted(registered_by)),
    )


def app_specs(app: Any) -> list[TaskSpec]:
    """Every task of the app's registry but Celery's built-ins (celery.*), by name (not yet who has them)."""
    return [task_spec(name, task) for name, task in sorted(app.tasks.items()) if not name.startswith("celery.")]


def registered_names(reply: Any) -> set[str]:
    """Task names from one worker's `registered` reply ("name [rate_limit=10/m]" entries)."""
    if not isinstance(reply, list):
        return set()
    return {entry.split(" ", 1)[0] for entry in reply if isinstance(entry, str) and entry.strip()}


def _demo_spec(task: DemoTask) -> TaskSpec:
    return TaskSpec(
        name=task.name,
        module=_module_of(task.name),
        label=task.label,
        hint=task.hint,
        params=tuple(Param(name, "json", None, None, i < task.required) for i, name in enumerate(task.params)),
        example_args=task.example_args,
        example_kwargs=task.example_kwargs,
    )


DEMO_SPECS = tuple(_demo_spec(t) for t in CATALOGUE)


def allowed(name: str, patterns: str) -> bool:
    """Whether LAUNCHABLE (comma-separated name patterns, `*` and `?`; empty: every name) lets `name` through."""
    wanted = [p.strip() for p in patterns.split(",") if p.strip()]
    return not wanted or any(fnmatch.fnmatchcase(name, p) for p in wanted)


def catalogue(
    app_tasks: list[TaskSpec] | None, registered: Mapping[str, set[str]], patterns: str = ""
) -> list[TaskSpec]:
    """What the form offers, sorted by module then name.

    `app_tasks`: the user's app's specs (app_specs), or None without an app; `registered`: the task names
    each online worker reports registered; `patterns`: LAUNCHABLE."""
    by_worker: dict[str, list[str]] = {}
    for host, names in registered.items():
        for name in names:
            by_worker.setdefault(name, []).append(host)
    if app_tasks is not None:
        specs = list(app_tasks)
    else:
        specs = list(DEMO_SPECS)
        known = {s.name for s in specs}
        specs += [
            TaskSpec(name, _module_of(name), name.rsplit(".", 1)[-1], "", None, var_args=True, var_kwargs=True)
            for name in sorted(by_worker)
            if name not in known and not name.startswith("celery.")
        ]
    out = [
        replace(s, registered_by=tuple(sorted(by_worker.get(s.name, ())))) for s in specs if allowed(s.name, patterns)
    ]
    return sorted(out, key=lambda s: (s.module, s.name))


# -- validation ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LaunchRequest:
    """A validated launch: what to send, how many times, when and where."""

    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    count: int
    countdown: float
    options: dict[str, Any] = field(default_factory=dict)  # queue, eta, expires, priority (as given)
    warning: str | None = field(default=None, compare=False)  # the task's warning (advisory)


def _json_field(raw: Any, kind: type | None, empty: Any, label: str) -> tuple[Any, str | None]:
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
    if kind is not None and not isinstance(raw, kind):
        return None, f"must be a JSON {label}"
    return raw, None


def _param_value(param: Param, raw: Any) -> tuple[Any, str | None]:
    """A form field (text) or an API value -> the parameter's value, or an error."""
    if param.kind == "int":
        value = number(raw, integer=True)
        return (value, None) if value is not None else (None, "must be a whole number")
    if param.kind == "float":
        value = number(raw, integer=False)
        return (value, None) if value is not None else (None, "must be a number")
    if param.kind == "bool":
        if isinstance(raw, bool):
            return raw, None
        text = str(raw).strip().lower()
        if text in _TRUE + _FALSE:
            return text in _TRUE, None
        return None, "must be true or false"
    if param.kind == "str":
        if not isinstance(raw, str):
            return None, "must be a string"
        if len(raw) > MAX_JSON_CHARS:
            return None, f"too long (at most {MAX_JSON_CHARS} characters)"
        return raw, None
    if isinstance(raw, str):
        return _json_field(raw, None, None, "value")
    return raw, None  # an API value: already JSON


def _given_params(data: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """Parameter values: the API's `params` object, or the form's `param.<name>` fields; and whether they came
    from the API (where a name the task does not take is an error; the form may carry another task's fields)."""
    given = data.get("params")
    if isinstance(given, dict):
        return dict(given), True
    prefix = "param."
    return {k[len(prefix) :]: v for k, v in data.items() if isinstance(k, str) and k.startswith(prefix)}, False


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _fields(spec: TaskSpec, data: Mapping[str, Any], args: list[Any], kwargs: dict[str, Any]) -> dict[str, str]:
    """The parameter fields of an app task, into args (positional-only) and kwargs; errors per field."""
    errors: dict[str, str] = {}
    given, from_api = _given_params(data)
    if data.get("params") is not None and not from_api:
        return {"params": "must be a JSON object of parameter values"}
    known = {p.name for p in spec.params or ()}
    unknown = [name for name in given if name not in known]
    if unknown and from_api:
        errors["params"] = f"{spec.label} has no parameter(s) {', '.join(map(repr, unknown))}"
    positional: list[Any] = []
    for index, param in enumerate(spec.params or ()):
        raw = given.get(param.name)
        key = f"param.{param.name}"
        blank = (raw is None or raw == "") if param.kind == "str" else _blank(raw)
        if blank:
            if param.required and param.name not in kwargs and index >= len(args) + len(positional):
                errors[key] = "required"
            continue
        value, err = _param_value(param, raw)
        if err:
            errors[key] = err
        elif param.name in kwargs:
            errors[key] = f"{param.name} is also in kwargs"
        elif param.positional_only:
            positional.append(value)
        else:
            kwargs[param.name] = value
    args[:0] = positional
    return errors


def _when(raw: Any, label: str) -> tuple[Any, str | None]:
    """An ISO 8601 date and time (UTC unless it says otherwise) -> aware datetime, or an error."""
    if _blank(raw):
        return None, None
    if not isinstance(raw, str):
        return None, f"{label} must be an ISO 8601 date and time, e.g. 2030-01-31T12:00:00Z"
    try:
        when = dt.datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        return None, f"{label} must be an ISO 8601 date and time, e.g. 2030-01-31T12:00:00Z"
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)), None


def _options(data: Mapping[str, Any], errors: dict[str, str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    queue = data.get("queue")
    if not _blank(queue):
        if not isinstance(queue, str) or len(queue.strip()) > QUEUE_MAX or any(c.isspace() for c in queue.strip()):
            errors["queue"] = f"a queue name without spaces, at most {QUEUE_MAX} characters"
        else:
            options["queue"] = queue.strip()
    eta, err = _when(data.get("eta"), "eta")
    if err:
        errors["eta"] = err
    elif eta is not None:
        options["eta"] = eta
    raw_expires = data.get("expires")
    if not _blank(raw_expires):
        seconds = number(raw_expires, integer=False)
        if seconds is not None:
            if 0 < seconds <= MAX_EXPIRES:
                options["expires"] = float(seconds)
            else:
                errors["expires"] = f"seconds from 0 to {int(MAX_EXPIRES)}, or an ISO 8601 date and time"
        else:
            when, err = _when(raw_expires, "expires")
            if err:
                errors["expires"] = f"{err}, or a number of seconds"
            else:
                options["expires"] = when
    raw_priority = data.get("priority")
    if not _blank(raw_priority):
        priority = number(raw_priority, integer=True)
        if priority is None or not 0 <= priority <= MAX_PRIORITY:
            errors["priority"] = f"a whole number from 0 to {MAX_PRIORITY}"
        else:
            options["priority"] = int(priority)
    return options


def _confirmed(data: Mapping[str, Any]) -> bool:
    value = data.get(UNREGISTERED_OK)
    return value is True or (isinstance(value, str) and value.strip().lower() in _TRUE)


def validate(
    data: Mapping[str, Any], tasks: Iterable[TaskSpec] | None = None, confirm: bool = False
) -> tuple[LaunchRequest | None, dict[str, str]]:
    """Check a launch form or API body against the catalogue (`tasks`; the demo tasks when None); returns
    (request, {}) or (None, {field: message}).

    `confirm` (what the form and the API ask): a task no online worker has registered is refused on the task
    field with its warning unless the body confirms it (UNREGISTERED_OK); without `confirm` (checks of the
    other fields alone) the request carries the warning instead."""
    errors: dict[str, str] = {}
    specs = {s.name: s for s in (DEMO_SPECS if tasks is None else tasks)}
    name = data.get("task")
    spec = specs.get(name) if isinstance(name, str) else None
    if spec is None:
        shown = sorted(specs)
        listed = ", ".join(shown[:20]) + (f" (and {len(shown) - 20} more)" if len(shown) > 20 else "")
        errors["task"] = "choose one of: " + listed if shown else "no task may be launched"
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
    options = _options(data, errors)
    if countdown and "eta" in options:
        errors["eta"] = "give a countdown or an eta, not both"
    if spec is not None and "args" not in errors and "kwargs" not in errors:
        if spec.fields:
            errors.update(_fields(spec, data, args, kwargs))
        elif data.get("params") is not None:
            errors["params"] = "this task's signature is not known here: give its arguments as args and kwargs"
        if not any(k.startswith("param") for k in errors):
            errors.update(_check_signature(spec, args, kwargs))
    if spec is not None and spec.warning and confirm and not _confirmed(data) and not errors:
        errors["task"] = f"{spec.warning} {CONFIRM}"
    if errors:
        return None, errors
    assert spec is not None and count is not None and countdown is not None  # each None left an error above
    return LaunchRequest(spec.name, args, kwargs, int(count), float(countdown), options, spec.warning), {}


def _check_signature(spec: TaskSpec, args: list[Any], kwargs: dict[str, Any]) -> dict[str, str]:
    """Arity errors a worker would raise as TypeError, caught before anything is sent."""
    if spec.params is None:
        return {}
    names = [p.name for p in spec.params]
    if len(args) > len(names) and not spec.var_args:
        return {"args": f"{spec.label} takes at most {len(names)} positional argument(s), got {len(args)}"}
    given = set(names[: len(args)])
    unknown = [k for k in kwargs if k not in names]
    if unknown and not spec.var_kwargs:
        return {"kwargs": f"unknown argument(s) {', '.join(map(repr, unknown))}; {spec.label} takes {', '.join(names)}"}
    twice = [k for k in kwargs if k in given]
    if twice:
        return {"kwargs": f"{', '.join(twice)} already given positionally"}
    missing = [p.name for p in spec.params if p.required and p.name not in given and p.name not in kwargs]
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
    options: dict[str, Any] = dict(req.options)
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
    params.update({k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in req.options.items()})
    if req.warning:
        params["unregistered"] = True  # sent although no online worker had it registered
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
