"""Numbers from outside (query strings, form fields, JSON bodies), parsed one way everywhere."""

from __future__ import annotations

import math
from typing import Any


def number(raw: Any, integer: bool) -> float | int | None:
    """A finite number from a JSON number or decimal text (a whole one when `integer`), else None.

    Booleans are refused (JSON true is not 1); "7", " 7 ", 7 and 7.0 are all 7 when `integer`.
    """
    if isinstance(raw, bool):
        return None
    value: float | int
    if isinstance(raw, (int, float)):
        value = raw
    elif isinstance(raw, str):
        text = raw.strip()
        if integer and not (text.isascii() and text.lstrip("-").isdecimal()):  # "²" is a digit int() refuses
            return None
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            return None
    else:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if integer and isinstance(value, float):
        if not value.is_integer():
            return None
        value = int(value)
    return value


def whole_number(raw: Any, low: int, high: int) -> int | None:
    """A whole number within [low, high] (see `number`), else None."""
    value = number(raw, integer=True)
    return value if value is not None and low <= value <= high else None  # type: ignore[return-value]
