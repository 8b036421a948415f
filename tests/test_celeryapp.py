"""The user's Celery app (issue 12): `celery -A proj dashboard` and `celery-dashboard run --app proj` watch the
app's broker and show its tasks; a bad app is one line and exit status 2; the broker's precedence.

The app is tests/apps/shop.py, not the demo: its broker comes from SHOP_BROKER_URL, its tasks go to its own
`shop` queue, and its worker is a real `celery -A tests.apps.shop worker` subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from conftest import ROOT, DashboardServer, RedisServer, wait_for

from dashboard import cli
from dashboard.cluster.userapp import AppNotLoaded, broker_url, load_app
from dashboard.core.brokerurl import mask_url
from dashboard.processes import free_port, stop_process

SHOP = "tests.apps.shop"
SHOP_DB = 5  # a database of the session Redis that no other test's worker uses


@pytest.fixture(scope="module")
def shop_broker(redis_server: RedisServer) -> str:
    """The shop app's broker: db 5 of the session Redis."""
    return redis_server.url_db(SHOP_DB)


@pytest.fixture(scope="module")
def shop_env(shop_broker: str) -> dict[str, str]:
    """The environment of the shop's processes: its own broker variable, no DASHBOARD_* from outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHBOARD_")}
    return dict(env, SHOP_BROKER_URL=shop_broker)


@pytest.fixture(scope="module")
def shop_worker(shop_broker: str) -> Iterator[str]:
    """A real worker of the shop app (events on, `shop` queue); yields its hostname."""
    from tests.apps import shop

    hostname = f"shop-{os.getpid()}@localhost"
    proc = shop.start_worker(shop_broker, hostname)
    yield hostname
    stop_process(proc)


def _sender(shop_broker: str) -> Any:
    """A client that sends to the shop's broker and queue, as the shop's own code would."""
    from celery import Celery

    return Celery("sender", broker=shop_broker, set_as_current=False, config_source={"task_default_queue": "shop"})


COMMANDS = {
    "celery -A": [sys.executable, "-m", "celery", "-A", SHOP, "dashboard"],
    "celery-dashboard --app": [sys.executable, "-m", "dashboard.cli", "run", "--app", SHOP],
}


@pytest.mark.integration
@pytest.mark.parametrize("how", list(COMMANDS))
def test_dashboard_of_an_app_watches_its_broker_and_shows_its_tasks(
    how: str, shop_broker: str, shop_env: dict[str, str], shop_worker: str
) -> None:
    """Started either way with the app, the dashboard connects to the app's broker (set nowhere else), sees its
    worker, and shows a task the app's own code sends, under its own name, as it succeeds."""
    dash = DashboardServer("", env=shop_env, command=COMMANDS[how])
    try:
        health = dash.health()
        assert health["broker"]["connected"] is True
        assert health["broker"]["url"] == mask_url(shop_broker)
        wait_for(lambda: dash.worker_online(shop_worker), timeout=60, message=f"{shop_worker} online")
        result = _sender(shop_broker).send_task("shop.charge", args=[7, 12.5])
        task = dash.wait_task(result.id, "SUCCESS", timeout=30)
        assert task["name"] == "shop.charge"
        assert task["worker"] == shop_worker
    finally:
        dash.stop()


@pytest.fixture(scope="module")
def shop_dashboard(shop_env: dict[str, str], shop_worker: str) -> Iterator[DashboardServer]:
    """`celery -A tests.apps.shop dashboard`, once the shop worker's registered tasks are known to it."""
    dash = DashboardServer("", env=shop_env, command=COMMANDS["celery -A"])
    wait_for(
        lambda: shop_worker in dash.launchable("shop.charge")["workers"],
        timeout=60,
        message="the shop worker's registered tasks",
    )
    yield dash
    dash.stop()


