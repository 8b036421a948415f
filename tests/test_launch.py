"""Validation of the launch form and of POST /api/launch: what is accepted, and where each error lands."""

from __future__ import annotations

import datetime as dt
import inspect
from typing import Any

import pytest

from dashboard.cluster.launch import (
    CATALOGUE,
    CONFIRM,
    MAX_COUNT,
    MAX_COUNTDOWN,
    MAX_JSON_CHARS,
    UNREGISTERED_OK,
    LaunchRequest,
    app_specs,
    catalogue,
    registered_names,
    validate,
)

pytestmark = pytest.mark.unit

ADD = "dashboard.demo.add"


def body(**fields: Any) -> dict[str, Any]:
    """A valid add(2, 3) launch with some fields replaced."""
    return {"task": ADD, "args": "[2, 3]", "kwargs": "{}", "count": "1", "countdown": "0", **fields}


def errors_of(data: dict[str, Any]) -> dict[str, str]:
    """The per-field errors of a launch that must be refused."""
    req, errors = validate(data)
    assert req is None, f"expected a refusal, got {req}"
    assert errors
    return errors


@pytest.mark.parametrize("task", CATALOGUE, ids=lambda t: t.name)
def test_every_catalogue_task_accepts_its_example_as_the_form_sends_it(task: Any) -> None:
    """The example args/kwargs the form pre-fills (JSON text) are accepted for every task."""
    shown = task.as_dict()
    req, errors = validate(
        {
            "task": task.name,
            "args": shown["example_args"],
            "kwargs": shown["example_kwargs"],
            "count": "1",
            "countdown": "0",
        }
    )
    assert errors == {}
    assert req == LaunchRequest(task.name, list(task.example_args), dict(task.example_kwargs or {}), 1, 0.0)


@pytest.mark.parametrize("task", CATALOGUE, ids=lambda t: t.name)
def test_every_catalogue_task_accepts_its_example_as_the_api_sends_it(task: Any) -> None:
    """The same example as already-parsed JSON values (the API body) is accepted too."""
    req, errors = validate(
        {
            "task": task.name,
            "args": list(task.example_args),
            "kwargs": dict(task.example_kwargs or {}),
            "count": 2,
            "countdown": 1.5,
        }
    )
    assert errors == {}
    assert req == LaunchRequest(task.name, list(task.example_args), dict(task.example_kwargs or {}), 2, 1.5)


@pytest.mark.parametrize("task", CATALOGUE, ids=lambda t: t.name)
def test_catalogue_matches_the_demo_task_signatures(task: Any) -> None:
    """The parameters the form validates against are those of the task the worker runs."""
    from dashboard.demo import app as demo_app

    params = inspect.signature(demo_app.tasks[task.name].run).parameters.values()
    assert task.params == tuple(p.name for p in params)
    assert task.required == sum(1 for p in params if p.default is inspect.Parameter.empty)


@pytest.mark.parametrize("name", ["dashboard.demo.nope", "", None, 42, ["dashboard.demo.add"], "os.system"])
def test_unknown_task_is_refused_on_the_task_field(name: Any) -> None:
    """A task outside the catalogue is refused, and the message lists the tasks one may choose."""
    errors = errors_of(body(task=name))
    assert set(errors) == {"task"}
    for t in CATALOGUE:
        assert t.name in errors["task"]


def test_missing_task_is_refused() -> None:
    """A body without a task names the task field."""
    errors = errors_of({"args": "[1, 2]"})
    assert set(errors) == {"task"}


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ("[2, 3", "not valid JSON"),
        ("two, three", "not valid JSON: Expecting value at line 1 column 1"),
        ('{"x": 2}', "must be a JSON array"),
        ("2", "must be a JSON array"),
        ('"[2, 3]"', "must be a JSON array"),
        ("null", "must be a JSON array"),
        ({"x": 2}, "must be a JSON array"),
        (7, "must be a JSON array"),
    ],
)
def test_args_that_are_not_a_json_array_are_refused(raw: Any, fragment: str) -> None:
    """args must be a JSON array (text or parsed); the error is on args and says why."""
    errors = errors_of(body(args=raw))
    assert set(errors) == {"args"}
    assert fragment in errors["args"]


def test_args_json_error_points_at_the_position() -> None:
    """A JSON syntax error says at which line and column it is."""
    errors = errors_of(body(args="[2,\n 3,,]"))
    assert errors["args"].startswith("not valid JSON:")
    assert "line 2 column" in errors["args"]


