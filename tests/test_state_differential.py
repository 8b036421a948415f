"""Differential tests: `dashboard.core.state.State` must reach the same outcome as Celery's own
`celery.events.state.State` when both are fed the same events, in any delivery order.

Each event is deep-copied for every consumer (Celery's Task.event mutates the dict it is given, and
over the wire every consumer decodes its own copy) and stamped with `local_received` as Celery's
EventReceiver does: the local clock at delivery, which only ever moves forward."""

from __future__ import annotations

import copy
import random
from collections import Counter
from collections.abc import Callable, Iterable
from itertools import count, permutations
from typing import Any

import pytest
from celery.events.state import State as CeleryState
from celery.events.state import Task as CeleryTask
from celery.events.state import Worker as CeleryWorker

from dashboard.core.records import HEARTBEAT_EXPIRE_WINDOW, PRECEDENCE
from dashboard.core.state import State

pytestmark = pytest.mark.unit

READY_SUBJECTS = {"revoked": "REVOKED"}  # (succeeded and failed outrank custom states in Celery too)


def is_custom(state: str) -> bool:
    """A custom state (e.g. PROGRESS): not one of Celery's, nor our LOST."""
    return state not in PRECEDENCE


# Compared as-is between the two implementations (parent_id and the worker are handled apart).
COMPARED = (
    "state",
    "name",
    "args",
    "kwargs",
    "result",
    "exception",
    "traceback",
    "retries",
    "root_id",
    "eta",
    "expires",
    "runtime",
    "client",
    "timestamp",
    "sent",
    "received",
    "started",
    "succeeded",
    "failed",
    "retried",
    "revoked",
    "rejected",
)
CLIENT = "client@web"
_clock = count(1)


def ev(type_: str, timestamp: float, **fields: Any) -> dict[str, Any]:
    """One event dict as Celery publishes it (envelope fields included)."""
    return {"type": type_, "timestamp": timestamp, "clock": next(_clock), "pid": 7, "utcoffset": 0, **fields}


def tev(subject: str, uuid: str, timestamp: float, hostname: str, **fields: Any) -> dict[str, Any]:
    """A task event."""
    return ev(f"task-{subject}", timestamp, uuid=uuid, hostname=hostname, **fields)


def wev(subject: str, hostname: str, timestamp: float, **fields: Any) -> dict[str, Any]:
    """A worker event."""
    return ev(f"worker-{subject}", timestamp, hostname=hostname, **fields)


def celery_alive(worker: CeleryWorker, now: float) -> bool:
    """Celery's Worker.alive at `now` (the property itself can only read the real clock)."""
    return bool(worker.heartbeats) and now < worker.heartbeat_expires


