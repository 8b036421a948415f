"""`celery-dashboard run` (monitor a broker), `celery-dashboard demo` (local Redis + demo worker + web), and
`celery -A proj dashboard` (the `celery.commands` plugin: `celery_command`).

Every option comes from dashboard/config.py's SETTINGS through `setting_options`, which any click command
can reuse. Celery imports this module for every `celery` command (plugins load up front): keep its imports
light; Flask and the rest are imported when a command runs.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any

import click
from click.core import ParameterSource

from .config import CHOICES, CONFIG_ENV, SETTINGS, Setting, load_config, parse_value, shown_value

log = logging.getLogger(__name__)
PROG = "celery-dashboard"
DISTRIBUTION = "celery-live-dashboard"


class SettingError(click.ClickException):
    """A setting's value is wrong: one line on stderr, exit status 2."""

    exit_code = 2


class SettingType(click.ParamType):
    """A flag's value, parsed and checked by config.parse_value (the parser of environment variables)."""

    def __init__(self, setting: Setting) -> None:
        self.setting = setting
        self.name = {int: "integer", float: "float"}.get(type(setting.default), "text")

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        """[gevent|threading] for a setting with choices, else INTEGER, FLOAT or TEXT."""
        choices = CHOICES.get(self.setting.name)
        return f"[{'|'.join(choices)}]" if choices else self.name.upper()

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """Text from the command line -> the setting's type; the default passes as it is."""
        if not isinstance(value, str):
            return value
        try:
            return parse_value(self.setting, value)
        except ValueError as exc:
            raise SettingError(f"{self.setting.option}={shown_value(self.setting.name, value)} {exc}") from None


def _option(setting: Setting) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The click option of one setting: its flag (--x/--no-x for booleans), default and meaning."""
    help_text = f"{setting.help} Env: {setting.env_var}."
    if isinstance(setting.default, bool):
        name = setting.option[2:]
        return click.option(
            f"--{name}/--no-{name}", setting.file_key, default=setting.default, show_default=True, help=help_text
        )
    shown: bool | str = "random" if setting.name == "SECRET_KEY" else setting.default != ""
    return click.option(
        setting.option,
        setting.file_key,
        type=SettingType(setting),
        default=setting.default,
        show_default=shown,
        help=help_text,
    )


def config_from_options(
    ctx: click.Context, values: dict[str, Any], config_file: str | None, given: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The settings: defaults < config file < environment < the flags given on this command line (and `given`,
    settings the command learnt otherwise, such as celery's -A)."""
    flags = {
        s.name: values[s.file_key]
        for s in SETTINGS
        if s.file_key in values and ctx.get_parameter_source(s.file_key) is ParameterSource.COMMANDLINE
    }
    flags.update(given or {})
    try:
        return load_config(flags, config_file=config_file)
    except ValueError as exc:
        raise SettingError(str(exc)) from None


def setting_options(
    command: Callable[..., Any] | None = None,
    *,
    exclude: Sequence[str] = (),
    given: Callable[[click.Context], dict[str, Any]] | None = None,
) -> Callable[..., Any]:
    """Give a click command --config and one option per setting; it is called with the loaded settings first.

    `@setting_options`, or `@setting_options(exclude=("APP",), given=...)` for a command that learns some
    settings elsewhere: no flag for the excluded ones, and `given(ctx)` returns settings that take a flag's
    place (celery's -A for APP)."""
    if command is None:
        return functools.partial(setting_options, exclude=exclude, given=given)
    settings = [s for s in SETTINGS if s.name not in exclude]

    @functools.wraps(command)
    @click.pass_context
    def wrapper(ctx: click.Context, /, config_file: str | None, **kwargs: Any) -> Any:
        values = {s.file_key: kwargs.pop(s.file_key) for s in settings}
        return command(config_from_options(ctx, values, config_file, given(ctx) if given else None), **kwargs)

    decorated: Callable[..., Any] = wrapper
    for setting in reversed(settings):
        decorated = _option(setting)(decorated)
    return click.option(
        "--config",
        "config_file",
        metavar="FILE",
        help=f"TOML file of settings (keys: the names in lower case). Env: {CONFIG_ENV}.",
    )(decorated)


