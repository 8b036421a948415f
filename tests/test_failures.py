"""Failure grouping (`dashboard.failures`): signatures, normalization, tracebacks, and the bounded
incremental `FailureGroups` aggregate, fed realistic Celery exception reprs and tracebacks."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from dashboard.core.failures import (
    MAX_COUNTER_KEYS,
    MAX_MESSAGE_CHARS,
    FailureGroups,
    group_id,
    normalize_message,
    signature,
)

pytestmark = pytest.mark.unit

# Where Celery's machinery lives in a Debian-packaged and in a virtualenv install.
TRACE = "/usr/lib/python3/dist-packages/celery/app/trace.py"
AUTORETRY = "/srv/app/.venv/lib/python3.11/site-packages/celery/app/autoretry.py"
TASK = "/srv/app/.venv/lib/python3.11/site-packages/celery/app/task.py"
REQUESTS = "/srv/app/.venv/lib/python3.11/site-packages/requests/api.py"
ADAPTERS = "/srv/app/.venv/lib/python3.11/site-packages/requests/adapters.py"
SOCKET = "/usr/lib/python3.11/socket.py"
DEMO = "/srv/app/dashboard/demo.py"
CHAINED = "\nDuring handling of the above exception, another exception occurred:\n\n"
CAUSED = "\nThe above exception was the direct cause of the following exception:\n\n"

PAYMENT_EXC = "PaymentDeclined('card {card} was declined for amount {amount}: insufficient funds')"


def frame(path: str, line: int, func: str, code: str = "pass") -> str:
    """One formatted traceback entry, as traceback.format_exception writes it."""
    return f'  File "{path}", line {line}, in {func}\n    {code}\n'


def block(frames: list[str], last_line: str) -> str:
    """One traceback block: header, frames, and the `Type: message` line."""
    return "Traceback (most recent call last):\n" + "".join(frames) + last_line + "\n"


def celery_frames() -> list[str]:
    """The frames Celery's worker puts above every task (trace_task -> __protected_call__)."""
    return [
        frame(TRACE, 453, "trace_task", "R = retval = fun(*args, **kwargs)"),
        frame(TRACE, 736, "__protected_call__", "return self.run(*args, **kwargs)"),
    ]


def payment_tb(card: str = "4000-0000-0000-0002", amount: Any = 42, line: int = 62) -> str:
    """The demo's fail() traceback: fail -> _charge -> _authorize raises."""
    return block(
        celery_frames()
        + [
            frame(DEMO, 73, "fail", "return _charge(card, amount)"),
            frame(DEMO, 66, "_charge", "_authorize(card, amount)"),
            frame(DEMO, line, "_authorize", "raise PaymentDeclined(...)"),
        ],
        f"dashboard.demo.PaymentDeclined: card {card} was declined for amount {amount}: insufficient funds",
    )


def autoretry_tb(attempt: int) -> str:
    """A task-retried traceback for the demo's flaky() under autoretry_for: the ConnectionError
    block, then Celery raising Retry from its own code (no app frame in the last block)."""
    first = block(
        [
            frame(AUTORETRY, 38, "run", "return task._orig_run(*args, **kwargs)"),
            frame(DEMO, 82, "flaky", 'raise ConnectionError(f"upstream unavailable on attempt {attempt}")'),
        ],
        f"ConnectionError: upstream unavailable on attempt {attempt}",
    )
    last = block(
        celery_frames()
        + [
            frame(AUTORETRY, 60, "run", "ret = task.retry(exc=exc, **retry_kwargs_for_attempt)"),
            frame(TASK, 955, "retry", "raise ret"),
        ],
        f"celery.exceptions.Retry: Retry in {2**attempt}s: ConnectionError('upstream unavailable on "
        f"attempt {attempt}')",
    )
    return first + CHAINED + last


