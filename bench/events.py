"""Celery event generator: kombu envelopes as a Celery 5 prefork worker publishes them on Redis.

A worker's dispatcher JSON-encodes each event (stdlib json, Celery's key order), buffers task
events and sends them as one `task.multi` envelope holding a JSON list of up to 24 events, and
sends worker events (`worker-online`, `worker-heartbeat`) one per envelope. A real prefork worker
flushes its buffers long before they hold 24: the default mix (`REAL_SIZES`) draws each message's
size from the shares `python -m bench.capture` recorded from a real worker; `SIZES_24` is the full
buffer of the dispatcher. kombu's Redis
transport PUBLISHes the envelope (base64 body) on `/<db>.celeryev/<routing key>`.

Everything is encoded by `envelope()` with the standard library, exactly as kombu does
(`bench/formatcheck.py` compares it field by field with a real `celery.events.Dispatcher`).
To publish millions of events without re-encoding JSON while timing, a `Pool` keeps each
`task.multi` body as a template whose uuids, timestamps and clocks are placeholders: rendering a
pass only joins bytes and base64-encodes, so every pass has fresh uuids and current timestamps.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import random
import re
import time
import uuid as uuidlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

DB = 0
BUFFER_LIMIT = 24  # celery.events.dispatcher.EventDispatcher buffer_limit
# Shares of task.multi messages by number of events, recorded from a real `celery worker -E -c 2`
# (prefork, Celery 5.7.0) under bursts of 5,000 short tasks by `python -m bench.capture`, three runs
# pooled (bench/README.md); the worker's main process sends them all.
REAL_SIZES: dict[int, float] = {1: 0.32, 2: 0.36, 3: 0.32}
SIZES_24: dict[int, float] = {BUFFER_LIMIT: 1.0}
MIXES: dict[str, dict[int, float]] = {"real": REAL_SIZES, "24": SIZES_24}
TASK_MULTI = "task.multi"
CHANNEL_PREFIX = f"/{DB}.celeryev/"
HEARTBEAT_FREQ = 2.0
SW = {"sw_ident": "py-celery", "sw_ver": "5.7.0", "sw_sys": "Linux"}

TASK_NAMES = (
    "shop.orders.create_order",
    "shop.orders.cancel_order",
    "shop.payments.charge_card",
    "shop.payments.refund",
    "shop.inventory.reserve_stock",
    "mail.send_email",
    "mail.send_newsletter",
    "media.thumbnails.resize_image",
    "media.video.transcode",
    "reports.build_daily_report",
    "reports.export_csv",
    "search.index_document",
    "search.reindex_shard",
    "users.sync_profile",
    "users.cleanup_sessions",
    "billing.invoices.generate",
    "billing.invoices.send",
    "analytics.track_event",
    "notifications.push",
    "integrations.webhooks.deliver",
)
# Rare word in the args of about 0.5% of tasks (the free-text query figure looks for it).
RARE_WORD = "zanzibar"
CITIES = ("lisbon", "berlin", "osaka", "lima", "oslo", "quito", "dakar", "perth", "austin", "malmo")

# A few real-looking failures: (exception class, message template, frames).
_FAILURES = (
    (
        "ConnectionResetError",
        "[Errno 104] Connection reset by peer (order {n})",
        (
            ("/srv/app/shop/payments.py", 88, "charge_card", "resp = gateway.charge(card_token, amount_cents)"),
            ("/srv/app/shop/gateway.py", 141, "charge", "return self._post('/v2/charges', payload)"),
            ("/srv/app/shop/gateway.py", 63, "_post", "r = self.session.post(self.base + path, json=body, timeout=10)"),
            (
                "/usr/lib/python3/dist-packages/requests/sessions.py",
                637,
                "post",
                'return self.request("POST", url, data=data, json=json, **kwargs)',
            ),
            (
                "/usr/lib/python3/dist-packages/requests/adapters.py",
                682,
                "send",
                "raise ConnectionError(err, request=request)",
            ),
        ),
    ),
    (
        "TimeoutError",
        "upstream did not answer within 30s (job {n})",
        (
            ("/srv/app/media/video.py", 212, "transcode", "out = run_ffmpeg(src, profile, deadline=30)"),
            ("/srv/app/media/ffmpeg.py", 47, "run_ffmpeg", "proc.wait(timeout=deadline)"),
            ("/usr/lib/python3.11/subprocess.py", 1264, "wait", "return self._wait(timeout=timeout)"),
        ),
    ),
    (
        "KeyError",
        "'sku-{n}'",
        (("/srv/app/shop/inventory.py", 35, "reserve_stock", "row = stock_by_sku[item['sku']]"),),
    ),
    (
        "ValueError",
        "invalid literal for int() with base 10: 'n/a' (row {n})",
        (
            ("/srv/app/reports/export.py", 97, "export_csv", "writer.writerows(format_row(r) for r in rows)"),
            ("/srv/app/reports/export.py", 97, "<genexpr>", "writer.writerows(format_row(r) for r in rows)"),
            ("/srv/app/reports/format.py", 22, "format_row", "qty = int(row['quantity'])"),
        ),
    ),
)
_TRACE_HEAD = (
    ("/usr/lib/python3/dist-packages/celery/app/trace.py", 453, "trace_task", "R = retval = fun(*args, **kwargs)"),
    (
        "/usr/lib/python3/dist-packages/celery/app/trace.py",
        736,
        "__protected_call__",
        "return self.run(*args, **kwargs)",
    ),
)
EXCEPTION_WORD = "ConnectionResetError"


def channel(routing_key: str) -> bytes:
    """The pub/sub channel kombu's Redis transport publishes a celeryev message on."""
    return (CHANNEL_PREFIX + routing_key).encode()