class Pair:
    """Our State and Celery's, fed the same events, with comparisons between them."""

    def __init__(self) -> None:
        self.ours = State()
        self.celery = CeleryState()
        # The project deliberately differs from Celery in one place: Task.retry() re-sends the task
        # with parent_id == its own uuid; Celery then records the task as its own parent (and child),
        # while we keep the real parent. The reference is a second Celery State fed the same events
        # minus such self-naming parent_id fields: it is what Celery would show without that quirk,
        # so parent_id and children are compared against it instead of against `celery`.
        self.reference = CeleryState()
        self.clock = 0.0  # the local clock of the receiving side
        # Celery's State feeds a task event's *timestamp* into the worker's heartbeats (it passes
        # local_received and timestamp to Worker.event swapped); we use local_received, as for
        # heartbeats. Worker expiry can therefore differ by at most |local_received - timestamp|.
        self.skew: dict[str, float] = {}
        # The second deliberate difference: a task event that a worker sent before its worker-offline
        # but that arrives after it does not bring the worker back online here (Celery's State shows
        # the departed worker alive again for a while). hostname -> timestamp of its goodbye.
        self.goodbye: dict[str, float] = {}
        # The third: task-revoked ends a custom state such as PROGRESS here, and a late custom event
        # does not undo it; Celery ranks custom states above REVOKED and shows PROGRESS. Such tasks
        # are only checked to be REVOKED where Celery differs.
        self.ready_after_custom: dict[str, set[str]] = {}
        # The fourth: tasks of a worker that went offline are LOST here (Celery shows them running
        # forever); LOST ranks as STARTED, so a later started brings such a task back to STARTED even
        # where Celery keeps the custom state it had (e.g. PROGRESS).
        self.ever_lost: set[str] = set()

    def feed(self, event: dict[str, Any], latency: float = 0.001) -> float:
        """Deliver one event to all states; returns the local_received it was stamped with."""
        self.clock = max(self.clock, event["timestamp"]) + latency
        stamped = dict(event, local_received=self.clock)
        subject = event["type"].partition("-")[2]
        if event["type"].startswith("task-") and subject in READY_SUBJECTS:
            mine = self.ours.tasks.get(event["uuid"])
            theirs = self.celery.tasks.data.get(event["uuid"])
            if mine is not None and (
                is_custom(mine.state)
                or (theirs is not None and is_custom(theirs.state))
                or event["uuid"] in self.ready_after_custom
            ):
                self.ready_after_custom.setdefault(event["uuid"], set()).add(READY_SUBJECTS[subject])
        elif event["type"].startswith("task-") and is_custom(subject.upper()):
            mine = self.ours.tasks.get(event["uuid"])
            if mine is not None and mine.state in READY_SUBJECTS.values():  # a late custom event: ours stays
                self.ready_after_custom.setdefault(event["uuid"], set()).add(mine.state)
        self.ours.event(copy.deepcopy(stamped))
        self.celery.event(copy.deepcopy(stamped))
        ref = copy.deepcopy(stamped)
        if "uuid" in ref and ref.get("parent_id") == ref["uuid"]:
            del ref["parent_id"]
        self.reference.event(ref)
        host = event.get("hostname")
        if event["type"] == "worker-offline":
            if host in self.celery.workers.data:
                self.goodbye[host] = event["timestamp"]
        elif event["type"].startswith("worker-"):
            self.goodbye.pop(host, None)
        elif event["type"] != "task-sent":
            self.skew[host] = max(self.skew.get(host, 0.0), abs(self.clock - event["timestamp"]))
            if host in self.goodbye and event["timestamp"] > self.goodbye[host]:
                del self.goodbye[host]  # sent after the goodbye: the worker is back
        self.ever_lost.update(self.ours.by_state.get("LOST", ()))
        return self.clock

    def compare_task(self, uuid: str, where: str = "") -> None:
        """Every compared field of one task agrees with Celery's."""
        mine = self.ours.tasks[uuid]
        theirs: CeleryTask = self.celery.tasks.data[uuid]
        ref: CeleryTask = self.reference.tasks.data[uuid]
        lost_differs = (
            uuid in self.ever_lost
            and mine.state in ("LOST", "STARTED")
            and (theirs.state == "STARTED" or is_custom(theirs.state))
        )
        if uuid in self.ready_after_custom and mine.state != theirs.state and not lost_differs:
            assert mine.state in self.ready_after_custom[uuid], f"{where} {uuid}.state {mine.state}"
            return
        for field in COMPARED:
            if field == "state" and uuid in self.ever_lost and mine.state in ("LOST", "STARTED"):
                assert theirs.state == "STARTED" or is_custom(theirs.state), (
                    f"{where} {uuid}.state {mine.state} vs {theirs.state}"
                )
                continue
            assert getattr(mine, field) == getattr(theirs, field, None), f"{where} {uuid}.{field}"
        assert mine.hostname == (theirs.worker.hostname if theirs.worker else None), f"{where} {uuid} worker"
        assert mine.parent_id == ref.parent_id, f"{where} {uuid}.parent_id"
        if theirs.parent_id != uuid:  # only the self-parent quirk may make the reference differ
            assert theirs.parent_id == ref.parent_id, f"{where} {uuid}.parent_id (reference)"
        for key, value in (mine.extra or {}).items():  # custom event fields, e.g. progress
            assert getattr(theirs, key, None) == value, f"{where} {uuid}.{key}"

    def compare_counters(self, where: str = "") -> None:
        """Incremental counters equal a recount of Celery's tasks."""
        tasks = list(self.celery.tasks.data.values())
        theirs = Counter(self.ours.tasks[t.uuid].state if t.uuid in self.ready_after_custom else t.state for t in tasks)
        mine = Counter({s: n for s, n in self.ours.counts.items() if n})

        # LOST tasks are running ones in Celery's eyes (STARTED or a custom state): compare them as a sum.
        def split(counts: Counter) -> tuple[Counter, int]:
            run = {s for s in counts if s in ("STARTED", "LOST") or is_custom(s)}
            return Counter({s: n for s, n in counts.items() if s not in run}), sum(counts[s] for s in run)

        if self.ever_lost:
            (mine, mine_running), (theirs, theirs_running) = split(mine), split(theirs)
            assert mine_running == theirs_running, where
        assert +mine == +theirs, where
        assert self.ours.task_names == Counter(t.name for t in tasks if t.name is not None), where

    def compare_worker(self, hostname: str, probes: Iterable[float], where: str = "") -> None:
        """Same heartbeat settings; same alive-ness wherever the skew above cannot matter."""
        mine = self.ours.workers[hostname]
        theirs: CeleryWorker = self.celery.workers.data[hostname]
        assert mine.freq == theirs.freq, f"{where} {hostname}.freq"
        if hostname in self.goodbye:
            assert mine.last_heartbeat is None, f"{where} {hostname} said goodbye"
            assert not any(mine.alive(now) for now in probes), f"{where} {hostname} offline after goodbye"
            return
        assert (mine.last_heartbeat is None) == (not theirs.heartbeats), f"{where} {hostname} heartbeats"
        if mine.last_heartbeat is None:
            band = (0.0, 0.0)
        else:
            ours_exp = mine.last_heartbeat + mine.freq * HEARTBEAT_EXPIRE_WINDOW
            assert abs(ours_exp - theirs.heartbeat_expires) <= self.skew.get(hostname, 0.0) + 1e-9, where
            band = (min(ours_exp, theirs.heartbeat_expires), max(ours_exp, theirs.heartbeat_expires))
        for now in probes:
            if not band[0] <= now <= band[1]:
                assert mine.alive(now) == celery_alive(theirs, now), f"{where} {hostname} alive at {now}"

    def compare_all(self, where: str = "") -> None:
        """Everything: task set, each task, children, counters, failures and workers."""
        assert set(self.ours.tasks) == set(self.celery.tasks.data), where
        for uuid in self.ours.tasks:
            self.compare_task(uuid, where)
            kids = {t.uuid for t in self.reference.tasks.data[uuid].children}
            assert set(self.ours.children_of(uuid)) == kids, f"{where} {uuid} children"
        self.compare_counters(where)
        failed = {u for u, t in self.celery.tasks.data.items() if t.state == "FAILURE"}
        assert failed <= set(self.ours.failures), where
        assert set(self.ours.workers) == set(self.celery.workers.data), where
        probes = [self.clock + d for d in (-1.0, 0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 9.0, 20.0, 200.0)]
        for hostname in self.ours.workers:
            self.compare_worker(hostname, probes, where)


