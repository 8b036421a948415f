"""The state's compact structures answer as the plain ones did.

- A scripted replay (lifecycles, failures sharing traceback frames, retries, workflows, task-sent fields,
  custom events, a history past its limit, a lost task, late and out-of-order events) gives the same task
  pages, list rows, API answers, counts and snapshot rows as before the records were made compact:
  tests/data/state_replay_golden.json holds what the state answered before (plain records, sets).
- Dense index values (a count instead of a set of uuids) give every query the same answer as sets, with
  values turning dense and back as tasks come and go (hypothesis).
- A traceback kept as shared frames plus its last line reads back whole; a long history keeps the last
  event of each kind whose time is read from it.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dashboard.core.state as state_module
from dashboard.core.indexes import DenseMembers
from dashboard.core.query import Filters, TextIndex, find, workflow_tree
from dashboard.core.records import EMPTY_HISTORY, HISTORY_TIMES, SLOT_TIMES, ImplicitHistory, task_detail, task_summary
from dashboard.core.state import State

pytestmark = pytest.mark.unit

GOLDEN = Path(__file__).parent / "data" / "state_replay_golden.json"
NAMES = ("shop.orders.create", "mail.send", "media.resize", "reports.build", "search.index")
HOSTS = ("celery@a", "celery@b", "celery@c")
T0 = 1_700_000_000.0


def _tb(rng: random.Random, where: int) -> tuple[str, str]:
    """(exception repr, traceback) of a failure at one of three places, its message varying."""
    n = rng.randrange(10_000)
    frames = "".join(
        f'  File "/srv/app/m{where}.py", line {10 * i + where}, in f{i}\n    step({i})\n' for i in range(4)
    )
    cls = ("KeyError", "TimeoutError", "ValueError")[where]
    return f"{cls}('item {n}')", f"Traceback (most recent call last):\n{frames}{cls}: item {n}\n"


def scripted_events() -> list[dict[str, Any]]:
    """A deterministic stream exercising every field and path the compact records changed."""
    rng = random.Random(13)
    out: list[dict[str, Any]] = []
    t = T0

    def ev(type_: str, uuid: str | None = None, host: str | None = None, **fields: Any) -> None:
        nonlocal t
        t += rng.uniform(0.001, 0.05)
        e: dict[str, Any] = {"type": type_, "timestamp": round(t, 6), "local_received": round(t + 0.01, 6)}
        if uuid is not None:
            e["uuid"] = uuid
        e["hostname"] = host or rng.choice(HOSTS)
        e.update(fields)
        out.append(e)

    for host in HOSTS:
        ev("worker-online", host=host, freq=2.0, sw_ident="py-celery", sw_ver="5.4.0", sw_sys="Linux")
    for i in range(100):
        u = f"task-{i:04d}"
        name = rng.choice(NAMES)
        host = rng.choice(HOSTS)
        parent = f"task-{rng.randrange(i):04d}" if i and rng.random() < 0.3 else None
        root = f"task-{rng.randrange(max(1, i - 5)):04d}" if parent else u
        args, kwargs = repr((i, f"cus_{rng.randrange(1 << 30):x}")), repr({"city": rng.choice(("oslo", "lima"))})
        if rng.random() < 0.3:  # task-sent events enabled for some
            ev("task-sent", u, host="client@x", name=name, args=args, kwargs=kwargs, retries=0, eta=None,
               expires="2030-01-01T00:00:00+00:00" if i % 7 == 0 else None, exchange="", routing_key="celery",
               queue="celery", root_id=root, parent_id=parent)  # fmt: skip
        received = dict(name=name, args=args, kwargs=kwargs, retries=0, eta=None, expires=None, root_id=root,
                        parent_id=parent)  # fmt: skip
        ev("task-received", u, host, **received)
        ev("task-started", u, host)
        roll = rng.random()
        if roll < 0.1:  # retried once
            exc, tb = _tb(rng, rng.randrange(3))
            ev("task-retried", u, host, exception=exc, traceback=tb)
            ev("task-received", u, host, **dict(received, retries=1, eta="2030-01-01T00:00:01+00:00"))
            ev("task-started", u, host)
        if rng.random() < 0.12:
            exc, tb = _tb(rng, rng.randrange(3))
            ev("task-failed", u, host, exception=exc, traceback=tb)
        elif rng.random() < 0.05:
            ev("task-revoked", u, host, terminated=True, signum=15, expired=False)
        elif rng.random() < 0.05:
            ev("task-rejected", u, host, requeue=False)
        elif rng.random() < 0.1:
            ev("task-progress", u, host, current=3, total=10)  # a custom state, with extra fields
            ev("task-succeeded", u, host, result=repr({"ok": i}), runtime=round(rng.uniform(0.01, 2), 6))
        else:
            ev("task-succeeded", u, host, result=repr({"ok": i}), runtime=round(rng.uniform(0.01, 2), 6))
        if i % 40 == 5:  # a late, out-of-order received: merged, the state kept
            ev("task-received", u, host, **received)
    # A history past its limit: revoked early, then many custom events.
    ev("task-received", "chatty", "celery@a", name="media.resize", args="()", kwargs="{}")
    ev("task-started", "chatty", "celery@a")
    ev("task-revoked", "chatty", "celery@a", terminated=True)
    for k in range(70):
        ev("task-progress", "chatty", "celery@a", current=k)
    # A task lost with its worker.
    ev("task-received", "lost-1", "celery@c", name="mail.send", args="()", kwargs="{}")
    ev("task-started", "lost-1", "celery@c")
    ev("worker-offline", host="celery@c")
    return out


FILTERS = [
    {},
    {"state": "SUCCESS"},
    {"state": "FAILURE"},
    {"state": "REVOKED"},
    {"name": "mail"},
    {"name": "s"},
    {"worker": "celery@a"},
    {"text": "oslo"},
    {"text": "keyerror"},
    {"queue": "celery"},
    {"outcome": "recovered"},
    {"outcome": "gave_up"},
    {"state": "SUCCESS", "worker": "celery@b"},
    {"state": "FAILURE", "name": "shop", "text": "lima"},
    {"since": T0 + 2.0, "until": T0 + 9.0, "state": "SUCCESS"},
]


def answers(state: State) -> dict[str, Any]:
    """What the pages and the API read from a state, JSON-shaped."""
    index = TextIndex()
    out: dict[str, Any] = {
        "counts": state.counts,
        "task_names": state.task_names,
        "outcomes": state.outcomes,
        "first_seq": state.first_seq(),
        "last_seq": state.last_seq(),
        "failures": list(state.failures),
        "groups": state.failure_groups.groups(limit=None, now=T0 + 60),
    }
    out["detail"] = {u: task_detail(r, state.children_of(u)) for u, r in state.tasks.items()}
    out["full"] = {u: task_detail(r, state.children_of(u), full=True) for u, r in list(state.tasks.items())[::17]}
    out["rows"] = [task_summary(r) for r in state.iter_newest()]
    out["snapshot"] = {u: state.export_task(u) for u in list(state.tasks)[::3]}
    out["trees"] = {u: workflow_tree(state, u) for u in list(state.tasks)[::11]}
    queries = []
    for raw in FILTERS:
        f = Filters(**raw)
        for kw in ({}, {"limit": 7, "offset": 3}, {"sort": "runtime"}, {"sort": "started", "ascending": True}):
            total, page = find(state, f, text_index=index, **kw)  # type: ignore[arg-type]
            queries.append([raw, kw, total, [r.uuid for r in page]])
        total, page = find(state, f, limit=5, text_index=index, before=state.last_seq() - 30)
        queries.append([raw, "before", total, [r.uuid for r in page]])
    out["queries"] = queries
    return json.loads(json.dumps(out))  # tuples as lists, as every reader serialises them


def replayed(events: list[dict[str, Any]], max_tasks: int = 10_000) -> State:
    """A state fed `events` (fresh copies: the state keeps what it is given)."""
    state = State(max_tasks=max_tasks)
    assert state.events(json.loads(json.dumps(events))) == 0, state.last_error
    return state


def test_a_scripted_replay_answers_as_before_the_records_were_compact() -> None:
    expected = json.loads(GOLDEN.read_text())
    got = answers(replayed(scripted_events()))
    # One change on purpose: a history past its limit keeps the last event of each kind whose time is read
    # from it (here the revocation), where it dropped the oldest event after the first whatever its kind.
    new, old = got["detail"]["chatty"].pop("history"), expected["detail"]["chatty"].pop("history")
    assert [h["event"] for h in new[:3]] == ["received", "revoked", "progress"] and old[1]["event"] == "progress"
    assert len(new) == len(old) and new[0] == old[0] and new[2:] == old[2:]
    assert got.keys() == expected.keys()
    for key in expected:
        assert got[key] == expected[key], key


def test_a_snapshot_of_compact_records_restores_the_same_answers() -> None:
    state = replayed(scripted_events())
    back = State(max_tasks=10_000)
    for uuid in state.order:
        row = json.loads(json.dumps(state.export_task(uuid)))  # as the snapshot file stores it
        back.restore_task(row)
    before, after = answers(state), answers(back)
    for key in ("detail", "full", "rows", "snapshot", "counts", "task_names", "trees"):
        assert after[key] == before[key], key


def test_restored_tasks_keep_their_history_as_compact_as_ingested_ones() -> None:
    """After a restart from a snapshot the per-task cost is what it was: a history that ingest kept
    implicit (its times are the record's own fields) comes back implicit, not as a tuple of its own."""
    state = replayed(scripted_events())
    back = State(max_tasks=10_000)
    for uuid in state.order:
        back.restore_task(json.loads(json.dumps(state.export_task(uuid))))
    kinds = {u: type(rec._hist) for u, rec in state.tasks.items()}
    assert sum(k is ImplicitHistory for k in kinds.values()) > len(kinds) // 2  # (most tasks, as in life)
    assert {u: type(rec._hist) for u, rec in back.tasks.items()} == kinds


def test_custom_event_kinds_are_not_remembered_by_the_shared_histories() -> None:
    """A producer inventing event kinds (task-x1, task-x2, ...) grows nothing shared: custom kinds make a
    task's history explicit, and the shared implicit histories remember only the kinds with a time field."""
    state = State(max_tasks=100)
    for i in range(5_000):
        state.event({"type": f"task-x{i}", "uuid": f"t{i % 300}", "timestamp": T0 + i, "hostname": "celery@a"})
    nodes, seen = [EMPTY_HISTORY], 0
    while nodes:
        node = nodes.pop()
        seen += 1
        assert len(node._next) <= len(SLOT_TIMES) + len(HISTORY_TIMES)
        nodes.extend(n for n in node._next.values() if n is not None)
    assert seen < 1_000


def test_a_big_workflow_loses_its_oldest_members_to_eviction_and_keeps_the_rest_in_order() -> None:
    """One root with many members (a fan-out): the members read back in the order they came while the oldest
    are evicted one by one (long member lists are kept as deques: eviction takes the first in O(1))."""
    state = State(max_tasks=150)
    root = "root-0"
    state.event({"type": "task-received", "uuid": root, "timestamp": T0, "hostname": "celery@a", "name": "fan"})
    for i in range(400):
        uid = f"m{i}"
        state.event(
            {
                "type": "task-received",
                "uuid": uid,
                "timestamp": T0 + i,
                "hostname": "celery@a",
                "name": "part",
                "root_id": root,
                "parent_id": root,
            }
        )
    kept = [f"m{i}" for i in range(400) if f"m{i}" in state.tasks]
    assert len(kept) == 150 and kept == [f"m{i}" for i in range(250, 400)]
    assert state.workflow_members(root) == kept
    assert state.children_of(root) == kept


def test_failures_at_one_place_share_their_traceback_frames() -> None:
    state = replayed(scripted_events())
    failed = [r for r in state.tasks.values() if r.state == "FAILURE"]
    assert len(failed) >= 8
    heads = {id(r._more.tb_head) for r in failed if r._more is not None}
    assert len(heads) <= 3, "one copy of the frames per place of failure"
    for rec in failed:
        assert rec.traceback.startswith("Traceback (most recent call last):\n")
        assert rec.traceback.endswith(rec.exception.split("(")[0] + ": " + rec.exception.split("'")[1] + "\n")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300) | st.none() | st.integers() | st.lists(st.text(max_size=5), max_size=3))