def exhausted_tb(attempt: int) -> str:
    """flaky()'s final task-failed traceback: retry() re-raises the ConnectionError itself."""
    return block(
        celery_frames()
        + [
            frame(AUTORETRY, 60, "run", "ret = task.retry(exc=exc, **retry_kwargs_for_attempt)"),
            frame(TASK, 942, "retry", "raise_with_context(exc)"),
            frame(AUTORETRY, 38, "run", "return task._orig_run(*args, **kwargs)"),
            frame(DEMO, 82, "flaky", 'raise ConnectionError(f"upstream unavailable on attempt {attempt}")'),
        ],
        f"ConnectionError: upstream unavailable on attempt {attempt}",
    )


def add(
    fg: FailureGroups,
    uuid: str,
    ts: float,
    exception: Any = None,
    traceback: Any = None,
    name: Any = "dashboard.demo.fail",
    hostname: Any = "celery@w1",
    outcome: str = "FAILURE",
) -> str:
    """FailureGroups.add with the demo payment failure as the default."""
    if exception is None and traceback is None:
        exception, traceback = PAYMENT_EXC.format(card="4000-0000-0000-0002", amount=42), payment_tb()
    return fg.add(uuid, name, hostname, exception, traceback, ts, outcome)


# --- signatures: messages of the same shape ---------------------------------------------------


@pytest.mark.parametrize(
    "first, second",
    [
        (
            PAYMENT_EXC.format(card="4000-0000-0000-0002", amount=42),
            PAYMENT_EXC.format(card="4000-0000-0000-0119", amount=7),
        ),
        (
            PAYMENT_EXC.format(card="4000-0000-0000-0002", amount=42.5),
            PAYMENT_EXC.format(card="5555-4444-3333-1111", amount=1e3),
        ),
        ("ValueError(\"invalid email address 'bob'\")", "ValueError(\"invalid email address 'alice.smith'\")"),
        ("ValueError('no mailbox for bob@example.com')", "ValueError('no mailbox for a.b+c@mail.example.org')"),
        ("KeyError('3f2a1b4c-1234-5678-9abc-def012345678')", "KeyError('0b7e9c1a-aaaa-4bbb-8ccc-0123456789ab')"),
        ("TimeoutError('timed out after 30 seconds')", "TimeoutError('timed out after 5.5 seconds')"),
        ("RuntimeError('bad object at 0x7f3a1c2d')", "RuntimeError('bad object at 0xdeadbeef')"),
        (
            "RuntimeError('digest 9f86d081884c7d659a2feaa0c55ad015 mismatch')",
            "RuntimeError('digest 2c26b46b68ffc68ff99b453c1d304134 mismatch')",
        ),
        ("ConnectionError('cannot reach 10.0.0.12:6379')", "ConnectionError('cannot reach 192.168.1.1:16379')"),
        ("ConnectionError('cannot reach fe80::1ff:fe23:4567:890a')", "ConnectionError('cannot reach ::1')"),
        ("ValueError('expired at 2024-05-01T12:30:00.123456+00:00')", "ValueError('expired at 2025-01-31 08:00:59Z')"),
        ("ValueError('order_17 missing   field\\n x')", "ValueError('order_91234 missing field x')"),
    ],
)
def test_messages_of_the_same_shape_share_a_signature(first: str, second: str) -> None:
    assert signature(first, None) == signature(second, None)
    fg = FailureGroups()
    assert fg.add("a", "t", "w", first, None, 1.0, "FAILURE") == fg.add("b", "t", "w", second, None, 2.0, "FAILURE")
    assert len(fg) == 1


@pytest.mark.parametrize(
    "exception, exc_type, message",
    [
        (
            PAYMENT_EXC.format(card="4000-0000-0000-0002", amount=42),
            "PaymentDeclined",
            "card <n>-<n>-<n>-<n> was declined for amount <n>: insufficient funds",
        ),
        ("ValueError(\"invalid email address 'bob'\")", "ValueError", "invalid email address <str>"),
        ("KeyError('3f2a1b4c-1234-5678-9abc-def012345678')", "KeyError", "<uuid>"),
        ("KeyError('x')", "KeyError", "x"),
        ("TimeoutError()", "TimeoutError", ""),
        ("OSError(2, 'No such file or directory')", "OSError", "<n>, No such file or directory"),
        ("app.errors.QuotaExceeded('user 12 over quota')", "app.errors.QuotaExceeded", "user <n> over quota"),
        ("Oops(<Widget object at 0x7f3a1c2d9e10>)", "Oops", "<Widget object at <hex>>"),
        ("TimeoutError", "TimeoutError", ""),
        ("something broke on attempt 3", "Unknown", "something broke on attempt <n>"),
    ],
)
def test_type_and_normalized_message(exception: str, exc_type: str, message: str) -> None:
    assert signature(exception, None) == (exc_type, message, None)


