"""The event consumer against a real redis-server: real kombu envelopes, garbage, outages."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid as uuidlib
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from conftest import RedisServer, wait_for

from dashboard.core.records import task_detail
from dashboard.core.state import State
from dashboard.ingest.stream import DecodeError, Ingest, decode_message, mask_url, prepare, redis_event_pattern


@pytest.fixture
def celery_app(own_redis: RedisServer) -> Celery:
    """A Celery app publishing on the test's own Redis."""
    return Celery("ingest-test", broker=own_redis.url, set_as_current=False)


def start(ingest: Ingest) -> threading.Thread:
    """Run an ingest loop in a thread and wait until it listens."""
    thread = threading.Thread(target=ingest.run, daemon=True)
    thread.start()
    wait_for(lambda: ingest.connected, timeout=10, message="ingest to connect")
    return thread


@pytest.fixture
def ingests() -> Iterator[list[Ingest]]:
    """Ingest loops started by a test, stopped after it."""
    started: list[Ingest] = []
    yield started
    for ing in started:
        ing.stop()


def kombu_envelope(body: Any) -> dict[str, Any]:
    """A well-formed kombu envelope around any JSON body (e.g. events no state can apply)."""
    return {
        "body": base64.b64encode(json.dumps(body).encode()).decode(),
        "content-type": "application/json",
        "content-encoding": "utf-8",
        "headers": {},
        "properties": {
            "body_encoding": "base64",
            "delivery_tag": str(uuidlib.uuid4()),
            "delivery_info": {"exchange": "celeryev", "routing_key": "task.multi"},
        },
    }


def publish_lifecycle(app: Celery, n: int, hostname: str = "w1@host", batched: bool = True) -> list[str]:
    """Publish n task lifecycles as a prefork worker does (task events batched in task.multi)."""
    ids = [str(uuidlib.uuid4()) for _ in range(n)]
    with app.connection_for_write() as conn:
        dispatcher = app.events.Dispatcher(
            conn, hostname=hostname, buffer_group=["task"] if batched else None, buffer_limit=25 if batched else None
        )
        dispatcher.send("worker-heartbeat", freq=2.0, active=1, processed=0)
        for i, uid in enumerate(ids):
            dispatcher.send(
                "task-received",
                uuid=uid,
                name="proj.tasks.add",
                args=f"({i}, 1)",
                kwargs="{}",
                retries=0,
                eta=None,
                expires=None,
                root_id=uid,
                parent_id=None,
            )
            dispatcher.send("task-started", uuid=uid)
            if i % 5 == 4:
                dispatcher.send(
                    "task-failed",
                    uuid=uid,
                    exception="ValueError('boom')",
                    traceback="Traceback (most recent call last):\nValueError: boom\n",
                )
            else:
                dispatcher.send("task-succeeded", uuid=uid, result=str(i + 1), runtime=0.01)
        dispatcher.flush()
        dispatcher.close()
    return ids