def test_any_traceback_value_reads_back_as_it_came(tb: Any) -> None:
    state = State()
    ev = {"type": "task-failed", "uuid": "t", "hostname": "w@h", "timestamp": T0, "exception": "E()", "traceback": tb}
    state.events([json.loads(json.dumps(ev))])
    rec = state.tasks["t"]
    assert rec.traceback == tb
    assert task_detail(rec, [], full=True)["traceback"] == tb
    retried = dict(ev, type="task-retried", uuid="r")
    state.events([json.loads(json.dumps(retried))])
    assert state.tasks["r"].attempts == [
        {"retries": None, "timestamp": T0, "exception": "E()", "traceback": tb, "hostname": "w@h"}
    ]


def test_a_long_history_keeps_the_first_event_and_the_last_of_each_kind_read_from_it() -> None:
    state = replayed(scripted_events())
    rec = state.tasks["chatty"]
    assert len(rec.history) == 2 * state_module.MAX_HISTORY
    assert rec.history[0] == "received"
    assert rec.state == "REVOKED" and rec.revoked is not None
    assert rec.history.count("revoked") == 1
    assert rec.history[-2] == "progress"
    assert task_detail(rec, [])["revoked"] == rec.revoked


# -- dense index values -----------------------------------------------------------------------------------

