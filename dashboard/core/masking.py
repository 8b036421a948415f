"""Masking of secrets in task args/kwargs reprs (pure; applied by the state on the way in).

A value is masked when its key contains one of the configured fragments (case-insensitive):
dict and JSON keys (`{'db_password': 'x'}`, `"token": "abc"`) and keyword style inside free text
(`password=hunter2`, `token: abc`). The value becomes the quoted string `'«masked»'` (same quote
character as the value or key it replaces), so a dict repr stays a valid Python literal; a bare
value in free text becomes a bare `«masked»` because it may sit inside a string literal.

Everything is found with regular expressions that never backtrack more than a bounded amount
(possessive quantifiers, bounded key lengths), so time is linear in the text. The common case,
a repr with no fragment in it, costs one precompiled search.
"""

from __future__ import annotations

import re
from collections.abc import Callable

MASK = "«masked»"

_KEY_TAIL = 100  # characters of a quoted key after the fragment (longer keys are not recognised)
_WORD_TAIL = 64  # characters of a keyword-style key after the fragment
# Not secrets, and showing them helps: "password=None" explains a failed login better than a mask.
_UNMASKED_BARE = frozenset(("None", "True", "False", "null", "true", "false"))

# A string literal, possibly a bytes one, up to its closing quote; an unterminated one (a truncated
# repr) runs to the end of the line. Possessive: an unterminated quote is scanned once, not retried.
_STRING = re.compile(r"""[bB]?(?:'(?:[^'\\\n]|\\.)*+'?|"(?:[^"\\\n]|\\.)*+"?)""")
# The value of a quoted (dict or JSON) key: Celery's saferepr does not escape line breaks, so a PEM key
# or any multi-line secret runs on to its closing quote, not to the end of its first line.
_STRING_ML = re.compile(r"""[bB]?(?:'(?:[^'\\]|\\.)*+'?|"(?:[^"\\]|\\.)*+"?)""")
# A bare value: a number, a name, a word of free text; a backslash escape counts as part of it.
# An "Authorization: Bearer xyz" value keeps its scheme word with the credential.
_BARE = re.compile(r"""(?:(?:bearer|basic|token|digest)[ \t]++)?(?:[^\s,;&)}\]'"\\(\[{]|\\.)++""", re.I)
# Brackets and strings, to find where a nested container value ends.
_NESTED = re.compile(r"""'(?:[^'\\]|\\.)*+'?|"(?:[^"\\]|\\.)*+"?|[\[\](){}]""")
_OPEN, _CLOSE = "([{", ")]}"
_MAX_NESTED_TOKENS = 10_000  # a container value longer than this is masked to the end of the text


def _fragments(patterns: str) -> list[str]:
    return [p.strip() for p in patterns.split(",") if p.strip()]


def _compile(fragments: list[str], flags: int) -> re.Pattern[str]:
    # Longest first, so "api_key" wins over "key" when both are configured.
    # "-" and "_" are alike in key names: api_key also matches X-Api-Key and api-key.
    alternation = "|".join(
        re.sub(r"\\-|_", "[-_]", re.escape(f)) for f in sorted(set(fragments), key=len, reverse=True)
    )
    return re.compile(
        rf"(?:{alternation})"
        # 'db_password': … / "token": …  — the rest of a quoted key, its closing quote, a colon.
        rf"""(?:[^'"\\\n]{{0,{_KEY_TAIL}}}+(?P<quote>['"])[ \t]*+:"""
        # password=… / token: …  — the rest of a word, then = or :.
        rf"""|[\w.\-]{{0,{_WORD_TAIL}}}+[ \t]*+[=:])[ \t]*+""",
        flags,
    )


def _container_end(text: str, start: int) -> int:
    """End of the bracketed value opening at `start` (end of text when it never closes: truncated)."""
    depth = 0
    for count, m in enumerate(_NESTED.finditer(text, start)):
        if count > _MAX_NESTED_TOKENS:
            break
        token = m.group()
        if token in _OPEN:
            depth += 1
        elif token in _CLOSE:
            depth -= 1
            if depth <= 0:
                return m.end()
    return len(text)


def _mask_value(text: str, start: int, key_quote: str | None) -> tuple[int, str | None]:
    """Where the value at `start` ends and what replaces it (None: leave it as it is)."""
    if start >= len(text):
        return start, None
    first = text[start]
    if first in "'\"" or (first in "bB" and text[start + 1 : start + 2] in ("'", '"')):
        m = (_STRING if key_quote is None else _STRING_ML).match(text, start)
        assert m is not None  # a quote always starts a (possibly unterminated) string
        quote = text[m.start() + 1] if first in "bB" else first
        return m.end(), f"{quote}{MASK}{quote}"
    if first in _OPEN:
        end = _container_end(text, start)
    else:
        m = _BARE.match(text, start)
        if m is None:  # nothing that looks like a value: a separator right after the key
            return start, None
        if m.group() in _UNMASKED_BARE:
            return m.end(), None
        end = m.end()
        if end < len(text) and text[end] == "(":  # a call like SecretStr('…'): mask its arguments too
            end = _container_end(text, end)
    if key_quote is None:  # keyword style: may be inside a string literal, so no quotes of its own
        return end, MASK
    return end, f"{key_quote}{MASK}{key_quote}"


def make_masker(patterns: str) -> Callable[[str], str] | None:
    """A function masking values of keys matching the comma-separated patterns, or None for no patterns."""
    fragments = [f.lower() for f in _fragments(patterns or "")]
    if not fragments:
        return None
    # Case-insensitive by searching the lowered text: re.IGNORECASE makes Python's regex engine ~8x
    # slower per character, lower() costs ~1 ns per character. A lowered text of another length (a
    # few characters, like "İ", lower to two) has other positions: those go through IGNORECASE.
    on_lowered = _compile(fragments, 0)
    on_original = _compile(fragments, re.IGNORECASE)

    def mask(text: str) -> str:
        """`text` with the value of every secret-looking key replaced by the mask."""
        lowered = text.lower()
        m = on_lowered.search(lowered)
        if m is None:  # the common case: one search over a repr without any secret key
            return text
        secret, scan = (on_lowered, lowered) if len(lowered) == len(text) else (on_original, text)
        if scan is text:
            m = secret.search(text)
        out: list[str] = []
        pos = 0
        while m is not None:
            value_start = m.end()
            end, replacement = _mask_value(text, value_start, m.group("quote"))
            if replacement is not None:
                out.append(text[pos:value_start])
                out.append(replacement)
                pos = end
            m = secret.search(scan, max(end, value_start))
        if not out:
            return text
        out.append(text[pos:])
        return "".join(out)

    return mask


__all__ = ["MASK", "make_masker"]