def test_normalization_placeholders() -> None:
    text = (
        "at 2024-01-02T03:04:05Z from 10.0.0.1 by bob@x.com id 550e8400-e29b-41d4-a716-446655440000 "
        "ptr 0x7f3a blob deadbeef12345678 n=3.5e10 'quoted' \"dq\" can't md5 utf8"
    )
    assert normalize_message(text) == (
        "at <time> from <ip> by <email> id <uuid> ptr <hex> blob <hex> n=<n> <str> <str> can't md5 utf8"
    )
    assert normalize_message("a \t\n  b") == "a b"
    assert len(normalize_message("word " * 1000)) == MAX_MESSAGE_CHARS


# --- signatures: what splits groups ---------------------------------------------------------


def test_different_types_with_the_same_message_are_different_groups() -> None:
    fg = FailureGroups()
    a = add(fg, "a", 1.0, "ValueError('bad input 1')", None)
    b = add(fg, "b", 2.0, "TypeError('bad input 2')", None)
    assert a != b and len(fg) == 2


def test_same_type_and_message_from_different_app_frames_are_different_groups() -> None:
    exc = PAYMENT_EXC.format(card="4000-0000-0000-0002", amount=42)
    other = payment_tb().replace("line 62, in _authorize", "line 90, in _authorize_3ds")
    assert signature(exc, payment_tb())[2] == "dashboard/demo.py:_authorize"
    assert signature(exc, other)[2] == "dashboard/demo.py:_authorize_3ds"
    fg = FailureGroups()
    assert add(fg, "a", 1.0, exc, payment_tb()) != add(fg, "b", 2.0, exc, other)


def test_line_numbers_do_not_split_groups() -> None:
    exc = PAYMENT_EXC.format(card="4000-0000-0000-0002", amount=42)
    assert signature(exc, payment_tb(line=62)) == signature(exc, payment_tb(line=140))


def test_same_app_frame_through_different_library_frames_is_one_group() -> None:
    exc = "ConnectionError('upstream unavailable')"
    via_requests = block(
        celery_frames()
        + [
            frame(DEMO, 20, "sync", "requests.get(url)"),
            frame(REQUESTS, 73, "get", "return request('get', url, params=params, **kwargs)"),
            frame(ADAPTERS, 519, "send", "raise ConnectionError(e, request=request)"),
        ],
        "requests.exceptions.ConnectionError: upstream unavailable",
    )
    via_socket = block(
        [frame("/opt/celery/lib/python3.12/site-packages/celery/app/trace.py", 460, "trace_task")]
        + [
            frame(DEMO, 20, "sync", "sock.connect(addr)"),
            frame(SOCKET, 851, "create_connection", "raise exceptions[0]"),
        ],
        "ConnectionError: upstream unavailable",
    )
    assert (
        signature(exc, via_requests)
        == signature(exc, via_socket)
        == ("ConnectionError", "upstream unavailable", "dashboard/demo.py:sync")
    )


def test_chained_traceback_uses_the_raised_last_block() -> None:
    # An explicit `raise self.retry(exc=exc)`: both blocks have app frames; the last one is raised.
    first = block(
        celery_frames()
        + [
            frame(DEMO, 40, "fetch", "return client.get()"),
            frame("/srv/app/dashboard/client.py", 12, "get", "raise ConnectionError()"),
        ],
        "ConnectionError: upstream unavailable",
    )
    last = block(
        celery_frames()
        + [frame(DEMO, 44, "fetch", "raise self.retry(exc=exc, countdown=2)"), frame(TASK, 955, "retry", "raise ret")],
        "celery.exceptions.Retry: Retry in 2s: ConnectionError('upstream unavailable')",
    )
    assert signature(None, first + CHAINED + last) == (
        "celery.exceptions.Retry",
        "Retry in <n>s: ConnectionError(<str>)",
        "dashboard/demo.py:fetch",
    )
    assert signature(None, first + CAUSED + last)[2] == "dashboard/demo.py:fetch"
    assert signature(None, first)[2] == "dashboard/client.py:get"