@pytest.mark.integration
def test_the_apps_tasks_are_launchable_and_go_where_the_app_routes_them(
    shop_dashboard: DashboardServer, shop_worker: str
) -> None:
    """/api/launchable lists the app's tasks (not Celery's built-ins) with their parameters; a launch with
    typed parameters goes through the app itself, to its `shop` queue, where its worker runs it."""
    tasks = {t["name"]: t for t in shop_dashboard.get("/api/launchable").json()["tasks"]}
    # weekly is in a module only the app's `include` names: imported as a worker would (celery -A alone does not)
    assert {"shop.charge", "shop.ship", "shop.reports.daily", "shop.reports.weekly"} <= set(tasks)
    assert not [n for n in tasks if n.startswith("celery.")]
    charge = tasks["shop.charge"]
    assert charge["module"] == "tests.apps.shop" and charge["warning"] is None
    assert [p["kind"] for p in charge["params"]] == ["int", "float", "str", "bool"]
    resp = requests.post(
        shop_dashboard.base_url + "/api/launch",
        json={"task": "shop.charge", "params": {"order_id": 9, "amount": 4.5, "capture": False}, "priority": 3},
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    assert "warning" not in resp.json()
    (uid,) = resp.json()["task_ids"]
    task = shop_dashboard.wait_task(uid, "SUCCESS", timeout=30)
    assert task["worker"] == shop_worker
    assert task["kwargs"] == "{'order_id': 9, 'amount': 4.5, 'capture': False}"
    assert "'captured': False" in task["result"]


@pytest.mark.integration
def test_without_javascript_a_task_is_picked_then_its_typed_fields_are_served(shop_dashboard: DashboardServer) -> None:
    """GET /launch?task=NAME draws that task's fields, typed (number for int/float, true/false for bool, JSON
    text for the rest), with names and defaults escaped."""
    page = shop_dashboard.get("/launch", params={"task": "shop.ship"}).text
    assert '<option value="shop.ship" selected>' in page
    assert '<input id="launch-param-1" name="param.order_id" type="number" step="1"' in page
    assert '<textarea id="launch-param-2" name="param.address"' in page
    assert '<option value="" selected>default (false)</option>' in page  # express: bool, default False
    assert '<form class="launch-pick" method="get" action="/launch">' in page  # inside <noscript>


@pytest.mark.integration
@pytest.mark.parametrize(
    "app, says",
    [
        ("tests.apps.nowhere", "No module named 'tests.apps.nowhere'"),
        ("json", "no Celery app in it"),
        ("tests.apps.shop:charge", "not a Celery app"),
    ],
)
def test_an_app_that_cannot_be_loaded_is_one_line_and_exit_2(app: str, says: str, shop_env: dict[str, str]) -> None:
    """`celery-dashboard run --app X` that cannot load X says which app and why, on one line, before serving."""
    result = subprocess.run(
        [sys.executable, "-m", "dashboard.cli", "run", "--app", app, "--port", str(free_port())],
        cwd=ROOT,
        env=shop_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith(f"Error: cannot load the Celery app {app!r}: ")
    assert says in lines[0]


@pytest.mark.integration
def test_celery_reports_a_missing_app_itself(shop_env: dict[str, str]) -> None:
    """`celery -A missing dashboard`: celery's own loading fails first, with its usage error (exit status 2)."""
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tests.apps.nowhere", "dashboard", "--port", str(free_port())],
        cwd=ROOT,
        env=shop_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "tests.apps.nowhere" in result.stderr


@pytest.mark.integration
def test_the_celery_subcommand_is_registered_and_documents_itself(shop_env: dict[str, str]) -> None:
    """`celery dashboard --help` lists the settings' flags but not --app (celery's -A is the app)."""
    result = subprocess.run(
        [sys.executable, "-m", "celery", "dashboard", "--help"],
        cwd=ROOT,
        env=shop_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "--port" in result.stdout and "--broker" in result.stdout
    assert "--app" not in result.stdout


# -- in-process: loading and precedence (click's CliRunner; nothing is served) ------------------------


@pytest.fixture()
def served(monkeypatch: pytest.MonkeyPatch) -> list[tuple[dict[str, Any], Any]]:
    """`run` records (settings, app) instead of serving; no DASHBOARD_* or SHOP_* from outside."""
    for key in list(os.environ):
        if key.startswith(("DASHBOARD_", "SHOP_")):
            monkeypatch.delenv(key)
    calls: list[tuple[dict[str, Any], Any]] = []
    monkeypatch.setattr(cli, "_start", lambda cfg: None)
    monkeypatch.setattr(cli, "serve", lambda cfg, celery_app=None: calls.append((cfg, celery_app)))
    return calls


def run(*args: str, env: dict[str, str] | None = None) -> Any:
    """`celery-dashboard run ARGS` in this process."""
    return CliRunner().invoke(cli.cli, ["run", *args], env=env, prog_name="celery-dashboard")


@pytest.mark.unit
def test_the_apps_broker_is_used_when_none_is_set(served: list[tuple[dict[str, Any], Any]]) -> None:
    """With --app and no broker set anywhere, BROKER_URL is the app's broker_url; the app itself is passed on."""
    result = run("--app", SHOP)
    assert result.exit_code == 0, result.output
    ((cfg, app),) = served
    assert cfg["APP"] == SHOP
    assert cfg["BROKER_URL"] == broker_url(app) == app.conf.broker_url != "redis://127.0.0.1:6379/0"
    assert app.main == "shop" and "shop.charge" in app.tasks


@pytest.mark.unit
@pytest.mark.parametrize(
    "args, env",
    [
        (["--broker", "redis://flag:6379/1"], {}),
        ([], {"DASHBOARD_BROKER_URL": "redis://flag:6379/1"}),
    ],
    ids=["flag", "environment"],
)
def test_a_broker_set_for_the_dashboard_wins_over_the_apps(
    args: list[str], env: dict[str, str], served: list[tuple[dict[str, Any], Any]]
) -> None:
    """--broker and DASHBOARD_BROKER_URL (and broker_url in the config file) override the app's broker_url."""
    result = run("--app", SHOP, *args, env=env)
    assert result.exit_code == 0, result.output
    assert served[0][0]["BROKER_URL"] == "redis://flag:6379/1"


@pytest.mark.unit
def test_a_config_files_broker_wins_over_the_apps(tmp_path: Any, served: list[tuple[dict[str, Any], Any]]) -> None:
    """broker_url in the config file is a broker set for the dashboard too."""
    path = tmp_path / "d.toml"
    path.write_text('app = "tests.apps.shop"\nbroker_url = "redis://file:6379/2"\n', encoding="utf-8")
    result = run("--config", str(path))
    assert result.exit_code == 0, result.output
    cfg, app = served[0]
    assert cfg["BROKER_URL"] == "redis://file:6379/2" and app.main == "shop"


@pytest.mark.unit
def test_without_an_app_nothing_changes(served: list[tuple[dict[str, Any], Any]]) -> None:
    """No app: the default broker and no app object, as before."""
    result = run()
    assert result.exit_code == 0, result.output
    ((cfg, app),) = served
    assert cfg["APP"] == "" and cfg["BROKER_URL"] == "redis://127.0.0.1:6379/0" and app is None


@pytest.mark.unit
def test_a_bad_app_stops_the_command_with_exit_2(served: list[tuple[dict[str, Any], Any]]) -> None:
    """Nothing is served when the app cannot be loaded."""
    result = run("--app", "tests.apps.nowhere")
    assert result.exit_code == 2 and not served
    assert "Error: cannot load the Celery app 'tests.apps.nowhere'" in result.output


@pytest.mark.unit
def test_load_app_finds_the_app_as_celery_does() -> None:
    """The module's `app`, or module:attribute; a module without an app is refused."""
    assert load_app(SHOP).main == "shop"
    assert load_app(f"{SHOP}:app").main == "shop"
    with pytest.raises(AppNotLoaded, match="no Celery app in it"):
        load_app("json")


@pytest.mark.unit
def test_broker_url_of_an_app() -> None:
    """An app's broker_url (the first of a failover list); without one, Celery's own default."""
    from celery import Celery

    assert broker_url(Celery("a", broker="redis://h:1/2", set_as_current=False)) == "redis://h:1/2"
    assert broker_url(Celery("b", broker="redis://h:1/2;redis://k:1/2", set_as_current=False)) == "redis://h:1/2"
    assert broker_url(Celery("c", set_as_current=False)).startswith("amqp://guest:guest@localhost")


# -- the launch form in Chromium ----------------------------------------------------------------------


@pytest.mark.browser
def test_the_form_draws_an_apps_task_fields_and_launches_it(
    page: Any, shop_dashboard: DashboardServer, shop_worker: str
) -> None:
    """Picking an app's task draws one typed field per parameter; a missing one is refused under its field;
    a filled form launches the task, which the app's worker runs with those values."""
    from playwright.sync_api import expect

    page.goto(shop_dashboard.base_url + "/launch")
    page.select_option("#launch-task", "shop.ship")
    expect(page.locator("#launch-params [name='param.address']")).to_have_count(1)
    page.fill("[name='param.order_id']", "5")
    page.locator("#launch-form button[type=submit]").click()
    expect(page.locator('.field-error[data-field="param.address"]')).to_have_text("required")
    expect(page.locator("#launch-result a")).to_have_count(0)

    page.select_option("#launch-task", "shop.charge")
    expect(page.locator("[name='param.order_id']")).to_have_attribute("type", "number")
    expect(page.locator("[name='param.currency']")).to_have_attribute("placeholder", 'default: "EUR"')
    expect(page.locator("#launch-warning")).to_be_hidden()  # the shop worker has it
    page.fill("[name='param.order_id']", "11")
    page.fill("[name='param.amount']", "2.5")
    page.select_option("[name='param.capture']", "false")
    page.locator("#launch-form button[type=submit]").click()
    link = page.locator("#launch-result li a").first
    expect(link).to_be_visible()
    task = shop_dashboard.wait_task(link.inner_text(), "SUCCESS", timeout=30)
    assert task["name"] == "shop.charge" and task["worker"] == shop_worker
    assert task["kwargs"] == "{'order_id': 11, 'amount': 2.5, 'capture': False}"


@pytest.mark.browser
def test_a_task_no_online_worker_has_is_launched_only_after_its_warning(page: Any, redis_server: RedisServer) -> None:
    """Without an app and without workers, the demo tasks carry the warning: the first submit is refused on
    the task field with it, and checking "Launch it anyway" sends the task."""
    from playwright.sync_api import expect

    dash = DashboardServer(redis_server.url_db(6))
    try:
        page.goto(dash.base_url + "/launch")
        page.select_option("#launch-task", "dashboard.demo.add")
        expect(page.locator("#launch-warning")).to_contain_text("No online worker has registered dashboard.demo.add")
        page.locator("#launch-form button[type=submit]").click()
        expect(page.locator('.field-error[data-field="task"]')).to_contain_text("Confirm to launch it anyway.")
        expect(page.locator("#launch-result a")).to_have_count(0)
        page.locator("#launch-confirm input").check()
        page.locator("#launch-form button[type=submit]").click()
        expect(page.locator("#launch-result li a")).to_have_count(1)
        assert page.locator('.field-error[data-field="task"]').is_hidden()
    finally:
        dash.stop()
