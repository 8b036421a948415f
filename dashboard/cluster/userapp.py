"""The user's Celery app (APP, or `celery -A proj dashboard`): loaded here and nowhere else.

The dashboard imports the app only to read its configuration (broker, routes, queues, serializer, result
backend) and its task registry; it sends tasks and control commands through it and never runs a task.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


class AppNotLoaded(ValueError):
    """The app cannot be loaded: the message is one line that says which app and why."""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def load_app(path: str) -> Any:
    """The Celery app at `path`, found as `celery -A path` finds it (the module's `app` or `celery`, any Celery
    instance in it, or `module:attribute`), with the modules of its `imports` / `include` imported so that its
    registry is complete. AppNotLoaded says why it cannot be."""
    from celery import Celery
    from celery.app.utils import find_app
    from celery.utils.imports import import_from_cwd

    where = f"cannot load the Celery app {path!r}"
    try:
        found = find_app(path, imp=import_from_cwd)
    except ModuleNotFoundError as exc:
        raise AppNotLoaded(f"{where}: {_one_line(str(exc))}") from exc
    except AttributeError as exc:
        raise AppNotLoaded(
            f"{where}: no Celery app in it ({_one_line(str(exc))}; name it as module:attribute)"
        ) from exc
    except Exception as exc:
        raise AppNotLoaded(f"{where}: importing it raised {type(exc).__name__}: {_one_line(str(exc))}") from exc
    if not isinstance(found, Celery):
        raise AppNotLoaded(f"{where}: it is a {type(found).__name__}, not a Celery app")
    return prepare(found, path)


def prepare(app: Any, path: str | None = None) -> Any:
    """Import the modules of the app's `imports` / `include` (and what autodiscovery finds), as a worker of it
    would, so that its registry is complete; AppNotLoaded when one of them fails. Returns the app."""
    try:
        app.loader.import_default_modules()
    except Exception as exc:  # one of its task modules failed to import
        raise AppNotLoaded(
            f"cannot load the Celery app {path or describe(app)!r}: importing its task modules raised "
            f"{type(exc).__name__}: {_one_line(str(exc))}"
        ) from exc
    return app


def broker_url(app: Any) -> str:
    """The broker the app's workers use: its `broker_url` (which `celery -b` and CELERY_BROKER_URL set), else
    Celery's own default (amqp on localhost), as a URL with its password."""
    url = app.conf.broker_url
    if isinstance(url, (list, tuple)):
        url = url[0] if url else None
    if isinstance(url, str) and url:
        return url.split(";", 1)[0]  # failover URLs: the first, as kombu connects to it first
    return str(app.connection_for_write().as_uri(include_password=True))


def describe(app: Any) -> str:
    """The app's name for people (its `main`, else the module it was made in)."""
    return str(app.main or type(app).__module__)


__all__ = ["AppNotLoaded", "broker_url", "describe", "load_app", "prepare"]