def load_user_app(cfg: dict[str, Any], app: Any = None) -> Any:
    """The user's app (`app` when the caller has it, else APP's, else None), with BROKER_URL resolved: set
    anywhere, it wins; else the app's broker_url. An app that cannot be loaded is one line and exit status 2."""
    from .cluster import userapp

    try:
        if app is not None:
            app = userapp.prepare(app, cfg["APP"] or None)  # celery -A imported the app's module only
        elif cfg["APP"]:
            app = userapp.load_app(cfg["APP"])
    except userapp.AppNotLoaded as exc:
        raise SettingError(str(exc)) from None
    if app is not None and not cfg["BROKER_URL"]:
        cfg["BROKER_URL"] = userapp.broker_url(app)
    return app


def version() -> str:
    """The installed package's version, or a clear stand-in when it is not installed."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown (not installed as a package)"


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(f"{PROG} {version()}")
        ctx.exit()


def check_listen(cfg: dict[str, Any]) -> None:
    """A port in use (or an address not of this machine) is one line and exit status 2, found before
    anything starts (the demo's Redis and worker, the reader process)."""
    from .processes import listen_problem

    problem = listen_problem(str(cfg["HOST"]), int(cfg["PORT"]))
    if problem:
        raise SettingError(f"cannot listen on {cfg['HOST']}:{cfg['PORT']}: {problem} (choose another with --port)")


def serve(cfg: dict[str, Any], celery_app: Any = None) -> None:
    """Serve the dashboard: gevent's WSGI server (default) or gunicorn's gthread worker (threading).

    `celery_app`: the user's app, loaded (load_user_app); create_app uses it as the Celery client."""
    from .factory import create_app

    check_listen(cfg)
    if cfg["ASYNC_MODE"] == "gevent":
        from .web.server import bind, make_server, serve_forever

        listener = bind(cfg["HOST"], int(cfg["PORT"]))
        app = create_app(cfg, celery_app)
        svc = app.extensions["dashboard"]
        server = make_server(listener, app, svc.connections, float(cfg["HEADER_TIMEOUT"]))
        log.info("dashboard at http://%s:%s", cfg["HOST"], cfg["PORT"])
        serve_forever(server, svc.stop)
        return
    from gunicorn.app.base import BaseApplication

    class Server(BaseApplication):  # one worker process: the state lives in memory, in one place
        def load_config(self) -> None:
            settings = {
                "bind": f"{cfg['HOST']}:{cfg['PORT']}",
                "workers": 1,
                "worker_class": "gthread",
                "threads": int(cfg["THREADS"]),
                "graceful_timeout": 5,
                "keepalive": 5,
                "loglevel": str(cfg["LOG_LEVEL"]).lower(),
                "errorlog": "-",
                "proc_name": PROG,
                # Runs in the worker process on SIGTERM and SIGINT alike: stop ingest, save the snapshot.
                "worker_exit": lambda arbiter, worker: worker.wsgi.extensions["dashboard"].stop(),
            }
            # gunicorn >= 25.1 binds a control socket for gunicornc, the same path for every instance
            # ($XDG_RUNTIME_DIR/gunicorn.ctl or ~/.gunicorn/gunicorn.ctl): one dashboard's would take another's.
            # The dashboard needs none (one worker, nothing to scale or reload).
            if "control_socket_disable" in self.cfg.settings:
                settings["control_socket_disable"] = True
            for key, value in settings.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return create_app(cfg, celery_app)

    log.info(
        "dashboard at http://%s:%s (threading mode: at most %s open websockets)",
        cfg["HOST"],
        cfg["PORT"],
        cfg["THREADS"],
    )
    Server().run()


def _demo(cfg: dict[str, Any], celery_app: Any = None) -> int:
    from .core.brokerurl import mask_url
    from .processes import ProcessError, is_local, redis_answers, start_redis, start_worker, stop_process

    children = []
    owner = os.getpid()  # gunicorn forks its worker inside serve(): only we may stop the children
    check_listen(cfg)  # before Redis and the worker start, not after
    try:
        url = cfg["BROKER_URL"]
        if not redis_answers(url):
            if not is_local(url):
                log.error("no Redis answers at %s; start it or pass --broker", mask_url(url))
                return 2
            log.info("no Redis answers at %s: starting a local one", mask_url(url))
            redis_proc, url = start_redis()
            children.append(redis_proc)
        cfg["BROKER_URL"] = url
        children.append(start_worker(url, int(cfg["DEMO_WORKER_CONCURRENCY"])))
        serve(cfg, celery_app)
        return 0
    except ProcessError as exc:
        log.error("%s", exc)
        return 2
    finally:
        if os.getpid() == owner:
            for proc in reversed(children):  # worker first, then the Redis it talks to
                stop_process(proc)
            if children:
                log.info("stopped %d child process(es)", len(children))


def _start(cfg: dict[str, Any]) -> None:
    """Logging at LOG_LEVEL; SIGTERM ends the process through `finally` blocks, so children are stopped too."""
    logging.basicConfig(level=str(cfg["LOG_LEVEL"]).upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version and exit.",
)
def cli() -> None:
    """Live monitoring console for Celery. Settings: defaults < config file < environment < flags."""


EPILOG = (
    f"Settings: defaults < config file (--config, {CONFIG_ENV}) < environment (DASHBOARD_*) < flags; "
    "docs/configuration.md lists them."
)


@cli.command(epilog=EPILOG)
@setting_options
def run(cfg: dict[str, Any]) -> None:
    """Monitor the Celery cluster behind --broker (or --app's broker)."""
    _start(cfg)
    serve(cfg, load_user_app(cfg))


@cli.command(epilog=EPILOG)
@setting_options
@click.pass_context
def demo(ctx: click.Context, cfg: dict[str, Any]) -> None:
    """A local Redis (when none answers), a demo worker and the dashboard."""
    _start(cfg)
    ctx.exit(_demo(cfg, load_user_app(cfg)))


def _celery_app_option(ctx: click.Context) -> dict[str, Any]:
    """celery's -A (the text; celery has loaded it into ctx.obj.app), as the APP setting when given."""
    given = ctx.find_root().params.get("app")
    return {"APP": given} if isinstance(given, str) and given else {}


@click.command("dashboard", epilog=EPILOG, context_settings={"max_content_width": 110})
@setting_options(exclude=("APP",), given=_celery_app_option)
@click.pass_context
def celery_command(ctx: click.Context, cfg: dict[str, Any]) -> None:
    """Live dashboard of the app's cluster: its broker, configuration and tasks (Celery Live Dashboard).

    The app is celery's -A (`celery -A proj dashboard --port 5001`); --broker, DASHBOARD_BROKER_URL or
    broker_url in --config override its broker. Without -A: `celery-dashboard run`.
    """
    # celery's group loaded -A into ctx.obj.app (its default app when -A is not given: then none is used).
    app = getattr(ctx.obj, "app", None) if _celery_app_option(ctx) else None
    _start(cfg)
    serve(cfg, load_user_app(cfg, app))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `celery-dashboard` console script: the exit status."""
    try:
        cli.main(args=None if argv is None else list(argv), prog_name=PROG)
    except SystemExit as exc:  # click ends every run with sys.exit; app.py wants the status
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        raise  # sys.exit("message"): Python prints it
    return 0


if __name__ == "__main__":
    sys.exit(main())
