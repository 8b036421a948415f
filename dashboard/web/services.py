"""The per-app objects pages, the API and the live rooms share, built once in `build_services`.

Everything is passed to constructors in dependency order (core state first, then ingest and cluster
clients, then the read models and rooms); `Services.start()` starts the background loops, `stop()` ends them.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import current_app

from ..cluster.audit import AuditLog
from ..cluster.beat import BeatSchedule
from ..cluster.control import EventsEnabler, make_celery
from ..cluster.inspector import Inspector
from ..cluster.launch import TaskSpec, app_specs
from ..cluster.queues import QueueMonitor
from ..cluster.reconcile import Reconciler, backend_lookup
from ..concurrency import Runtime, start_thread
from ..core.masking import make_masker
from ..core.state import State
from ..ingest.gcpolicy import GcPolicy
from ..ingest.process import ReaderProcess
from ..ingest.seed import seed_in_flight
from ..ingest.snapshot import Snapshots
from ..ingest.stream import Ingest
from ..live.readmodels import ReadModels
from ..live.rooms import Rooms

if TYPE_CHECKING:
    from celery import Celery
    from flask_socketio import SocketIO

    from .server import ConnectionLimits


class Inflight:
    """How many HTTP requests are being served: event ingest yields to them."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def enter(self) -> None:
        """A request starts (Flask before_request)."""
        with self._lock:
            self.count += 1

    def leave(self, *_: Any) -> None:
        """A request ends, whatever happened (Flask teardown_request)."""
        with self._lock:
            self.count -= 1

    def busy(self) -> bool:
        """Whether any request is in flight."""
        return self.count > 0


@dataclass
class Services:
    """Everything one app instance runs; `start()` starts its background loops, `stop()` ends them."""

    config: dict[str, Any]
    state: State
    ingest: Ingest
    views: ReadModels  # what pages, the API and rooms show
    rooms: Rooms  # the live push
    celery: Celery  # a client of the broker: control, inspect, launch (never runs tasks); the user's app if any
    runtime: Runtime
    inflight: Inflight
    inspector: Inspector  # cached `inspect` replies per worker
    audit: AuditLog  # who did what, when, with what result
    queues: QueueMonitor  # queue lengths polled from the broker
    reconciler: Reconciler  # resolves tasks whose final event never came
    reader: ReaderProcess | None = None  # the event reader process and its feed (None: ingest disabled)
    enabler: EventsEnabler | None = None  # asks workers to send events (None: disabled)
    snapshots: Snapshots | None = None  # the optional state file
    connections: ConnectionLimits | None = None  # what clients hold (gevent server only)
    user_app: Celery | None = None  # the user's app (APP, `celery -A`): its registry and configuration
    app_tasks: list[TaskSpec] | None = None  # the launch form's specs of its tasks (None: no app)
    beat: BeatSchedule | None = None  # the periodic schedule (the app's beat_schedule, RedBeat's keys)
    _stopped: bool = field(default=False, repr=False)

    def start(self) -> None:
        """Start the loops: the push tick and the event feed where the sockets are (the hub), the rest as
        native threads that mostly wait on the broker (dashboard/concurrency.py says why)."""
        cfg = self.config
        self.runtime.spawn(self.rooms.run, name="push")
        if self.reader is None:
            return  # ingest disabled: nothing talks to the broker
        if self.enabler is not None:
            start_thread(self.enabler.run, name="enable-events")
        self.runtime.spawn(self.reader.run, name="ingest")
        if self.snapshots is not None:
            start_thread(self.snapshots.run, name="snapshots")
        if float(cfg["INSPECT_INTERVAL"]) > 0:
            start_thread(self.inspector.run, name="inspect")
        start_thread(self.queues.run, name="queue-lengths")
        if float(cfg["RECONCILE_INTERVAL"]) > 0:
            start_thread(self.reconciler.run, name="reconcile")
        # Tasks already running or waiting show up at once, not only at their next (maybe last) event.
        start_thread(
            seed_in_flight,
            self.celery,
            self.state,
            float(cfg["INSPECT_TIMEOUT"]),
            lambda: self.ingest.connected,
            name="seed",
        )

    def stop(self) -> None:
        """Stop every background loop, then save the snapshot if there is one (tests, and at shutdown)."""
        if self.reader is not None:
            self.reader.stop()
        self.ingest.stop()
        self.rooms.stop()
        for loop in (self.enabler, self.inspector, self.queues, self.reconciler, self.snapshots):
            if loop is not None:
                loop.stop()
        if self.snapshots is not None and not self._stopped:
            self.snapshots.save()  # after ingest stopped: the last events are in it
        self._stopped = True


