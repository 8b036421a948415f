"""Settings: defaults, then the config file, then DASHBOARD_* environment variables, then explicit overrides."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from dashboard.config import SETTINGS, load_config, settings_table

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_without_environment() -> None:
    """With no DASHBOARD_* variables every setting has its documented default."""
    cfg = load_config(environ={})
    for s in SETTINGS:
        if s.name != "SECRET_KEY":
            assert cfg[s.name] == s.default, s.name
    assert cfg["BROKER_URL"] == "redis://127.0.0.1:6379/0"
    assert cfg["PORT"] == 5000
    assert cfg["ASYNC_MODE"] == "gevent"
    assert cfg["INGEST"] == "auto"
    assert cfg["INGEST_ENABLED"] is True


def test_default_environment_is_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an explicit environ, os.environ is read (how `celery-dashboard run` gets its settings)."""
    monkeypatch.setenv("DASHBOARD_PORT", "6123")
    monkeypatch.setenv("DASHBOARD_BROKER_URL", "redis://10.0.0.5:6380/2")
    cfg = load_config()
    assert cfg["PORT"] == 6123
    assert cfg["BROKER_URL"] == "redis://10.0.0.5:6380/2"


@pytest.mark.parametrize(
    "name, raw, expected",
    [
        ("PORT", "8080", 8080),
        ("MAX_TASKS", " 250 ", 250),
        ("THREADS", "8", 8),
        ("PUSH_INTERVAL", "0.5", 0.5),
        ("ENABLE_EVENTS_INTERVAL", "0", 0.0),
        ("RECONNECT_MAX", "3", 3.0),
        ("LAUNCH_TIMEOUT", "1.25", 1.25),
        ("HOST", "0.0.0.0", "0.0.0.0"),
        ("LOG_LEVEL", "debug", "debug"),
        ("ASYNC_MODE", "threading", "threading"),
        ("INGEST", "kombu", "kombu"),
    ],
)
def test_environment_overrides_defaults_with_the_default_type(name: str, raw: str, expected: Any) -> None:
    """DASHBOARD_<NAME> replaces the default, converted to the default's type."""
    cfg = load_config(environ={f"DASHBOARD_{name}": raw})
    assert cfg[name] == expected
    assert type(cfg[name]) is type(expected)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("1", True),
        ("true", True),
        ("TRUE", True),
        ("yes", True),
        ("on", True),
        (" On ", True),
        ("0", False),
        ("false", False),
        ("False", False),
        ("no", False),
        ("off", False),
    ],
)
def test_boolean_environment_values(raw: str, expected: bool) -> None:
    """Booleans accept the usual spellings, in any case."""
    assert load_config(environ={"DASHBOARD_INGEST_ENABLED": raw})["INGEST_ENABLED"] is expected


def test_empty_environment_value_keeps_the_default() -> None:
    """DASHBOARD_PORT= (set but empty) is treated as unset."""
    assert load_config(environ={"DASHBOARD_PORT": ""})["PORT"] == 5000


def test_variables_without_the_prefix_are_ignored() -> None:
    """Only DASHBOARD_* variables are read (PORT alone belongs to other programs)."""
    assert load_config(environ={"PORT": "9999", "BROKER_URL": "redis://x/0"})["PORT"] == 5000


def test_overrides_beat_the_environment() -> None:
    """A CLI flag wins over the environment variable of the same setting."""
    cfg = load_config(
        {"PORT": 7000, "BROKER_URL": "redis://cli/0"},
        environ={"DASHBOARD_PORT": "8000", "DASHBOARD_BROKER_URL": "redis://env/0", "DASHBOARD_HOST": "10.1.1.1"},
    )
    assert cfg["PORT"] == 7000
    assert cfg["BROKER_URL"] == "redis://cli/0"
    assert cfg["HOST"] == "10.1.1.1"


def test_override_of_none_keeps_the_environment() -> None:
    """A flag that was not given (None) does not erase the environment's value."""
    cfg = load_config({"PORT": None}, environ={"DASHBOARD_PORT": "8000"})
    assert cfg["PORT"] == 8000


