"""Property-based fuzzing of the event decoder and the state (hypothesis): garbage JSON, wrong types,
missing fields, huge strings, odd unicode, duplicates, out-of-order and clock-skewed events never raise
out of ingest, every event is either applied or counted as rejected, and the state stays consistent
(indexes, bounds, JSON-serialisable answers)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dashboard.core.query import Filters, TextIndex, find, workflow_tree
from dashboard.core.records import task_detail, task_summary, worker_summary
from dashboard.core.state import State
from dashboard.ingest.process import decode_frame, encode_frame
from dashboard.ingest.stream import (
    DecodeError,
    Ingest,
    batch_frame,
    decode_batch,
    decode_message,
    prepare,
    utcoffset_hours,
)

pytestmark = pytest.mark.unit

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TASK_TYPES = [
    "task-sent",
    "task-received",
    "task-started",
    "task-succeeded",
    "task-failed",
    "task-retried",
    "task-revoked",
    "task-rejected",
    "task-progress",
]
WORKER_TYPES = ["worker-online", "worker-heartbeat", "worker-offline"]
ODD_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=40) | st.sampled_from(
    ["", "<script>alert(1)</script>", "\u202e\u0000\ud7ff", "🎉" * 50, "' OR 1=1 --", "\\x00"]
)
# Few distinct ids and hosts, so duplicates, reorderings and collisions happen constantly.
UUIDS = st.sampled_from([f"u{i}" for i in range(12)]) | ODD_TEXT
HOSTS = st.sampled_from(["w1@h", "w2@h", "<b>w3</b>@h"]) | ODD_TEXT
TIMES = (
    st.sampled_from([0.0, 1e9, 1.7e9, 1.7e9 + 1, 1.7e9 - 3600, 4e9, -5.0])
    | st.floats(min_value=-1e12, max_value=1e12, allow_nan=False)
    | st.integers(-(2**63), 2**63)
    | st.none()
    | st.text(max_size=5)
)
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | ODD_TEXT
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ODD_TEXT, inner, max_size=4),
    max_leaves=10,
)
# Huge strings: a short random piece repeated past any display or storage limit.
HUGE = st.builds(lambda piece, n: (piece or "x") * n, ODD_TEXT, st.integers(2_000, 40_000)).map(lambda s: s[:200_000])
FIELD_VALUES = JSON_VALUES | HUGE


@st.composite
def events(draw: Any) -> Any:
    """One event-like object: mostly plausible Celery events with hostile values, sometimes garbage."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(JSON_VALUES)  # not even an event
    if kind <= 6:
        ev: dict[str, Any] = {"type": draw(st.sampled_from(TASK_TYPES) | ODD_TEXT), "uuid": draw(UUIDS)}
        for key in (
            "name",
            "args",
            "kwargs",
            "result",
            "exception",
            "traceback",
            "retries",
            "eta",
            "expires",
            "root_id",
            "parent_id",
            "routing_key",
            "queue",
            "runtime",
            "current",
            "total",
        ):
            if draw(st.booleans()):
                ev[key] = draw(FIELD_VALUES if key in ("args", "kwargs", "result", "traceback") else JSON_VALUES)
    else:
        ev = {
            "type": draw(st.sampled_from(WORKER_TYPES)),
            "freq": draw(JSON_VALUES),
            "active": draw(JSON_VALUES),
            "processed": draw(JSON_VALUES),
            "loadavg": draw(JSON_VALUES),
            "sw_ident": draw(ODD_TEXT),
            "sw_ver": draw(JSON_VALUES),
        }
    if draw(st.integers(0, 5)):
        ev["hostname"] = draw(HOSTS)
    if draw(st.integers(0, 5)):
        ev["timestamp"] = draw(TIMES)
    if draw(st.booleans()):
        ev["utcoffset"] = draw(st.sampled_from([0, -5, 14, 1e9]) | JSON_VALUES)
    if draw(st.booleans()):
        ev["clock"] = draw(JSON_VALUES)
    return ev


def check_consistent(state: State) -> None:
    """The invariants every reader relies on."""
    assert len(state.tasks) <= state.max_tasks
    assert len(state.workers) <= state.max_workers
    assert len(state.order) == len(state.tasks)
    assert sum(state.counts.values()) == len(state.tasks)
    for uuid, rec in state.tasks.items():
        assert rec.uuid == uuid
        assert uuid in state.by_state[rec.state]
    for members in state.by_state.values():
        assert members <= state.tasks.keys()
    for members in state.by_name.values():
        assert members <= state.tasks.keys()
    now = 1.7e9
    # Every answer the pages and API give is JSON-serialisable (strict: no NaN/inf).
    for rec in state.tasks.values():
        json.dumps(task_summary(rec), allow_nan=False, default=str)
        json.dumps(task_detail(rec, state.children_of(rec.uuid)), allow_nan=False, default=str)
        workflow_tree(state, rec.uuid)
    for w in state.workers.values():
        json.dumps(worker_summary(w, now), allow_nan=False, default=str)
    json.dumps(state.stats.table(now=now), allow_nan=False)
    json.dumps(state.failure_groups.groups(now=now), allow_nan=False, default=str)
    index = TextIndex()
    for f in (Filters(), Filters(text="a"), Filters(text="<script>"), Filters(state=frozenset({"FAILURE"}))):
        total, page = find(state, f, limit=20, text_index=index)
        assert total >= len(page)