def play(events: Iterable[dict[str, Any]], latency: Callable[[], float] = lambda: 0.001) -> Pair:
    """Feed events in the given order, comparing the touched task or worker after each one."""
    pair = Pair()
    for i, event in enumerate(events):
        now = pair.feed(event, latency())
        where = f"after #{i} {event['type']}:"
        if "uuid" in event:
            pair.compare_task(event["uuid"], where)
        host = event.get("hostname")
        if host in pair.ours.workers:
            pair.compare_worker(host, (now, now + 1.0, now + 10.0), where)
    pair.compare_all("at the end:")
    return pair


# -- scripted sequences ---------------------------------------------------------------------------

W1, W2 = "celery@w1", "celery@w2"
TASK = {"name": "tasks.add", "args": "(2, 2)", "kwargs": "{}", "eta": None, "expires": None}


def lifecycle(uuid: str = "t1") -> list[dict[str, Any]]:
    """sent -> received -> started -> succeeded."""
    return [
        tev(
            "sent",
            uuid,
            100.0,
            CLIENT,
            retries=0,
            queue="celery",
            exchange="",
            routing_key="celery",
            root_id=uuid,
            parent_id=None,
            **TASK,
        ),
        tev("received", uuid, 100.1, W1, retries=0, root_id=uuid, parent_id=None, **TASK),
        tev("started", uuid, 100.2, W1),
        tev("succeeded", uuid, 100.7, W1, result="4", runtime=0.5),
    ]