EVENT_TYPES = ["task-received", "task-started", "task-succeeded", "task-failed", "task-retried", "task-revoked"]
EVENT = st.fixed_dictionaries(
    {
        "type": st.sampled_from(EVENT_TYPES),
        "uuid": st.sampled_from([f"u{i}" for i in range(40)]),
        "hostname": st.sampled_from(["w1", "w2", "w3"]),
        "timestamp": st.floats(min_value=T0, max_value=T0 + 100, allow_nan=False),
        "name": st.sampled_from(["a.x", "a.y", "b.z", "7", 7]),  # (7 is indexed by its repr: as "7")
        "args": st.sampled_from(["(1,)", "('oslo',)", "()"]),
    }
)


def _fed(events: list[dict[str, Any]], dense: bool, monkeypatch: pytest.MonkeyPatch) -> State:
    with monkeypatch.context() as m:
        if dense:  # values turn dense from 3 tasks and one in 4, back to sets below one in 8
            m.setattr(state_module, "DENSE_MIN", 3)
            m.setattr(state_module, "DENSE_SHARE", 4)
            m.setattr(state_module, "SPARSE_SHARE", 8)
            m.setattr(state_module, "REBALANCE_EVERY", 2)
        else:
            m.setattr(state_module, "DENSE_MIN", 10**9)
        state = State(max_tasks=25)
        state.events(json.loads(json.dumps(events)))
    return state


