"""Proof that the generator publishes what a Celery 5 worker publishes, and that both readers agree.

1. A real `celery.events.Dispatcher` (buffer_group=['task'], as a prefork worker's) sends task and
   worker events; we capture the envelopes on Redis and re-encode the captured events with
   `events.envelope()`: the bytes must be identical (channel, envelope, body).
2. Key order and value types of our rendered events match the captured ones, field by field.
3. A rendered sample of each mix (task.multi of a real worker's sizes and of 24 events, and
   heartbeats) is read by Celery's own `EventReceiver` over Redis and by
   `dashboard.ingest.decode_message` + `prepare`: both must yield the same events.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import redis

from . import events as E
from .targets import subscriptions

log = logging.getLogger(__name__)


def _capture(client: redis.Redis, pubsub: Any, n: int, timeout: float = 5.0) -> list[tuple[bytes, bytes]]:
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        msg = pubsub.get_message(timeout=0.2)
        if msg and msg["type"] in ("pmessage", "message"):
            out.append((msg["channel"], msg["data"]))
    return out


def _body(data: bytes) -> Any:
    import base64

    env = json.loads(data)
    return json.loads(base64.b64decode(env["body"]))


def _shape(value: Any) -> Any:
    """Key order and types, not values."""
    if isinstance(value, dict):
        return [(k, _shape(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [_shape(v) for v in value[:1]]
    return type(value).__name__


def check(url: str) -> list[str]:
    """Every discrepancy found (empty when the generator is exact)."""
    from celery import Celery

    problems: list[str] = []
    client = redis.Redis.from_url(url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    try:
        pubsub.psubscribe(E.CHANNEL_PREFIX + "*")
        pubsub.get_message(timeout=1.0)
        app = Celery("bench-formatcheck", broker=url, set_as_current=False)
        host = "celery@formatcheck"
        with app.connection_for_write() as conn:
            disp = app.events.Dispatcher(conn, hostname=host, buffer_group=["task"], buffer_limit=E.BUFFER_LIMIT)
            u = E.new_marker_uuid()
            disp.send(
                "task-received",
                uuid=u,
                name="shop.orders.create_order",
                args="(1, 'a')",
                kwargs="{'x': 1}",
                root_id=u,
                parent_id=None,
                retries=0,
                eta=None,
                expires=None,
            )
            disp.send("task-started", uuid=u)
            disp.send(
                "task-failed", uuid=u, exception="KeyError('sku-1')", traceback="Traceback ...\nKeyError: 'sku-1'\n"
            )
            disp.flush()
            disp.send("worker-heartbeat", freq=2.0, active=0, processed=3, loadavg=[0.1, 0.2, 0.3], **E.SW)
            disp.close()
        real = _capture(client, pubsub, 2)
        if len(real) != 2:
            return [f"captured {len(real)} message(s) from celery's Dispatcher instead of 2"]
        # 1. byte-identical re-encoding of the captured events
        for ch, data in real:
            env = json.loads(data)
            key = env["properties"]["delivery_info"]["routing_key"]
            ours = E.envelope(_body(data), env["headers"]["hostname"], key, env["properties"]["delivery_tag"])
            if ours != data:
                problems.append(
                    f"{key}: our envelope differs from celery's:\n  celery: {data[:300]!r}\n  ours:   {ours[:300]!r}"
                )
            if ch != E.channel(key):
                problems.append(f"channel {ch!r} != ours {E.channel(key)!r}")
        # 2. key order and value types of rendered events vs the captured ones
        multi = next(d for c, d in real if c.endswith(b"task.multi"))
        real_events = {e["type"]: e for e in _body(multi)}
        workers = E.make_workers(2)
        rendered_by_mix = {
            mix: E.render_all(E.Renderer(E.build_pool(workers, 400, seed=3, sizes=sizes)))
            for mix, sizes in E.MIXES.items()
        }
        ours_by_type: dict[str, dict[str, Any]] = {}
        for rendered in rendered_by_mix.values():
            for _, data in rendered:
                for ev in _body(data):
                    ours_by_type.setdefault(ev["type"], ev)
        for type_, ev in real_events.items():
            mine = ours_by_type.get(type_)
            if mine is None:
                problems.append(f"the generator never sends {type_}")
            elif _shape(mine) != _shape(ev):
                problems.append(f"{type_}: fields/types {_shape(mine)} != celery's {_shape(ev)}")
        hb_real = _body(next(d for c, d in real if c.endswith(b"worker.heartbeat")))
        _, hb_ours = E.worker_message(workers[0], "worker-heartbeat")
        if _shape(_body(hb_ours)) != _shape(hb_real):
            problems.append(f"heartbeat fields {_shape(_body(hb_ours))} != celery's {_shape(hb_real)}")
        # 3. celery's EventReceiver and the dashboard's decoder read our messages identically
        sample = [(E.channel(E.TASK_MULTI), m) for rendered in rendered_by_mix.values() for _, m in rendered[:40]]
        sample.append(E.worker_message(workers[1], "worker-heartbeat"))
        sizes = sorted({len(_body(m)) for _, m in sample[:-1]})
        if not set(E.REAL_SIZES) | {E.BUFFER_LIMIT} <= set(sizes):
            problems.append(f"the sample's task.multi sizes {sizes} miss some of both mixes")
        pubsub.close()
        problems += _compare_readers(app, client, sample)
    finally:
        pubsub.close()
        client.close()
    return problems


def _compare_readers(app: Any, client: redis.Redis, sample: list[tuple[bytes, bytes]]) -> list[str]:
    from celery.events.receiver import EventReceiver

    from dashboard.ingest.stream import decode_message, prepare, utcoffset_hours

    expected: list[dict[str, Any]] = []
    for _, data in sample:
        expected.extend(decode_message(data))
    got: list[dict[str, Any]] = []
    ready = threading.Event()
    before = subscriptions(client)

    def consume() -> None:
        with app.connection_for_read() as conn:
            recv = EventReceiver(conn, handlers={"*": got.append}, app=app)
            ready.set()
            # limit counts idle seconds too: run until 2 s without events instead
            try:
                recv.capture(limit=None, timeout=2, wakeup=False)
            except TimeoutError:
                pass
            except Exception as exc:  # noqa: BLE001 - reported below as a count mismatch
                log.warning("EventReceiver stopped: %s", exc)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    ready.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # until kombu has subscribed
        if subscriptions(client) > before:
            break
        time.sleep(0.05)
    time.sleep(0.2)
    with client.pipeline(transaction=False) as pipe:
        for ch, data in sample:
            pipe.publish(ch, data)
        pipe.execute()
    thread.join(15)
    ours = prepare([dict(e) for e in expected], time.time(), utcoffset_hours())
    if len(got) != len(ours):
        return [f"celery's EventReceiver read {len(got)} events, the dashboard's decoder {len(ours)}"]
    problems = []
    for a, b in zip(got, ours):
        a = {k: v for k, v in a.items() if k != "local_received"}
        b = {k: v for k, v in b.items() if k != "local_received"}
        if a.keys() != b.keys() or any(a[k] != b[k] and not (k == "timestamp" and abs(a[k] - b[k]) < 1e-6) for k in a):
            problems.append(f"readers differ:\n  celery:    {a}\n  dashboard: {b}")
            break
    log.info("format check: %d events read identically by celery's EventReceiver and the dashboard", len(got))
    return problems