@pytest.mark.parametrize(
    "name, raw",
    [
        ("PORT", "http"),
        ("PORT", "80.5"),
        ("MAX_TASKS", "lots"),
        ("PUSH_INTERVAL", "fast"),
        ("INGEST_ENABLED", "maybe"),
        ("INGEST_ENABLED", "2"),
        ("THREADS", "1e3"),
    ],
)
def test_invalid_environment_values_name_the_variable(name: str, raw: str) -> None:
    """A value of the wrong type raises ValueError naming the variable and the bad value."""
    with pytest.raises(ValueError) as info:
        load_config(environ={f"DASHBOARD_{name}": raw})
    assert f"DASHBOARD_{name}" in str(info.value)
    assert repr(raw) in str(info.value)


@pytest.mark.parametrize("source", ["environment", "override"])
def test_async_mode_is_validated(source: str) -> None:
    """Only gevent and threading are async modes (eventlet was measured and dropped); anything else names
    ASYNC_MODE."""
    kwargs: dict[str, Any] = (
        {"environ": {"DASHBOARD_ASYNC_MODE": "eventlet"}}
        if source == "environment"
        else {"overrides": {"ASYNC_MODE": "eventlet"}, "environ": {}}
    )
    with pytest.raises(ValueError, match=r"ASYNC_MODE.*'eventlet'"):
        load_config(**kwargs)


@pytest.mark.parametrize("raw", ["localhost:6399", "127.0.0.1", "redis//x:1/0", "redis://a:1/0;b:2"])
def test_broker_url_needs_a_scheme(raw: str) -> None:
    """A broker URL without its scheme is refused at once, naming the variable, with the form expected."""
    with pytest.raises(ValueError) as info:
        load_config(environ={"DASHBOARD_BROKER_URL": raw})
    assert f"DASHBOARD_BROKER_URL={raw!r} is not a URL: a broker URL like redis://host:port/db is expected" in str(
        info.value
    )
    with pytest.raises(ValueError, match="BROKER_URL=' ' is not a URL"):
        load_config({"BROKER_URL": " "}, environ={})


@pytest.mark.parametrize(
    "url",
    [
        "redis://h:6379/0",
        "rediss://:pw@h/1",
        "amqp://guest@h//",
        "memory://",
        "redis+socket:///tmp/r.sock",
        "redis://a:1/0;redis://b:1/0",
    ],
)
def test_broker_urls_with_a_scheme_pass(url: str) -> None:
    assert load_config(environ={"DASHBOARD_BROKER_URL": url})["BROKER_URL"] == url


def test_broker_url_password_is_not_echoed() -> None:
    with pytest.raises(ValueError) as info:
        load_config(environ={"DASHBOARD_BROKER_URL": "ops:hunter2@cache:6379"})
    assert "hunter2" not in str(info.value) and "DASHBOARD_BROKER_URL='ops:****@cache:6379'" in str(info.value)


@pytest.mark.parametrize("source", ["environment", "override"])
def test_ingest_is_validated(source: str) -> None:
    """INGEST is auto, redis or kombu; anything else names INGEST."""
    kwargs: dict[str, Any] = (
        {"environ": {"DASHBOARD_INGEST": "amqp"}}
        if source == "environment"
        else {"overrides": {"INGEST": "amqp"}, "environ": {}}
    )
    with pytest.raises(ValueError, match=r"INGEST.*'amqp'"):
        load_config(**kwargs)


@pytest.mark.parametrize("source", ["environment", "override"])
def test_log_level_is_validated(source: str) -> None:
    """LOG_LEVEL is a level name of the logging module, in any case; a typo is an error, not a traceback later."""
    assert load_config(environ={"DASHBOARD_LOG_LEVEL": "warning"})["LOG_LEVEL"] == "warning"
    kwargs: dict[str, Any] = (
        {"environ": {"DASHBOARD_LOG_LEVEL": "verbose"}}
        if source == "environment"
        else {"overrides": {"LOG_LEVEL": "verbose"}, "environ": {}}
    )
    with pytest.raises(ValueError, match="LOG_LEVEL='verbose' must be one of DEBUG, INFO"):
        load_config(**kwargs)


@pytest.mark.parametrize("name", ["MAX_TASKS", "MAX_WORKERS"])
def test_memory_bounds_must_be_positive(name: str) -> None:
    """Keeping zero tasks or workers is refused, naming the setting."""
    with pytest.raises(ValueError, match=name):
        load_config(environ={f"DASHBOARD_{name}": "0"})


@pytest.mark.parametrize("raw", ["-1", "nan"])
def test_negative_or_nan_push_interval_is_refused(raw: str) -> None:
    """A push interval that is not a positive number of seconds is refused, naming the variable."""
    with pytest.raises(ValueError, match="PUSH_INTERVAL"):
        load_config(environ={"DASHBOARD_PUSH_INTERVAL": raw})


