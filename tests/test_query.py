"""Task queries (`dashboard.query`): filters, free text, paging, newest first — and the same answers as
a brute-force scan over randomized states, so the indexes and the text cache never go stale."""

from __future__ import annotations

import random
from collections.abc import Iterable
from itertools import count
from typing import Any

import pytest

from dashboard.core.query import Filters, TextIndex, find, haystack, matches, workflow_tree
from dashboard.core.records import derived_runtime
from dashboard.core.state import CHUNK_BITS, State

pytestmark = pytest.mark.unit

_clock = count(1)


def ev(subject: str, uuid: str, timestamp: float, hostname: str = "w1@host", **fields: Any) -> dict[str, Any]:
    """A task event as a worker publishes it, stamped as received at its own timestamp."""
    return {
        "type": f"task-{subject}",
        "uuid": uuid,
        "hostname": hostname,
        "timestamp": timestamp,
        "local_received": timestamp,
        "clock": next(_clock),
        "utcoffset": 0,
        **fields,
    }


def replay(state: State, events: Iterable[dict[str, Any]]) -> State:
    """Apply the events in order."""
    for e in events:
        state.event(e)
    return state


def uuids(result: tuple[int, list[Any]]) -> tuple[int, list[str]]:
    """(total, [uuid, ...]) of a find() answer."""
    total, page = result
    return total, [r.uuid for r in page]


@pytest.fixture
def six() -> State:
    """Six tasks of mixed names, states and workers, first seen in order q0..q5."""
    return replay(
        State(),
        [
            ev("succeeded", "q0", 1.0, name="tasks.Add", result="3", args="(1, 2)"),
            ev("failed", "q1", 2.0, name="tasks.mul", exception="ValueError('bad factor 7')", hostname="w2@host"),
            ev("succeeded", "q2", 3.0, name="proj.add_many", result="'done'", args="([4, 5],)"),
            ev("received", "q3", 4.0, name="tasks.add", args="('invoice-991',)", kwargs="{'mode': 'fast'}"),
            ev("started", "q4", 5.0, hostname="w2@host"),  # no name yet
            ev("succeeded", "q5", 6.0, name="tasks.ADD", result="42"),
        ],
    )


def test_no_filter_pages_newest_first(six: State) -> None:
    assert uuids(find(six, Filters())) == (6, ["q5", "q4", "q3", "q2", "q1", "q0"])
    assert uuids(find(six, Filters(), limit=2, offset=2)) == (6, ["q3", "q2"])
    assert uuids(find(six, Filters(), limit=2, offset=5)) == (6, ["q0"])


def test_state_and_name_filters(six: State) -> None:
    assert uuids(find(six, Filters(state="SUCCESS"))) == (3, ["q5", "q2", "q0"])
    assert uuids(find(six, Filters(name="add"))) == (4, ["q5", "q3", "q2", "q0"])
    assert uuids(find(six, Filters(state="SUCCESS", name="ADD"), limit=1, offset=1)) == (3, ["q2"])
    assert find(six, Filters(state="REVOKED")) == (0, [])
    assert find(six, Filters(name="nothing")) == (0, [])


def test_worker_filter_is_an_exact_hostname(six: State) -> None:
    assert uuids(find(six, Filters(worker="w2@host"))) == (2, ["q4", "q1"])
    assert uuids(find(six, Filters(worker="w2@host", state="FAILURE"))) == (1, ["q1"])
    assert find(six, Filters(worker="w2")) == (0, [])


def test_free_text_searches_uuid_args_kwargs_result_and_exception(six: State) -> None:
    assert uuids(find(six, Filters(text="INVOICE-991"))) == (1, ["q3"])  # args, any case
    assert uuids(find(six, Filters(text="'fast'"))) == (1, ["q3"])  # kwargs
    assert uuids(find(six, Filters(text="done"))) == (1, ["q2"])  # result
    assert uuids(find(six, Filters(text="bad factor"))) == (1, ["q1"])  # exception
    assert uuids(find(six, Filters(text="q4"))) == (1, ["q4"])  # uuid
    assert uuids(find(six, Filters(text="4", name="add"))) == (2, ["q5", "q2"])  # combined with a filter
    assert find(six, Filters(text="tasks.add")) == (0, []), "the name is a filter of its own, not free text"


