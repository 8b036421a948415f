"""Settings: defaults, then DASHBOARD_* environment variables, then explicit overrides."""
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


@pytest.mark.parametrize("name, raw, expected", [
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
])
def test_environment_overrides_defaults_with_the_default_type(name: str, raw: str, expected: Any) -> None:
    """DASHBOARD_<NAME> replaces the default, converted to the default's type."""
    cfg = load_config(environ={f"DASHBOARD_{name}": raw})
    assert cfg[name] == expected
    assert type(cfg[name]) is type(expected)


@pytest.mark.parametrize("raw, expected", [
    ("1", True), ("true", True), ("TRUE", True), ("yes", True), ("on", True), (" On ", True),
    ("0", False), ("false", False), ("False", False), ("no", False), ("off", False),
])
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
    cfg = load_config({"PORT": 7000, "BROKER_URL": "redis://cli/0"},
                      environ={"DASHBOARD_PORT": "8000", "DASHBOARD_BROKER_URL": "redis://env/0",
                               "DASHBOARD_HOST": "10.1.1.1"})
    assert cfg["PORT"] == 7000
    assert cfg["BROKER_URL"] == "redis://cli/0"
    assert cfg["HOST"] == "10.1.1.1"


def test_override_of_none_keeps_the_environment() -> None:
    """A flag that was not given (None) does not erase the environment's value."""
    cfg = load_config({"PORT": None}, environ={"DASHBOARD_PORT": "8000"})
    assert cfg["PORT"] == 8000


@pytest.mark.parametrize("name, raw", [
    ("PORT", "http"), ("PORT", "80.5"), ("MAX_TASKS", "lots"), ("PUSH_INTERVAL", "fast"),
    ("INGEST_ENABLED", "maybe"), ("INGEST_ENABLED", "2"), ("THREADS", "1e3"),
])
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
    kwargs: dict[str, Any] = ({"environ": {"DASHBOARD_ASYNC_MODE": "eventlet"}} if source == "environment"
                              else {"overrides": {"ASYNC_MODE": "eventlet"}, "environ": {}})
    with pytest.raises(ValueError, match="ASYNC_MODE.*'eventlet'"):
        load_config(**kwargs)


@pytest.mark.parametrize("source", ["environment", "override"])
def test_ingest_is_validated(source: str) -> None:
    """INGEST is auto, redis or kombu; anything else names INGEST."""
    kwargs: dict[str, Any] = ({"environ": {"DASHBOARD_INGEST": "amqp"}} if source == "environment"
                              else {"overrides": {"INGEST": "amqp"}, "environ": {}})
    with pytest.raises(ValueError, match="INGEST.*'amqp'"):
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
    """The Markdown table has one row per setting with its variable, flag and default."""
    table = settings_table()
    lines = table.splitlines()
    assert lines[0] == "| environment variable | flag | default | meaning |"
    assert len(lines) == 2 + len(SETTINGS)
    for s, line in zip(SETTINGS, lines[2:]):
        assert line.startswith(f"| `DASHBOARD_{s.name}` |")
        assert s.help in line
        if s.flag:
            assert f"`{s.flag}`" in line
        if s.name == "SECRET_KEY":
            assert "| random |" in line
        elif s.default == "":
            assert "| empty |" in line
        else:
            assert f"`{s.default}`" in line


def test_settings_table_is_the_one_in_the_readme() -> None:
    """The README's settings table is up to date with dashboard/config.py."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert settings_table() in readme
