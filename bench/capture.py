"""`python -m bench.capture`: what a real prefork worker publishes, message by message.

Starts a redis-server of its own on a free loopback port and a real `celery worker -E -c 2` (prefork)
running the short tasks of `bench/capture_app.py`, psubscribes to `/0.celeryev/*` before the worker
starts, and records every message: its channel, the envelope's routing key, the event types, how many
events a `task.multi` holds and the bytes PUBLISHed. It records the worker idle for `--idle` seconds,
then under a burst of `--tasks` short tasks sent at once, and prints per phase the share of
`task.multi` messages by number of events, the share of the other message types and the mean events
per message (`--output` writes the same as JSON). The generator's default mix (`events.REAL_SIZES`)
comes from these figures.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from dashboard.processes import start_redis, stop_process

from . import events as E
from .measure import wait_until
from .targets import ROOT, _die_with_parent, subscriptions

log = logging.getLogger("bench.capture")

CELERY = ROOT / ".venv" / "bin" / "celery"
QUIET = 3.0  # seconds without a message that end the burst


@dataclass
class Message:
    """One recorded PUBLISH."""

    at: float
    channel: str
    routing_key: str
    types: tuple[str, ...]  # the event types it carries, in order
    pids: tuple[int, ...]  # the sending process of each event (main process or a pool child)
    bytes: int  # the envelope as PUBLISHed


def decode(at: float, channel: bytes, data: bytes) -> Message:
    """A recorded message's routing key, events and size."""
    env = json.loads(data)
    body = json.loads(base64.b64decode(env["body"]))
    evs = body if isinstance(body, list) else [body]
    return Message(
        at,
        channel.decode(),
        env["properties"]["delivery_info"]["routing_key"],
        tuple(e.get("type", "?") for e in evs),
        tuple(int(e.get("pid") or 0) for e in evs),
        len(data),
    )


