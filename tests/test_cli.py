"""The command line: settings from flags, environment and config file (click's CliRunner), `--version`, and
`celery-dashboard demo` as `make run` starts it: local Redis, demo worker, web; Ctrl-C ends it all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import click
import pytest
import requests
from click.testing import CliRunner
from conftest import ROOT, WORK_SECONDS, wait_for

from dashboard import cli
from dashboard.config import SETTINGS
from dashboard.processes import free_port, redis_answers

pytestmark = pytest.mark.integration


@pytest.fixture()
def served(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """`run` and `demo` record the settings they would serve with instead of serving; no DASHBOARD_* from outside."""
    for key in list(os.environ):
        if key.startswith("DASHBOARD_"):
            monkeypatch.delenv(key)
    configs: list[dict[str, Any]] = []
    monkeypatch.setattr(cli, "_start", lambda cfg: None)
    monkeypatch.setattr(cli, "serve", lambda cfg, celery_app=None: configs.append(cfg))
    monkeypatch.setattr(cli, "_demo", lambda cfg, celery_app=None: configs.append(cfg) or 0)
    return configs


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    """`celery-dashboard ARGS` in this process (click's CliRunner; stderr apart from stdout)."""
    return CliRunner().invoke(cli.cli, list(args), env=env, prog_name="celery-dashboard")


def toml(tmp_path: Path, text: str) -> str:
    """A config file with this text."""
    path = tmp_path / "dashboard.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_version_is_the_package_version() -> None:
    """`--version` prints the installed package's version and exits 0."""
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout == f"celery-dashboard {metadata.version('celery-live-dashboard')}\n"


def test_version_without_package_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    """From a source tree that was never installed, `--version` says so instead of failing."""

    def missing(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(cli.metadata, "version", missing)
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout == "celery-dashboard unknown (not installed as a package)\n"


@pytest.mark.parametrize("command", ["run", "demo"])
def test_help_lists_every_setting_once_with_its_default(command: str) -> None:
    """`--help` has one flag per setting, its environment variable and its default (from SETTINGS)."""
    result = invoke(command, "--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())  # click wraps lines
    for s in SETTINGS:
        assert s.option in text and s.env_var in text, s.name
    for shown in (
        "--max-tasks INTEGER",
        "[default: 100000]",
        "--broker TEXT",
        "[default: redis://127.0.0.1:6379/0]",
        "--read-only / --no-read-only",
        "--async-mode [gevent|threading]",
        "--config FILE",
        "DASHBOARD_CONFIG",
    ):
        assert shown in text
    assert text.count("[default: 100000]") == 1


def test_flags_environment_and_file_in_that_order(served: list[dict[str, Any]], tmp_path: Path) -> None:
    """defaults < config file < environment < flags, setting by setting."""
    path = toml(tmp_path, 'port = 6001\nmax_tasks = 500\nhost = "10.0.0.1"\nread_only = true\npush_interval = 1\n')
    result = invoke(
        "run", "--config", path, "--port", "6003", env={"DASHBOARD_PORT": "6002", "DASHBOARD_MAX_TASKS": "600"}
    )
    assert result.exit_code == 0, result.output
    (cfg,) = served
    assert cfg["PORT"] == 6003  # flag over environment and file
    assert cfg["MAX_TASKS"] == 600  # environment over file
    assert cfg["HOST"] == "10.0.0.1"  # file over default
    assert cfg["READ_ONLY"] is True
    assert cfg["PUSH_INTERVAL"] == 1.0 and isinstance(cfg["PUSH_INTERVAL"], float)
    assert cfg["THREADS"] == 64  # default


def test_boolean_flag_turns_off_what_environment_and_file_turn_on(served: list[dict[str, Any]], tmp_path: Path) -> None:
    """`--no-read-only` wins over `read_only = true` and DASHBOARD_READ_ONLY=1; `--read-only` turns it on."""
    path = toml(tmp_path, "read_only = true\n")
    assert invoke("run", "--config", path, "--no-read-only", env={"DASHBOARD_READ_ONLY": "1"}).exit_code == 0
    assert invoke("demo", "--read-only").exit_code == 0
    assert [cfg["READ_ONLY"] for cfg in served] == [False, True]


def test_config_file_from_the_environment(served: list[dict[str, Any]], tmp_path: Path) -> None:
    """DASHBOARD_CONFIG names the file when --config is not given; --config wins over it."""
    first = toml(tmp_path, "port = 7001\n")
    second = tmp_path / "other.toml"
    second.write_text("port = 7002\n")
    assert invoke("run", env={"DASHBOARD_CONFIG": first}).exit_code == 0
    assert invoke("run", "--config", str(second), env={"DASHBOARD_CONFIG": first}).exit_code == 0
    assert [cfg["PORT"] for cfg in served] == [7001, 7002]


def test_settings_under_a_dashboard_table(served: list[dict[str, Any]], tmp_path: Path) -> None:
    """With a [dashboard] table the settings are read there; other tables belong to other programs."""
    path = toml(tmp_path, '[dashboard]\nbroker_url = "redis://cache:6379/3"\n\n[other.tool]\nport = "x"\n')
    assert invoke("run", "--config", path).exit_code == 0
    assert served[0]["BROKER_URL"] == "redis://cache:6379/3"


@pytest.mark.parametrize(
    "text, message",
    [
        ("max_task = 5\n", "unknown key 'max_task' (did you mean 'max_tasks'?)"),
        ("MAX_TASKS = 5\n", "unknown key 'MAX_TASKS' (did you mean 'max_tasks'?)"),
        ("colour = 'blue'\n", "unknown key 'colour' (keys are setting names in lower case)"),
        ('port = "http"\n', 'port = "http" is not a valid int'),
        ("read_only = 1\n", "read_only = 1 must be true or false"),
        ("host = 5\n", "host = 5 must be a string (in quotes)"),
        ("max_tasks = 0\n", "max_tasks = 0 must be a finite number at least 1"),
        ('async_mode = "eventlet"\n', "async_mode = \"eventlet\" must be 'gevent' or 'threading'"),
        ("port = 1\n[dashboard]\nhost = 'x'\n", "'port' is outside the [dashboard] table"),
        ("port = [\n", "not valid TOML"),
    ],
)
def test_bad_config_file_names_the_file_and_the_key(
    served: list[dict[str, Any]], tmp_path: Path, text: str, message: str
) -> None:
    """An unknown key, a value of the wrong type or out of range: one line naming the file and key, exit 2."""
    path = toml(tmp_path, text)
    result = invoke("run", "--config", path)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: config file {path}: ") and result.stderr.count("\n") == 1
    assert message in result.stderr
    assert not served


def test_missing_config_file(served: list[dict[str, Any]], tmp_path: Path) -> None:
    """A config file that does not exist is an error, not silently ignored."""
    result = invoke("run", "--config", str(tmp_path / "nope.toml"))
    assert result.exit_code == 2
    assert result.stderr == f"Error: config file {tmp_path / 'nope.toml'}: No such file or directory\n"


def test_secrets_in_a_bad_config_file_are_not_echoed(served: list[dict[str, Any]], tmp_path: Path) -> None:
    """A secret of the wrong type is reported by key, never by value."""
    result = invoke("run", "--config", toml(tmp_path, "auth_token = 98765431\n"))
    assert result.exit_code == 2
    assert "auth_token = (hidden) must be a string" in result.stderr and "98765431" not in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--port", "http"], "--port='http' is not a valid int"),
        (
            ["--broker", "localhost:6399"],
            "--broker='localhost:6399' is not a URL: a broker URL like redis://host:port/db",
        ),
        (["--broker", "user:pw@cache:6379"], "--broker='user:****@cache:6379' is not a URL"),
        (["--max-tasks", "0"], "--max-tasks='0' must be a finite number at least 1"),
        (["--push-interval", "nan"], "--push-interval='nan' must be a finite number more than 0.0"),
        (["--async-mode", "eventlet"], "--async-mode='eventlet' must be 'gevent' or 'threading'"),
        (["--log-level", "verbose"], "--log-level='verbose' must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        (["--reconnect-min", "5", "--reconnect-max", "1"], "DASHBOARD_RECONNECT_MAX must be at least"),
    ],
)
def test_bad_flag_value_is_one_line_and_exit_2(served: list[dict[str, Any]], args: list[str], message: str) -> None:
    """A bad flag value names the flag on one line; nothing is served."""
    result = invoke("run", *args)
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
    assert message in result.stderr
    assert not served


def test_options_decorate_any_click_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """`setting_options` gives another command (e.g. a `celery dashboard` subcommand) the same options."""
    monkeypatch.delenv("DASHBOARD_PORT", raising=False)

    @click.command()
    @cli.setting_options
    @click.option("--extra")
    def other(cfg: dict[str, Any], extra: str) -> None:
        click.echo(f"{cfg['PORT']} {cfg['MAX_TASKS']} {extra}")

    result = CliRunner().invoke(other, ["--port", "8123", "--extra", "x"], env={"DASHBOARD_MAX_TASKS": "77"})
    assert result.exit_code == 0, result.output
    assert result.stdout == "8123 77 x\n"


def test_version_of_the_console_script_and_app_py() -> None:
    """`python -m dashboard.cli --version` prints it; `python app.py` takes the flags of `run`."""
    result = subprocess.run(
        [sys.executable, "-m", "dashboard.cli", "--version"], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0 and result.stdout.startswith("celery-dashboard ")
    result = subprocess.run(
        [sys.executable, "app.py", "--port", "http"], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert result.stderr == "Error: --port='http' is not a valid int\n"


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_demo_starts_everything_and_leaves_nothing_running(how: str) -> None:
    """With no Redis at the broker URL, demo starts one, a worker and the web; stopping ends all three."""
    dead_broker = f"redis://127.0.0.1:{free_port()}/0"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, DASHBOARD_DEMO_SLEEP=WORK_SECONDS, DASHBOARD_LOG_LEVEL="WARNING")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dashboard.cli", "demo", "--port", str(port), "--broker", dead_broker],
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )  # its own group, like a terminal job
    try:
        health = wait_for(
            lambda: (h := requests.get(base + "/healthz", timeout=2).json())["broker"]["connected"] and h,
            timeout=30,
            message="the demo dashboard",
        )
        used = health["broker"]["url"]
        assert used != dead_broker, "a local Redis on a free port replaced the unreachable one"
        assert redis_answers(used)
        wait_for(
            lambda: requests.get(base + "/healthz", timeout=2).json()["workers"]["online"] == 1,
            timeout=60,
            message="the demo worker online",
        )
        resp = requests.post(
            base + "/api/launch",
            json={"unregistered_ok": True, "task": "dashboard.demo.add", "args": [4, 5]},
            timeout=10,
        )
        (uid,) = resp.json()["task_ids"]
        wait_for(
            lambda: requests.get(f"{base}/api/tasks/{uid}", timeout=2).json().get("result") == "9",
            timeout=30,
            message="the launched task to succeed",
        )
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
        else:
            proc.send_signal(signal.SIGTERM)  # only the parent: it must stop its children itself
        assert proc.wait(30) == 0
        wait_for(lambda: not _group_alive(proc.pid), timeout=15, message="every child process to exit")
        assert not redis_answers(used), "the Redis it started is gone"
    finally:
        if _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.parametrize("command", ["demo", "run"])
def test_a_port_in_use_is_one_line_before_anything_starts(command: str) -> None:
    """A taken port is said at once, on one line: demo starts no local Redis and no demo worker first, and
    neither command ends in a traceback."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        dead_local = f"redis://127.0.0.1:{free_port()}/0"  # demo would start a Redis for this one
        env = dict(os.environ, DASHBOARD_LOG_LEVEL="INFO")
        result = subprocess.run(
            [sys.executable, "-m", "dashboard.cli", command, "--port", str(port), "--broker", dead_local],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 2
    assert (
        result.stderr
        == f"Error: cannot listen on 127.0.0.1:{port}: Address already in use (choose another with --port)\n"
    )


def test_demo_worker_is_logged_by_its_real_name(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The log names the demo worker as the Workers page will (demo@<this host>), not demo@%h."""
    import logging
    import socket

    from dashboard import processes

    started: list[list[str]] = []

    class FakePopen:
        pid = 4242

        def __init__(self, cmd: list[str], **_: Any) -> None:
            started.append(cmd)

    monkeypatch.setattr(processes.subprocess, "Popen", FakePopen)
    with caplog.at_level(logging.INFO, logger="dashboard.processes"):
        processes.start_worker("redis://127.0.0.1:6379/0")
    name = f"demo@{socket.gethostname()}"
    assert f"started demo worker {name} (pid 4242)" in caplog.text and "%h" not in caplog.text
    assert started[0][started[0].index("--hostname") + 1] == name, "the worker gets the same name"


def test_demo_explains_an_unreachable_remote_broker() -> None:
    """A broker URL the demo did not start Redis for (not localhost/127.0.0.1) that does not answer is an
    error with a message, not a local Redis. (127.0.0.2 is such a URL that sends nothing off this machine.)"""
    url = f"redis://127.0.0.2:{free_port()}/0"
    result = subprocess.run(
        [sys.executable, "-m", "dashboard.cli", "demo", "--broker", url, "--port", str(free_port())],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert f"no Redis answers at {url}" in result.stderr


def test_bad_setting_is_a_clear_error() -> None:
    """A malformed environment setting stops the command with the variable's name."""
    env = dict(os.environ, DASHBOARD_MAX_TASKS="lots")
    result = subprocess.run(
        [sys.executable, "-m", "dashboard.cli", "run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "DASHBOARD_MAX_TASKS='lots' is not a valid int" in result.stderr


def test_threading_mode_serves_live_updates(redis_server, worker) -> None:  # untyped: pytest fixtures
    """The development mode (--async-mode threading, gunicorn's gthread worker) ingests, serves pages and
    pushes over websockets."""
    import socketio
    from conftest import DashboardServer

    dash = DashboardServer(redis_server.url, "--async-mode", "threading")
    client = socketio.Client(reconnection=False)
    try:
        assert dash.health()["server"]["async_mode"] == "threading"
        assert "text/html" in dash.get("/").headers["Content-Type"]
        updates: list[dict] = []
        client.on("task", lambda data: updates.append(data["task"]))
        client.connect(dash.base_url, transports=["websocket"])
        (uid,) = dash.launch("dashboard.demo.fail")
        snap = client.call("subscribe", {"view": "task", "uuid": uid}, timeout=5)
        assert snap["status"]["broker"]["connected"] is True
        wait_for(
            lambda: any(u["state"] == "FAILURE" for u in updates) or (snap["task"] or {}).get("state") == "FAILURE",
            timeout=20,
            message="FAILURE pushed in threading mode",
        )
        assert dash.wait_task(uid, "FAILURE")["traceback"].startswith("Traceback")
    finally:
        client.disconnect()
        dash.stop()


def test_threading_instances_open_no_gunicorn_control_socket(redis_server, tmp_path) -> None:  # untyped: fixtures
    """Two threading-mode dashboards on one machine both serve, and neither binds gunicorn's control socket
    (by default every gunicorn instance binds the same $XDG_RUNTIME_DIR/gunicorn.ctl or ~/.gunicorn/gunicorn.ctl)."""
    from conftest import DashboardServer

    env = {"XDG_RUNTIME_DIR": str(tmp_path)}
    first = DashboardServer(redis_server.url, "--async-mode", "threading", env=env)
    try:
        second = DashboardServer(redis_server.url, "--async-mode", "threading", env=env)
        try:
            for dash in (first, second):
                assert dash.health()["server"]["async_mode"] == "threading"
            assert not (tmp_path / "gunicorn.ctl").exists(), "no control socket"
        finally:
            second.stop()
    finally:
        first.stop()