def test_text_search_sees_changes_after_the_first_search(six: State) -> None:
    """The per-chunk cache is rebuilt for tasks that changed since it was built."""
    index = TextIndex()
    assert find(six, Filters(text="timeout"), text_index=index) == (0, [])
    replay(six, [ev("failed", "q3", 7.0, exception="TimeoutError('gateway timeout')")])
    assert uuids(find(six, Filters(text="timeout"), text_index=index)) == (1, ["q3"])
    replay(six, [ev("received", "q6", 8.0, args="('timeout',)")])  # a new task
    assert uuids(find(six, Filters(text="timeout"), text_index=index)) == (2, ["q6", "q3"])


def test_evicted_tasks_leave_every_index() -> None:
    state = State(max_tasks=3)
    replay(state, [ev("failed", f"t{i}", float(i), name="job", exception=f"Boom({i})") for i in range(5)])
    index = TextIndex()
    assert uuids(find(state, Filters(text="boom"), text_index=index)) == (3, ["t4", "t3", "t2"])
    assert uuids(find(state, Filters(state="FAILURE", name="job", worker="w1@host"))) == (3, ["t4", "t3", "t2"])
    replay(state, [ev("succeeded", "t5", 6.0, name="job")])
    assert uuids(find(state, Filters(text="boom"), text_index=index)) == (2, ["t4", "t3"])
    assert uuids(find(state, Filters(name="job"))) == (3, ["t5", "t4", "t3"])


def test_limit_zero_counts_without_a_page(six: State) -> None:
    assert find(six, Filters(name="add"), limit=0) == (4, [])


def test_matches_agrees_with_find(six: State) -> None:
    f = Filters(state="SUCCESS", text="4")
    assert [r.uuid for r in six.iter_newest() if matches(r, f)] == uuids(find(six, f))[1]
    assert "invoice-991" in haystack(six.tasks["q3"])


# -- randomized: find() == a brute-force scan --------------------------------------------------------

NAMES = ["proj.add", "proj.mul", "proj.Send_Email", "other.add_many", "x"]
WORDS = ["alpha", "Beta", "gamma", "invoice", "42", "7"]
HOSTS = ["w1@a", "w2@b", "w3@c"]


QUEUES = ["celery", "mail", "video"]


def _random_events(rng: random.Random, n_tasks: int) -> list[dict[str, Any]]:
    events = []
    t = 1000.0
    for i in range(n_tasks):
        uid = f"u{i}-{rng.randrange(10**6)}"
        t += rng.random()
        host = rng.choice(HOSTS)
        if rng.random() < 0.5:  # only some tasks are seen sent (task_send_sent_event), with their queue
            events.append(ev("sent", uid, t - 0.5, hostname="client@web", queue=rng.choice(QUEUES)))
        events.append(
            ev(
                "received",
                uid,
                t,
                hostname=host,
                name=rng.choice(NAMES),
                args=f"('{rng.choice(WORDS)}', {rng.randrange(100)})",
                kwargs="{}",
            )
        )
        if rng.random() < 0.8:
            events.append(ev("started", uid, t + rng.random(), hostname=host))
            if rng.random() < 0.2:
                events.append(ev("failed", uid, t + 2, hostname=host, exception=f"ValueError('{rng.choice(WORDS)}')"))
            elif rng.random() < 0.9:
                events.append(
                    ev(
                        "succeeded",
                        uid,
                        t + 2,
                        hostname=host,
                        result=repr(rng.choice(WORDS)),
                        runtime=rng.choice([0.5, 1.0, rng.random()]),
                    )
                )
    return events


def _brute(state: State, f: Filters, sort: str | None, ascending: bool) -> list[Any]:
    recs = [r for r in state.iter_newest() if matches(r, f)]
    if sort is None:
        return recs

    def value(r: Any) -> Any:  # a failed task's runtime is derived (started → failed), as the list shows it
        v = getattr(r, sort)
        return derived_runtime(r) if v is None and sort == "runtime" else v

    present = [r for r in recs if isinstance(value(r), (int, float))]
    absent = [r for r in recs if not isinstance(value(r), (int, float))]
    if ascending:
        present.sort(key=lambda r: (value(r), -r.seq))
    else:
        present.sort(key=lambda r: (value(r), r.seq), reverse=True)
    return present + absent