def envelope(body: Any, hostname: str, routing_key: str, delivery_tag: str | None = None) -> bytes:
    """One kombu message as the Redis transport PUBLISHes it (the body JSON, then base64)."""
    raw = json.dumps(body).encode("utf-8")
    return _envelope_raw(
        base64.b64encode(raw).decode("ascii"), hostname, routing_key, delivery_tag or str(uuidlib.uuid4())
    )


def _envelope_raw(b64: str, hostname: str, routing_key: str, delivery_tag: str) -> bytes:
    return json.dumps(
        {
            "body": b64,
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {"hostname": hostname},
            "properties": {
                "delivery_mode": 1,
                "delivery_info": {"exchange": "celeryev", "routing_key": routing_key},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": delivery_tag,
            },
        }
    ).encode("utf-8")


def event(
    type_: str, hostname: str, pid: int, clock: Any, timestamp: Any, utcoffset: float = 0.0, **fields: Any
) -> dict[str, Any]:
    """An event dict in celery.events.event()'s key order."""
    ev = {"hostname": hostname, "utcoffset": utcoffset, "pid": pid, "clock": clock}
    ev.update(fields)
    ev["timestamp"] = timestamp
    ev["type"] = type_
    return ev


def utcoffset() -> Any:
    """What the worker sends as `utcoffset` (celery.utils.time.utcoffset)."""
    from celery.utils.time import utcoffset as celery_utcoffset

    return celery_utcoffset()


@dataclass
class Worker:
    """A simulated worker: hostname, pid and Lamport clock."""

    hostname: str
    pid: int
    clock: int = 0
    processed: int = 0


def make_workers(n: int, seed: int = 1) -> list[Worker]:
    rng = random.Random(seed)
    return [Worker(f"celery@worker-{i + 1:02d}", rng.randrange(1000, 60000)) for i in range(n)]


def worker_message(w: Worker, type_: str, now: float | None = None, active: int = 0) -> tuple[bytes, bytes]:
    """(channel, envelope) of a worker-online / worker-heartbeat from `w`, encoded now."""
    w.clock += 1
    ev = event(
        type_,
        w.hostname,
        w.pid,
        w.clock,
        time.time() if now is None else now,
        utcoffset(),
        freq=HEARTBEAT_FREQ,
        active=active,
        processed=w.processed,
        loadavg=[0.52, 0.61, 0.58],
        **SW,
    )
    key = type_.replace("-", ".")
    return channel(key), envelope(ev, w.hostname, key)


class Heartbeats:
    """Heartbeats of every worker every `freq` seconds; call due() often, publish what it returns."""

    def __init__(self, workers: list[Worker], freq: float = HEARTBEAT_FREQ) -> None:
        self.workers = workers
        self.freq = freq
        self.next_at = 0.0
        self.sent = 0

    def due(self, now: float | None = None) -> list[tuple[bytes, bytes]]:
        now = time.time() if now is None else now
        if now < self.next_at:
            return []
        self.next_at = now + self.freq
        self.sent += len(self.workers)
        return [worker_message(w, "worker-heartbeat", now) for w in self.workers]