class Recorder(threading.Thread):
    """Records every message on the celeryev channels until stopped (decoding happens afterwards)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True, name="capture-recorder")
        self.client = redis.Redis.from_url(url)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.raw: list[tuple[float, bytes, bytes]] = []
        self.halt = threading.Event()
        self._scanned = 0  # raw messages counted by succeeded() so far
        self._succeeded = 0

    def run(self) -> None:
        while not self.halt.is_set():
            msg = self.pubsub.get_message(timeout=0.2)
            if msg and msg["type"] == "pmessage":
                self.raw.append((time.time(), msg["channel"], msg["data"]))

    def subscribe(self) -> None:
        """psubscribe before the worker starts, so its worker-online is recorded too."""
        before = subscriptions(self.client)
        self.pubsub.psubscribe(E.CHANNEL_PREFIX + "*")
        deadline = time.monotonic() + 5
        while subscriptions(self.client) <= before and time.monotonic() < deadline:
            time.sleep(0.02)

    def succeeded(self) -> int:
        """task-succeeded events recorded so far (decoding as we go would slow the recording: the new
        task.multi messages are counted lazily)."""
        upto = len(self.raw)  # the recording appends meanwhile: scan up to a fixed end
        for _, ch, data in self.raw[self._scanned : upto]:
            if ch.endswith(b"task.multi"):
                self._succeeded += decode(0.0, ch, data).types.count("task-succeeded")
        self._scanned = upto
        return self._succeeded

    def stop(self) -> list[Message]:
        """Stop recording; the messages decoded."""
        self.halt.set()
        self.join(5)
        self.pubsub.close()
        self.client.close()
        return [decode(*r) for r in self.raw]


def summarize(messages: list[Message]) -> dict[str, Any]:
    """Shares of message kinds and of task.multi sizes, mean events per message, bytes."""
    if not messages:
        return {"messages": 0}
    kinds = Counter(m.routing_key for m in messages)
    multi = [m for m in messages if m.routing_key == E.TASK_MULTI]
    sizes = Counter(len(m.types) for m in multi)
    events = sum(len(m.types) for m in messages)
    combos: dict[int, Counter[str]] = {}
    for m in multi:
        combos.setdefault(len(m.types), Counter())[" + ".join(m.types)] += 1
    return {
        "messages": len(messages),
        "events": events,
        "events_per_message": round(events / len(messages), 3),
        "task_events_per_task_multi": round(sum(sizes[k] * k for k in sizes) / len(multi), 3) if multi else None,
        "kinds": {k: {"n": n, "share": round(n / len(messages), 4)} for k, n in kinds.most_common()},
        "task_multi_sizes": {
            k: {
                "n": sizes[k],
                "share": round(sizes[k] / len(multi), 4),
                "mean_bytes": round(sum(m.bytes for m in multi if len(m.types) == k) / sizes[k]),
                "contents": dict(combos[k].most_common(4)),
            }
            for k in sorted(sizes)
        },
        "senders": len({p for m in messages for p in m.pids}),
    }


def capture(tasks: int, idle: float, concurrency: int) -> dict[str, Any]:
    """Run a real worker idle, then under a burst of `tasks`; the summary of each phase."""
    redis_proc, url = start_redis(pubsub_limit="0 0 0")
    recorder = Recorder(url)
    worker = None
    try:
        recorder.subscribe()
        recorder.start()
        env = dict(os.environ, BENCH_CAPTURE_BROKER=url, PYTHONPATH=str(ROOT))
        worker = subprocess.Popen(
            [str(CELERY), "-A", "bench.capture_app", "worker", "-E", "-P", "prefork", "-c", str(concurrency)]
            + ["--loglevel", "WARNING", "--hostname", "capture@%h"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # a killed capture must not leave its worker running
        )
        if not wait_until(lambda: any(ch.endswith(b"worker.online") for _, ch, _ in recorder.raw), 60):
            raise RuntimeError("the worker sent no worker-online within 60 s")
        t_online = time.time()
        time.sleep(idle)
        t_burst = time.time()
        from .capture_app import app

        app.conf.broker_url = url
        with app.producer_or_acquire() as producer:
            for i in range(tasks):
                if i % 5 == 4:
                    app.send_task("capture.concat", ([f"w{i}", "x", "y"],), producer=producer)
                else:
                    app.send_task("capture.add", (i, i), producer=producer)
        sent_s = time.time() - t_burst

        # A pool process keeps its last buffered events until something flushes them (its next task,
        # or shutdown): the burst ends when every task succeeded or no task.multi came for QUIET seconds.
        def done() -> bool:
            last = next((at for at, ch, _ in reversed(recorder.raw) if ch.endswith(b"task.multi")), None)
            quiet = last is not None and time.time() - last > QUIET
            return recorder.succeeded() >= tasks or quiet

        wait_until(done, 300, interval=0.5)
        t_end = time.time()
        succeeded = recorder.succeeded()
    finally:
        if worker is not None:
            stop_process(worker, timeout=20)
        messages = recorder.stop()
        stop_process(redis_proc)
    import celery

    idle_msgs = [m for m in messages if t_online <= m.at < t_burst]
    burst_msgs = [m for m in messages if t_burst <= m.at <= t_end]
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "celery": celery.__version__,
        "concurrency": concurrency,
        "tasks": tasks,
        "succeeded_seen": succeeded,
        "send_seconds": round(sent_s, 2),
        "burst_seconds": round(max((m.at for m in burst_msgs), default=t_burst) - t_burst, 2),
        "idle": {"seconds": round(t_burst - t_online, 1), **summarize(idle_msgs)},
        "burst": summarize(burst_msgs),
        "at_shutdown": summarize([m for m in messages if m.at > t_end]),
    }


def report(result: dict[str, Any]) -> str:
    """The summary as text."""
    lines = [f"{result['date']}, Celery {result['celery']}, prefork -c {result['concurrency']}"]
    for phase in ("idle", "burst", "at_shutdown"):
        s = result[phase]
        head = f"{phase}: {s.get('messages', 0)} messages, {s.get('events', 0)} events"
        if phase != "burst":
            head += f" in {s['seconds']} s" if "seconds" in s else ""
        else:
            head += (
                f" ({result['tasks']} tasks, {result['succeeded_seen']} task-succeeded seen before the worker"
                f" stopped, {result['burst_seconds']} s)"
            )
        lines.append(head)
        if not s.get("messages"):
            continue
        lines.append(
            f"  events/message {s['events_per_message']}, task events per task.multi {s['task_events_per_task_multi']}"
        )
        for kind, v in s["kinds"].items():
            lines.append(f"  {kind:<18} {v['share']:7.2%} of messages ({v['n']})")
        for size, v in s["task_multi_sizes"].items():
            top = "; ".join(f"{c} {n}" for c, n in v["contents"].items())
            lines.append(f"  task.multi of {size:>2}: {v['share']:7.2%} ({v['n']}, {v['mean_bytes']} B) {top}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m bench.capture", description=__doc__)
    p.add_argument("--tasks", type=int, default=5000, help="tasks of the burst (default 5000)")
    p.add_argument("--idle", type=float, default=5.0, help="seconds recorded idle before the burst (default 5)")
    p.add_argument("--concurrency", type=int, default=2, help="prefork pool processes (default 2)")
    p.add_argument("--output", help="also write the result as JSON here")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = capture(a.tasks, a.idle, a.concurrency)
    if a.output:
        Path(a.output).parent.mkdir(parents=True, exist_ok=True)
        Path(a.output).write_text(json.dumps(result, indent=1))
    print(report(result))  # noqa: T201 - the command's output
    return 0


if __name__ == "__main__":
    sys.exit(main())