def test_too_long_json_is_refused() -> None:
    """args text longer than the limit is refused without being parsed."""
    errors = errors_of(body(args="[" + " " * MAX_JSON_CHARS + "]"))
    assert errors == {"args": f"too long (at most {MAX_JSON_CHARS} characters)"}


@pytest.mark.parametrize("raw", ["[1]", "3", '"x"', "null", [1, 2], "{bad json}"])
def test_kwargs_that_are_not_a_json_object_are_refused(raw: Any) -> None:
    """kwargs must be a JSON object; the error is on kwargs."""
    errors = errors_of(body(task="dashboard.demo.flaky", args="[]", kwargs=raw))
    assert set(errors) == {"kwargs"}
    assert "JSON" in errors["kwargs"]


@pytest.mark.parametrize(
    "count", [0, "0", 1001, "1001", "abc", True, False, 2.5, "2.5", -1, float("nan"), float("inf"), [3], {"n": 3}]
)
def test_bad_count_is_refused(count: Any) -> None:
    """count must be a whole number from 1 to 1000 (booleans and fractions are not counts)."""
    errors = errors_of(body(count=count))
    assert errors == {"count": f"a whole number from 1 to {MAX_COUNT}"}


@pytest.mark.parametrize(
    "count, expected", [(1, 1), ("7", 7), (" 7 ", 7), (1000, 1000), ("1000", 1000), (3.0, 3), ("", 1), (None, 1)]
)
def test_good_count_is_accepted(count: Any, expected: int) -> None:
    """Whole numbers as text or JSON are accepted; an empty count means one."""
    req, errors = validate(body(count=count))
    assert errors == {}
    assert req is not None and req.count == expected


def test_count_defaults_to_one_when_absent() -> None:
    """An API body without count sends one task."""
    req, _ = validate({"task": ADD, "args": [2, 3]})
    assert req is not None and req.count == 1 and req.countdown == 0.0


@pytest.mark.parametrize(
    "countdown",
    [
        -1,
        "-1",
        "-0.5",
        "x",
        "NaN",
        float("nan"),
        "inf",
        float("inf"),
        MAX_COUNTDOWN + 1,
        "86401",
        "1e400",
        10**400,
        True,
        [1],
    ],
)
def test_bad_countdown_is_refused(countdown: Any) -> None:
    """countdown must be a finite number of seconds from 0 to one day."""
    errors = errors_of(body(countdown=countdown))
    assert errors == {"countdown": f"seconds from 0 to {int(MAX_COUNTDOWN)}"}


@pytest.mark.parametrize(
    "countdown, expected", [(0, 0.0), ("2.5", 2.5), (10, 10.0), ("", 0.0), (None, 0.0), (MAX_COUNTDOWN, MAX_COUNTDOWN)]
)
def test_good_countdown_is_accepted(countdown: Any, expected: float) -> None:
    """Fractions of seconds are fine; an empty countdown means now."""
    req, errors = validate(body(countdown=countdown))
    assert errors == {}
    assert req is not None and req.countdown == expected and isinstance(req.countdown, float)


def test_every_bad_field_is_reported_at_once() -> None:
    """One submission with several mistakes lists each of them, so the user fixes them in one go."""
    errors = errors_of({"task": "nope", "args": "[", "kwargs": "[]", "count": "0", "countdown": "-3"})
    assert set(errors) == {"task", "args", "kwargs", "count", "countdown"}


def test_too_many_positional_args_land_on_args() -> None:
    """add(x, y) with three positional args is refused on args, saying how many it takes."""
    errors = errors_of(body(args="[1, 2, 3]"))
    assert errors == {"args": "add(x, y) takes at most 2 positional argument(s), got 3"}


def test_positional_args_to_a_kwargs_only_example_task_are_checked_too() -> None:
    """flaky(fail_times) takes one positional argument; two are refused."""
    errors = errors_of(body(task="dashboard.demo.flaky", args="[1, 2]"))
    assert set(errors) == {"args"}
    assert "at most 1 positional" in errors["args"]


def test_unknown_kwarg_lands_on_kwargs() -> None:
    """A keyword the task does not take is named, with the parameters it does take."""
    errors = errors_of(body(args="[1, 2]", kwargs='{"z": 3}'))
    assert errors == {"kwargs": "unknown argument(s) 'z'; add(x, y) takes x, y"}


def test_argument_given_twice_lands_on_kwargs() -> None:
    """x given positionally and as a keyword is refused on kwargs."""
    errors = errors_of(body(args="[1, 2]", kwargs='{"x": 5}'))
    assert errors == {"kwargs": "x already given positionally"}


