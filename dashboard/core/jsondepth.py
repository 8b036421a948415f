"""JSON with a nesting limit: Python's parser recurses once per level, so `[[[[…]]]]` 100,000 deep raises
RecursionError (not ValueError). Every JSON text from outside goes through `loads()` here."""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 32  # nesting levels of a JSON body: every legitimate body here has fewer than five


class JSONTooDeep(ValueError):
    """A JSON text nested deeper than MAX_DEPTH: refused before anything looks at it."""

    def __init__(self, limit: int = MAX_DEPTH) -> None:
        super().__init__(f"the JSON body is nested deeper than {limit} levels")


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether a parsed JSON value nests lists/objects more than `limit` levels (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def loads(text: str | bytes, limit: int = MAX_DEPTH, **kwargs: Any) -> Any:
    """json.loads, refusing (JSONTooDeep) what nests more than `limit` levels instead of recursing into it."""
    try:
        value = json.loads(text, **kwargs)
    except RecursionError:  # hundreds of levels: the parser ran out of stack before we could count
        raise JSONTooDeep(limit) from None
    if isinstance(value, (dict, list)) and too_deep(value, limit):
        raise JSONTooDeep(limit)
    return value
