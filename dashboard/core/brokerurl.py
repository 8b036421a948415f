"""Broker URLs for display: every secret masked, whatever the URL's shape (pure: no Flask, no I/O).

Celery takes many shapes: `redis://:pw@host:6379/0`, `amqp://user:pw@host//vhost`, options in the query
(`rediss://host:6380/0?ssl_cert_reqs=required&password=…`), `[::1]` hosts, percent-encoded passwords, and
failover lists (`sentinel://:pw@h1:26379;sentinel://:pw@h2:26379`). What is masked:

- the password of the userinfo (`user:***@`), or the whole userinfo when it has no `:` (a lone word
  there may be a token as well as a user name);
- query values whose key holds pass, secret, token, auth, credential or key (case-insensitive); keys
  naming a file or directory (`ssl_keyfile`, `ssl_certfile`, `ssl_ca_certs`) are paths and stay visible
  unless they also hold pass/secret/token/auth (`ssl_keyfile_password`);
- each URL of a `;`-separated list;
- a fragment (`#…`: brokers read none, so it is the rest of a password cut at a `#`), and a query item
  without `=` (options are key=value: it is the rest of a value cut at a raw `&`).

A raw `&` inside a query value followed by `k=v` (`password=ab&c=d`) cannot be told from two options:
percent-encode query values.

A URL that does not parse cleanly (a password with an unencoded `/`, `?`, `#`, `@` or `;`, a host that is
no host, an `@` after the host) is never guessed at: everything from the scheme to its last `@` is masked,
or everything when a `?` comes before that `@` or there is none. Nothing here raises.

`secrets_of` lists what was masked (and its pieces), so that `scrub` can take it out of free text such as
a library's error message: redis-py quotes part of a malformed URL's password in "Port could not be cast
to integer value as '…'".
"""

from __future__ import annotations

import re
from functools import lru_cache
from urllib.parse import unquote, unquote_plus

MASK = "***"
# Shorter fragments are not scrubbed from free text: they would blank out ordinary words and numbers
# (and a 3-character secret is guessed faster than it is read from a log).
MIN_SCRUBBED = 4

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
# host[:port] after the userinfo: a bracketed IPv6 literal or a name/IPv4 address (empty: a unix socket path).
_HOST_PORT = re.compile(r"(?:\[[0-9A-Za-z:.%_-]*\]|[A-Za-z0-9._~%-]*)(?::[0-9]*)?")  # '_': compose service names
_SECRET_WORD = re.compile(r"pass|secret|token|auth|credential", re.IGNORECASE)
_PATH_KEY = re.compile(r"(?:file|path|dir|certs?)$", re.IGNORECASE)
_DELIMITERS = re.compile(r"[:/@;?#&=]+")


class _Unsure(Exception):
    """This part of the URL cannot be split with certainty: mask more, not less."""


class _Findings:
    """What masking one URL found: the secrets (for scrub), and whether any part had to be masked loosely."""

    def __init__(self) -> None:
        self.secrets: list[str] = []
        self.loose = False

    def note(self, text: str) -> None:
        """Remember a masked text, decoded too, and the pieces between its delimiters."""
        for variant in {text, unquote(text), unquote_plus(text)}:
            self.secrets.append(variant)
            self.secrets.extend(_DELIMITERS.split(variant))


def _secret_key(key: str) -> bool:
    """Whether a query key names a secret: `password`, `ssl_password`, `api_key`, but not `ssl_keyfile`."""
    name = unquote_plus(key)
    if _SECRET_WORD.search(name):
        return True
    return "key" in name.lower() and not _PATH_KEY.search(name)


def _mask_query(query: str, found: _Findings) -> str:
    items = []
    for item in query.split("&"):
        key, eq, value = item.partition("=")
        if eq and value and _secret_key(key):
            found.note(value)
            item = f"{key}={MASK}"
        elif not eq and item:
            found.note(item)  # options are key=value: a lone word is the rest of a value cut at a raw '&'
            item = MASK
        items.append(item)
    return "&".join(items)


def _mask_tail(tail: str, found: _Findings) -> str:
    """host:port/path?query after the userinfo: only secret query values are masked."""
    before, question, query = tail.partition("?")
    return f"{before}{question}{_mask_query(query, found)}" if question else tail


def _mask_loose(rest: str, found: _Findings) -> str:
    """A part whose userinfo cannot be told apart: mask up to its last '@', or all of it.

    What follows the last '@' is kept only when no '?' comes before it: else that '@' may sit in a
    query value ("?password=ab@cd"), and what follows it would be part of a secret.
    """
    found.loose = True
    head, at, tail = rest.rpartition("@")
    if at and "?" not in head:
        found.note(head)
        return f"{MASK}@{_mask_tail(tail, found)}"
    found.note(rest)
    return MASK