# -- task lifecycles -----------------------------------------------------------------------------


def _args_for(name: str, rng: random.Random, rare: bool) -> tuple[str, str, str]:
    """(args repr, kwargs repr, result repr) for one task, as Celery's safe_repr renders them."""
    n = rng.randrange(1, 10_000_000)
    city = RARE_WORD if rare else rng.choice(CITIES)
    if name.startswith("shop."):
        args: tuple = (n, f"cus_{rng.randrange(16**8):08x}")
        kwargs: dict = {"amount_cents": rng.randrange(100, 99999), "currency": "EUR", "ship_to": city}
        result: Any = {"ok": True, "order": n}
    elif name.startswith("mail."):
        args = (f"user{n}@example.com", "welcome" if rng.random() < 0.5 else "receipt")
        kwargs = {"locale": "en", "city": city}
        result = f"<250 2.0.0 Ok: queued as {n:X}>"
    elif name.startswith("media."):
        args = (f"s3://media/uploads/{n}/{city}.jpg",)
        kwargs = {"sizes": [64, 256, 1024]}
        result = [f"s3://media/thumbs/{n}/{s}.jpg" for s in (64, 256)]
    elif name.startswith("reports."):
        args = (f"2026-11-{rng.randrange(1, 29):02d}", city)
        kwargs = {}
        result = {"rows": rng.randrange(100, 50000), "path": f"/reports/{n}.csv"}
    else:
        args = (n,)
        kwargs = {"source": city, "attempt": 1}
        result = None
    return repr(args), repr(kwargs), repr(result)  # kombu's safe_repr is repr() for these types


def _traceback(rng: random.Random) -> tuple[str, str, str]:
    """(exception class, exception repr, traceback text) of one failure, message varying."""
    cls, template, frames = rng.choice(_FAILURES)
    msg = template.format(n=rng.randrange(1, 10_000_000))
    lines = ["Traceback (most recent call last):\n"]
    for path, line, func, code in _TRACE_HEAD + frames:
        lines.append(f'  File "{path}", line {line}, in {func}\n    {code}\n')
    lines.append(f"{cls}: {msg}\n")
    return cls, f"{cls}({msg!r})", "".join(lines)


@dataclass
class _Ev:
    t: float  # virtual time (s) from the pool start
    worker: int
    order: int  # tie-break: a task's events stay in order
    fields: dict[str, Any]
    type_: str


def task_lifecycles(n_tasks: int, n_workers: int, rate: float, seed: int, stats: dict[str, Any]) -> list[_Ev]:
    """Events of n_tasks full lifecycles (virtual times at `rate` tasks/s), in time order.

    Task uuids are placeholders ("~U<index>~") and timestamps virtual; Pool renders both.
    ~7% fail with a traceback, ~3% are retried once (task-retried, then received with an eta,
    started and succeeded), the rest succeed; ~20% have a parent (a task launched by another).
    """
    rng = random.Random(seed)
    weights = [1.0 / (i + 1) for i in range(len(TASK_NAMES))]  # a few names dominate
    out: list[_Ev] = []
    order = 0
    for i in range(n_tasks):
        name = rng.choices(TASK_NAMES, weights)[0]
        w = rng.randrange(n_workers)
        rare = rng.random() < 0.005
        args, kwargs, result = _args_for(name, rng, rare)
        me = f"~U{i}~"
        parent = f"~U{rng.randrange(max(0, i - 500), i)}~" if i and rng.random() < 0.2 else None
        root = parent or me
        t = i / rate
        evs: list[tuple[float, str, dict[str, Any]]] = []
        received = dict(
            uuid=me,
            name=name,
            args=args,
            kwargs=kwargs,
            root_id=root,
            parent_id=parent,
            retries=0,
            eta=None,
            expires=None,
        )
        evs.append((t, "task-received", received))
        t += rng.uniform(0.0002, 0.003)
        evs.append((t, "task-started", dict(uuid=me)))
        runtime = rng.lognormvariate(-3.5, 1.0)
        roll = rng.random()
        if roll < 0.03:  # retried once, then succeeds
            _, exc, tb = _traceback(rng)
            t += runtime
            evs.append((t, "task-retried", dict(uuid=me, exception=exc, traceback=tb)))
            t += 0.001
            eta = time.strftime("%Y-%m-%dT%H:%M:%S.000000+00:00", time.gmtime(time.time() + 1))
            evs.append((t, "task-received", dict(received, retries=1, eta=eta, parent_id=me)))
            t += 1.0
            evs.append((t, "task-started", dict(uuid=me)))
            stats["retried"] += 1
        roll = rng.random()
        t += runtime
        if roll < 0.07:
            cls, exc, tb = _traceback(rng)
            evs.append((t, "task-failed", dict(uuid=me, exception=exc, traceback=tb)))
            stats["failed"] += 1
            stats["exceptions"][cls] = stats["exceptions"].get(cls, 0) + 1
        else:
            evs.append((t, "task-succeeded", dict(uuid=me, result=result, runtime=round(runtime, 6))))
        stats["rare"] += rare
        stats["names"][name] = stats["names"].get(name, 0) + 1
        stats["workers"][w] = stats["workers"].get(w, 0) + 1
        for tt, type_, fields in evs:
            out.append(_Ev(tt, w, order, fields, type_))
            order += 1
    out.sort(key=lambda e: (e.t, e.order))
    return out