def test_autoretry_retries_and_the_final_failure_share_a_group() -> None:
    # autoretry_for raises Retry from Celery's own code: the app frame comes from the earlier block.
    exc = "ConnectionError('upstream unavailable on attempt {}')"
    assert signature(exc.format(1), autoretry_tb(1)) == (
        "ConnectionError",
        "upstream unavailable on attempt <n>",
        "dashboard/demo.py:flaky",
    )
    fg = FailureGroups()
    gids = {
        fg.add("t1", "dashboard.demo.flaky", "celery@w1", exc.format(i), autoretry_tb(i), 10.0 + i, "RETRY")
        for i in (1, 2, 3)
    }
    gids.add(fg.add("t1", "dashboard.demo.flaky", "celery@w1", exc.format(4), exhausted_tb(4), 20.0, "FAILURE"))
    assert len(gids) == 1
    g = fg.group(gids.pop())
    assert g is not None
    assert g["outcomes"] == {"FAILURE": 1, "RETRY": 3, "RECOVERED": 0, "GAVE_UP": 0}
    assert g["count"] == 4 and g["retained"] == 1  # one task, four failed attempts


def test_all_library_traceback_uses_the_innermost_frame() -> None:
    tb = block(
        [
            frame(TRACE, 453, "trace_task"),
            frame("<frozen importlib._bootstrap>", 1204, "_gcd_import"),
            frame("C:\\Python311\\Lib\\site-packages\\kombu\\connection.py", 447, "ensure"),
        ],
        "kombu.exceptions.OperationalError: Error 111 connecting to 127.0.0.1:6379.",
    )
    # A checkout of Celery's stack (no site-packages in the path) is library code too.
    checkout = block(
        [
            frame("/home/dev/src/celery/celery/app/trace.py", 453, "trace_task"),
            frame("/home/dev/src/kombu/kombu/connection.py", 447, "ensure"),
        ],
        "OSError: x",
    )
    assert signature(None, checkout)[2] == "kombu/connection.py:ensure"
    assert signature(None, tb) == (
        "kombu.exceptions.OperationalError",
        "Error <n> connecting to <ip>:<n>.",
        "kombu/connection.py:ensure",
    )


def test_no_traceback_means_no_frame_and_type_falls_back_to_the_traceback() -> None:
    assert signature("ValueError('x')", None)[2] is None
    assert signature("ValueError('x')", "")[2] is None
    assert signature("ValueError('x')", "no frames here")[2] is None
    # Not a repr: the traceback's last line names the type.
    assert signature("Retry in 5s: boom", payment_tb(card="1", amount=2)) == (
        "dashboard.demo.PaymentDeclined",
        "card <n> was declined for amount <n>: insufficient funds",
        "dashboard/demo.py:_authorize",
    )
    assert signature(None, None) == ("Unknown", "", None)


def test_group_id_is_short_stable_and_url_safe() -> None:
    sig = ("ValueError", "bad <n>", "app/x.py:f")
    gid = group_id(sig)
    assert re.fullmatch(r"[0-9a-f]{12}", gid) and gid == group_id(tuple(sig))
    assert gid != group_id(("ValueError", "bad <n>", None))
    assert group_id(("ValueError", "bad <n>", None)) != group_id(("ValueError", "bad <n>", ""))
    fg = FailureGroups()
    exc, tb = "ValueError('bad 1')", payment_tb()
    assert fg.add("a", None, None, exc, tb, 1.0, "FAILURE") == group_id(signature(exc, tb))


def test_signature_is_cached_by_text() -> None:
    tb = payment_tb()
    copy = "".join(list(tb))  # equal text, a different object: as each decoded event brings
    assert signature("KeyError('x')", tb) is signature("KeyError('x')", copy)


# --- untrusted input -------------------------------------------------------------------------


class Hostile:
    """An object whose str() raises."""

    def __str__(self) -> str:
        raise RuntimeError("no")