def _plain(index: dict[str, Any]) -> dict[str, set[str]]:
    return {value: set(members) for value, members in index.items()}


QUERIES = [
    Filters(state="SUCCESS"),
    Filters(state="STARTED"),
    Filters(name="a"),
    Filters(name="b.z"),
    Filters(worker="w2"),
    Filters(state="FAILURE", worker="w1"),
    Filters(state="SUCCESS", name="a", worker="w3"),
    Filters(name="a", text="oslo"),
    Filters(state="RETRY", outcome="recovered"),
]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(EVENT, min_size=1, max_size=160))
def test_dense_index_values_answer_every_query_as_sets_do(
    events: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    dense, sets = _fed(events, True, monkeypatch), _fed(events, False, monkeypatch)
    for name in ("by_state", "by_name", "by_worker"):
        got, want = getattr(dense, name), getattr(sets, name)
        assert _plain(got) == _plain(want), name
        for value, members in got.items():
            assert len(members) == len(want[value]) == len(list(members)), "each member once"
            assert all(u in members for u in want[value])
    assert dense.counts == sets.counts and dense.task_names == sets.task_names
    for f in QUERIES:
        for kw in ({}, {"limit": 3, "offset": 2}, {"sort": "started"}, {"before": dense.last_seq() - 4}):
            a = find(dense, f, **kw)  # type: ignore[arg-type]
            b = find(sets, f, **kw)  # type: ignore[arg-type]
            assert (a[0], [r.uuid for r in a[1]]) == (b[0], [r.uuid for r in b[1]]), (f, kw)


def test_a_common_value_turns_dense_and_back_to_a_set_as_its_share_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state_module, "DENSE_MIN", 50)
    monkeypatch.setattr(state_module, "REBALANCE_EVERY", 10)
    state = State(max_tasks=30_000)
    events = []
    for i in range(30_000):  # 100 tasks of one worker, then 29,900 of another
        events.append({"type": "task-received", "uuid": f"t{i}", "hostname": "w1" if i < 100 else "w2",
                       "timestamp": T0 + i, "name": "job"})  # fmt: skip
        if i == 300:
            state.events(events)
            events = []
            assert isinstance(state.by_worker["w1"], DenseMembers), f"one task in {state_module.DENSE_SHARE}: a count"
            assert find(state, Filters(worker="w1"), limit=2)[0] == 100
    state.events(events)
    assert isinstance(state.by_worker["w1"], set), f"under one in {state_module.SPARSE_SHARE}: a set again"
    assert state.by_worker["w1"] == {f"t{i}" for i in range(100)}
    total, page = find(state, Filters(worker="w1"), limit=3)
    assert total == 100 and [r.uuid for r in page] == ["t99", "t98", "t97"]


