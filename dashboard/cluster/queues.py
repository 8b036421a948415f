"""Queues: lengths read from the broker in the background, consumers, oldest waiting task, queue wait.

For Redis brokers a `QueueMonitor` reads every known queue's length each QUEUE_POLL_INTERVAL seconds
with one pipelined round trip on its own connection (never the ingest one). Kombu's Redis transport
keeps one list per priority step: the queue's own key for steps 0-2, and `<queue>\\x06\\x16<step>`
for 3, 6 and 9 (kombu.transport.redis: PRIORITY_STEPS, Channel.sep, Channel._q_for_pri); all are read.
Known queues are the QUEUES setting, the queues task-sent events name, the queues workers consume
(their `active_queues` replies) and "celery". When the broker fails, the last lengths are kept and
marked stale. Other brokers get no lengths; consumers, oldest waiting task and waits still work.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..core.brokerurl import mask_url, scrub

if TYPE_CHECKING:
    from ..core.state import State
    from .inspector import Inspector

log = logging.getLogger(__name__)

try:  # the installed kombu's own key layout, so a change there is followed here
    from kombu.transport.redis import PRIORITY_STEPS, Channel

    PRIORITY_SEP: str = Channel.sep
except Exception:  # noqa: BLE001  # pragma: no cover - kombu without its Redis transport: its defaults (kombu 5.x)
    PRIORITY_STEPS, PRIORITY_SEP = [0, 3, 6, 9], "\x06\x16"

DEFAULT_QUEUE = "celery"
MAX_POLLED = 500  # queues read per round at most (hostile events could name thousands)
SCAN_SLICE = 2_000  # pending tasks looked at per hold of the state lock
SOCKET_TIMEOUT = 2.0
NOT_REDIS = "queue lengths are only read from Redis brokers"
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def is_redis(url: str) -> bool:
    """Whether queue lengths can be read from this broker URL."""
    return url.startswith(_REDIS_SCHEMES)


def priority_keys(queue: str) -> list[tuple[str, str]]:
    """(priority step, Redis key) of each list kombu keeps for `queue` (step 0 is the queue itself)."""
    return [(str(step), f"{queue}{PRIORITY_SEP}{step}" if step else queue) for step in PRIORITY_STEPS]


def consumers_from(replies: Any, online: Callable[[str], bool]) -> dict[str, list[str]]:
    """queue -> sorted hostnames consuming it, from active_queues replies {hostname: [{"name": ...}]}."""
    out: dict[str, set[str]] = {}
    if not isinstance(replies, dict):
        return {}
    for hostname, queues in replies.items():
        if not isinstance(hostname, str) or not isinstance(queues, list) or not online(hostname):
            continue
        for q in queues:
            name = q.get("name") if isinstance(q, dict) else None
            if isinstance(name, str):
                out.setdefault(name, set()).add(hostname)
    return {name: sorted(hosts) for name, hosts in out.items()}


class QueueMonitor:
    """Polls queue lengths and derives per-queue figures; `run()` loops until `stop()`."""

    def __init__(
        self,
        state: State,
        broker_url: str,
        *,
        interval: float = 2.0,
        queues: str = "",
        inspector: Inspector | None = None,
    ) -> None:
        self.state = state
        self.broker_url = broker_url
        self.interval = interval
        self.configured = [q.strip() for q in queues.split(",") if q.strip()]
        self.broker = "redis" if is_redis(broker_url) else "other"
        self.inspector = inspector  # whose `active_queues` replies name the consumers
        self.lengths: dict[str, dict[str, int]] = {}  # queue -> {priority step: length}
        self.oldest: dict[str, tuple[str, float]] = {}  # queue -> (uuid, sent) of the oldest waiting task
        self.consumers: dict[str, list[str]] = {}
        self.polled_at: float | None = None  # last successful read of the lengths
        self.checked_at: float | None = None  # last round, successful or not
        self.error: str | None = None
        self.polls = 0
        self.running = False
        self._client: Any = None
        self._lock = threading.Lock()  # one round at a time (the loop, or a request when no loop runs)
        self._stop = threading.Event()

    # -- lifecycle -----------------------------------------------------------------------------
    def run(self) -> None:
        """Poll every `interval` seconds until stop(); errors are kept for the page, never raised."""
        self.running = True
        try:
            while not self._stop.is_set():
                try:
                    self.poll()
                except Exception:
                    log.exception("queue poll failed")
                self._stop.wait(self.interval)
        finally:
            self.running = False

    def stop(self) -> None:
        """Stop the loop (it returns within one socket timeout)."""
        self._stop.set()
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - a broken connection may fail to close; we are leaving
                pass

    # -- one round -----------------------------------------------------------------------------
    def poll(self) -> None:
        """One round: consumers, oldest waiting tasks, then the lengths in one pipelined round trip."""
        with self._lock:
            now = time.time()
            try:
                # The inspector's cached active_queues replies (it asks the workers every INSPECT_INTERVAL).
                self.consumers = consumers_from(self._active_queues(), self._online_check(now))
            except Exception as exc:  # noqa: BLE001 - an inspector mid-refresh must not stop the lengths
                log.info("active_queues replies unavailable: %s", exc)
            self.oldest = self._oldest_waiting()
            if self.broker == "redis":
                self._read_lengths(self.known_queues())
            self.checked_at = time.time()
            self.polls += 1

    def known_queues(self) -> list[str]:
        """Configured ∪ seen in task events ∪ consumed by workers ∪ "celery", by name."""
        with self.state.lock:
            seen = self.state.queue_stats.names()
        names = {DEFAULT_QUEUE, *self.configured, *seen, *self.consumers, *self.oldest}
        ordered = sorted(names)
        if len(ordered) > MAX_POLLED:
            keep = {DEFAULT_QUEUE, *self.configured, *self.consumers}
            rest = [n for n in ordered if n not in keep][: max(0, MAX_POLLED - len(keep))]
            ordered = sorted(keep.union(rest))
        return ordered

    def _read_lengths(self, names: list[str]) -> None:
        try:
            client = self._client
            if client is None:
                import redis

                client = self._client = redis.Redis.from_url(
                    self.broker_url,
                    socket_connect_timeout=SOCKET_TIMEOUT,
                    socket_timeout=SOCKET_TIMEOUT,
                    health_check_interval=30,
                )
            pipe = client.pipeline(transaction=False)
            plan = []
            for name in names:
                for step, key in priority_keys(name):
                    pipe.llen(key)
                    plan.append((name, step))
            replies = pipe.execute(raise_on_error=False)
        except Exception as exc:  # noqa: BLE001 - broker down: keep the last lengths, say they are stale
            self._drop_client()
            self.error = scrub(f"{type(exc).__name__}: {exc}", self.broker_url)  # shown on the page
            log.info("queue lengths from %s unavailable: %s", mask_url(self.broker_url), self.error)
            return
        lengths: dict[str, dict[str, int]] = {}
        for (name, step), n in zip(plan, replies):
            # A key holding another type answers WRONGTYPE: not a queue, nothing waiting in it.
            lengths.setdefault(name, {})[step] = n if isinstance(n, int) else 0
        self.lengths = lengths
        self.polled_at = time.time()
        self.error = None

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001
                pass

    def _active_queues(self) -> Any:
        """{hostname: [{"name": queue, ...}]} from the inspector, or None without one."""
        return self.inspector.replies("active_queues") if self.inspector is not None else None

    def _online_check(self, now: float) -> Callable[[str], bool]:
        with self.state.lock:
            offline = {h for h, w in self.state.workers.items() if not w.alive(now)}
        # A worker the events never showed still replied just now: count it as a consumer.
        return lambda hostname: hostname not in offline

    def _oldest_waiting(self) -> dict[str, tuple[str, float]]:
        """Per queue, the PENDING task (task-sent seen, not yet received) with the earliest sent time.

        The PENDING set is copied under the lock and examined in slices, each under the lock, so a
        large backlog never holds ingest for long.
        """
        state = self.state
        with state.lock:
            pending = list(state.by_state["PENDING"])
        best: dict[str, tuple[str, float]] = {}
        tasks = state.tasks
        for start in range(0, len(pending), SCAN_SLICE):
            with state.lock:
                for uuid in pending[start : start + SCAN_SLICE]:
                    rec = tasks.get(uuid)
                    if rec is None or rec.state != "PENDING":
                        continue
                    sent = rec.sent
                    queue = rec.queue or rec.routing_key
                    if sent is None or queue.__class__ is not str:
                        continue
                    found = best.get(queue)
                    if found is None or sent < found[1]:
                        best[queue] = (uuid, sent)
        return best

    # -- readers -------------------------------------------------------------------------------
    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """The /api/queues body. Without a running loop (tests, INGEST_ENABLED off) it polls on demand."""
        if not self.running and (self.checked_at is None or time.time() - self.checked_at >= self.interval):
            self.poll()
        now = time.time() if now is None else now
        names = self.known_queues()
        state = self.state
        with state.lock:
            qs = state.queue_stats
            waits = {n: (qs.wait_sent(n), qs.wait_sent(n, now=now, window="recent")) for n in names}
            sent_seen = state.stats.total("sent") > 0  # task-sent events, whatever their queue
        lengths, oldest, consumers = self.lengths, self.oldest, self.consumers
        rows = []
        for name in names:
            prio = lengths.get(name)
            length = sum(prio.values()) if prio is not None else None
            old = oldest.get(name)
            # The broker says it is empty (fresh read): a pending task there lost its task-received event.
            if old is not None and length == 0 and self.error is None:
                old = None
            wait, recent = waits[name]
            rows.append(
                {
                    "name": name,
                    "length": length,
                    "priorities": prio,
                    "consumers": consumers.get(name, []),
                    "oldest_waiting": {"uuid": old[0], "sent": old[1], "age": max(0.0, now - old[1])} if old else None,
                    "wait": wait,
                    "wait_recent": recent,
                }
            )
        return {
            "queues": rows,
            "polled_at": self.polled_at,
            "stale": self.error is not None and self.broker == "redis",
            "error": self.error if self.broker == "redis" else NOT_REDIS,
            "sent_events_seen": sent_seen,
            "broker": self.broker,
            "interval": self.interval,
            "window_seconds": state.queue_stats.window_seconds,
        }
