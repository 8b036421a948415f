"""Audit log: a ring of the latest actions, mirrored line by line to AUDIT_LOG."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import pytest

from dashboard.cluster.audit import AuditLog

pytestmark = pytest.mark.unit


def test_entries_newest_first_with_every_field() -> None:
    audit = AuditLog()
    first = audit.record(
        "pool_grow",
        "w1@host",
        {"n": 1},
        True,
        "pool will grow",
        {"w1@host": {"ok": "pool will grow"}},
        user="ada",
        remote_addr="127.0.0.1",
    )
    second = audit.record("revoke", "abc", {"terminate": False}, False, "broker unreachable")
    assert (first["id"], second["id"]) == (1, 2)
    entries = audit.entries()
    assert [e["id"] for e in entries] == [2, 1]
    assert set(entries[1]) == {
        "id",
        "time",
        "user",
        "remote_addr",
        "action",
        "target",
        "params",
        "ok",
        "message",
        "replies",
    }
    assert entries[1]["user"] == "ada" and entries[1]["replies"] == {"w1@host": {"ok": "pool will grow"}}
    assert entries[0]["user"] is None and entries[0]["ok"] is False and entries[0]["replies"] == {}
    assert audit.entries(limit=1) == [entries[0]]


def test_ring_keeps_the_latest() -> None:
    audit = AuditLog(keep=5)
    for i in range(12):
        audit.record("revoke", str(i), {}, True, "")
    assert [e["target"] for e in audit.entries(100)] == ["11", "10", "9", "8", "7"]


def test_file_has_the_same_lines_and_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(str(path))
    for i in range(3):
        audit.record("rate_limit", "dashboard.demo.add", {"rate": f"{i}/m"}, True, "set", user="«ada»")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == audit.entries()[::-1]
    assert "«ada»" in lines[0]  # readable, not \u-escaped

    with path.open("a", encoding="utf-8") as fh:
        fh.write('{"half a line\n')  # a torn write must not stop the restart
    again = AuditLog(str(path))
    assert [e["id"] for e in again.entries()] == [3, 2, 1]
    assert again.record("shutdown", "w", {}, True, "")["id"] == 4


def test_unwritable_file_never_breaks_the_action(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    audit = AuditLog(str(tmp_path / "missing-dir" / "audit.jsonl"))
    with caplog.at_level(logging.ERROR, logger="dashboard.cluster.audit"):
        entry = audit.record("shutdown", "w", {}, True, "sent")
    assert entry["id"] == 1 and audit.entries()[0] == entry
    assert audit.write_errors == 1 and "cannot append to the audit log" in caplog.text


def test_concurrent_records_get_unique_ids_and_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(str(path))

    def work(n: int) -> None:
        for i in range(50):
            audit.record("revoke", f"{n}-{i}", {"x": "y" * 200}, True, "ok")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [json.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines()]
    assert sorted(ids) == list(range(1, 401))
    assert len({e["id"] for e in audit.entries(1000)}) == 400
