"""The bench's modules import against this tree: `make bench` is not run by CI, so a name the dashboard
drops or renames (as `BATCH_MAX` once was) would otherwise surface only when someone measures."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import bench

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent


def test_every_bench_module_imports() -> None:
    # In a child process: bench.capture_app defines a Celery app and tasks, which must not join this
    # process's registries (other tests list an app's tasks).
    names = sorted(m.name for m in pkgutil.iter_modules(bench.__path__))
    code = f"import importlib\nfor n in {names!r}:\n    importlib.import_module('bench.' + n)\n"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