def failure(uuid: str = "f1") -> list[dict[str, Any]]:
    """sent -> received -> started -> progress -> failed."""
    return lifecycle(uuid)[:3] + [
        tev("progress", uuid, 100.3, W1, current=1, total=2),
        tev("failed", uuid, 100.4, W1, exception="KeyError('x')", traceback="Traceback ...\nKeyError: 'x'"),
    ]


def retries(uuid: str = "r1", parent: str = "root") -> list[dict[str, Any]]:
    """Two retries, each re-sent naming the task itself as parent, then success."""
    base = dict(TASK, root_id=parent, parent_id=parent)
    return [
        tev("sent", uuid, 10.0, CLIENT, retries=0, **base),
        tev("received", uuid, 10.1, W1, retries=0, **base),
        tev("started", uuid, 10.2, W1),
        tev("retried", uuid, 10.3, W1, exception="ValueError(0)", traceback="tb 0"),
        tev("sent", uuid, 10.31, W1, retries=1, **dict(base, parent_id=uuid, eta=11.3)),
        tev("received", uuid, 10.4, W2, retries=1, **dict(base, parent_id=uuid, eta=11.3)),
        tev("started", uuid, 11.3, W2),
        tev("retried", uuid, 11.4, W2, exception="ValueError(1)", traceback="tb 1"),
        tev("received", uuid, 11.5, W1, retries=2, **dict(base, parent_id=uuid)),
        tev("started", uuid, 11.6, W1),
        tev("succeeded", uuid, 11.9, W1, result=None, runtime=0.3),
    ]


SCRIPTS: dict[str, list[dict[str, Any]]] = {
    "lifecycle": lifecycle(),
    "failure": failure(),
    "retries": retries(),
    "revoked before start": lifecycle("v1")[:2]
    + [tev("revoked", "v1", 100.5, W1, terminated=False, signum=None, expired=False)],
    "revoked while running": lifecycle("v2")[:3]
    + [tev("revoked", "v2", 100.5, W1, terminated=True, signum=15, expired=False)],
    "expired": lifecycle("v3")[:2] + [tev("revoked", "v3", 100.5, W1, expired=True)],
    "rejected": lifecycle("j1")[:2] + [tev("rejected", "j1", 100.3, W1, requeue=False)],
    "family": lifecycle("root")
    + [
        tev("received", "kid", 100.3, W2, name="tasks.kid", parent_id="root", root_id="root"),
        tev("received", "grandkid", 100.4, W2, name="tasks.kid", parent_id="kid", root_id="root"),
        tev("succeeded", "kid", 100.6, W2, result=1),
    ],
    "workers": [
        wev("online", W1, 50.0, freq=1.0, sw_ident="py-celery", sw_ver="5.5.0", processed=0, active=0),
        wev("heartbeat", W1, 51.0, freq=1.0, processed=3, active=1),
        tev("received", "x1", 51.5, W1, name="tasks.x"),
        wev("heartbeat", W2, 51.6, freq=2.0),
        wev("offline", W1, 52.0, freq=1.0),
        tev("succeeded", "x1", 51.9, W1, result=2),  # late: revives W1 in both
        wev("heartbeat", W2, 60.0, freq=2.0),
        wev("online", W1, 70.0, freq=1.0),
    ],
}


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_scripted_sequence_matches_celery(name: str) -> None:
    play(SCRIPTS[name])


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_scripted_sequence_with_every_event_twice_matches_celery(name: str) -> None:
    play([e for event in SCRIPTS[name] for e in (event, event)])


def test_retried_task_is_not_its_own_parent_unlike_celery() -> None:
    pair = play(retries("r1", parent="root"))
    assert pair.celery.tasks.data["r1"].parent_id == "r1"  # Celery's quirk, still present
    assert pair.ours.tasks["r1"].parent_id == "root"
    assert pair.ours.children_of("r1") == []
    assert pair.ours.children_of("root") == ["r1"]
    assert pair.ours.tasks["r1"].state == "SUCCESS" and pair.ours.tasks["r1"].retries == 2


