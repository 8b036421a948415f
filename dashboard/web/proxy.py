"""Behind a reverse proxy: the URL prefix and the trusted X-Forwarded-* headers.

Two WSGI middlewares outside the gate (dashboard/web/gate.py), so that what the gate checks is what the
browser sent to the proxy:

    ProxyFix (TRUSTED_PROXIES > 0)  ->  Prefix (URL_PREFIX, X-Forwarded-Prefix)  ->  Gate  ->  Socket.IO  ->  Flask

- ProxyFix (Werkzeug's) takes X-Forwarded-For, -Proto, -Host and -Prefix from the last TRUSTED_PROXIES
  proxies: REMOTE_ADDR is the client's (the sign-in throttle counts per client, not per proxy),
  `wsgi.url_scheme` is https behind TLS (the session cookie is Secure, CSRF's referrer check compares
  https origins), HTTP_HOST is the Host the browser sent to the proxy (the gate's Host allowlist checks
  that name, so a rebound DNS name is refused at the proxy too), SCRIPT_NAME the prefix the proxy
  stripped. With TRUSTED_PROXIES = 0 (the default) no such header changes anything: a client cannot
  name another Host, address or scheme. X-Forwarded-Port is never read: X-Forwarded-Host carries the port.
- Prefix puts URL_PREFIX in SCRIPT_NAME, taking it off PATH_INFO when the request still has it, so
  the pages, the API, the static files and Socket.IO (engine.io matches PATH_INFO against /socket.io/)
  answer under the prefix and without it (a proxy that strips it), and every URL Flask builds carries
  it. A forwarded prefix that is not a plain path is refused (400).

The pages get the prefix as `data-base` (templates/base.html, from `request.script_root`) and the
scripts build every URL from it (static/js/dom.js: `url()`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.wrappers import Request

from ..config import PREFIX_PATTERN
from .gate import wsgi_refusal

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class Prefix:
    """URL_PREFIX: SCRIPT_NAME gets it, PATH_INFO loses it when present; a bad forwarded prefix is a 400."""

    def __init__(self, app: WSGIApp, prefix: str) -> None:
        self.app = app
        self.prefix = prefix  # "" or "/a/b", as config.url_prefix() normalises it

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        script = environ.get("SCRIPT_NAME") or ""
        if script and not PREFIX_PATTERN.fullmatch(script):
            # Only a trusted proxy's X-Forwarded-Prefix (or the WSGI server) sets SCRIPT_NAME: a value
            # that is not a path would end up in every link of the page.
            message = "the forwarded URL prefix (X-Forwarded-Prefix) is not a path such as /celery"
            return wsgi_refusal(Request(environ, shallow=True), 400, message)(environ, start_response)
        script = script.rstrip("/")
        prefix = self.prefix
        if prefix:
            path = environ.get("PATH_INFO") or ""
            if path == prefix or path.startswith(prefix + "/"):
                environ["PATH_INFO"] = path[len(prefix) :] or "/"
                if not script.endswith(prefix):
                    script += prefix
            elif not script:
                script = prefix  # a proxy took it off (without saying so): the browser's URLs still have it
        environ["SCRIPT_NAME"] = script
        return self.app(environ, start_response)


def init_app(app: Flask) -> None:
    """Wrap the app's WSGI stack (the gate included) in Prefix, then ProxyFix when proxies are trusted."""
    hops = int(app.config.get("TRUSTED_PROXIES", 0))
    # (Replacing wsgi_app is Flask's documented way to add middleware; mypy refuses assigning to a method.)
    app.wsgi_app = Prefix(app.wsgi_app, str(app.config.get("URL_PREFIX", "")))  # type: ignore[method-assign]
    if hops:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=0, x_prefix=hops
        )
