"""How work runs in the dashboard process, for each async mode.

gevent (the default): one hub thread holds every socket (HTTP, websockets) as a greenlet and also
applies events to the state, in slices, yielding between them: nothing CPU-bound runs on another
thread of this process, so no thread holds the GIL while the hub waits for it (a CPU-bound thread
makes every socket write of the hub wait up to the 5 ms switch interval). The event reader runs in
a process of its own (dashboard/ingest/process.py). Loops that wait on the broker (inspect, queue lengths,
enable_events, snapshots) are native threads: they sleep most of the time. A request that must wait
on the broker (launch, control) hands that call to gevent's thread pool (`offload`), so the hub
never blocks. No monkey-patching: the dashboard runs inside processes where Celery, kombu and redis
were imported first (`celery -A proj dashboard`), and nothing else changes behaviour under it.

threading (development): every request and websocket holds a server thread; the same code runs,
with `pause` handing the GIL to requests in flight.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
MODES = ("gevent", "threading")
YIELD_SECONDS = 0.001  # threading mode: how long ingest steps aside while a request is served


class Wake(Protocol):
    """A flag one loop waits on and another sets (threading.Event's interface, gevent's Event has it too)."""

    def set(self) -> None: ...
    def clear(self) -> None: ...
    def is_set(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> bool: ...


class Runtime:
    """The primitives of one async mode: sleep, spawn on the hub, native threads, offload, sockets."""

    def __init__(self, mode: str, busy: Callable[[], bool] = lambda: False) -> None:
        if mode not in MODES:
            raise ValueError(f"ASYNC_MODE must be one of {', '.join(MODES)}, not {mode!r}")
        self.mode = mode
        self._busy = busy

    @property
    def green(self) -> bool:
        """Whether sockets are served by the gevent hub."""
        return self.mode == "gevent"

    def sleep(self, seconds: float) -> None:
        """Sleep without blocking other work of the loop that called it (a greenlet yields)."""
        if self.green:
            import gevent

            gevent.sleep(seconds)
        else:
            time.sleep(seconds)

    def pause(self) -> None:
        """Between two slices of CPU-bound work on the hub (or the ingest thread): let others run first."""
        if self.green:
            import gevent

            # Not sleep(0): a greenlet that keeps sleeping 0 runs again before the loop polls its sockets
            # (measured: a page waited 200-380 ms during a burst). idle() resumes once the loop has
            # handled every socket that was ready: requests and websocket writes first, then ingest.
            gevent.idle()
        elif self._busy():
            # A page or API call is being served: hand it the GIL and the state lock (neither is fair
            # in CPython, and a CPU-bound thread keeps the GIL for 5 ms at a time).
            time.sleep(YIELD_SECONDS)

    def event(self) -> Wake:
        """A flag for a loop of the hub to wait on: gevent's Event (a wait yields to the hub; threading's
        would block every socket), threading's in threading mode. Set it from the hub's own loops only."""
        if self.green:
            from gevent.event import Event

            return Event()
        return threading.Event()

    def spawn(self, target: Callable[..., Any], *args: Any, name: str) -> Any:
        """Run a loop where sockets live: a greenlet on the hub (gevent) or a daemon thread."""
        if self.green:
            import gevent

            glet = gevent.spawn(target, *args)
            glet.name = name
            return glet
        return start_thread(target, *args, name=name)

    def wrap_socket(self, sock: socket.socket) -> Any:
        """A socket whose blocking calls yield to the hub (gevent), or the socket itself."""
        if self.green:
            from gevent import socket as gsocket

            return gsocket.socket(fileno=sock.detach())
        return sock


def start_thread(target: Callable[..., Any], *args: Any, name: str) -> threading.Thread:
    """A native daemon thread, whatever the async mode (for loops that wait on the broker)."""
    thread = threading.Thread(target=target, args=args, name=name, daemon=True)
    thread.start()
    return thread


def offload(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call `fn` so that the gevent hub keeps serving meanwhile: on gevent's thread pool when called
    from a greenlet, directly anywhere else (a native thread, threading mode). For calls that wait
    on the broker or on a slow hash; `fn` must not use Flask's request globals (another thread)."""
    hub = _hub_of_this_greenlet()
    if hub is None:
        return fn(*args, **kwargs)
    return hub.threadpool.apply(fn, args, kwargs)


def _hub_of_this_greenlet() -> Any:
    try:
        import gevent
        from gevent.hub import get_hub_if_exists
    except ImportError:  # pragma: no cover - gevent is a dependency; tolerate its absence in tools
        return None
    hub = get_hub_if_exists()
    if hub is None or gevent.getcurrent() is hub:
        return None
    return hub