# -- templates ---------------------------------------------------------------------------------

_SLOT = re.compile(rb'"~([UTC])([0-9.e+-]+)~"')
_U, _T, _C = 0, 1, 2


@dataclass
class Template:
    """One task.multi message: literal byte pieces around uuid/timestamp/clock slots."""

    worker: int
    n_events: int
    lits: tuple[bytes, ...]
    slots: tuple[tuple[int, Any], ...]


def _template(worker: int, evs: list[_Ev], workers: list[Worker]) -> Template:
    w = workers[worker]
    offset = utcoffset()
    body = []
    for e in evs:
        w.clock += 1
        body.append(event(e.type_, w.hostname, w.pid, f"~C{w.clock}~", f"~T{e.t!r}~", offset, **e.fields))
    raw = json.dumps(body).encode("utf-8")
    parts = _SLOT.split(raw)
    lits = tuple(parts[0::3])
    kinds = parts[1::3]
    vals = parts[2::3]
    slots = []
    for k, v in zip(kinds, vals):
        if k == b"U":
            slots.append((_U, int(v)))
        elif k == b"T":
            slots.append((_T, float(v)))
        else:
            slots.append((_C, int(v)))
    return Template(worker, len(evs), lits, tuple(slots))


@dataclass
class Pool:
    """Pre-encoded task.multi templates, in publish order, for `tasks` full (or cut) lifecycles."""

    workers: list[Worker]
    templates: list[Template]
    n_tasks: int
    events: int
    duration: float  # virtual seconds the templates span
    stats: dict[str, Any]
    suffixes: list[bytes] = field(default_factory=list)  # uuid without its first 8 hex digits
    last_task: int = 0  # index of the task whose event is published last
    last_type: str = ""
    _env: dict[int, tuple[bytes, bytes, bytes]] = field(default_factory=dict)

    def envelope_parts(self, worker: int) -> tuple[bytes, bytes, bytes]:
        """(before body, between body and delivery tag, after tag) of this worker's envelope."""
        parts = self._env.get(worker)
        if parts is None:
            raw = _envelope_raw("~B~", self.workers[worker].hostname, TASK_MULTI, "~D~")
            pre, rest = raw.split(b"~B~")
            mid, post = rest.split(b"~D~")
            parts = self._env[worker] = (pre, mid, post)
        return parts


