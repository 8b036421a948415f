"""Control commands: input validation (clear 400 messages), reply judging, broker failures."""

from __future__ import annotations

import time

import pytest

from dashboard.cluster import control
from dashboard.cluster.control import BrokerUnavailable, InvalidRequest, make_celery
from dashboard.processes import free_port


def bad(func, body, fragment: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        func(body)
    assert fragment in str(info.value), str(info.value)


@pytest.mark.unit
def test_worker_actions_are_validated() -> None:
    assert control.worker_command({"action": "pool_grow", "n": 3}) == ("pool_grow", {"n": 3})
    assert control.worker_command({"action": "pool_shrink", "n": 64}) == ("pool_shrink", {"n": 64})
    assert control.worker_command({"action": "autoscale", "max": 8, "min": 0}) == ("autoscale", {"max": 8, "min": 0})
    assert control.worker_command({"action": "add_consumer", "queue": " reports "})[1]["queue"] == "reports"
    assert control.worker_command({"action": "cancel_consumer", "queue": "q"}) == ("cancel_consumer", {"queue": "q"})
    assert control.worker_command({"action": "shutdown"}) == ("shutdown", {})
    assert control.worker_command({"action": "pool_restart"})[0] == "pool_restart"

    bad(control.worker_command, {"action": "reboot"}, "action must be one of: shutdown, pool_restart")
    bad(control.worker_command, {}, "action must be one of")
    for n in (0, 65, -1, 1.5, "2", True, None):
        bad(control.worker_command, {"action": "pool_grow", "n": n}, "n must be a whole number from 1 to 64")
    bad(control.worker_command, {"action": "autoscale", "max": 2, "min": 3}, "min must not be more than max")
    bad(control.worker_command, {"action": "autoscale", "max": 0, "min": 0}, "max must be a whole number from 1")
    bad(control.worker_command, {"action": "autoscale", "max": 4}, "min must be a whole number from 0")
    for queue in ("", "   ", None, 5, "x" * 201, "two words", "tab\there"):
        bad(control.worker_command, {"action": "add_consumer", "queue": queue}, "queue must")
    assert control.worker_command({"action": "add_consumer", "queue": "x" * 200})[1]["queue"] == "x" * 200


@pytest.mark.unit
def test_task_type_actions_are_validated() -> None:
    for rate in ("10/m", "100/s", "5/h", "0", "2.5/s", "7"):
        action, args, workers = control.task_type_command({"action": "rate_limit", "task": "t", "rate": rate})
        assert (action, args["rate_limit"], workers) == ("rate_limit", rate, None)
    assert control.task_type_command({"action": "rate_limit", "task": "t", "rate": 3})[1]["rate_limit"] == "3"
    for rate in ("10/min", "fast", "-1", "1/d", "", None, "10/m; drop", float("nan"), True):
        bad(control.task_type_command, {"action": "rate_limit", "task": "t", "rate": rate}, 'rate must be like "10/m"')

    _, args, _ = control.task_type_command({"action": "time_limit", "task": "t", "soft": 5, "hard": 10.5})
    assert (args["soft"], args["hard"]) == (5.0, 10.5)
    _, args, _ = control.task_type_command({"action": "time_limit", "task": "t", "soft": None, "hard": 86400})
    assert (args["soft"], args["hard"]) == (None, 86400)
    for value in (0, -1, 86401, "5", True, float("inf")):
        bad(control.task_type_command, {"action": "time_limit", "task": "t", "hard": value}, "hard must")
    bad(
        control.task_type_command,
        {"action": "time_limit", "task": "t", "soft": 20, "hard": 10},
        "soft time limit must not be longer than the hard one",
    )

    _, _, workers = control.task_type_command(
        {"action": "rate_limit", "task": "t", "rate": "1/s", "workers": ["b@h", "a@h", "a@h"]}
    )
    assert workers == ["a@h", "b@h"]
    bad(
        control.task_type_command,
        {"action": "rate_limit", "task": "t", "rate": "1/s", "workers": []},
        "workers must be",
    )
    bad(
        control.task_type_command,
        {"action": "rate_limit", "task": "t", "rate": "1/s", "workers": "a@h"},
        "workers must",
    )
    bad(
        control.task_type_command,
        {"action": "rate_limit", "task": "", "rate": "1/s"},
        "task must be a non-empty string",
    )
    bad(control.task_type_command, {"action": "purge", "task": "t"}, "action must be one of: rate_limit, time_limit")


@pytest.mark.unit
def test_revoke_options() -> None:
    assert control.revoke_options({}) == (False, "SIGTERM")
    assert control.revoke_options({"terminate": True, "signal": "SIGKILL"}) == (True, "SIGKILL")
    bad(control.revoke_options, {"terminate": "yes"}, "terminate must be true or false")
    bad(control.revoke_options, {"terminate": True, "signal": "SIGSTOP"}, "signal must be one of: SIGTERM, SIGKILL")


@pytest.mark.unit
def test_replies_are_judged() -> None:
    judge = control._judge
    ok = judge({"w@h": {"ok": "pool will grow"}}, ["w@h"], "pool_grow on w@h")
    assert ok.ok and ok.message == "pool_grow on w@h: pool will grow"
    err = judge({"w@h": {"error": "ValueError('Autoscale not enabled')"}}, ["w@h"], "autoscale")
    assert not err.ok and "Autoscale not enabled" in err.message
    silent = judge({}, ["w@h"], "pool_grow")
    assert not silent.ok and silent.message == "no reply from w@h"
    assert not judge({}, None, "rate_limit").ok


@pytest.mark.unit
def test_unreachable_broker_fails_fast() -> None:
    app = make_celery(f"redis://127.0.0.1:{free_port()}/0", 5.0)
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="the broker is unreachable"):
        control.broadcast(app, "pool_grow", {"n": 1}, ["w@h"], timeout=1.0)
    with pytest.raises(BrokerUnavailable, match="the broker is unreachable"):
        control.send_again(app, "dashboard.demo.add", [1, 2], {}, "celery")
    assert time.monotonic() - started < 3.0  # kombu alone retries for ~6 s


@pytest.mark.integration
def test_events_enabler_still_works(redis_server) -> None:
    app = make_celery(redis_server.url_db(13), 2.0)
    enabler = control.EventsEnabler(app, 30.0, lambda: True)
    import threading

    thread = threading.Thread(target=enabler.run, daemon=True)
    thread.start()
    enabler.poke()
    deadline = time.monotonic() + 5
    while enabler.broadcasts == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    enabler.stop()
    thread.join(5)
    assert enabler.broadcasts >= 1 and not thread.is_alive()
