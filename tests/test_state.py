"""Scripted event replays into `dashboard.core.state.State`, in the style of Celery's
t/unit/events/test_state.py: small helpers build event dicts, `replay` feeds them, tests assert."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import count, permutations
from typing import Any

import pytest

from dashboard.core.records import PRECEDENCE, STATES, task_detail, task_summary
from dashboard.core.state import MAX_EXTRA_KEYS, MAX_HISTORY, MalformedEvent, State

pytestmark = pytest.mark.unit

WORKER = "celery@w1"
CLIENT = "client@web"
_clock = count(1)


def task_ev(subject: str, uuid: str, timestamp: float, hostname: str | None = None, **fields: Any) -> dict[str, Any]:
    """A task event as a worker (or, for task-sent, a client) publishes it."""
    if hostname is None:
        hostname = CLIENT if subject == "sent" else WORKER  # task-sent comes from the producer
    ev = {
        "type": f"task-{subject}",
        "uuid": uuid,
        "hostname": hostname,
        "timestamp": timestamp,
        "clock": next(_clock),
        "pid": 4242,
        "utcoffset": 0,
    }
    ev.update(fields)
    return ev


def worker_ev(subject: str, hostname: str, timestamp: float, **fields: Any) -> dict[str, Any]:
    """A worker event (online, heartbeat, offline)."""
    ev = {
        "type": f"worker-{subject}",
        "hostname": hostname,
        "timestamp": timestamp,
        "clock": next(_clock),
        "pid": 99,
        "utcoffset": 0,
        "freq": 2.0,
    }
    ev.update(fields)
    return ev


def replay(state: State, events: Iterable[dict[str, Any]]) -> State:
    """Feed events one by one; local_received = timestamp unless given (as Celery's replay does)."""
    for ev in events:
        ev.setdefault("local_received", ev["timestamp"])
        state.event(ev)
    return state


def zero_counts(**nonzero: int) -> dict[str, int]:
    """The expected `State.counts`: every built-in state at 0 except those given."""
    counts = dict.fromkeys(STATES, 0)
    counts.update(nonzero)
    return counts


def history(state: State, uuid: str) -> list[tuple[str, float]]:
    """The task's event history as (subject, timestamp) pairs, via task_detail."""
    return [(h["event"], h["timestamp"]) for h in task_detail(state.tasks[uuid], [])["history"]]


# -- lifecycle --------------------------------------------------------------------------------------


def test_full_lifecycle_states_times_history_and_counts() -> None:
    state = State()
    events = [
        task_ev(
            "sent",
            "t1",
            100.0,
            name="tasks.add",
            args="(2, 2)",
            kwargs="{}",
            retries=0,
            queue="celery",
            routing_key="celery",
            exchange="",
        ),
        task_ev("received", "t1", 101.0, name="tasks.add", args="(2, 2)", kwargs="{}", retries=0),
        task_ev("started", "t1", 102.0),
        task_ev("succeeded", "t1", 103.5, result="4", runtime=1.5),
    ]
    expected = [
        ("PENDING", zero_counts(PENDING=1)),
        ("RECEIVED", zero_counts(RECEIVED=1)),
        ("STARTED", zero_counts(STARTED=1)),
        ("SUCCESS", zero_counts(SUCCESS=1)),
    ]
    for ev, (want_state, want_counts) in zip(events, expected):
        replay(state, [ev])
        rec = state.tasks["t1"]
        assert rec.state == want_state
        assert rec.timestamp == ev["timestamp"]
        assert state.counts == want_counts  # kept incrementally: exact after every event

    rec = state.tasks["t1"]
    assert (rec.sent, rec.received, rec.started, rec.succeeded) == (100.0, 101.0, 102.0, 103.5)
    assert rec.failed is None and rec.retried is None
    assert rec.result == "4" and rec.runtime == 1.5
    assert rec.name == "tasks.add" and rec.args == "(2, 2)" and rec.queue == "celery"
    assert rec.client == CLIENT and rec.hostname == WORKER
    assert history(state, "t1") == [("sent", 100.0), ("received", 101.0), ("started", 102.0), ("succeeded", 103.5)]
    assert state.task_names == {"tasks.add": 1}
    assert state.event_count == 4 and state.task_event_count == 4
    assert list(state.throughput) == [[103.0, 1, 0]]
    assert state.workers[WORKER].succeeded == 1 and state.workers[WORKER].failed == 0
    assert CLIENT not in state.workers  # the producer of task-sent is not a worker


def test_failure_keeps_exception_traceback_and_counts_it() -> None:
    state = replay(
        State(),
        [
            task_ev("received", "f1", 10.0, name="tasks.boom"),
            task_ev("started", "f1", 11.0),
            task_ev(
                "failed",
                "f1",
                12.25,
                exception="KeyError('x')",
                traceback="Traceback (most recent call last):\n  ...\nKeyError: 'x'\n",
            ),
        ],
    )
    rec = state.tasks["f1"]
    assert rec.state == "FAILURE"
    assert rec.failed == 12.25
    assert rec.exception == "KeyError('x')"
    assert rec.traceback.endswith("KeyError: 'x'\n")
    assert list(state.failures) == ["f1"]
    assert list(state.throughput) == [[12.0, 0, 1]]
    assert state.counts == zero_counts(FAILURE=1)
    assert state.workers[WORKER].failed == 1

    # A second failure in the same second lands in the same bucket; a success after it too.
    replay(state, [task_ev("failed", "f2", 12.5, exception="E"), task_ev("succeeded", "s3", 12.75)])
    assert list(state.throughput) == [[12.0, 1, 2]]
    assert list(state.failures) == ["f1", "f2"]


# -- out of order ---------------------------------------------------------------------------------


def test_out_of_order_never_moves_backwards_but_late_events_add_fields() -> None:
    state = State()
    replay(state, [task_ev("succeeded", "o1", 103.0, result=42, runtime=0.5)])
    assert state.tasks["o1"].state == "SUCCESS"

    replay(state, [task_ev("started", "o1", 102.0)])
    rec = state.tasks["o1"]
    assert rec.state == "SUCCESS"
    assert rec.started == 102.0

    received = task_ev(
        "received",
        "o1",
        101.0,
        name="tasks.late",
        args="(1,)",
        kwargs="{'a': 1}",
        retries=0,
        eta="2030-01-01T00:00:00",
        expires=200.0,
        root_id="r",
        parent_id="p",
        exchange="should-not-stick",
    )
    replay(state, [received])
    assert rec.state == "SUCCESS"
    assert (rec.name, rec.args, rec.kwargs) == ("tasks.late", "(1,)", "{'a': 1}")
    assert (rec.retries, rec.eta, rec.expires) == (0, "2030-01-01T00:00:00", 200.0)
    assert (rec.root_id, rec.parent_id) == ("r", "p") and state.children_of("p") == ["o1"]
    assert rec.received == 101.0
    assert rec.exchange is None  # a late task-received only contributes Celery's merge-rule fields
    assert rec.timestamp == 102.0  # ...and not its timestamp
    assert rec.result == 42 and rec.succeeded == 103.0
    assert state.counts == zero_counts(SUCCESS=1)
    assert state.task_names == {"tasks.late": 1}
    # History is in delivery order, each entry with its own event timestamp.
    assert history(state, "o1") == [("succeeded", 103.0), ("started", 102.0), ("received", 101.0)]


def test_failed_then_late_started_stays_failed() -> None:
    state = replay(
        State(),
        [
            task_ev("failed", "o2", 5.0, exception="E"),
            task_ev("started", "o2", 4.0),
            task_ev("received", "o2", 3.0, name="n"),
        ],
    )
    assert state.tasks["o2"].state == "FAILURE"
    assert state.tasks["o2"].exception == "E"
    assert state.counts == zero_counts(FAILURE=1)


@pytest.mark.parametrize("order", list(permutations(["sent", "received", "started", "succeeded"])))
def test_every_delivery_order_ends_in_success_and_state_only_advances(order: tuple[str, ...]) -> None:
    times = {"sent": 1.0, "received": 2.0, "started": 3.0, "succeeded": 4.0}
    state = State()
    ranks = []
    for subject in order:
        replay(state, [task_ev(subject, "p1", times[subject], name="tasks.p")])
        ranks.append(PRECEDENCE[state.tasks["p1"].state])
    assert ranks == sorted(ranks, reverse=True)  # a lower precedence index is further along
    rec = state.tasks["p1"]
    assert rec.state == "SUCCESS"
    assert (rec.sent, rec.received, rec.started, rec.succeeded) == (1.0, 2.0, 3.0, 4.0)
    assert state.counts == zero_counts(SUCCESS=1)


# -- retries --------------------------------------------------------------------------------------


def test_retries_end_in_success_with_one_attempt_per_retry() -> None:
    state = State()
    script = [
        (task_ev("received", "r1", 1.0, name="tasks.flaky", retries=0), "RECEIVED"),
        (task_ev("started", "r1", 2.0), "STARTED"),
        (task_ev("retried", "r1", 3.0, exception="ValueError('a')", traceback="tb a"), "RETRY"),
        (task_ev("received", "r1", 5.0, name="tasks.flaky", retries=1), "RECEIVED"),
        (task_ev("started", "r1", 6.0, hostname="celery@w2"), "STARTED"),
        (task_ev("retried", "r1", 7.0, exception="ValueError('b')", traceback="tb b", hostname="celery@w2"), "RETRY"),
        (task_ev("received", "r1", 9.0, name="tasks.flaky", retries=2), "RECEIVED"),
        (task_ev("started", "r1", 10.0), "STARTED"),
        (task_ev("succeeded", "r1", 11.0, result="ok", runtime=1.0), "SUCCESS"),
    ]
    for ev, want in script:
        replay(state, [ev])
        assert state.tasks["r1"].state == want
        assert sum(state.counts.values()) == 1 and state.counts[want] == 1

    rec = state.tasks["r1"]
    assert rec.retries == 2
    assert rec.retried == 7.0  # the latest retry
    assert rec.result == "ok"
    assert task_detail(rec, [])["attempts"] == [
        {"retries": 0, "timestamp": 3.0, "exception": "ValueError('a')", "traceback": "tb a", "hostname": WORKER},
        {"retries": 1, "timestamp": 7.0, "exception": "ValueError('b')", "traceback": "tb b", "hostname": "celery@w2"},
    ]
    assert [s for s, _ in history(state, "r1")].count("retried") == 2
    assert list(state.failures) == []  # retries are not failures


def test_retry_resent_naming_itself_as_parent_keeps_real_parent() -> None:
    # Task.retry() re-publishes the task from inside itself, so the new task-sent/received carry
    # parent_id == its own uuid; the dashboard must not show it as its own parent or child.
    state = replay(
        State(),
        [
            task_ev("sent", "kid", 1.0, name="tasks.k", parent_id="root", root_id="root"),
            task_ev("received", "kid", 2.0, name="tasks.k", parent_id="root", root_id="root", retries=0),
            task_ev("started", "kid", 3.0),
            task_ev("retried", "kid", 4.0, exception="E", traceback="tb"),
            task_ev("sent", "kid", 4.1, hostname=WORKER, name="tasks.k", parent_id="kid", root_id="root", retries=1),
            task_ev("received", "kid", 5.0, name="tasks.k", parent_id="kid", root_id="root", retries=1),
            task_ev("started", "kid", 6.0),
            task_ev("succeeded", "kid", 7.0, result=None),
        ],
    )
    rec = state.tasks["kid"]
    assert rec.state == "SUCCESS"
    assert rec.parent_id == "root" and rec.root_id == "root"
    assert state.children_of("kid") == []
    assert state.children_of("root") == ["kid"]  # linked once, not once per retry

    # A task first seen through its own re-sent message has no known parent at all.
    replay(state, [task_ev("received", "solo", 8.0, name="tasks.s", parent_id="solo", root_id="solo")])
    assert state.tasks["solo"].parent_id is None
    assert state.children_of("solo") == []
    assert state.tasks["solo"].root_id == "solo"


# -- parents and children -------------------------------------------------------------------------


def test_parent_children_and_root_links() -> None:
    state = State()
    # The grandchild is seen before its parent: the link is kept for the not-yet-seen parent.
    replay(state, [task_ev("received", "gc", 3.0, name="g", parent_id="c1", root_id="root")])
    assert state.children_of("c1") == ["gc"]
    replay(
        state,
        [
            task_ev("received", "root", 1.0, name="r"),
            task_ev("received", "c1", 2.0, name="c", parent_id="root", root_id="root"),
            task_ev("received", "c2", 2.5, name="c", parent_id="root", root_id="root"),
        ],
    )
    assert state.children_of("root") == ["c1", "c2"]
    assert state.children_of("c1") == ["gc"]
    assert state.children_of("c2") == []
    assert state.tasks["gc"].root_id == "root" and state.tasks["gc"].parent_id == "c1"
    assert state.tasks["root"].parent_id is None
    assert task_detail(state.tasks["root"], state.children_of("root"))["children"] == ["c1", "c2"]

    # Linking a child marks the (known) parent changed: its page lists children.
    state.drain_changes(0.0)
    replay(state, [task_ev("received", "c3", 4.0, name="c", parent_id="root", root_id="root")])
    tasks, _ = state.drain_changes(0.0)
    assert tasks == {"c3", "root"}


# -- custom events --------------------------------------------------------------------------------


def test_custom_progress_event_is_stored_and_shown() -> None:
    state = replay(
        State(),
        [
            task_ev("received", "pg", 1.0, name="tasks.long"),
            task_ev("started", "pg", 2.0),
            task_ev("progress", "pg", 3.0, current=3, total=10),
        ],
    )
    rec = state.tasks["pg"]
    assert rec.state == "PROGRESS"  # Celery derives a custom state from the subject
    assert rec.extra == {"current": 3, "total": 10}  # envelope keys (pid, clock, ...) are not kept
    assert task_summary(rec)["progress"] == {"current": 3, "total": 10}
    assert state.counts["PROGRESS"] == 1 and state.counts["STARTED"] == 0

    replay(state, [task_ev("progress", "pg", 4.0, current=7, total=10), task_ev("succeeded", "pg", 5.0, result=7)])
    assert rec.state == "SUCCESS"
    assert task_summary(rec)["progress"] == {"current": 7, "total": 10}
    assert state.counts.get("PROGRESS", 0) == 0 and state.counts["SUCCESS"] == 1

    # A progress event delivered after the end updates the progress but not the state.
    replay(state, [task_ev("progress", "pg", 4.5, current=9, total=10)])
    assert rec.state == "SUCCESS"
    assert rec.extra == {"current": 9, "total": 10}


def test_custom_event_fields_are_bounded() -> None:
    many = {f"k{i:02d}": i for i in range(MAX_EXTRA_KEYS + 4)}
    state = replay(State(), [task_ev("progress", "b1", 1.0, **many)])
    assert state.tasks["b1"].extra == {f"k{i:02d}": i for i in range(MAX_EXTRA_KEYS)}


def test_history_is_bounded_keeping_the_first_event() -> None:
    state = replay(
        State(),
        [task_ev("received", "h1", 0.0, name="n")]
        + [task_ev("progress", "h1", float(i), current=i) for i in range(1, 101)],
    )
    hist = history(state, "h1")
    assert len(hist) == MAX_HISTORY
    assert hist[0] == ("received", 0.0)
    assert hist[1] == ("progress", 100.0 - MAX_HISTORY + 2)
    assert hist[-1] == ("progress", 100.0)


# -- bounds ---------------------------------------------------------------------------------------


def test_eviction_keeps_newest_n_and_fixes_counters() -> None:
    state = State(max_tasks=3)
    replay(
        state,
        [
            task_ev("received", "parent", 1.0, name="tasks.parent"),
            task_ev("received", "a", 2.0, name="tasks.child", parent_id="parent"),
            task_ev("succeeded", "b", 3.0, name="tasks.child", parent_id="parent"),
        ],
    )
    assert state.children_of("parent") == ["a", "b"]
    state.drain_changes(0.0)
    # New events for the oldest task do not rescue it: eviction is by first sight.
    replay(state, [task_ev("started", "parent", 3.5)])

    replay(state, [task_ev("received", "c", 4.0, name="tasks.other")])
    assert list(state.tasks) == ["a", "b", "c"]
    assert state.evicted == 1
    assert state.counts == zero_counts(RECEIVED=2, SUCCESS=1)
    assert state.task_names == {"tasks.child": 2, "tasks.other": 1}
    tasks, _ = state.drain_changes(0.0)
    assert "parent" not in tasks  # an evicted task is not pushed to readers

    replay(state, [task_ev("failed", "d", 5.0, name="tasks.other"), task_ev("received", "e", 6.0)])
    assert list(state.tasks) == ["c", "d", "e"]
    assert state.evicted == 3
    assert state.counts == zero_counts(RECEIVED=2, FAILURE=1)
    assert state.task_names == {"tasks.other": 2}
    assert state.children_of("parent") == []  # evicted children are unlinked
    assert "parent" not in state.children
    assert [r.uuid for r in state.iter_newest()] == ["e", "d", "c"]
    assert state.by_state["FAILURE"] == {"d"} and state.by_name == {"tasks.other": {"c", "d"}}


@pytest.mark.parametrize("extra", [1, 7])
def test_eviction_of_n_plus_k_tasks(extra: int) -> None:
    n = 5
    state = State(max_tasks=n)
    replay(state, [task_ev("received", f"t{i}", float(i), name=f"name{i % 2}") for i in range(n + extra)])
    assert list(state.tasks) == [f"t{i}" for i in range(extra, n + extra)]
    assert state.evicted == extra
    assert state.counts == zero_counts(RECEIVED=n)
    kept = [f"name{i % 2}" for i in range(extra, n + extra)]
    assert state.task_names == {name: kept.count(name) for name in set(kept)}


def test_max_workers_evicts_the_longest_silent() -> None:
    state = replay(
        State(max_workers=2),
        [
            worker_ev("heartbeat", "w1", 100.0),
            worker_ev("heartbeat", "w2", 105.0),
            worker_ev("heartbeat", "w1", 106.0),
        ],
    )
    state.drain_changes(106.0)
    replay(state, [worker_ev("heartbeat", "w3", 110.0)])
    assert sorted(state.workers) == ["w1", "w3"]
    _, workers = state.drain_changes(110.0)
    assert "w2" in workers and "w3" in workers
    # A task event from yet another worker is bounded too.
    replay(state, [task_ev("received", "t", 111.0, hostname="w4")])
    assert len(state.workers) == 2 and "w4" in state.workers and "w1" not in state.workers


# -- workers --------------------------------------------------------------------------------------


def test_worker_heartbeats_online_offline_and_arrivals() -> None:
    state = State()
    window = 4.0  # freq 2 s, offline after 200 % of it without a heartbeat, as in Celery

    replay(
        state,
        [
            worker_ev(
                "heartbeat",
                "w1",
                100.0,
                processed=5,
                active=1,
                loadavg=[0.5, 0.25, 0.1],
                sw_ident="py-celery",
                sw_ver="5.4.0",
            )
        ],
    )
    w = state.workers["w1"]
    assert state.worker_arrivals == 1  # first report
    assert w.alive(100.0) and w.alive(100.0 + window - 0.01)
    assert not w.alive(100.0 + window)
    assert state.workers_online(101.0) == 1 and state.workers_online(100.0 + window) == 0
    assert (w.processed, w.active, w.loadavg, w.sw_ident, w.sw_ver) == (5, 1, [0.5, 0.25, 0.1], "py-celery", "5.4.0")
    assert w.freq == 2.0

    replay(state, [worker_ev("heartbeat", "w1", 102.0, processed=9, active=0)])
    assert state.worker_arrivals == 1  # an ordinary heartbeat is no arrival
    assert (w.processed, w.active) == (9, 0)
    assert w.alive(102.0 + window - 0.01) and not w.alive(102.0 + window)

    replay(state, [worker_ev("offline", "w1", 103.0)])
    assert not w.alive(103.0)  # at once, not after the window
    assert w.offline_at == 103.0
    assert state.workers_online(103.0) == 0
    assert state.worker_arrivals == 1

    replay(state, [worker_ev("heartbeat", "w1", 200.0)])
    assert w.alive(200.0) and w.offline_at is None
    assert state.worker_arrivals == 2  # back after going offline

    replay(state, [worker_ev("heartbeat", "w1", 201.0), worker_ev("heartbeat", "w1", 202.0)])
    assert state.worker_arrivals == 2
    replay(state, [worker_ev("online", "w1", 203.0)])
    assert state.worker_arrivals == 3  # a restart announces itself with worker-online

    replay(state, [worker_ev("online", "w2", 203.0)])
    assert state.worker_arrivals == 4  # a new worker counts once, not once for new + once for online
    assert state.workers_online(203.0) == 2


def test_worker_heartbeat_out_of_order_does_not_rewind() -> None:
    state = replay(State(), [worker_ev("heartbeat", "w1", 100.0), worker_ev("heartbeat", "w1", 90.0)])
    assert state.workers["w1"].last_heartbeat == 100.0


def test_worker_offline_of_unknown_worker_is_ignored() -> None:
    state = replay(State(), [worker_ev("offline", "ghost", 1.0)])
    assert state.workers == {} and state.worker_arrivals == 0


@pytest.mark.parametrize("bad", [0, -1.0, "2", None, True])
def test_worker_bad_freq_is_ignored(bad: Any) -> None:
    state = replay(
        State(), [worker_ev("heartbeat", "w1", 100.0, freq=5.0), worker_ev("heartbeat", "w1", 101.0, freq=bad)]
    )
    w = state.workers["w1"]
    assert w.freq == 5.0
    assert w.alive(101.0 + 10.0 - 0.01) and not w.alive(101.0 + 10.0)  # freq 5 s still applies
    fresh = replay(State(), [worker_ev("online", "w9", 100.0, freq=bad)])
    assert fresh.workers["w9"].freq == 60.0  # Celery's default stays


def test_task_events_keep_their_worker_alive() -> None:
    state = replay(State(), [worker_ev("heartbeat", "w1", 100.0), task_ev("started", "t", 103.0, hostname="w1")])
    assert state.workers["w1"].last_heartbeat == 103.0
    assert state.workers["w1"].alive(106.0)


def test_late_task_event_does_not_bring_an_offline_worker_back() -> None:
    """A task event sent before worker-offline but delivered after it leaves the worker offline."""
    state = replay(
        State(),
        [
            worker_ev("heartbeat", "w1", 100.0),
            worker_ev("offline", "w1", 101.0),
            task_ev("succeeded", "t", 100.5, hostname="w1", local_received=106.0),  # sent before goodbye
        ],
    )
    assert not state.workers["w1"].alive(106.0)  # Celery's State agrees: offline


# -- malformed ------------------------------------------------------------------------------------

MALFORMED: list[Any] = [
    None,
    ["task-received"],
    "task-received",
    {"hostname": "w1", "timestamp": 1.0},
    {"type": 5, "timestamp": 1.0},
    {"type": "foo-bar", "timestamp": 1.0},
    {"type": "task-received", "timestamp": 1.0},
    {"type": "task-received", "uuid": "", "timestamp": 1.0},
    {"type": "task-received", "uuid": 7, "timestamp": 1.0},
    {"type": "task-received", "uuid": "u"},
    {"type": "task-received", "uuid": "u", "timestamp": "1.0"},
    {"type": "task-received", "uuid": "u", "timestamp": True},
    {"type": "task-", "uuid": "u", "timestamp": 1.0},
    {"type": "task-received", "uuid": "u", "timestamp": 1.0, "hostname": 5},
    {"type": "worker-heartbeat", "timestamp": 1.0},
    {"type": "worker-heartbeat", "hostname": ["w"], "timestamp": 1.0},
    {"type": "worker-heartbeat", "hostname": "w1"},
]


@pytest.mark.parametrize("bad", MALFORMED)
def test_malformed_event_raises_and_changes_nothing(bad: Any) -> None:
    state = State()
    with pytest.raises(MalformedEvent):
        state.event(bad)
    assert state.tasks == {} and state.workers == {}
    assert state.event_count == 0
    assert state.counts == zero_counts()


def test_events_batch_skips_bad_and_applies_good() -> None:
    state = State()
    batch = [
        task_ev("received", "g1", 1.0, name="tasks.good"),
        {"type": "task-started", "uuid": "g1"},
        "garbage",
        task_ev("started", "g1", 2.0),
        {"type": "nope-nope", "timestamp": 3.0},
        worker_ev("heartbeat", "w5", 3.0),
    ]
    for ev in batch:
        if isinstance(ev, dict) and "timestamp" in ev:
            ev["local_received"] = ev["timestamp"]
    assert state.events(batch) == 3
    assert state.tasks["g1"].state == "STARTED"
    assert "w5" in state.workers
    assert state.event_count == 3
    assert state.last_error is not None and state.last_error.startswith("MalformedEvent: unknown event group")
    assert state.events([task_ev("succeeded", "g1", 4.0, local_received=4.0)]) == 0
    assert state.tasks["g1"].state == "SUCCESS"


# -- change tracking ------------------------------------------------------------------------------


def test_drain_changes_hands_over_once_and_sees_expiry() -> None:
    state = replay(
        State(),
        [
            worker_ev("heartbeat", "w1", 100.0),
            task_ev("received", "u1", 100.0, hostname="w1"),
            task_ev("sent", "u2", 100.5),
        ],
    )
    tasks, workers = state.drain_changes(100.5)
    assert tasks == {"u1", "u2"}
    assert workers == {"w1"}
    assert state.drain_changes(101.0) == (set(), set())

    expiry = 104.0  # heartbeat at 100 s, freq 2 s
    assert state.drain_changes(expiry - 0.01) == (set(), set())
    assert state.drain_changes(expiry) == (set(), {"w1"})  # went offline by silence
    assert state.workers["w1"].offline_at == expiry
    assert state.drain_changes(expiry + 10) == (set(), set())

    replay(state, [worker_ev("heartbeat", "w1", 200.0)])
    assert state.drain_changes(200.0) == (set(), {"w1"})
    assert state.workers["w1"].online is True


# -- readers --------------------------------------------------------------------------------------


def test_task_summary_and_detail_shapes() -> None:
    state = replay(
        State(),
        [
            task_ev("received", "d1", 1.0, name="tasks.big", args="x" * 500, kwargs="{}", parent_id="p"),
            task_ev("failed", "d1", 2.0, exception="E" * 400, traceback="tb"),
        ],
    )
    rec = state.tasks["d1"]
    summary = task_summary(rec)
    assert set(summary) == {
        "uuid",
        "seq",
        "name",
        "state",
        "hostname",
        "queue",
        "args",
        "kwargs",
        "result",
        "exception",
        "retries",
        "sent",
        "received",
        "started",
        "timestamp",
        "runtime",
        "runtime_derived",
        "progress",
    }
    assert summary["args"] == "x" * 200 + "…"
    assert summary["exception"] == "E" * 300 + "…"
    assert summary["kwargs"] == "{}" and summary["progress"] is None
    assert (summary["state"], summary["hostname"], summary["timestamp"]) == ("FAILURE", WORKER, 2.0)

    detail = task_detail(rec, ["c9"])
    assert detail["args"] == "x" * 500  # the detail page shows it whole
    assert detail["exception"] == "E" * 400 and detail["traceback"] == "tb"
    assert detail["worker"] == WORKER and detail["hostname"] == WORKER
    assert detail["children"] == ["c9"] and detail["attempts"] == [] and detail["extra"] is None
    assert detail["history"] == [{"event": "received", "timestamp": 1.0}, {"event": "failed", "timestamp": 2.0}]
    assert detail["parent_id"] == "p" and detail["failed"] == 2.0
    assert "seq" not in detail


# -- dead workers, broker outages, revoked after progress -----------------------------------------------


def _running(state: State) -> State:
    """A worker (heartbeat every 2 s) running task r and holding reserved task q."""
    return replay(
        state,
        [
            worker_ev("online", WORKER, 100.0),
            task_ev("received", "r", 100.1, name="tasks.slow"),
            task_ev("started", "r", 100.2),
            task_ev("received", "q", 100.3, name="tasks.slow"),
        ],
    )


def test_worker_silent_past_two_heartbeats_loses_its_running_tasks() -> None:
    state = _running(State())
    state.drain_changes(103.0)
    assert state.tasks["r"].state == "STARTED", "still within two heartbeat intervals"
    changed, workers = state.drain_changes(104.4)  # 2 x freq after its last sign of life (100.3)
    assert state.tasks["r"].state == "LOST" and "r" in changed and WORKER in workers
    assert state.tasks["q"].state == "RECEIVED", "reserved tasks go back to the broker, not lost"
    assert history(state, "r")[-1] == ("lost", 104.4)
    assert state.counts == zero_counts(LOST=1, RECEIVED=1) and state.lost == 1


def test_worker_offline_event_loses_running_tasks_at_once() -> None:
    state = _running(State())
    replay(state, [worker_ev("offline", WORKER, 101.0)])
    assert state.tasks["r"].state == "LOST"


def test_lost_task_redelivered_runs_again_and_finishes() -> None:
    state = _running(State())
    replay(state, [worker_ev("offline", WORKER, 101.0)])
    replay(
        state,
        [
            task_ev("received", "r", 110.0, "celery@w2"),
        ],
    )
    assert state.tasks["r"].state == "LOST", "a redelivery's received merges like a late one"
    replay(
        state, [task_ev("started", "r", 110.1, "celery@w2"), task_ev("succeeded", "r", 110.5, "celery@w2", result="1")]
    )
    assert state.tasks["r"].state == "SUCCESS" and state.counts == zero_counts(SUCCESS=1, RECEIVED=1)


def test_broker_outage_freezes_worker_liveness_then_gives_a_full_window() -> None:
    state = _running(State())
    state.broker_lost(101.0)
    state.drain_changes(500.0)
    assert state.workers[WORKER].alive(500.0) and state.tasks["r"].state == "STARTED", "nobody can be heard"
    state.broker_back(500.0)
    assert state.workers[WORKER].alive(503.9)
    state.drain_changes(504.1)  # back for 2 x freq and still silent: it died meanwhile
    assert not state.workers[WORKER].alive(504.1) and state.tasks["r"].state == "LOST"


def test_worker_dead_before_the_outage_stays_dead() -> None:
    state = _running(State())
    state.broker_lost(200.0)
    state.broker_back(300.0)
    assert not state.workers[WORKER].alive(300.0)


def test_revoked_ends_progress_and_a_late_progress_does_not_undo_it() -> None:
    state = replay(
        State(),
        [
            task_ev("received", "p", 1.0, name="tasks.progress"),
            task_ev("started", "p", 1.1),
            task_ev("progress", "p", 1.2, current=1, total=5),
            task_ev("revoked", "p", 1.5, terminated=True, signum=15),
            task_ev("progress", "p", 1.3, current=2, total=5),  # sent before the kill, delivered after
        ],
    )
    assert state.tasks["p"].state == "REVOKED"
    assert state.counts == zero_counts(REVOKED=1)


def test_a_late_received_is_masked_and_clipped_like_any_event() -> None:
    """task-received delivered after task-started merges its args/kwargs: through the same mask and cap."""
    from dashboard.core.masking import make_masker
    from dashboard.core.records import MAX_FIELD_CHARS

    state = State(mask=make_masker("password"))
    replay(
        state,
        [
            task_ev("started", "m", 1.1),
            task_ev(
                "received",
                "m",
                1.0,
                name="t",
                args="('" + "a" * (MAX_FIELD_CHARS + 10) + "',)",
                kwargs="{'password': 'hunter2'}",
            ),
        ],
    )
    rec = state.tasks["m"]
    assert rec.state == "STARTED" and "hunter2" not in rec.kwargs
    assert len(rec.args) < MAX_FIELD_CHARS + 100


def test_a_task_in_a_custom_running_state_is_lost_with_its_worker() -> None:
    state = _running(State())
    replay(state, [task_ev("progress", "r", 100.25, current=1, total=3)])
    assert state.tasks["r"].state == "PROGRESS"
    replay(state, [worker_ev("offline", WORKER, 101.0)])
    assert state.tasks["r"].state == "LOST" and "PROGRESS" not in state.by_state


def test_custom_event_fields_are_clipped() -> None:
    from dashboard.core.records import MAX_FIELD_CHARS

    state = replay(
        State(), [task_ev("progress", "x", 1.0, note="n" * (MAX_FIELD_CHARS * 2), meta={"k": "v" * MAX_FIELD_CHARS})]
    )
    extra = state.tasks["x"].extra
    assert len(extra["note"]) < MAX_FIELD_CHARS + 100 and len(extra["meta"]) < MAX_FIELD_CHARS + 100


@pytest.mark.parametrize("bad", [[], {}, 5, ["a"]])
def test_ids_that_are_not_strings_name_no_task(bad: Any) -> None:
    """Found by the fuzzer: a list as parent_id broke the workflow tree of every page showing the task."""
    from dashboard.core.query import workflow_tree

    state = replay(
        State(),
        [
            task_ev("sent", "u0", 0.0, root_id="0", parent_id=bad),
            task_ev("received", "u1", 0.1, root_id=bad, parent_id="u0"),
        ],
    )
    assert state.tasks["u0"].parent_id is None and state.tasks["u1"].root_id is None
    workflow_tree(state, "u0")
    workflow_tree(state, "u1")