def build_services(cfg: dict[str, Any], socketio: SocketIO, user_app: Celery | None = None) -> Services:
    """Construct every collaborator from the settings, in dependency order; nothing starts yet.

    `user_app` is the user's loaded app (dashboard/cluster/userapp.py), with BROKER_URL already resolved."""
    inflight = Inflight()
    runtime = Runtime(cfg["ASYNC_MODE"], busy=inflight.busy)
    state = State(
        max_tasks=int(cfg["MAX_TASKS"]), max_workers=int(cfg["MAX_WORKERS"]), mask=make_masker(cfg["MASK_PATTERNS"])
    )
    snapshots = None
    if cfg["SNAPSHOT_PATH"]:
        snapshots = Snapshots(state, cfg["SNAPSHOT_PATH"], float(cfg["SNAPSHOT_INTERVAL"]))
        snapshots.load()  # before ingest starts: events then apply on top of the restored state
    celery_app = make_celery(
        cfg["BROKER_URL"], float(cfg["LAUNCH_TIMEOUT"]), app=user_app, backend=str(cfg["RESULT_BACKEND"])
    )
    ingest_on = bool(cfg["INGEST_ENABLED"])
    enabler = None
    if ingest_on and float(cfg["ENABLE_EVENTS_INTERVAL"]) > 0:
        # Broadcasts run on their own thread: broker I/O for control never stalls the event stream.
        enabler = EventsEnabler(celery_app, float(cfg["ENABLE_EVENTS_INTERVAL"]), lambda: ingest.connected)
    # After each applied batch: the GC policy (ingest/gcpolicy.py: no long GC pauses), then wake the push loop
    # (a page quiet for an interval gets the change at once). The wake is the runtime's: it is set and
    # waited on by loops of the hub.
    wake = runtime.event()
    gc_tick = GcPolicy().tick

    def after_batch() -> None:
        gc_tick()
        wake.set()

    ingest = Ingest(
        state,
        cfg["BROKER_URL"],
        mode=cfg["INGEST"],
        reconnect_min=float(cfg["RECONNECT_MIN"]),
        reconnect_max=float(cfg["RECONNECT_MAX"]),
        pause=runtime.pause,
        after_batch=after_batch if ingest_on else None,
        on_connect=enabler.poke if enabler else None,
        on_worker_arrival=enabler.poke if enabler else None,
    )
    reader = (
        ReaderProcess(ingest, log_level=str(cfg["LOG_LEVEL"]), wrap_socket=runtime.wrap_socket, sleep=runtime.sleep)
        if ingest_on
        else None
    )
    inspector = Inspector(celery_app, state, float(cfg["INSPECT_INTERVAL"]), float(cfg["INSPECT_TIMEOUT"]))
    views = ReadModels(state, ingest if ingest_on else None, inspector, float(cfg["HIDE_OFFLINE_AFTER"]))
    rooms = Rooms(
        socketio, views, float(cfg["PUSH_INTERVAL"]), sleep=runtime.sleep, wake=wake, at_once=bool(cfg["PUSH_AT_ONCE"])
    )
    reconciler = Reconciler(
        state,
        inspector,
        interval=float(cfg["RECONCILE_INTERVAL"]),
        quiet=float(cfg["RECONCILE_AFTER"]),
        backend=backend_lookup(celery_app),
    )
    queues = QueueMonitor(
        state,
        cfg["BROKER_URL"],
        interval=float(cfg["QUEUE_POLL_INTERVAL"]),
        queues=str(cfg["QUEUES"]),
        inspector=inspector,
    )
    connections = None
    if runtime.green:
        from .server import ConnectionLimits, descriptor_budget  # gevent's server: only in gevent mode

        connections = ConnectionLimits(
            descriptor_budget(int(cfg["MAX_CONNECTIONS"])), int(cfg["MAX_CONNECTIONS_PER_ADDRESS"])
        )
    audit = AuditLog(str(cfg["AUDIT_LOG"] or ""))
    return Services(
        config=cfg,
        state=state,
        ingest=ingest,
        views=views,
        rooms=rooms,
        celery=celery_app,
        runtime=runtime,
        inflight=inflight,
        inspector=inspector,
        audit=audit,
        queues=queues,
        reconciler=reconciler,
        reader=reader,
        enabler=enabler,
        snapshots=snapshots,
        connections=connections,
        user_app=user_app,
        app_tasks=app_specs(user_app) if user_app is not None else None,
        beat=BeatSchedule(user_app, started_at=time.time(), timeout=float(cfg["INSPECT_TIMEOUT"])),
    )


def services() -> Services:
    """The services of the current app."""
    svc: Services = current_app.extensions["dashboard"]
    return svc
