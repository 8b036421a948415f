"""The GC policy: long-lived objects leave the collector's reach; cyclic garbage is still freed."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from dashboard.ingest.gcpolicy import GcPolicy

pytestmark = pytest.mark.unit


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """Leave the test process's collector as it was."""
    yield
    gc.unfreeze()


class Node:
    """An object that can sit in a reference cycle."""

    def __init__(self) -> None:
        self.other: Node | None = None


def test_survivors_are_frozen_so_full_collections_stay_small(unfrozen: None) -> None:
    policy = GcPolicy(freeze_every=0.0, full_every=3600)
    records = [Node() for _ in range(50_000)]  # long-lived state
    policy.tick()
    assert gc.get_freeze_count() >= len(records)
    gc.collect()
    assert len(gc.get_objects()) < 50_000, "a full collection no longer walks the frozen records"


def test_cycles_frozen_while_alive_are_freed_by_the_periodic_full_pass(unfrozen: None) -> None:
    policy = GcPolicy(freeze_every=0.0, full_every=3600)
    a, b = Node(), Node()
    a.other, b.other = b, a
    probe = weakref.ref(a)
    policy.tick()  # frozen while alive
    del a, b
    gc.collect()
    assert probe() is not None, "frozen garbage waits for the full pass"
    policy.full_every = 0.0
    policy.tick()
    assert probe() is None and policy.full_collections == 1