def test_missing_required_argument_lands_on_args() -> None:
    """add(x, y) with only x is refused, naming the missing y."""
    errors = errors_of(body(args="[1]"))
    assert errors == {"args": "missing required argument(s): y"}


def test_missing_every_required_argument_names_them_all() -> None:
    """send_email without arguments names both missing parameters."""
    errors = errors_of(body(task="dashboard.demo.send_email", args="", kwargs=""))
    assert errors == {"args": "missing required argument(s): address, message"}


def test_required_arguments_may_be_given_by_keyword() -> None:
    """add(y=3, x=2) is as good as add(2, 3)."""
    req, errors = validate(body(args="", kwargs='{"y": 3, "x": 2}'))
    assert errors == {}
    assert req is not None and req.args == [] and req.kwargs == {"y": 3, "x": 2}


def test_mixed_positional_and_keyword_arguments_are_accepted() -> None:
    """add(2, y=3) is accepted."""
    req, errors = validate(body(args=[2], kwargs={"y": 3}))
    assert errors == {}
    assert req is not None and req.args == [2] and req.kwargs == {"y": 3}


@pytest.mark.parametrize("empty", ["", "   ", None])
def test_empty_args_and_kwargs_mean_none(empty: Any) -> None:
    """Blank args/kwargs mean [] and {} (a task with defaults runs with them)."""
    req, errors = validate({"task": "dashboard.demo.workflow", "args": empty, "kwargs": empty})
    assert errors == {}
    assert req is not None and req.args == [] and req.kwargs == {}


def test_arity_is_not_checked_on_top_of_a_json_error() -> None:
    """When args is not JSON the user sees the JSON error, not a confusing arity error as well."""
    errors = errors_of(body(args="[1,", kwargs='{"z": 1}'))
    assert set(errors) == {"args"}
    assert errors["args"].startswith("not valid JSON")


def test_json_values_are_sent_as_parsed() -> None:
    """Nested JSON values reach the task unchanged."""
    req, errors = validate(body(task="dashboard.demo.send_email", args='["a@b.c", {"lines": ["hi", null, 1.5]}]'))
    assert errors == {}
    assert req is not None and req.args == ["a@b.c", {"lines": ["hi", None, 1.5]}]


# -- the catalogue of any registered task (issue 12 item 2) -------------------------------------------


def _shop_specs() -> dict[str, Any]:
    from dashboard.cluster.userapp import load_app

    return {s.name: s for s in app_specs(load_app("tests.apps.shop"))}


def test_an_apps_tasks_are_offered_with_their_signature_and_without_celerys_builtins() -> None:
    """Every task of the app's registry but celery.*, grouped by module, each parameter with its name, kind
    (typed for int/float/bool/str, JSON otherwise), annotation and default."""
    specs = _shop_specs()
    # (Celery shares @app.task tasks with every app of a process: here the demo's, which tests import too.)
    shop = {"shop.charge", "shop.ship", "shop.reports.daily", "shop.reports.weekly"}  # weekly: from `include`
    assert {n for n in specs if not n.startswith("dashboard.demo.")} == shop
    assert {specs[n].module for n in shop} == {"tests.apps.shop", "tests.apps.shop_reports"}
    charge = specs["shop.charge"].as_dict()
    assert charge["label"] == "charge(order_id, amount, currency, capture)"
    assert charge["hint"] == "Charge an order (pretend)."
    assert [(p["name"], p["kind"], p["annotation"], p["default"], p["required"]) for p in charge["params"]] == [
        ("order_id", "int", "int", None, True),
        ("amount", "float", "float", None, True),
        ("currency", "str", "str", '"EUR"', False),
        ("capture", "bool", "bool", "true", False),
    ]
    ship = {p["name"]: p for p in specs["shop.ship"].as_dict()["params"]}
    assert ship["address"]["kind"] == "json" and ship["address"]["annotation"] == "dict[str, Any]"
    daily = {p["name"]: p for p in specs["shop.reports.daily"].as_dict()["params"]}
    assert daily["day"]["kind"] == "json" and daily["day"]["annotation"] is None  # no annotation: JSON
    assert daily["notes"]["kind"] == "str" and daily["notes"]["default"] == '"none"'  # typed like its default