class WeirdStr(str):
    """A str subclass that lies about itself."""

    def __str__(self) -> str:
        return "lie"


GARBAGE: list[Any] = [
    None,
    0,
    -1,
    10**100,
    3.5,
    float("nan"),
    float("inf"),
    True,
    b"\xff\xfe KeyError('x')",
    bytearray(b"abc"),
    ["ValueError('x')"],
    {"a": 1},
    object(),
    Hostile(),
    WeirdStr("ValueError('w')"),
    "",
    " ",
    "(",
    ")",
    "Type(",
    "Type(((((((",
    "X(" + "(" * 5000 + ")" * 5000 + ")",
    "X(" + "[" * 300 + "]" * 300 + ")",
    "X('\\d')",
    "X('\x00')",
    "\ud800\udfff",
    "Ünïcødé(☃ 'ß' 😀)",
    "E(" + "9" * 5000 + ")",
    "x" * 1_000_000,
    "ValueError('" + "a" * 1_000_000 + "')",
    'File "/a.py", line 1, in f\n' * 50_000,
    "Traceback (most recent call last):\n" * 10_000,
    "a@" * 5000,
    "1." * 50_000,
    "'" * 100_000,
    "::" * 10_000,
    "0x" * 10_000,
]


@pytest.mark.parametrize("value", GARBAGE, ids=lambda v: type(v).__name__)
def test_garbage_never_raises(value: Any) -> None:
    sig = signature(value, value)
    assert isinstance(sig[0], str) and isinstance(sig[1], str) and (sig[2] is None or isinstance(sig[2], str))
    assert len(sig[1]) <= MAX_MESSAGE_CHARS and len(sig[0]) <= 200 and (sig[2] is None or len(sig[2]) <= 401)
    fg = FailureGroups(max_groups=3, max_tasks_per_group=2)
    for i in range(4):
        gid = fg.add(value, value, value, value, value, value, value)
        fg.add(f"u{i}", value, value, "ValueError('x')", value, value, value)
        assert fg.group(gid) is not None
    fg.discard(value)
    fg.group_of(value)
    fg.uuids(value)
    fg.group(value, now=value)
    fg.groups(sort=value, limit=value if not isinstance(value, (int, float)) else 5, now=value)
    json.dumps(fg.groups(limit=None))  # the API serves these as JSON


def test_huge_fields_are_capped() -> None:
    fg = FailureGroups()
    huge_tb = "x" * 1_000_000 + payment_tb()
    gid = fg.add("u" * 10_000, "n" * 10_000, "h" * 10_000, "E('" + "m" * 1_000_000 + "')", huge_tb, 1.0, "FAILURE")
    g = fg.group(gid)
    assert g is not None
    assert g["frame"] == "dashboard/demo.py:_authorize"  # the tail (innermost frames) is what is kept
    assert len(g["message"]) == MAX_MESSAGE_CHARS
    assert len(g["sample"]["exception"]) <= 4_000
    assert g["sample"]["traceback"].startswith("...(truncated)") and len(g["sample"]["traceback"]) < 21_000
    assert all(len(k) <= 200 for k in [*g["task_names"], *g["workers"], *fg.uuids(gid)])


# --- FailureGroups aggregates ----------------------------------------------------------------


