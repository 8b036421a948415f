"""Many Socket.IO clients from one asyncio process: live viewers, anonymous sockets, slowloris.

Speaks the engine.io v4 / Socket.IO v5 wire protocol directly over a websocket (the `websockets`
library), so a thousand viewers cost the load generator little: the dashboard is what is measured.

A viewer opens `/socket.io/?EIO=4&transport=websocket`, connects the default namespace (`40`),
subscribes to a view with an ack (`420["subscribe",{...}]`), answers pings and counts the updates
of its room. An anonymous socket opens the same URL and never connects a namespace (it answers
pings, so only the server can end it). A slowloris connection sends a request's headers one byte
at a time and never finishes them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

CONNECT_CONCURRENCY = 50  # handshakes in flight at once (the server's accept backlog is finite)


def auth_headers(user: str | None) -> dict[str, str]:
    """`Authorization: Basic …` for "name:password", or nothing."""
    if not user:
        return {}
    return {"Authorization": "Basic " + base64.b64encode(user.encode()).decode()}


@dataclass
class Viewer:
    """One live viewer's figures."""

    view: dict[str, Any]
    subscribed_at: float | None = None
    subscribe_seconds: float | None = None
    error: str | None = None
    updates: int = 0
    first_update: float | None = None
    last_update: float | None = None
    max_gap: float = 0.0
    closed: bool = False
    events: dict[str, int] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)


@dataclass
class Anonymous:
    """One anonymous socket's fate: refused at the handshake, closed by the server, or still open."""

    refused: int | None = None  # HTTP status of a refused handshake
    opened_at: float | None = None
    closed_after: float | None = None  # seconds from open to the server closing it
    error: str | None = None


def _ws_url(base: str) -> str:
    parts = urlsplit(base)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}/socket.io/?EIO=4&transport=websocket"


async def _viewer(
    url: str, headers: dict[str, str], v: Viewer, stop: asyncio.Event, gate: asyncio.Semaphore, ready: list[int]
) -> None:
    import websockets

    try:
        async with gate:
            ws = await websockets.connect(
                url,
                additional_headers=headers,
                open_timeout=60,
                max_size=None,
                compression=None,
                ping_interval=None,
                close_timeout=1,
            )
            opened = await asyncio.wait_for(ws.recv(), 30)
            if not str(opened).startswith("0"):
                raise RuntimeError(f"unexpected open packet {str(opened)[:80]!r}")
            await ws.send("40")
            t0 = time.monotonic()
            while True:
                msg = str(await asyncio.wait_for(ws.recv(), 30))
                if msg.startswith("40"):
                    break
                if msg.startswith("44"):
                    raise RuntimeError(f"namespace refused: {msg[:120]}")
                if msg == "2":
                    await ws.send("3")
            await ws.send("420" + json.dumps(["subscribe", v.view]))
            while True:
                msg = str(await asyncio.wait_for(ws.recv(), 30))
                if msg.startswith("430"):
                    ack = json.loads(msg[3:])[0]
                    if isinstance(ack, dict) and ack.get("error"):
                        raise RuntimeError(f"subscribe refused: {ack['error']}")
                    break
                if msg == "2":
                    await ws.send("3")
            v.subscribed_at = time.monotonic()
            v.subscribe_seconds = v.subscribed_at - t0
        ready[0] += 1
        while not stop.is_set():
            try:
                msg = await asyncio.wait_for(ws.recv(), 1.0)
            except TimeoutError:
                continue
            if isinstance(msg, bytes):
                continue
            if msg == "2":
                await ws.send("3")
            elif msg.startswith("42"):
                now = time.monotonic()
                name = msg[4 : msg.find('"', 4)]
                v.events[name] = v.events.get(name, 0) + 1
                v.bytes[name] = v.bytes.get(name, 0) + len(msg)
                if name == "status":
                    continue
                if v.last_update is not None:
                    v.max_gap = max(v.max_gap, now - v.last_update)
                else:
                    v.first_update = now
                v.last_update = now
                v.updates += 1
        await ws.close()
    except Exception as exc:  # noqa: BLE001 - a viewer's failure is a figure, not a crash
        v.error = f"{type(exc).__name__}: {exc}"[:200]
        v.closed = True
        if v.subscribed_at is None:
            ready[0] += 1  # counted as done trying


async def _anonymous(url: str, a: Anonymous, stop: asyncio.Event, gate: asyncio.Semaphore) -> None:
    import websockets
    from websockets.exceptions import InvalidStatus

    try:
        async with gate:
            ws = await websockets.connect(
                url, open_timeout=60, max_size=None, compression=None, ping_interval=None, close_timeout=1
            )
        a.opened_at = time.monotonic()
        while not stop.is_set():
            try:
                msg = await asyncio.wait_for(ws.recv(), 1.0)
            except TimeoutError:
                continue
            if msg == "2":
                await ws.send("3")  # keep the engine.io session alive: only the server may end it
        await ws.close()
    except InvalidStatus as exc:
        a.refused = exc.response.status_code
    except Exception as exc:  # noqa: BLE001 - closed by the server, or refused at the TCP level
        if a.opened_at is not None:
            a.closed_after = time.monotonic() - a.opened_at
        else:
            a.error = f"{type(exc).__name__}: {exc}"[:200]


