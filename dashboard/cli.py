"""`celery-dashboard run` (monitor a broker) and `celery-dashboard demo` (local Redis + demo worker + web)."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from .config import load_config

log = logging.getLogger("dashboard")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="celery-dashboard", description="Live monitoring console for Celery.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="monitor the Celery cluster behind --broker")
    demo = sub.add_parser("demo", help="local Redis (when none answers), a demo worker and the dashboard")
    for p in (run, demo):
        p.add_argument("--broker", dest="BROKER_URL", help="broker URL (env DASHBOARD_BROKER_URL)")
        p.add_argument("--host", dest="HOST", help="bind address (env DASHBOARD_HOST, default 127.0.0.1)")
        p.add_argument("--port", dest="PORT", type=int, help="port (env DASHBOARD_PORT, default 5000)")
        p.add_argument("--async-mode", dest="ASYNC_MODE", choices=("gevent", "threading"),
                       help="gevent (default) or threading (development) (env DASHBOARD_ASYNC_MODE)")
        p.add_argument("--max-tasks", dest="MAX_TASKS", type=int, help="tasks kept in memory (default 100000)")
        p.add_argument("--max-workers", dest="MAX_WORKERS", type=int, help="workers kept (default 1000)")
        p.add_argument("--threads", dest="THREADS", type=int, help="server threads in threading mode (default 64)")
        p.add_argument("--log-level", dest="LOG_LEVEL", help="log level (default INFO)")
        p.add_argument("--snapshot", dest="SNAPSHOT_PATH", help="state snapshot file (env DASHBOARD_SNAPSHOT_PATH)")
        p.add_argument("--read-only", dest="READ_ONLY", action="store_true", default=None,
                       help="turn every control off (env DASHBOARD_READ_ONLY)")
    return parser


def serve(cfg: dict[str, Any]) -> None:
    """Serve the dashboard: gevent's WSGI server (default) or gunicorn's gthread worker (threading)."""
    from . import create_app

    if cfg["ASYNC_MODE"] == "gevent":
        from .web.server import bind, make_server, serve_forever

        listener = bind(cfg["HOST"], int(cfg["PORT"]))
        app = create_app(cfg)
        svc = app.extensions["dashboard"]
        server = make_server(listener, app, svc.connections, float(cfg["HEADER_TIMEOUT"]))
        log.info("dashboard at http://%s:%s", cfg["HOST"], cfg["PORT"])
        serve_forever(server, svc.stop)
        return
    from gunicorn.app.base import BaseApplication

    class Server(BaseApplication):  # one worker process: the state lives in memory, in one place
        def load_config(self) -> None:
            settings = {"bind": f"{cfg['HOST']}:{cfg['PORT']}", "workers": 1, "worker_class": "gthread",
                        "threads": int(cfg["THREADS"]), "graceful_timeout": 5, "keepalive": 5,
                        "loglevel": str(cfg["LOG_LEVEL"]).lower(), "errorlog": "-", "proc_name": "celery-dashboard",
                        # Runs in the worker process on SIGTERM and SIGINT alike: stop ingest, save the snapshot.
                        "worker_exit": lambda arbiter, worker: worker.wsgi.extensions["dashboard"].stop()}
            for key, value in settings.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return create_app(cfg)

    log.info("dashboard at http://%s:%s (threading mode: at most %s open websockets)", cfg["HOST"], cfg["PORT"],
             cfg["THREADS"])
    Server().run()


def _demo(cfg: dict[str, Any]) -> int:
    from .core.brokerurl import mask_url
    from .processes import ProcessError, is_local, redis_answers, start_redis, start_worker, stop_process

    children = []
    owner = os.getpid()  # gunicorn forks its worker inside serve(): only we may stop the children
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
        serve(cfg)
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `celery-dashboard` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if k != "command" and v is not None}
    try:
        cfg = load_config(overrides)
    except ValueError as exc:
        print(f"celery-dashboard: {exc}", file=sys.stderr)  # noqa: T201 - logging is not set up yet
        return 2
    logging.basicConfig(level=str(cfg["LOG_LEVEL"]).upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # SIGTERM ends the process through `finally` blocks, so children are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if args.command == "demo":
        return _demo(cfg)
    serve(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