TASK_EVENTS = ["task-sent", "task-received", "task-started", "task-succeeded", "task-failed", "task-retried",
               "task-revoked", "task-rejected", "task-progress"]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(TASK_EVENTS), st.floats(min_value=T0, max_value=T0 + 50, allow_nan=False)),
        min_size=1,
        max_size=12,
    )
)
def test_a_history_reads_every_event_in_order_implicit_or_not(steps: list[tuple[str, float]]) -> None:
    state = State()
    for type_, ts in steps:  # any order, repeats and out-of-order times included
        state.events([{"type": type_, "uuid": "t", "hostname": "w@h", "timestamp": ts, "local_received": ts}])
    rec = state.tasks["t"]
    subjects = [type_.partition("-")[2] for type_, _ in steps]
    assert list(rec.history) == [x for (_, ts), subject in zip(steps, subjects) for x in (subject, ts)]
    for kind in ("sent", "received", "started", "succeeded", "failed", "retried", "revoked", "rejected"):
        last = [ts for (_, ts), subject in zip(steps, subjects) if subject == kind]
        assert getattr(rec, kind) == (last[-1] if last else None), kind
    assert rec.timestamp is not None


def test_a_name_indexed_by_its_repr_turns_a_dense_value_back_into_a_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state_module, "DENSE_MIN", 4)
    monkeypatch.setattr(state_module, "REBALANCE_EVERY", 1)
    state = State()
    state.events([{"type": "task-received", "uuid": f"s{i}", "hostname": "w", "timestamp": T0 + i, "name": "7"}
                  for i in range(20)])  # fmt: skip
    assert isinstance(state.by_name["7"], DenseMembers)
    state.events([{"type": "task-received", "uuid": "odd", "hostname": "w", "timestamp": T0 + 30, "name": 7}])
    assert state.by_name["7"] == {"odd", *(f"s{i}" for i in range(20))}
    assert isinstance(state.by_name["7"], set), "a value whose tasks do not all hold it as their name: a set"
    total, page = find(state, Filters(name="7"), limit=2)
    assert total == 21 and [r.uuid for r in page] == ["odd", "s19"]
    state.events([{"type": "task-received", "uuid": f"n{i}", "hostname": "w", "timestamp": T0 + 40 + i, "name": "7"}
                  for i in range(20)])  # fmt: skip
    assert isinstance(state.by_name["7"], set), "no name turns dense while a name is not a string"
