"""Masking of secrets in task args/kwargs reprs (pure; applied by the state on the way in).

(Skeleton: the security helper fills this in.)
"""
from __future__ import annotations

from typing import Callable


def make_masker(patterns: str) -> Callable[[str], str] | None:
    """A function masking values of keys matching the comma-separated patterns, or None for no patterns."""
    return None
