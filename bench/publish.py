"""Publishing: a pre-rendered burst as fast as Redis takes it, or a paced stream in a child process."""

from __future__ import annotations

import logging
import multiprocessing as mp
import time
from typing import Any

import redis

from . import events as E

log = logging.getLogger(__name__)

PIPELINE = 500  # PUBLISH commands per pipeline round trip
TASK_CHANNEL = E.channel(E.TASK_MULTI)


def pack_burst(client: redis.Redis, messages: list[tuple[int, bytes]]) -> list[tuple[int, list[Any]]]:
    """The PUBLISH pipelines of a burst, packed by redis-py before timing: (commands, packed bytes)."""
    conn = client.connection_pool.get_connection()
    try:
        return [
            (len(chunk), conn.pack_commands([("PUBLISH", TASK_CHANNEL, msg) for _, msg in chunk]))
            for chunk in (messages[i : i + PIPELINE] for i in range(0, len(messages), PIPELINE))
        ]
    finally:
        client.connection_pool.release(conn)


def publish_burst(client: redis.Redis, packed: list[tuple[int, list[Any]]]) -> float:
    """Send pre-packed pipelines (what Pipeline.execute() does, without packing on the clock) and read
    every reply; returns the seconds from the first PUBLISH to the last reply."""
    conn = client.connection_pool.get_connection()
    try:
        t0 = time.perf_counter()
        for n, chunk in packed:
            conn.send_packed_command(chunk, check_health=False)
            for _ in range(n):
                conn.read_response()
        return time.perf_counter() - t0
    finally:
        client.connection_pool.release(conn)


def publish_workers(client: redis.Redis, messages: list[tuple[bytes, bytes]]) -> int:
    """PUBLISH worker events (online, heartbeats); returns how many."""
    if messages:
        with client.pipeline(transaction=False) as pipe:
            for ch, msg in messages:
                pipe.publish(ch, msg)
            pipe.execute()
    return len(messages)


def announce_workers(client: redis.Redis, workers: list[E.Worker]) -> int:
    """worker-online then a first heartbeat from every worker, as workers starting up send."""
    msgs = [E.worker_message(w, "worker-online") for w in workers]
    msgs += [E.worker_message(w, "worker-heartbeat") for w in workers]
    return publish_workers(client, msgs)


class PacedPublisher:
    """Publishes passes of a pool at `rate` events/s for `duration` s, with heartbeats, from a child
    process (so the bench's own threads do not disturb the pacing). Counters are shared."""

    TICK = 0.01

    def __init__(
        self,
        url: str,
        pool: E.Pool,
        rate: float,
        duration: float,
        *,
        salt: int = 0,
        first_pass: int = 1,
        heartbeats: bool = True,
    ) -> None:
        ctx = mp.get_context("fork")
        self.url, self.pool, self.rate, self.duration = url, pool, rate, duration
        self.salt, self.first_pass, self.heartbeats = salt, first_pass, heartbeats
        self.task_events = ctx.Value("q", 0, lock=False)
        self.worker_events = ctx.Value("q", 0, lock=False)
        self.started_at = ctx.Value("d", 0.0, lock=False)
        self.behind = ctx.Value("d", 0.0, lock=False)  # most events it was ever behind schedule
        self._stop = ctx.Event()
        self._proc = ctx.Process(target=self._run, name=f"bench-publisher-{rate:.0f}", daemon=True)

    def start(self) -> PacedPublisher:
        self._proc.start()
        deadline = time.monotonic() + 30
        while not self.started_at.value and self._proc.is_alive() and time.monotonic() < deadline:
            time.sleep(0.005)
        return self

    def published(self, with_workers: bool = True) -> int:
        return self.task_events.value + (self.worker_events.value if with_workers else 0)

    @property
    def pid(self) -> int:
        return self._proc.pid or 0

    def alive(self) -> bool:
        return self._proc.is_alive()

    def stop(self) -> None:
        self._stop.set()
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(5)

    def __enter__(self) -> PacedPublisher:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- in the child ----------------------------------------------------------------------------
    def _messages(self, scale: float) -> Any:
        renderer = E.Renderer(self.pool, salt=self.salt)
        for p in range(self.first_pass, self.first_pass + 100_000):
            yield from renderer.render_pass(p, time.time(), scale)

    def _run(self) -> None:
        client = redis.Redis.from_url(self.url)
        pool = self.pool
        virtual_rate = pool.events / pool.duration if pool.duration else self.rate
        messages = self._messages(virtual_rate / self.rate)
        beats = E.Heartbeats(pool.workers) if self.heartbeats else None
        sent = 0
        t0 = time.perf_counter()
        self.started_at.value = time.time()
        try:
            with client.pipeline(transaction=False) as pipe:
                while not self._stop.is_set():
                    elapsed = time.perf_counter() - t0
                    if elapsed >= self.duration:
                        break
                    due = self.rate * elapsed
                    if due - sent > self.behind.value:
                        self.behind.value = due - sent
                    n = 0
                    while sent < due and n < PIPELINE:
                        events, msg = next(messages)
                        pipe.publish(TASK_CHANNEL, msg)
                        sent += events
                        n += 1
                    workers = beats.due() if beats else []
                    for ch, msg in workers:
                        pipe.publish(ch, msg)
                    if n or workers:
                        pipe.execute()
                        self.task_events.value = sent
                        self.worker_events.value += len(workers)
                    if sent >= due:
                        time.sleep(self.TICK)
        finally:
            client.close()