@FUZZ
@given(st.lists(events(), max_size=60), st.integers(1, 8))
def test_state_never_raises_and_counts_every_event(evs: list[Any], max_tasks: int) -> None:
    """Whatever arrives: each event is applied or rejected (never an exception), the state stays consistent."""
    state = State(max_tasks=max_tasks, max_workers=3)
    prepared = prepare(evs, 1.7e9, 0.0)
    rejected = state.events(prepared)
    assert state.event_count + rejected == len(evs)
    check_consistent(state)
    # Replaying everything again (duplicates) changes nothing about consistency or counting.
    rejected_again = state.events(prepare([dict(e) if isinstance(e, dict) else e for e in evs], 1.7e9 + 5, 0.0))
    assert state.event_count + rejected + rejected_again == 2 * len(evs)
    check_consistent(state)


def envelope(payload: Any, *, b64: bool = True) -> bytes:
    """A kombu envelope around a JSON payload, as a worker publishes it."""
    # The stdlib encoder: it also writes integers beyond 64 bits, which the decoder must survive.
    body = json.dumps(payload).encode() if not isinstance(payload, bytes) else payload
    data = {
        "body": base64.b64encode(body).decode() if b64 else body.decode("utf-8", "replace"),
        "content-type": "application/json",
        "content-encoding": "utf-8",
        "headers": {},
        "properties": {"body_encoding": "base64" if b64 else "utf-8", "delivery_tag": "t"},
    }
    return json.dumps(data).encode()


MESSAGES = (
    st.binary(max_size=200)  # garbage bytes
    | st.text(max_size=200).map(str.encode)
    | JSON_VALUES.map(lambda v: json.dumps(v).encode())  # JSON that is no envelope
    | st.lists(events(), max_size=5).map(envelope)  # task.multi batches with hostile events
    | events().map(envelope)
    | events().map(lambda e: envelope(e, b64=False))
    | st.binary(max_size=100).map(envelope)  # an envelope whose body is not JSON
    | st.builds(lambda d: json.dumps({"body": d, "properties": {"body_encoding": "base64"}}).encode(), JSON_VALUES)
    | st.builds(lambda d: json.dumps({"body": d, "content-type": "application/x-python-serialize"}).encode(), ODD_TEXT)
)


@FUZZ
@given(MESSAGES)
def test_decoder_returns_events_or_a_decode_error(data: bytes) -> None:
    """decode_message never raises anything but DecodeError, and returns a list when it succeeds."""
    try:
        out = decode_message(data)
    except DecodeError as exc:
        assert str(exc)
        return
    assert isinstance(out, list)


@FUZZ
@given(st.lists(MESSAGES, min_size=1, max_size=20))
def test_ingest_counts_every_message_and_never_raises(batch: list[bytes]) -> None:
    """The reader's batch path: no exception; decoded events are received, undecodable messages rejected."""
    state = State(max_tasks=5, max_workers=3)
    ingest = Ingest(state, "redis://127.0.0.1:1/0")
    ingest.apply_messages(batch)
    decodable = 0
    n_events = 0
    for data in batch:
        try:
            n_events += len(decode_message(data))
            decodable += 1
        except DecodeError:
            pass
    assert ingest.messages == len(batch)
    assert ingest.received == n_events
    # A message that does not decode is one rejection; a decoded event is applied or rejected.
    assert ingest.rejected == (len(batch) - decodable) + (n_events - state.event_count)
    check_consistent(state)


def test_fuzz_strategies_produce_hostile_values() -> None:
    """The strategies above do reach the cases they claim (guards against a silently tame fuzzer)."""
    seen = {"huge": False, "garbage": False, "html": False}

    @settings(max_examples=300, deadline=None, database=None)
    @given(events())
    def probe(ev: Any) -> None:
        if not isinstance(ev, dict):
            seen["garbage"] = True
            return
        for value in ev.values():
            if isinstance(value, str) and len(value) >= 5000:
                seen["huge"] = True
            if isinstance(value, str) and "<" in value:
                seen["html"] = True

    probe()
    assert all(seen.values()), seen