def test_secret_key_is_random_when_unset() -> None:
    """Without a SECRET_KEY each process gets its own long random one (never a fixed default)."""
    first = load_config(environ={})["SECRET_KEY"]
    second = load_config(environ={})["SECRET_KEY"]
    assert first != second
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    assert load_config({"SECRET_KEY": ""}, environ={})["SECRET_KEY"]


def test_secret_key_from_environment_or_override_is_kept() -> None:
    """A configured SECRET_KEY is used as is (sessions survive restarts)."""
    assert load_config(environ={"DASHBOARD_SECRET_KEY": "s3cret"})["SECRET_KEY"] == "s3cret"
    assert load_config({"SECRET_KEY": "flag"}, environ={"DASHBOARD_SECRET_KEY": "env"})["SECRET_KEY"] == "flag"


def test_settings_table_lists_every_setting() -> None:
    """The Markdown table has one row per setting: its name, flag, variable, file key, default and meaning."""
    lines = settings_table().splitlines()
    assert lines[0] == "| setting | flag | environment variable | file key | default | meaning |"
    assert len(lines) == 2 + len(SETTINGS)
    rows = {line.split(" | ")[0].strip("| `"): line for line in lines[2:]}
    assert rows["MAX_TASKS"] == (
        "| `MAX_TASKS` | `--max-tasks` | `DASHBOARD_MAX_TASKS` | `max_tasks` | `100000` | "
        "Tasks kept in memory; the oldest is evicted first. |"
    )
    assert rows["BROKER_URL"].startswith(
        "| `BROKER_URL` | `--broker` | `DASHBOARD_BROKER_URL` | `broker_url` | `redis://127.0.0.1:6379/0` |"
    )
    assert "| `--read-only/--no-read-only` |" in rows["READ_ONLY"] and "| `false` |" in rows["READ_ONLY"]
    assert "| `--snapshot` |" in rows["SNAPSHOT_PATH"] and "| empty |" in rows["SNAPSHOT_PATH"]
    assert "| random |" in rows["SECRET_KEY"]
    for s in SETTINGS:
        assert s.help in rows[s.name]


DOCS = ROOT / "docs" / "configuration.md"
TABLE_START = "<!-- settings table: generated by settings_table() in dashboard/config.py; do not edit by hand -->"
TABLE_END = "<!-- end of settings table -->"


def test_settings_table_is_the_one_in_the_docs() -> None:
    """docs/configuration.md's settings table, between its markers, is the one dashboard/config.py generates."""
    text = DOCS.read_text(encoding="utf-8")
    assert text.count(TABLE_START) == 1 and text.count(TABLE_END) == 1
    documented = text.split(TABLE_START)[1].split(TABLE_END)[0].strip()
    assert documented == settings_table(), (
        "docs/configuration.md is out of date: replace its table with the output of "
        "python -c 'from dashboard.config import settings_table; print(settings_table())'"
    )


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dashboard.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_config_file_sits_between_defaults_and_environment(tmp_path: Path) -> None:
    """load_config: the file beats defaults, the environment beats the file, overrides beat both."""
    path = _write(tmp_path, 'port = 6001\nhost = "10.0.0.1"\nmax_tasks = 500\ninspect_interval = 0\n')
    cfg = load_config({"MAX_TASKS": 700}, environ={"DASHBOARD_PORT": "6002"}, config_file=path)
    assert (cfg["PORT"], cfg["HOST"], cfg["MAX_TASKS"], cfg["INSPECT_INTERVAL"]) == (6002, "10.0.0.1", 700, 0.0)
    assert cfg["THREADS"] == 64


def test_config_file_named_by_the_environment(tmp_path: Path) -> None:
    """DASHBOARD_CONFIG names the file when none is passed (how `app:app` under a WSGI server finds it)."""
    path = _write(tmp_path, "[dashboard]\nmax_workers = 12\n")
    assert load_config(environ={"DASHBOARD_CONFIG": str(path)})["MAX_WORKERS"] == 12


def test_unknown_key_in_the_config_file_names_key_and_file(tmp_path: Path) -> None:
    """A key that is no setting is refused with its name and the file's."""
    path = _write(tmp_path, "max_task = 5\n")
    with pytest.raises(ValueError, match=f"config file {re.escape(str(path))}: unknown key 'max_task'"):
        load_config(environ={}, config_file=path)