def test_group_aggregates() -> None:
    fg = FailureGroups(buckets=5, bucket_seconds=10.0)
    exc = PAYMENT_EXC.format(card="4000-0000-0000-0119", amount=7)
    gid = add(fg, "t1", 1000.0)
    add(fg, "t2", 1012.0, hostname="celery@w2")
    add(fg, "t3", 995.0, name="dashboard.demo.charge")  # arrives late, older than the others
    add(fg, "t4", 1031.0, exc, payment_tb("4000-0000-0000-0119", 7), outcome="RETRY")
    add(fg, "t5", 1033.0, name=None, hostname=None)
    g = fg.group(gid)
    assert g is not None
    assert (g["id"], g["exc_type"], g["frame"]) == (gid, "PaymentDeclined", "dashboard/demo.py:_authorize")
    assert g["message"] == "card <n>-<n>-<n>-<n> was declined for amount <n>: insufficient funds"
    assert (g["count"], g["retained"], g["first_seen"], g["last_seen"]) == (5, 5, 995.0, 1033.0)
    assert g["task_names"] == {"dashboard.demo.fail": 3, "dashboard.demo.charge": 1}
    assert list(g["workers"].items()) == [("celery@w1", 3), ("celery@w2", 1)]  # most frequent first
    assert g["sample"] == {
        "exception": PAYMENT_EXC.format(card="4000-0000-0000-0002", amount=42),
        "traceback": payment_tb(),
        "uuid": "t5",
        "timestamp": 1033.0,
    }
    assert g["outcomes"] == {"FAILURE": 4, "RETRY": 1, "RECOVERED": 0, "GAVE_UP": 0}
    # Buckets of 10 s ending at the newest event (bucket 103): 99, 100, 101, 102, 103.
    assert g["sparkline"] == [1, 1, 1, 0, 2]
    assert fg.group(gid, now=1055.0)["sparkline"] == [1, 0, 2, 0, 0]  # type: ignore[index]
    assert fg.group(gid, now=5000.0)["sparkline"] == [0] * 5  # type: ignore[index]
    assert fg.groups(now=1055.0)[0]["sparkline"] == [1, 0, 2, 0, 0]


def test_sample_is_the_most_recent_by_event_time() -> None:
    fg = FailureGroups()
    gid = add(fg, "new", 50.0, "KeyError('a1b2c3d4-0000-0000-0000-000000000001')", None)
    add(fg, "old", 10.0, "KeyError('a1b2c3d4-0000-0000-0000-000000000002')", None)
    assert fg.group(gid)["sample"]["uuid"] == "new"  # type: ignore[index]


def test_sparkline_ends_at_the_newest_event_overall() -> None:
    fg = FailureGroups(buckets=3, bucket_seconds=1.0)
    old = add(fg, "a", 10.0, "ValueError('x')", None)
    add(fg, "b", 12.5, "TypeError('y')", None)
    assert fg.group(old)["sparkline"] == [1, 0, 0]  # type: ignore[index]  # aligned with the newest group
    for ts in range(100, 400):  # many buckets: old ones are pruned, the window stays right
        add(fg, f"c{ts}", float(ts), "ValueError('x')", None)
    assert fg.group(old)["sparkline"] == [1, 1, 1]  # type: ignore[index]


def test_task_name_and_worker_counters_are_bounded() -> None:
    fg = FailureGroups()
    for i in range(100):
        gid = add(fg, f"t{i}", float(i), name=f"task.{i}", hostname=f"celery@w{i}")
    for i in range(30):
        add(fg, f"h{i}", 200.0 + i, name="task.hot", hostname="celery@hot")
    g = fg.group(gid)
    assert g is not None
    assert len(g["task_names"]) == MAX_COUNTER_KEYS and len(g["workers"]) == MAX_COUNTER_KEYS
    assert next(iter(g["task_names"])) == "task.hot" and next(iter(g["workers"])) == "celery@hot"
    assert sum(g["task_names"].values()) == g["count"] == 130  # counts move, none are lost


def test_discard_forgets_the_task_but_keeps_the_count() -> None:
    fg = FailureGroups()
    gid = add(fg, "a", 1.0)
    add(fg, "b", 2.0)
    fg.discard("a")
    fg.discard("a")  # twice is fine
    fg.discard("never-seen")
    assert fg.uuids(gid) == ["b"]
    assert fg.group_of("a") is None and fg.group_of("b") == gid
    g = fg.group(gid)
    assert g is not None and (g["count"], g["retained"]) == (2, 1)


def test_a_task_failing_again_moves_to_its_latest_group() -> None:
    fg = FailureGroups()
    first = add(fg, "t", 1.0, "ConnectionError('down 1')", None, outcome="RETRY")
    add(fg, "other", 2.0, "ConnectionError('down 2')", None)
    assert add(fg, "t", 3.0, "ConnectionError('down 3')", None) == first
    assert fg.uuids(first) == ["t", "other"]  # retried again: newest again, not listed twice
    second = add(fg, "t", 4.0, "ValueError('bad')", None)
    assert fg.group_of("t") == second and fg.uuids(first) == ["other"] and fg.uuids(second) == ["t"]
    assert fg.group(first)["count"] == 3  # type: ignore[index]