def _mask_authority(rest: str, found: _Findings) -> str:
    """`rest` is what follows `scheme://`: userinfo@host:port/path?query#fragment."""
    end = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    netloc, tail = rest[:end], rest[end:]
    if "@" in tail:
        # The userinfo went on past a '/', '?' or '#' (unencoded in a password): "redis://u:12?a=b@h" would
        # otherwise read as host u, port 12 and a query a=b. The last '@' of a clean URL ends its netloc.
        raise _Unsure
    userinfo, at, hostport = netloc.rpartition("@")
    if not _HOST_PORT.fullmatch(hostport):
        raise _Unsure  # "redis://:pa;" cut at a ';', "redis://h:port": not a host and a port
    if at:
        user, colon, password = userinfo.partition(":")
        if colon and password:
            found.note(password)
            userinfo = f"{user}:{MASK}"
        elif not colon and userinfo:
            found.note(userinfo)
            userinfo = MASK
        netloc = f"{userinfo}@{hostport}"
    before_fragment, hash_, fragment = tail.partition("#")
    if fragment:
        found.note(fragment)  # brokers read no fragment: a '#' is a password's, cut there
        fragment = MASK
    return f"{netloc}{_mask_tail(before_fragment, found)}{hash_}{fragment}"


def _mask_opaque(rest: str, found: _Findings) -> str:
    """What follows a scheme without '//' ("unix:/tmp/redis.sock?password=…")."""
    if "@" in rest:
        return _mask_loose(rest, found)  # "user:pw@host": a URL without its scheme
    return _mask_tail(rest, found)


def _mask_segment(segment: str, found: _Findings) -> str:
    body = segment.strip()
    if not body:
        return segment
    match = _SCHEME.match(body)
    if match is None:
        raise _Unsure  # no scheme: the piece after a ';' inside a password, or no URL at all
    lead = segment[: len(segment) - len(segment.lstrip())]
    trail = segment[len(segment.rstrip()) :]
    scheme, rest = match.group(1), body[match.end() :]
    if not rest.startswith("//"):
        return f"{lead}{scheme}:{_mask_opaque(rest, found)}{trail}"
    try:
        masked = _mask_authority(rest[2:], found)  # raises before it notes anything
    except _Unsure:
        masked = _mask_loose(rest[2:], found)
    return f"{lead}{scheme}://{masked}{trail}"


def _analyse(url: str) -> tuple[str, tuple[str, ...], bool]:
    """(masked URL, secrets found, whether it parsed cleanly)."""
    found = _Findings()
    try:
        segments = url.split(";")
        masked = ";".join(_mask_segment(s, found) for s in segments)
        if sum(1 for s in segments if s.strip()) > 1 and (found.loose or not _failover_list(segments)):
            # A ';' inside a password splits it into a "list" whose first half may read as a host and a
            # port ("redis://u:1234;abcd@h"): a real failover list is clean URLs of one scheme, with hosts.
            raise _Unsure
    except Exception:  # noqa: BLE001 - a list with a piece that is no URL (or a bug here): hide all but the scheme
        found = _Findings()
        found.loose = True
        match = _SCHEME.match(url.strip())
        rest = url.strip()[match.end() :].lstrip("/") if match else url
        found.note(rest)
        found.note(rest.rpartition("@")[0])
        masked = f"{match.group(1)}://{MASK}" if match else MASK
    secrets = sorted({s for s in found.secrets if len(s) >= MIN_SCRUBBED and s != MASK}, key=len, reverse=True)
    return masked, tuple(secrets), not found.loose


_LIST_MEMBER = re.compile(r"\s*([A-Za-z][A-Za-z0-9+.-]*)://(?:[^/?#@]*@)?(?:\[[^\]/?#@]+\]|[^/?#@:\[\]]+)")


def _failover_list(segments: list[str]) -> bool:
    """Whether every non-empty member is `scheme://[userinfo@]host…`, with one scheme for all."""
    schemes = set()
    for segment in segments:
        if segment.strip():
            match = _LIST_MEMBER.match(segment)
            if match is None:
                return False
            schemes.add(match.group(1).lower())
    return len(schemes) == 1


@lru_cache(maxsize=32)
def _cached(url: str) -> tuple[str, tuple[str, ...], bool]:
    return _analyse(url)


def mask_url(url: str) -> str:
    """The URL with every password and secret-looking query value replaced by ***, for logs and pages."""
    if not isinstance(url, str):
        return MASK
    return _cached(url)[0]


def secrets_of(url: str) -> tuple[str, ...]:
    """What mask_url hides in `url` (whole, decoded, and its pieces of 4+ characters), longest first."""
    return _cached(url)[1] if isinstance(url, str) else ()


def well_formed(url: str) -> bool:
    """Whether `url` parsed cleanly (else mask_url hid more than the secrets: the URL is likely broken)."""
    return isinstance(url, str) and _cached(url)[2]


def scrub(text: str, url: str) -> str:
    """`text` (an error message, a log line) with every secret of the broker URL replaced by ***."""
    for secret in secrets_of(url):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


__all__ = ["MASK", "mask_url", "scrub", "secrets_of", "well_formed"]