def _failure_view(state: State) -> tuple[Any, ...]:
    """What a user sees of failures: the groups page and every task's page."""
    tasks = {u: task_detail(rec, []) for u, rec in state.tasks.items()}
    # (Times are left out: a failure from the far future is clamped to the clock, read at each apply.)
    clock = ("first_seen", "last_seen", "sample", "sparkline")
    groups = [{k: v for k, v in g.items() if k not in clock} for g in state.failure_groups.groups(limit=None)]
    return groups, tasks, dict(state.outcomes)


@FUZZ
@given(st.lists(MESSAGES, min_size=1, max_size=20), st.lists(events(), max_size=30))
@example(  # a worker going offline settles its running task: a time from local_received, equal on both sides
    [envelope([{"type": "task-started", "uuid": "u0", "hostname": "w1@h", "timestamp": 0.0}])],
    [{"type": "worker-offline", "hostname": "w1@h", "timestamp": 0.0, "sw_ident": ""}],
)
def test_failures_analyzed_in_the_reader_group_as_the_state_would(batch: list[bytes], evs: list[Any]) -> None:
    """The reader process analyzes failures ahead (ingest.stream.with_analysis) and the state uses the
    analysis for the exact strings it was made from: the same groups, outcomes and task pages as a state
    that analyzes everything itself, for any stream, garbage included."""
    messages = [*batch, *(envelope([e]) for e in evs if isinstance(e, dict))]
    via_reader = State(max_tasks=8, max_workers=3)
    events, rejected = decode_batch(messages)  # decoded and analyzed in the reader process
    frame = decode_frame(encode_frame(batch_frame(events, len(messages), rejected, 1.7e9))[4:])
    Ingest(via_reader, "redis://127.0.0.1:1/0").frame(frame)  # over the socketpair, applied in the dashboard
    by_itself = State(max_tasks=8, max_workers=3)
    for data in messages:
        try:
            plain = decode_message(data)
        except DecodeError:
            continue
        # Stamped as the reader stamps (timestamps moved to this zone), then without the analysis.
        for ev in prepare(plain, 1.7e9, utcoffset_hours()):
            if isinstance(ev, dict):
                ev.pop("\x00failure", None)  # (with_analysis puts one on every failed or retried event)
        by_itself.events(plain)
    assert json.dumps(_failure_view(via_reader), default=str) == json.dumps(_failure_view(by_itself), default=str)


def test_a_failure_analysis_that_came_from_the_wire_is_never_trusted() -> None:
    """An event that carries the reader's analysis key itself (a hostile producer) has it replaced or
    dropped: the groups are the real ones, and nothing of it is stored with the task."""
    forged = [["Forged", "all is well", None], "000000000000"]
    failed = {
        "type": "task-failed",
        "uuid": "f1",
        "timestamp": 1.7e9,
        "hostname": "w@h",
        "exception": "KeyError('sku-1')",
        "traceback": 'Traceback (most recent call last):\n  File "/app/shop/orders.py", line 3, in pay\nKeyError: sku',
        "\u0000failure": forged,
    }
    custom = {"type": "task-progress", "uuid": "p1", "timestamp": 1.7e9, "hostname": "w@h", "\u0000failure": forged}
    state = State()
    Ingest(state, "redis://127.0.0.1:1/0").apply_messages([envelope([failed, custom])])
    (group,) = state.failure_groups.groups(limit=None, now=2e9)
    assert group["exc_type"] == "KeyError" and group["id"] != "000000000000"
    assert "Forged" not in json.dumps(task_detail(state.tasks["p1"], []))


def test_the_state_uses_the_readers_analysis_instead_of_analyzing_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """The point of analyzing in the reader: the state's core does not parse the failure again."""
    from dashboard.core import failures

    failed = {
        "type": "task-failed",
        "uuid": "f2",
        "timestamp": 1.7e9,
        "hostname": "w@h",
        "exception": "ConnectionError('db-7 refused after 3s')",
        "traceback": (
            'Traceback (most recent call last):\n  File "/app/shop/db.py", line 9, in q\nConnectionError: db-7'
        ),
    }
    events, _ = decode_batch([envelope([failed])])  # in the reader process
    frame = decode_frame(encode_frame(batch_frame(events, 1, 0, 1.7e9))[4:])  # over the socketpair
    calls: list[Any] = []
    real = failures._analyze
    monkeypatch.setattr(failures, "_analyze", lambda *a: calls.append(a) or real(*a))
    state = State()
    Ingest(state, "redis://127.0.0.1:1/0").frame(frame)  # in the dashboard
    (group,) = state.failure_groups.groups(limit=None)
    assert group["exc_type"] == "ConnectionError" and group["count"] == 1
    assert calls == []