@pytest.mark.parametrize("seed", range(12))
def test_find_equals_a_brute_force_scan(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.choice([50, 700, 3000])  # across chunk boundaries (chunks of 2**CHUNK_BITS tasks)
    state = State(max_tasks=rng.choice([n, n // 2, 2**CHUNK_BITS + 3]))
    index = TextIndex()
    events = _random_events(rng, n)
    wave = max(1, len(events) // rng.choice([4, 15]))
    for start in range(0, len(events), wave):  # query between ingest waves: caches must follow
        replay(state, events[start : start + wave])
        for _ in range(20):
            since = rng.choice([None, None, 1000.0 + rng.random() * n])
            f = Filters(
                state=rng.choice([None, "SUCCESS", "FAILURE", "STARTED", "RECEIVED"]),
                name=rng.choice([None, "add", "MUL", "proj.", "nothing"]),
                worker=rng.choice([None, *HOSTS]),
                text=rng.choice([None, None, *WORDS, "u1"]),
                queue=rng.choice([None, None, None, *QUEUES]),
                since=since,
                until=rng.choice([None, None, (since or 1000.0) + rng.random() * n / 2]),
            )
            limit, offset = rng.choice([1, 5, 50]), rng.choice([0, 0, 3, 40])
            sort = rng.choice([None, None, "received", "started", "runtime"])
            ascending = sort is not None and rng.random() < 0.5
            expected = _brute(state, f, sort, ascending)
            total, page = find(state, f, limit=limit, offset=offset, text_index=index, sort=sort, ascending=ascending)
            assert total == len(expected), (f, sort)
            assert [r.uuid for r in page] == [r.uuid for r in expected[offset : offset + limit]], (f, sort, ascending)
            if sort is None and expected:  # a cursor from the middle pages below it, total unchanged
                before = rng.choice(expected).seq
                total, page = find(state, f, limit=limit, text_index=index, before=before)
                below = [r.uuid for r in expected if r.seq < before][:limit]
                assert total == len(expected) and [r.uuid for r in page] == below, (f, before)


# -- workflow tree -----------------------------------------------------------------------------------


def _chord_workflow() -> State:
    """workflow -> add(1,1) -> group of 3 adds -> tsum, as Celery links them (root_id everywhere)."""
    events = [ev("succeeded", "wf", 1.0, name="demo.workflow", root_id="wf")]
    events.append(ev("succeeded", "a1", 2.0, name="demo.add", root_id="wf", parent_id="wf"))
    for i in range(3):
        events.append(ev("succeeded", f"g{i}", 3.0 + i, name="demo.add", root_id="wf", parent_id="a1"))
    events.append(ev("started", "sum", 7.0, name="demo.tsum", root_id="wf", parent_id="g2"))
    events.append(ev("received", "lost", 8.0, name="demo.add", root_id="wf", parent_id="never-seen"))
    events.append(ev("succeeded", "alone", 9.0, name="demo.add", root_id="alone"))
    return replay(State(), events)


def test_workflow_tree_from_any_member_shows_the_whole_workflow() -> None:
    state = _chord_workflow()
    tree = workflow_tree(state, "g1")  # asked from a child: the tree still starts at the root
    assert tree is not None and tree["root"] == "wf" and not tree["truncated"]
    parents = {n["uuid"]: n["parent"] for n in tree["nodes"]}
    assert parents == {"wf": None, "a1": "wf", "g0": "a1", "g1": "a1", "g2": "a1", "sum": "g2", "lost": "wf"}, (
        "a member whose parent is unknown hangs from the root"
    )
    states = {n["uuid"]: n["state"] for n in tree["nodes"]}
    assert states["sum"] == "STARTED" and states["g0"] == "SUCCESS"
    assert workflow_tree(state, "wf") == tree
    assert workflow_tree(state, "alone") is None, "a task on its own has no workflow to show"
    assert workflow_tree(state, "missing") is None
    assert len(workflow_tree(state, "g1", max_nodes=3)["nodes"]) == 3
    assert workflow_tree(state, "g1", max_nodes=3)["truncated"] is True


def test_workflow_tree_survives_the_eviction_of_its_root() -> None:
    state = State(max_tasks=3)
    replay(
        state,
        [
            ev("succeeded", "root", 1.0, root_id="root"),
            ev("succeeded", "c1", 2.0, root_id="root", parent_id="root"),
            ev("succeeded", "c2", 3.0, root_id="root", parent_id="c1"),
            ev("received", "c3", 4.0, root_id="root", parent_id="c1"),
        ],
    )
    assert "root" not in state.tasks
    tree = workflow_tree(state, "c2")
    nodes = {n["uuid"]: (n["parent"], n["state"]) for n in tree["nodes"]}
    assert nodes == {
        "root": (None, None),
        "c1": ("root", "SUCCESS"),
        "c2": ("c1", "SUCCESS"),
        "c3": ("c1", "RECEIVED"),
    }, "the evicted root stays as an unseen node"
    assert tree["root"] == "root"
    replay(state, [ev("received", "x", 5.0), ev("received", "y", 6.0), ev("received", "z", 7.0)])
    assert state.by_root == {}, "evicted tasks leave the root index"