def build_pool(
    workers: list[Worker],
    n_tasks: int,
    *,
    max_events: int | None = None,
    rate: float = 20_000.0,
    seed: int = 7,
    sizes: dict[int, float] | None = None,
) -> Pool:
    """Templates of n_tasks lifecycles (cut at max_events when given), batched per worker in task.multi
    messages whose sizes are drawn (seeded) from `sizes` (events -> share; default REAL_SIZES)."""
    t0 = time.perf_counter()
    stats: dict[str, Any] = {"failed": 0, "retried": 0, "rare": 0, "exceptions": {}, "names": {}, "workers": {}}
    evs = task_lifecycles(n_tasks, len(workers), rate, seed, stats)
    if max_events is not None:
        evs = evs[:max_events]
    # Each worker buffers its own task events and sends a message when its buffer holds the size
    # drawn for it; a message leaves when its last event was buffered, so messages are ordered by
    # that time across workers.
    mix = sizes or REAL_SIZES
    size_rng = random.Random(seed + 2)
    choices, weights = list(mix), list(mix.values())
    buffers: dict[int, list[_Ev]] = {}
    wanted: dict[int, int] = {}
    batches: list[tuple[float, int, list[_Ev]]] = []
    for e in evs:
        buf = buffers.setdefault(e.worker, [])
        if not buf:
            wanted[e.worker] = size_rng.choices(choices, weights)[0]
        buf.append(e)
        if len(buf) >= wanted[e.worker]:
            batches.append((e.t, e.order, buf))
            buffers[e.worker] = []
    for buf in buffers.values():
        if buf:
            batches.append((buf[-1].t, buf[-1].order, buf))
    batches.sort(key=lambda b: (b[0], b[1]))
    templates = [_template(b[2][0].worker, b[2], workers) for b in batches]
    rng = random.Random(seed + 1)
    suffixes = []
    for _ in range(n_tasks):
        u = str(uuidlib.UUID(int=rng.getrandbits(128), version=4))
        suffixes.append(u[8:].encode())
    last = batches[-1][2][-1] if batches else None
    stats["sizes"] = {n: sum(1 for b in batches if len(b[2]) == n) for n in sorted({len(b[2]) for b in batches})}
    pool = Pool(
        workers,
        templates,
        n_tasks,
        len(evs),
        evs[-1].t if evs else 0.0,
        stats,
        suffixes,
        int(last.fields["uuid"][2:-1]) if last else 0,
        last.type_ if last else "",
    )
    log.info(
        "pool: %d tasks, %d events in %d task.multi messages, built in %.1fs",
        n_tasks,
        len(evs),
        len(templates),
        time.perf_counter() - t0,
    )
    return pool


class Renderer:
    """Renders a pool pass after pass: fresh uuids (first 8 hex digits per pass), current timestamps."""

    def __init__(self, pool: Pool, salt: int | None = None) -> None:
        self.pool = pool
        self.salt = random.getrandbits(31) if salt is None else salt
        self._clock_base = 0

    def uuid_of(self, task: int, pass_no: int) -> str:
        return (b"%08x" % ((self.salt + pass_no) & 0xFFFFFFFF) + self.pool.suffixes[task]).decode()

    def render_pass(self, pass_no: int, tbase: float, time_scale: float = 1.0) -> Iterator[tuple[int, bytes]]:
        """(events, envelope) of every template: uuids of this pass, timestamps tbase + offset * scale."""
        pool = self.pool
        prefix = b"%08x" % ((self.salt + pass_no) & 0xFFFFFFFF)
        uuids = [b'"' + prefix + s + b'"' for s in pool.suffixes]
        cbase = self._clock_base
        self._clock_base += pool.events + 1
        b64 = base64.b64encode
        for i, t in enumerate(pool.templates):
            out = [t.lits[0]]
            lits = t.lits
            for j, (kind, val) in enumerate(t.slots):
                if kind == _U:
                    out.append(uuids[val])
                elif kind == _T:
                    out.append(repr(tbase + val * time_scale).encode())
                else:
                    out.append(b"%d" % (cbase + val))
                out.append(lits[j + 1])
            pre, mid, post = pool.envelope_parts(t.worker)
            # a uuid4-shaped delivery tag, unique per message (kombu's is a uuid4)
            tag = prefix + b"-%04x-4%03x-8%03x-%012x" % (
                pass_no & 0xFFFF,
                t.worker & 0xFFF,
                (i >> 48) & 0xFFF,
                i & 0xFFFFFFFFFFFF,
            )
            yield t.n_events, b"".join((pre, b64(b"".join(out)), mid, tag, post))


def render_all(renderer: Renderer, pass_no: int = 0, time_scale: float = 1.0) -> list[tuple[int, bytes]]:
    """A whole pass rendered now (before timing starts)."""
    return list(renderer.render_pass(pass_no, time.time(), time_scale))


def marker_message(w: Worker, marker_uuid: str, name: str = "bench.marker") -> tuple[bytes, bytes]:
    """A task.multi with one task-received (what a worker flushes at low load), encoded now."""
    w.clock += 1
    ev = event(
        "task-received",
        w.hostname,
        w.pid,
        w.clock,
        time.time(),
        utcoffset(),
        uuid=marker_uuid,
        name=name,
        args="('marker',)",
        kwargs="{}",
        root_id=marker_uuid,
        parent_id=None,
        retries=0,
        eta=None,
        expires=None,
    )
    return channel(TASK_MULTI), envelope([ev], w.hostname, TASK_MULTI)


def new_marker_uuid() -> str:
    return str(uuidlib.UUID(bytes=os.urandom(16), version=4))