def test_form_fields_are_typed_and_become_the_tasks_kwargs() -> None:
    """Form text in param.<name> fields is parsed by each parameter's kind; empty optional fields are left out
    (the task's default applies)."""
    specs = list(_shop_specs().values())
    data = {"task": "shop.charge", "param.order_id": "7", "param.amount": "12.5", "param.capture": "false"}
    req, errors = validate({**data, "param.currency": ""}, specs)
    assert errors == {}
    assert req is not None and req.args == [] and req.kwargs == {"order_id": 7, "amount": 12.5, "capture": False}
    req, errors = validate({"task": "shop.ship", "param.order_id": "1", "param.address": '{"city": "Oslo"}'}, specs)
    assert errors == {} and req is not None and req.kwargs == {"order_id": 1, "address": {"city": "Oslo"}}


def test_bad_and_missing_parameters_land_on_their_own_fields() -> None:
    """Each parameter's error is under param.<name>: the 400's `fields` name the input to fix."""
    specs = list(_shop_specs().values())
    errors = errors_of_in(
        {"task": "shop.charge", "param.order_id": "seven", "param.capture": "perhaps", "param.address": "x"}, specs
    )
    assert errors == {
        "param.order_id": "must be a whole number",
        "param.amount": "required",
        "param.capture": "must be true or false",
    }  # param.address belongs to another task's form (no JavaScript to redraw it): ignored


def test_the_api_gives_parameters_as_a_params_object() -> None:
    """The API's `params` holds JSON values; a name the task does not take is an error on `params`."""
    specs = list(_shop_specs().values())
    req, errors = validate({"task": "shop.charge", "params": {"order_id": 3, "amount": 2, "currency": "NOK"}}, specs)
    assert errors == {} and req is not None and req.kwargs == {"order_id": 3, "amount": 2, "currency": "NOK"}
    errors = errors_of_in({"task": "shop.charge", "params": {"order_id": 3, "amount": 2, "tip": 1}}, specs)
    assert errors == {"params": "charge(order_id, amount, currency, capture) has no parameter(s) 'tip'"}


def errors_of_in(data: dict[str, Any], specs: list[Any]) -> dict[str, str]:
    """The per-field errors of a launch refused against this catalogue."""
    req, errors = validate(data, specs)
    assert req is None and errors
    return errors


@pytest.mark.parametrize(
    "fields, expected",
    [
        ({"queue": " reports "}, {"queue": "reports"}),
        ({"priority": "9"}, {"priority": 9}),
        ({"expires": "30"}, {"expires": 30.0}),
        ({"eta": "2030-01-31T12:00:00Z"}, {"eta": dt.datetime(2030, 1, 31, 12, tzinfo=dt.UTC)}),
        ({"eta": "2030-01-31T12:00:00"}, {"eta": dt.datetime(2030, 1, 31, 12, tzinfo=dt.UTC)}),  # UTC when naive
        ({"expires": "2030-01-31T13:00:00+01:00"}, {"expires": dt.datetime(2030, 1, 31, 12, tzinfo=dt.UTC)}),
        ({"queue": "", "priority": "", "eta": "", "expires": ""}, {}),
    ],
)
def test_queue_eta_expires_and_priority_are_sent_as_options(fields: dict[str, str], expected: dict[str, Any]) -> None:
    """The options reach send_task as given; empty ones are left out."""
    req, errors = validate(body(**fields))
    assert errors == {}
    assert req is not None and req.options == expected


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"queue": "two words"}, "queue"),
        ({"priority": "256"}, "priority"),
        ({"priority": "high"}, "priority"),
        ({"expires": "-1"}, "expires"),
        ({"expires": "tomorrow"}, "expires"),
        ({"eta": "soon"}, "eta"),
        ({"eta": "2030-01-31T12:00:00Z", "countdown": "5"}, "eta"),
    ],
)
def test_bad_options_are_refused_on_their_field(fields: dict[str, str], field: str) -> None:
    """Each bad option is named; a countdown and an eta together are refused on eta."""
    assert set(errors_of(body(**fields))) == {field}


def test_without_an_app_workers_registered_names_are_offered_with_free_json() -> None:
    """No app: the demo tasks and every name online workers report registered (not celery.*), each with the
    workers that have it; an unknown signature takes any JSON args/kwargs."""
    registered = {"w1@h": registered_names(["billing.invoice [rate_limit=10/m]", "dashboard.demo.add", "celery.ping"])}
    specs = {s.name: s for s in catalogue(None, registered)}
    assert "celery.ping" not in specs
    assert specs["billing.invoice"].registered_by == ("w1@h",) and specs["billing.invoice"].warning is None
    assert specs["billing.invoice"].as_dict()["params"] is None  # free JSON
    assert specs["dashboard.demo.add"].registered_by == ("w1@h",)
    assert "No online worker has registered dashboard.demo.fail" in (specs["dashboard.demo.fail"].warning or "")
    req, errors = validate({"task": "billing.invoice", "args": "[1, 2, 3]", "kwargs": '{"any": true}'}, specs.values())
    assert errors == {} and req is not None and req.args == [1, 2, 3] and req.kwargs == {"any": True}