# Five-event windows of a lifecycle, delivered in every possible order.
PERMUTED: dict[str, list[dict[str, Any]]] = {
    "lifecycle": lifecycle("p1"),
    "with progress": lifecycle("p2")[:3] + [tev("progress", "p2", 100.3, W1, current=1, total=2), lifecycle("p2")[3]],
    "failure": failure("p3"),
    "retry": retries("p4")[1:6],
    "retry to success": retries("p5")[6:11],
    "revoked": lifecycle("p6")[:3]
    + [tev("revoked", "p6", 100.5, W1, terminated=True, signum=15), tev("progress", "p6", 100.4, W1, current=1)],
    "rejected": lifecycle("p7")[:2]
    + [
        tev("rejected", "p7", 100.3, W1, requeue=True),
        tev("received", "p7", 100.4, W2, retries=0, **TASK),
        tev("started", "p7", 100.5, W2),
    ],
}


@pytest.mark.parametrize("name", list(PERMUTED))
def test_every_delivery_order_matches_celery(name: str) -> None:
    events = PERMUTED[name]
    for order in permutations(range(len(events))):
        try:
            play([events[i] for i in order])
        except AssertionError as exc:
            raise AssertionError(f"delivery order {order}: {exc}") from None


# -- randomized sequences -------------------------------------------------------------------------

TASK_NAMES = ("tasks.add", "tasks.mul", "proj.report", "proj.fetch_url")
HOSTS = ("celery@a", "celery@b", "celery@c")


def random_task(
    rng: random.Random, uuid: str, t: float, parent: str | None, root: str, hosts: tuple[str, ...]
) -> list[dict[str, Any]]:
    """One task's events from publish to end (retries, progress, failure...), timestamps increasing."""
    events: list[dict[str, Any]] = []

    def add(subject: str, hostname: str, **fields: Any) -> None:
        nonlocal t
        t += rng.uniform(0.001, 0.3)
        events.append(tev(subject, uuid, round(t, 6), hostname, **fields))

    task = {
        "name": rng.choice(TASK_NAMES),
        "args": repr((rng.randint(0, 99),)),
        "kwargs": "{}",
        "root_id": root,
        "parent_id": parent,
        "eta": None,
        "expires": rng.choice([None, None, round(t + 60, 3)]),
    }
    n_retries = rng.choice((0, 0, 0, 1, 1, 2, 3))
    if rng.random() < 0.7:
        add("sent", CLIENT, retries=0, queue="celery", exchange="", routing_key="celery", **task)
    host = rng.choice(hosts)
    for attempt in range(n_retries + 1):
        again = dict(task)
        if attempt and rng.random() < 0.7:
            again["parent_id"] = uuid  # Task.retry() re-sends from inside the task itself
        if attempt and rng.random() < 0.5:
            add("sent", host, retries=attempt, queue="celery", exchange="", routing_key="celery", **again)
        host = rng.choice(hosts)
        add("received", host, retries=attempt, **again)
        if rng.random() < 0.05:
            add(rng.choice(("revoked", "rejected")), host, terminated=False, requeue=False)
            return events
        add("started", host)
        for i in range(rng.choice((0, 0, 1, 3))):
            add("progress", host, current=i + 1, total=3)
        if rng.random() < 0.1:
            add("checkpoint", host, step=rng.randint(1, 9))  # another custom event
        if attempt < n_retries:
            add("retried", host, exception=f"ValueError({attempt})", traceback=f"Traceback\n{attempt}")
    end = rng.choice(("succeeded",) * 5 + ("failed",) * 2 + ("revoked", "rejected", "none"))
    if end == "succeeded":
        add("succeeded", host, result=repr(rng.randint(0, 9)), runtime=round(rng.uniform(0, 1), 4))
    elif end == "failed":
        add("failed", host, exception="KeyError('k')", traceback=f"Traceback\n{uuid}")
    elif end == "revoked":
        add("revoked", host, terminated=True, signum=15, expired=False)
    elif end == "rejected":
        add("rejected", host, requeue=False)
    return events


