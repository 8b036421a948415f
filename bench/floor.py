"""`python -m bench.floor URL COUNTER_FILE`: the floor, a bare consumer of the event stream.

It psubscribes to `/0.celeryev/*` with redis-py (hiredis' parser when installed, as the dashboard's
reader) and for every message does what any consumer must: orjson-parses the kombu envelope,
base64-decodes the body and orjson-parses it into event dicts; nothing else (no state, no
timestamps, no batching). Its count of events goes into the first 8 bytes of COUNTER_FILE, mapped
in memory, after every message, so the bench reads it without a request to answer; byte 8 is set to
1 once subscribed. What the dashboard reaches divided by what this reaches is how much of the
per-message floor its state, batching and serving cost.
"""

from __future__ import annotations

import binascii
import logging
import mmap
import signal
import struct
import sys

import orjson
import redis
from redis.utils import HIREDIS_AVAILABLE

from .events import CHANNEL_PREFIX

log = logging.getLogger("bench.floor")

COUNTER = struct.Struct("<qq")  # events counted, subscribed flag
SIZE = COUNTER.size


def consume(url: str, counter: mmap.mmap) -> None:
    """Read, decode and count until killed."""
    client = redis.Redis.from_url(url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe(CHANNEL_PREFIX + "*")
    log.info("subscribed; hiredis parser: %s", HIREDIS_AVAILABLE)
    loads, a2b, pack = orjson.loads, binascii.a2b_base64, COUNTER.pack_into
    count = 0
    pack(counter, 0, count, 1)
    for msg in pubsub.listen():
        if msg["type"] != "pmessage":
            continue
        body = loads(a2b(loads(msg["data"])["body"]))
        count += len(body) if isinstance(body, list) else 1
        pack(counter, 0, count, 1)


def main(argv: list[str] | None = None) -> int:
    """The command line: URL COUNTER_FILE."""
    url, path = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), SIZE) as counter:
        consume(url, counter)
    return 0


if __name__ == "__main__":
    sys.exit(main())