def test_a_task_no_online_worker_has_is_sent_only_once_confirmed() -> None:
    """As the form and the API validate (confirm), such a task is refused on `task` with the warning until the
    body confirms it; a task an online worker has registered needs no confirmation."""
    specs = catalogue(None, {})
    req, errors = validate(body(), specs, confirm=True)
    assert req is None and errors["task"].startswith("No online worker has registered dashboard.demo.add")
    assert errors["task"].endswith(CONFIRM)
    req, errors = validate({**body(), UNREGISTERED_OK: "1"}, specs, confirm=True)
    assert errors == {} and req is not None and req.warning is not None
    req, errors = validate(body(), catalogue(None, {"w@h": {ADD}}), confirm=True)
    assert errors == {} and req is not None and req.warning is None


def test_launchable_patterns_narrow_the_catalogue() -> None:
    """LAUNCHABLE: only names matching one of its patterns are offered or accepted."""
    specs = catalogue(None, {}, "dashboard.demo.a*, *.flaky")
    assert [s.name for s in specs] == ["dashboard.demo.add", "dashboard.demo.flaky"]
    errors = errors_of_in(body(task="dashboard.demo.fail"), specs)
    assert errors["task"] == "choose one of: dashboard.demo.add, dashboard.demo.flaky"
    assert catalogue(None, {}, "nothing.*") == []


def test_launchable_setting_narrows_the_form_the_list_and_the_api() -> None:
    """With LAUNCHABLE set, /api/launchable and the form offer only matching tasks, and a launch of any other
    is refused on `task` before anything reaches the broker (there is none here)."""
    from dashboard import create_app

    flask_app = create_app(
        {
            "ASYNC_MODE": "threading",
            "INGEST_ENABLED": False,
            "BROKER_URL": "redis://127.0.0.1:1/0",
            "LAUNCHABLE": "dashboard.demo.a*",
        }
    )
    try:
        client = flask_app.test_client()
        listed = client.get("/api/launchable").get_json()["tasks"]
        assert [t["name"] for t in listed] == ["dashboard.demo.add"]
        assert listed[0]["workers"] == [] and "No online worker" in listed[0]["warning"]
        page = client.get("/launch").get_data(as_text=True)
        assert '<option value="dashboard.demo.add" selected>' in page and "dashboard.demo.fail" not in page
        resp = client.post("/api/launch", json={"unregistered_ok": True, "task": "dashboard.demo.fail"})
        assert resp.status_code == 400
        assert resp.get_json()["fields"] == {"task": "choose one of: dashboard.demo.add"}
    finally:
        flask_app.extensions["dashboard"].stop()


def test_names_defaults_and_hints_from_the_app_are_escaped_in_the_form() -> None:
    """A task's name, module, parameter names, annotations, defaults and docstring come from the user's code
    or from workers: the server-rendered form writes them as text (the catalogue attribute too)."""
    from dashboard import create_app
    from dashboard.cluster.launch import Param, TaskSpec

    evil = "<img src=x onerror=alert(1)>"
    spec = TaskSpec(
        name=f"x.{evil}",
        module=f"m{evil}",
        label=f"t({evil})",
        hint=evil,
        params=(Param(f"p{evil}", "str", evil, f'"{evil}"', False),),
        fields=True,
        registered_by=(f"w{evil}",),
    )
    flask_app = create_app({"ASYNC_MODE": "threading", "INGEST_ENABLED": False, "BROKER_URL": "redis://127.0.0.1:1/0"})
    try:
        flask_app.extensions["dashboard"].app_tasks = [spec]
        page = flask_app.test_client().get("/launch").get_data(as_text=True)
        assert evil not in page
        assert "&lt;img src=x onerror=alert(1)&gt;" in page
    finally:
        flask_app.extensions["dashboard"].stop()


def test_params_for_a_task_without_a_known_signature_are_refused() -> None:
    """`params` needs a known signature (the app's tasks); for others the error says to use args/kwargs."""
    errors = errors_of({"task": ADD, "params": {"x": 1, "y": 2}})
    assert errors == {"params": "this task's signature is not known here: give its arguments as args and kwargs"}