def test_max_tasks_per_group_drops_the_oldest_uuids() -> None:
    fg = FailureGroups(max_tasks_per_group=3)
    for i in range(5):
        gid = add(fg, f"t{i}", float(i))
    assert fg.uuids(gid) == ["t4", "t3", "t2"]
    assert fg.group_of("t0") is None and fg.group_of("t2") == gid
    g = fg.group(gid)
    assert g is not None and (g["count"], g["retained"]) == (5, 3)


def test_max_groups_evicts_the_oldest_last_seen() -> None:
    fg = FailureGroups(max_groups=3)
    a = add(fg, "a", 100.0, "E1('x')", None)
    b = add(fg, "b", 50.0, "E2('x')", None)
    c = add(fg, "c", 75.0, "E3('x')", None)
    add(fg, "a2", 10.0, "E1('x')", None)  # older event: a's last_seen stays 100
    add(fg, "b2", 200.0, "E2('x')", None)  # b is now the newest
    d = add(fg, "d", 150.0, "E4('x')", None)  # full: c (last_seen 75) goes, not b (added earlier)
    assert len(fg) == 3 and fg.group(c) is None and fg.uuids(c) == [] and fg.group_of("c") is None
    e = add(fg, "e", 160.0, "E5('x')", None)  # then a (last_seen 100)
    assert fg.group(a) is None and fg.group_of("a2") is None
    assert {g["id"] for g in fg.groups()} == {b, d, e}
    again = add(fg, "c2", 300.0, "E3('x')", None)  # an evicted signature starts a fresh group
    assert again == c and fg.group(c)["count"] == 1  # type: ignore[index]
    assert fg.group(d) is None  # d (150) was the oldest then


def test_eviction_heap_stays_bounded() -> None:
    fg = FailureGroups(max_groups=4)
    for i in range(5000):
        add(fg, f"t{i}", float(i), f"E{i % 9}('x')", None)
    assert len(fg) == 4 and len(fg._heap) <= 2 * 4 + 64 + 1
    assert sorted(g["exc_type"] for g in fg.groups()) == sorted(f"E{i % 9}" for i in range(4996, 5000))


def test_sorting_limit_and_uuids_newest_first() -> None:
    fg = FailureGroups()
    big = [add(fg, f"b{i}", 10.0 + i, "ValueError('x')", None) for i in range(3)][0]  # noqa: RUF015 - all are added
    mid = [add(fg, f"m{i}", 1.0 + i, "TypeError('x')", None) for i in range(2)][0]  # noqa: RUF015 - next() would add one
    new = add(fg, "n0", 99.0, "KeyError('x')", None)
    assert [g["id"] for g in fg.groups()] == [new, big, mid]
    assert [g["id"] for g in fg.groups(sort="last_seen")] == [new, big, mid]
    assert [g["id"] for g in fg.groups(sort="count")] == [big, mid, new]
    assert [g["id"] for g in fg.groups(sort="count", limit=2)] == [big, mid]
    assert fg.groups(limit=0) == []
    assert fg.uuids(big) == ["b2", "b1", "b0"]
    assert fg.group("nope") is None and fg.uuids("nope") == [] and fg.group_of("nope") is None


def test_group_dict_has_the_documented_keys() -> None:
    fg = FailureGroups()
    gid = add(fg, "a", 1.0)
    assert set(fg.group(gid) or {}) == {  # the integrator relies on these
        "id",
        "exc_type",
        "message",
        "frame",
        "count",
        "retained",
        "first_seen",
        "last_seen",
        "task_names",
        "workers",
        "sample",
        "sparkline",
        "outcomes",
    }
    assert len(fg.group(gid)["sparkline"]) == 60  # type: ignore[index]


def test_bad_configuration_is_rejected() -> None:
    with pytest.raises(ValueError):
        FailureGroups(max_groups=0)
    with pytest.raises(ValueError):
        FailureGroups(bucket_seconds=0)
