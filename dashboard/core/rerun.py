"""Recovering a task's exact args and kwargs from the reprs its events carry (pure: no I/O).

Celery puts `saferepr(args, 1024, maxlevels=3)` into task-sent / task-received events: a repr, not
the values. It truncates long values (a `...` mark, or a string cut to end in `...`), replaces
containers nested too deep by `[...]`, does not escape backslashes or line breaks in strings, shows
bytes undecoded and objects as `<Foo object at 0x…>`. So a repr is accepted only when it parses as a
Python literal, contains no truncation mark, and printing the parsed values the way Celery does gives
back the very same text: then the values are the ones the task was sent with.
"""

from __future__ import annotations

import ast
import warnings
from dataclasses import dataclass
from typing import Any

from celery.app.amqp import AMQP
from celery.utils.saferepr import saferepr

from .masking import MASK

# Celery's limits for argsrepr / kwargsrepr (celery.app.amqp.AMQP): a repr this long may have been cut.
REPR_MAXSIZE = min(AMQP.argsrepr_maxsize, AMQP.kwargsrepr_maxsize)
NEAR_LIMIT = 8  # within this many characters of the limit counts as "possibly cut"
TRUNCATION_MARK = "..."

# Short reasons (the keys of a bulk dry run's "skipped" counts); the detail says more on one task.
MISSING = "arguments not seen"
MASKED = "arguments masked"
TRUNCATED = "arguments truncated"
NOT_LITERAL = "arguments not literal"
NOT_EXACT = "arguments not exact"
WRONG_SHAPE = "arguments of the wrong shape"
NO_NAME = "task name unknown"


class NotRecoverable(ValueError):
    """The arguments cannot be recovered exactly: `code` is a short reason, str() says why."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


@dataclass(frozen=True)
class RerunPlan:
    """What a re-run would send, or why it cannot (GET /api/tasks/<uuid>/rerun)."""

    possible: bool
    reason: str | None
    code: str | None
    name: str | None
    args: list[Any] | None
    kwargs: dict[str, Any] | None
    queue: str | None
    exchange: str | None = None
    routing_key: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The API shape."""
        return {
            "possible": self.possible,
            "reason": self.reason,
            "name": self.name,
            "args": self.args,
            "kwargs": self.kwargs,
            "queue": self.queue,
        }


def _literal(text: str, label: str) -> Any:
    if len(text) >= REPR_MAXSIZE - NEAR_LIMIT:
        raise NotRecoverable(
            TRUNCATED,
            f"the {label} repr is {len(text)} characters long: Celery cuts reprs "
            f"at {REPR_MAXSIZE}, so it may be incomplete",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "invalid escape sequence": the round trip below decides
            value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        if TRUNCATION_MARK in text:
            raise NotRecoverable(
                TRUNCATED, f"the {label} repr was truncated by Celery (it contains '{TRUNCATION_MARK}')"
            ) from exc
        hint = " (it contains an object shown as <…>)" if "<" in text and ">" in text else ""
        raise NotRecoverable(NOT_LITERAL, f"the {label} repr is not a Python literal{hint}") from exc
    _check_values(value, label)
    if saferepr(value, None, 0) != text:
        # e.g. a string with a backslash or line break: Celery does not escape them, so what parsed
        # may not be what was sent.
        raise NotRecoverable(
            NOT_EXACT,
            f"the {label} repr does not print back the same way, so the values "
            "parsed from it may differ from the ones sent",
        )
    return value


def _check_values(value: Any, label: str) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if item is Ellipsis:
            raise NotRecoverable(
                TRUNCATED,
                f"the {label} repr was truncated by Celery (values nested too deep "
                "or cut at its length limit are shown as '...')",
            )
        if isinstance(item, str):
            if item.endswith(TRUNCATION_MARK):
                raise NotRecoverable(
                    TRUNCATED,
                    f"a string in the {label} ends with '{TRUNCATION_MARK}', Celery's "
                    "truncation mark: it may have been cut",
                )
        elif isinstance(item, bytes):
            raise NotRecoverable(NOT_EXACT, f"the {label} contain bytes, which Celery shows without escaping")
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (set, frozenset)) and Ellipsis in item:
            stack.append(Ellipsis)  # `{...}`: a dict nested too deep, which parses as a set
        elif isinstance(item, (set, frozenset, complex)):
            raise NotRecoverable(
                NOT_EXACT, f"the {label} contain a {type(item).__name__}, which a JSON message cannot carry"
            )
        elif item is not None and not isinstance(item, (bool, int, float)):
            raise NotRecoverable(NOT_LITERAL, f"the {label} contain a {type(item).__name__}")


def recover(args_repr: Any, kwargs_repr: Any) -> tuple[list[Any], dict[str, Any]]:
    """The exact (args, kwargs) of a task from its reprs, or NotRecoverable saying why not."""
    if args_repr is None or kwargs_repr is None:
        raise NotRecoverable(
            MISSING,
            "the dashboard has not seen this task's arguments (they come with the task-sent and task-received events)",
        )
    if not isinstance(args_repr, str) or not isinstance(kwargs_repr, str):
        raise NotRecoverable(NOT_LITERAL, "the task's arguments are not reprs as Celery sends them")
    if MASK in args_repr or MASK in kwargs_repr:
        raise NotRecoverable(
            MASKED,
            "the arguments contain masked secrets (MASK_PATTERNS): the original values are not known to the dashboard",
        )
    args = _literal(args_repr, "args")
    kwargs = _literal(kwargs_repr, "kwargs")
    if not isinstance(args, (list, tuple)):
        raise NotRecoverable(WRONG_SHAPE, f"the args are a {type(args).__name__}, not a list or tuple")
    if not isinstance(kwargs, dict):
        raise NotRecoverable(WRONG_SHAPE, f"the kwargs are a {type(kwargs).__name__}, not a dict")
    if not all(isinstance(k, str) for k in kwargs):
        raise NotRecoverable(WRONG_SHAPE, "the kwargs have keys that are not strings")
    return list(args), kwargs


def plan(rec: Any) -> RerunPlan:
    """How a task record (name, args, kwargs, queue, exchange, routing_key) would be re-run."""
    queue = rec.queue if isinstance(rec.queue, str) and rec.queue else None
    routing = dict(
        exchange=rec.exchange if isinstance(rec.exchange, str) else None,
        routing_key=rec.routing_key if isinstance(rec.routing_key, str) else None,
    )
    name = rec.name if isinstance(rec.name, str) and rec.name else None
    try:
        if name is None:
            raise NotRecoverable(NO_NAME, "the task's name is unknown (no task-sent or task-received event seen)")
        args, kwargs = recover(rec.args, rec.kwargs)
    except NotRecoverable as exc:
        return RerunPlan(False, str(exc), exc.code, name, None, None, queue, **routing)
    return RerunPlan(True, None, None, name, args, kwargs, queue, **routing)


__all__ = ["REPR_MAXSIZE", "NotRecoverable", "RerunPlan", "plan", "recover"]