@pytest.mark.integration
def test_real_envelopes_decode_including_task_multi(own_redis: RedisServer, celery_app: Celery) -> None:
    """Raw pub/sub messages from Celery's dispatcher decode into event dicts, batches included."""
    client = redis.Redis.from_url(own_redis.url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe(redis_event_pattern(own_redis.url))
    pubsub.get_message(timeout=1)
    publish_lifecycle(celery_app, 10)
    channels, events = set(), []
    deadline = time.monotonic() + 5
    while len(events) < 31 and time.monotonic() < deadline:
        msg = pubsub.get_message(timeout=0.5)
        if msg:
            channels.add(msg["channel"].decode())
            events.extend(decode_message(msg["data"]))
    pubsub.close()
    assert "/0.celeryev/task.multi" in channels
    assert "/0.celeryev/worker.heartbeat" in channels
    assert len(events) == 31
    assert {e["type"] for e in events} == {
        "worker-heartbeat",
        "task-received",
        "task-started",
        "task-succeeded",
        "task-failed",
    }
    assert all(e["hostname"] == "w1@host" for e in events)


@pytest.mark.unit
@pytest.mark.parametrize(
    "data, why",
    [
        (b"not json", "not JSON"),
        (b'{"no": "body"}', "no body"),
        (b'{"body": "%%%", "properties": {"body_encoding": "base64"}}', "base64"),
        (
            json.dumps(
                {
                    "body": base64.b64encode(b"\x80\x03}q").decode(),
                    "content-type": "application/x-python-serialize",
                    "properties": {"body_encoding": "base64"},
                }
            ).encode(),
            "unsupported content type",
        ),
        (
            json.dumps({"body": base64.b64encode(b"42").decode(), "properties": {"body_encoding": "base64"}}).encode(),
            "neither an event",
        ),
    ],
)
def test_malformed_envelopes_are_refused_with_a_reason(data: bytes, why: str) -> None:
    """Each kind of broken message raises DecodeError saying what is wrong."""
    with pytest.raises(DecodeError, match=why):
        decode_message(data)


@pytest.mark.unit
def test_timestamps_move_to_local_time_like_celery() -> None:
    """An event stamped in UTC+2 by a worker is shifted by the zone difference, as Celery does."""
    (ev,) = prepare([{"type": "task-started", "timestamp": 1000.0, "utcoffset": 2}], local_received=5.0, here=0.0)
    assert ev["timestamp"] == 1000.0 - 2 * 3600
    assert ev["local_received"] == 5.0


@pytest.mark.unit
def test_mask_url_hides_the_password() -> None:
    """Broker passwords never reach pages, logs or /healthz."""
    assert mask_url("redis://:s3cret@host:6379/0") == "redis://:***@host:6379/0"
    assert mask_url("redis://user:pw@host/1") == "redis://user:***@host/1"
    assert mask_url("redis://host:6379/0") == "redis://host:6379/0"


@pytest.mark.integration
def test_ingest_applies_events_and_survives_garbage(
    own_redis: RedisServer, celery_app: Celery, ingests: list[Ingest]
) -> None:
    """Garbage on the event channels is counted as rejected; events before and after still land."""
    state = State()
    ingest = Ingest(state, own_redis.url)
    ingests.append(ingest)
    start(ingest)
    first = publish_lifecycle(celery_app, 5)
    wait_for(
        lambda: all(u in state.tasks and state.tasks[u].state in ("SUCCESS", "FAILURE") for u in first),
        message="first batch",
    )
    raw = redis.Redis.from_url(own_redis.url)
    raw.publish("/0.celeryev/task.multi", b"{garbage")
    raw.publish("/0.celeryev/task.multi", json.dumps({"body": json.dumps([{"type": "task-started"}, 5, {"type": 7}])}))
    second = publish_lifecycle(celery_app, 5)
    wait_for(
        lambda: all(u in state.tasks and state.tasks[u].state in ("SUCCESS", "FAILURE") for u in second),
        message="second batch",
    )
    assert ingest.rejected == 4  # one undecodable message + three unusable events
    assert ingest.connected
    assert state.counts["FAILURE"] == 2 and state.counts["SUCCESS"] == 8
    assert state.workers["w1@host"].alive(time.time())


@pytest.mark.integration
def test_redis_reader_and_celery_receiver_build_the_same_state(
    own_redis: RedisServer, celery_app: Celery, ingests: list[Ingest]
) -> None:
    """The direct Redis fast path and Celery's generic EventReceiver yield identical task state, garbage
    on the channel included (it is skipped by both, and costs neither a real event)."""
    fast, generic = State(), State()
    for state, mode in ((fast, "redis"), (generic, "kombu")):
        ing = Ingest(state, own_redis.url, mode=mode)
        ingests.append(ing)
        start(ing)
    assert ingests[1].mode == "kombu"
    ids = publish_lifecycle(celery_app, 20)
    # Garbage both paths survive (kombu's transport drops the connection on an envelope without a
    # delivery tag, so that kind is left to the fast path's own tests: tests/test_pubsub.py).
    raw = redis.Redis.from_url(own_redis.url)
    bad_events = [{"type": "task-started"}, 5, {"no": "type"}, {"type": "task-succeeded", "uuid": ids[0]}]
    raw.publish("/0.celeryev/task.multi", b"{garbage")
    raw.publish("/0.celeryev/task.multi", json.dumps(kombu_envelope(bad_events)))
    ids += publish_lifecycle(celery_app, 20, batched=False) + publish_lifecycle(celery_app, 20)
    for state in (fast, generic):
        wait_for(
            lambda s=state: all(u in s.tasks and s.tasks[u].state in ("SUCCESS", "FAILURE") for u in ids),
            message="all tasks finished",
        )

    def comparable(state: State, uid: str) -> dict[str, Any]:
        detail = task_detail(state.tasks[uid], [])
        detail.pop("history")  # the same events, but timestamps are adjusted at slightly different instants
        return detail

    for uid in ids:
        assert comparable(fast, uid) == comparable(generic, uid)
    assert fast.counts == generic.counts
    # The four unusable events are skipped and counted by both; the undecodable envelope is counted by the
    # fast path only (kombu's transport logs it and moves on without telling its receiver).
    assert (ingests[0].rejected, ingests[1].rejected) == (5, 4)


@pytest.mark.integration
def test_outage_is_reported_and_ingest_reconnects(
    own_redis: RedisServer, celery_app: Celery, ingests: list[Ingest]
) -> None:
    """Redis stops: the consumer reports the error, keeps retrying, and resumes when Redis is back."""
    state = State()
    calls: list[float] = []
    ingest = Ingest(state, own_redis.url, reconnect_min=0.1, reconnect_max=0.5, on_connect=lambda: calls.append(1))
    ingests.append(ingest)
    start(ingest)
    assert len(calls) == 1, "workers are asked to enable events on connect"
    own_redis.stop()
    wait_for(lambda: not ingest.connected, timeout=10, message="disconnect noticed")
    assert ingest.error and ingest.outages == 1
    time.sleep(1.0)
    assert ingest.reconnects >= 2, "it keeps retrying while Redis is down"
    own_redis.start()
    wait_for(lambda: ingest.connected, timeout=10, message="reconnect")
    assert len(calls) == 2
    lost, back = ingest.status()["last_outage"]
    assert back >= lost
    ids = publish_lifecycle(celery_app, 3)
    wait_for(lambda: all(u in state.tasks for u in ids), message="events after the outage")


@pytest.mark.integration
def test_celery_receiver_path_survives_garbage(
    own_redis: RedisServer, celery_app: Celery, ingests: list[Ingest]
) -> None:
    """On the generic (non-Redis) path too, garbage is counted and skipped without dropping the stream."""
    state = State()
    ingest = Ingest(state, own_redis.url, mode="kombu")
    ingests.append(ingest)
    start(ingest)
    raw = redis.Redis.from_url(own_redis.url)
    raw.publish("/0.celeryev/task.multi", b"{garbage")
    raw.publish("/0.celeryev/task.multi", json.dumps(kombu_envelope([{"type": "task-started"}, 5, {"no": "type"}])))
    ids = publish_lifecycle(celery_app, 3)
    wait_for(
        lambda: all(u in state.tasks and state.tasks[u].state in ("SUCCESS", "FAILURE") for u in ids),
        message="events after the garbage",
    )
    assert ingest.reconnects == 0, "the stream was never dropped"
    assert ingest.rejected >= 3


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["redis", "kombu"])
def test_a_new_or_restarted_worker_triggers_the_arrival_callback(
    own_redis: RedisServer, celery_app: Celery, ingests: list[Ingest], mode: str
) -> None:
    """Workers that appear (or say hello again after a restart) are announced; plain heartbeats are not."""
    state = State()
    arrivals: list[int] = []
    ingest = Ingest(state, own_redis.url, mode=mode, on_worker_arrival=lambda: arrivals.append(1))
    ingests.append(ingest)
    start(ingest)
    with celery_app.connection_for_write() as conn:
        dispatcher = celery_app.events.Dispatcher(conn, hostname="new@host")
        dispatcher.send("worker-online", freq=2.0)
        wait_for(lambda: arrivals == [1], message="the first arrival")
        for _ in range(3):
            dispatcher.send("worker-heartbeat", freq=2.0, active=0, processed=0)
        wait_for(lambda: state.worker_event_count >= 4, message="the heartbeats")
        assert arrivals == [1], "an ordinary heartbeat is no arrival"
        dispatcher.send("worker-offline")
        dispatcher.send("worker-online", freq=2.0)  # the same hostname, restarted
        wait_for(lambda: arrivals == [1, 1], message="the restart")
        dispatcher.close()


@pytest.mark.integration
def test_the_reader_process_runs_this_code_whatever_the_working_directory(
    own_redis: RedisServer, celery_app: Celery, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Started from a directory holding another `dashboard` package (another checkout), the reader process
    still imports the dashboard's own code: it subscribes and events land."""
    from dashboard.ingest.process import ReaderProcess

    shadow = tmp_path / "dashboard"
    (shadow / "ingest").mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise SystemExit("the shadowing package was imported")\n')
    monkeypatch.chdir(tmp_path)
    state = State()
    ingest = Ingest(state, own_redis.url, reconnect_min=0.1)
    reader = ReaderProcess(ingest)
    thread = threading.Thread(target=reader.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: ingest.connected, timeout=15, message="the reader process to subscribe")
        ids = publish_lifecycle(celery_app, 3)
        wait_for(lambda: all(u in state.tasks for u in ids), message="events through the reader process")
        assert reader.starts == 1
    finally:
        reader.stop()
        thread.join(5)