async def _slowloris(host: str, port: int, stop: asyncio.Event, period: float, out: dict[str, int]) -> None:
    request = f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: slow\r\nX-Padding: {'a' * 4000}\r\n"
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError:
        out["refused"] += 1
        return
    out["opened"] += 1
    try:
        for ch in request:
            if stop.is_set():
                break
            writer.write(ch.encode())
            await writer.drain()
            await asyncio.sleep(period)
        else:
            out["finished"] += 1  # the server let it send every header line (it should not)
    except OSError:
        out["closed"] += 1
    finally:
        writer.close()


async def run_clients(
    base: str,
    *,
    viewers: list[dict[str, Any]],
    anonymous: int = 0,
    slowloris: int = 0,
    slowloris_period: float = 0.2,
    user: str | None = None,
    ready_cb: Any = None,
    stop_after: Any = None,
) -> dict[str, Any]:
    """Open the clients, call ready_cb() once all viewers are subscribed, run until stop_after() is
    true (polled every 0.2 s), then close everything and return the figures."""
    url = _ws_url(base)
    stop = asyncio.Event()
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    headers = auth_headers(user)
    vs = [Viewer(view) for view in viewers]
    ready = [0]
    tasks = [asyncio.create_task(_viewer(url, headers, v, stop, gate, ready)) for v in vs]
    t0 = time.monotonic()
    while ready[0] < len(vs) and time.monotonic() - t0 < 300:
        await asyncio.sleep(0.05)
    connect_seconds = time.monotonic() - t0
    anons = [Anonymous() for _ in range(anonymous)]
    tasks += [asyncio.create_task(_anonymous(url, a, stop, gate)) for a in anons]
    slow = {"opened": 0, "refused": 0, "closed": 0, "finished": 0}
    parts = urlsplit(base)
    tasks += [
        asyncio.create_task(_slowloris(parts.hostname or "127.0.0.1", parts.port or 80, stop, slowloris_period, slow))
        for _ in range(slowloris)
    ]
    await asyncio.sleep(1.0 if anonymous or slowloris else 0)  # let them open before the clock starts
    measured_from = time.monotonic()
    if ready_cb is not None:
        ready_cb()
    while not (stop_after is not None and stop_after()):
        await asyncio.sleep(0.2)
    measured_to = time.monotonic()
    stop.set()
    await asyncio.wait(tasks, timeout=30)
    return summarize(vs, anons, slow, connect_seconds, measured_from, measured_to)


def summarize(
    vs: list[Viewer], anons: list[Anonymous], slow: dict[str, int], connect_seconds: float, t0: float, t1: float
) -> dict[str, Any]:
    """The figures of one run: how many viewers got their room's updates, the anonymous sockets' fate."""
    subscribed = [v for v in vs if v.subscribed_at is not None]
    live = [v for v in subscribed if v.last_update is not None and v.last_update >= t1 - 5 and not v.closed]
    gaps = sorted(v.max_gap for v in live)
    subs = sorted(v.subscribe_seconds for v in subscribed if v.subscribe_seconds is not None)
    errors: dict[str, int] = {}
    for v in vs:
        if v.error:
            errors[v.error] = errors.get(v.error, 0) + 1
    open_anons = [a for a in anons if a.opened_at is not None and a.closed_after is None]
    closed = sorted(a.closed_after for a in anons if a.closed_after is not None)
    refused: dict[str, int] = {}
    for a in anons:
        if a.refused is not None:
            refused[str(a.refused)] = refused.get(str(a.refused), 0) + 1
    per_event: dict[str, list[int]] = {}
    for v in subscribed:
        for name, n in v.events.items():
            agg = per_event.setdefault(name, [0, 0])
            agg[0] += n
            agg[1] += v.bytes.get(name, 0)
    return {
        "viewers": len(vs),
        "subscribed": len(subscribed),
        "receiving": len(live),
        "messages": {
            name: {"count": n, "mean_bytes": round(b / n) if n else 0} for name, (n, b) in sorted(per_event.items())
        },
        "connect_seconds": round(connect_seconds, 2),
        "subscribe_p95": _pct(subs, 95),
        "updates_median": _median([v.updates for v in subscribed]),
        "max_gap_p95": _pct(gaps, 95),
        "max_gap_max": round(gaps[-1], 3) if gaps else None,
        "measured_seconds": round(t1 - t0, 1),
        "viewer_errors": dict(sorted(errors.items(), key=lambda kv: -kv[1])[:5]),
        "anonymous": {
            "tried": len(anons),
            "refused": refused,
            "closed": len(closed),
            "closed_after_max": round(closed[-1], 2) if closed else None,
            "still_open": len(open_anons),
            "errors": sum(1 for a in anons if a.error),
        },
        "slowloris": slow,
    }


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    import math

    return round(values[max(0, math.ceil(p / 100 * len(values)) - 1)], 3)


def _median(values: list[int]) -> float | None:
    import statistics

    return statistics.median(values) if values else None
