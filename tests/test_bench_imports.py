"""The bench's modules import against this tree: `make bench` is not run by CI, so a name the dashboard
drops or renames (as `BATCH_MAX` once was) would otherwise surface only when someone measures."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import bench

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name", sorted(m.name for m in pkgutil.iter_modules(bench.__path__)))
def test_every_bench_module_imports(name: str) -> None:
    importlib.import_module(f"bench.{name}")