def random_worker(rng: random.Random, hostname: str, start: float, end: float) -> list[dict[str, Any]]:
    """A worker's online/heartbeat/offline events, sometimes going offline and coming back."""
    freq = rng.choice((0.5, 1.0, 2.0))
    events = [wev("online", hostname, start, freq=freq, sw_ident="py-celery", sw_ver="5.5.0")]
    t, processed = start, 0
    while t < end:
        t += freq * rng.uniform(0.8, 1.2)
        if rng.random() < 0.08:
            events.append(wev("offline", hostname, t, freq=freq))
            t += rng.uniform(0.0, 3.0 * freq)  # sometimes long enough to expire, if it had not said so
            events.append(wev("online", hostname, t, freq=freq))
        elif rng.random() < 0.05:
            t += 3.0 * freq  # silent: expires without saying goodbye
        processed += rng.randint(0, 3)
        events.append(
            wev(
                "heartbeat",
                hostname,
                t,
                freq=freq,
                processed=processed,
                active=rng.randint(0, 4),
                loadavg=[0.1, 0.2, 0.3],
            )
        )
    if rng.random() < 0.3:
        events.append(wev("offline", hostname, t + 0.1, freq=freq))
    return events


def random_run(seed: int) -> list[dict[str, Any]]:
    """Interleaved tasks and workers of one seed, shuffled locally and with some duplicates."""
    rng = random.Random(seed)
    hosts = HOSTS[: rng.randint(1, len(HOSTS))]
    events: list[dict[str, Any]] = []
    roots: dict[str, str] = {}
    for i in range(rng.randint(1, 12)):
        uuid = f"s{seed}-t{i}"
        parent = rng.choice(list(roots)) if roots and rng.random() < 0.3 else None
        roots[uuid] = roots[parent] if parent else uuid
        events += random_task(rng, uuid, 1000.0 + rng.uniform(0, 4), parent, roots[uuid], hosts)
    end = max(e["timestamp"] for e in events)
    for host in hosts:
        events += random_worker(rng, host, 1000.0 + rng.uniform(-1, 1), end)
    # Delivery: roughly by time, but each event may overtake others up to `jitter` seconds.
    jitter = rng.choice((0.0, 0.05, 0.3, 1.0, 5.0))
    keyed = sorted(events, key=lambda e: e["timestamp"] + rng.uniform(0, jitter))
    for i in range(len(keyed) - 1, -1, -1):
        if rng.random() < 0.05:  # at-least-once delivery: a few arrive twice, a bit later
            keyed.insert(min(len(keyed), i + rng.randint(1, 6)), keyed[i])
    return keyed


SEEDS = range(200)


def test_randomized_sequences_match_celery() -> None:
    for seed in SEEDS:
        rng = random.Random(-seed - 1)
        try:
            play(random_run(seed), latency=lambda r=rng: r.uniform(0.0, 0.02))
        except AssertionError as exc:
            raise AssertionError(f"seed {seed}: {exc}") from None


def test_randomized_sequences_exercise_the_interesting_cases() -> None:
    """Guard against a generator that silently stops producing disorder, retries or failures."""
    seen: Counter[str] = Counter()
    for seed in SEEDS:
        events = random_run(seed)
        first: dict[str, str] = {}
        for e in events:
            if "uuid" in e:
                first.setdefault(e["uuid"], e["type"])
        seen["late start"] += any(t not in ("task-sent", "task-received") for t in first.values())
        types = Counter(e["type"] for e in events)
        seen["retried"] += bool(types["task-retried"])
        seen["failed"] += bool(types["task-failed"])
        seen["progress"] += bool(types["task-progress"])
        seen["offline"] += bool(types["worker-offline"])
        seen["self parent"] += any("uuid" in e and e.get("parent_id") == e["uuid"] for e in events)
        seen["duplicate"] += len({id(e) for e in events}) < len(events)
        seen["children"] += any(e.get("parent_id") not in (None, e.get("uuid")) for e in events)
    assert min(seen.values()) >= 20, seen
    assert len(seen) == 8, seen
