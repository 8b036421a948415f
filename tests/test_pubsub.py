"""The event reader's own pub/sub client (dashboard/ingest/pubsub.py) against a real redis-server.

It replaces redis-py's PubSub on the hot path, so it must hand on exactly the bytes redis-py would:
every message, whole, in order, whatever the read boundaries, over RESP2 and RESP3, with a password;
and it must notice a broker that closes the connection or goes silent.
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from typing import Any

import hiredis
import pytest
import redis
from conftest import RedisServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dashboard.ingest import pubsub
from dashboard.ingest.pubsub import PubSubStream, StreamError, connection_socket, payloads
from dashboard.ingest.stream import decode_batch

PATTERN = "/0.celeryev/*"


def read_all(stream: PubSubStream, n: int, timeout: float = 20.0) -> list[bytes]:
    """Read until n payloads have arrived."""
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got.extend(stream.read() or [])
    return got


def sample_payloads() -> list[bytes]:
    """Tiny, empty, binary, CRLF-laden and larger-than-one-read payloads."""
    return [
        b"x",
        b"",
        b"\r\n$5\r\n*3\r\n",
        bytes(range(256)),
        b'{"body": "e30=", "content-type": "application/json"}',
        b"z" * (pubsub.RECV_BYTES * 3 + 17),  # spans several reads
        *(b"m%d" % i for i in range(2_000)),  # many per read
    ]


@pytest.mark.integration
@pytest.mark.parametrize("protocol", [2, 3])
def test_every_message_arrives_whole_and_in_order_as_redis_py_receives_it(
    own_redis: RedisServer, protocol: int
) -> None:
    """Side by side with redis-py's PubSub on the same server: the same payloads, byte for byte."""
    url = f"{own_redis.url}?protocol={protocol}"
    stream = PubSubStream(url, PATTERN)
    stream.open()
    generic = redis.Redis.from_url(url).pubsub(ignore_subscribe_messages=True)
    generic.psubscribe(PATTERN)
    generic.get_message(timeout=1)
    try:
        sent = sample_payloads()
        publisher = redis.Redis.from_url(own_redis.url)
        with publisher.pipeline(transaction=False) as pipe:
            for i, data in enumerate(sent):
                pipe.publish("/0.celeryev/task.multi" if i % 2 else "/0.celeryev/worker.heartbeat", data)
            pipe.execute()
        publisher.publish("/1.celeryev/task.multi", b"another db's channel: not ours")
        got = read_all(stream, len(sent))
        assert got == sent
        theirs: list[bytes] = []
        while len(theirs) < len(sent):
            msg = generic.get_message(timeout=5)
            assert msg is not None, "redis-py stopped receiving"
            theirs.append(msg["data"])
        assert got == theirs
    finally:
        stream.close()
        generic.close()


@pytest.mark.integration
def test_a_password_protected_broker(own_redis: RedisServer) -> None:
    """AUTH is redis-py's: the stream subscribes with the URL's password, and a wrong one is an error."""
    admin = redis.Redis.from_url(own_redis.url)
    admin.config_set("requirepass", "s3cret")
    try:
        good = own_redis.url.replace("redis://", "redis://:s3cret@")
        stream = PubSubStream(good, PATTERN)
        stream.open()
        redis.Redis.from_url(good).publish("/0.celeryev/task.multi", b"hello")
        assert read_all(stream, 1) == [b"hello"]
        stream.close()
        with pytest.raises(redis.AuthenticationError):
            PubSubStream(own_redis.url.replace("redis://", "redis://:wrong@"), PATTERN).open()
    finally:
        redis.Redis.from_url(own_redis.url, password="s3cret").config_set("requirepass", "")


@pytest.mark.integration
def test_a_connection_the_server_closes_is_an_error_not_silence(own_redis: RedisServer) -> None:
    """CLIENT KILL (or a restart) ends the read with StreamError: the reader reconnects on that."""
    stream = PubSubStream(own_redis.url, PATTERN)
    stream.open()
    redis.Redis.from_url(own_redis.url).client_kill_filter(_type="pubsub")
    with pytest.raises(StreamError):
        for _ in range(10):
            stream.read()
    stream.close()


@pytest.mark.integration
def test_a_silent_broker_is_noticed_by_ping(own_redis: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A broker that stops answering (no RST, as behind a dropped NAT entry) fails the read after a PING."""
    monkeypatch.setattr(pubsub, "HEALTH_INTERVAL", 0.5)
    monkeypatch.setattr(pubsub, "POLL_SECONDS", 0.1)
    stream = PubSubStream(own_redis.url, PATTERN)
    stream.open()
    # Idle but healthy: pings are answered and nothing is handed on.
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        assert not stream.read()
    os.kill(own_redis.proc.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(StreamError, match="PING"):
            while time.monotonic() - started < 10:
                stream.read()
        assert time.monotonic() - started < 5
    finally:
        os.kill(own_redis.proc.pid, signal.SIGCONT)
        stream.close()


@pytest.mark.integration
def test_close_from_another_thread_ends_a_blocked_read(own_redis: RedisServer) -> None:
    """Reader.stop() closes the stream while the reader thread waits in recv: it returns at once."""
    stream = PubSubStream(own_redis.url, PATTERN)
    stream.open()
    outcome: list[Any] = []

    def reader() -> None:
        try:
            while True:
                stream.read()
        except StreamError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    time.sleep(0.2)
    started = time.monotonic()
    stream.close()
    thread.join(5)
    assert outcome and time.monotonic() - started < pubsub.POLL_SECONDS + 0.5


@pytest.mark.integration
def test_the_redis_py_socket_this_module_relies_on_exists(own_redis: RedisServer) -> None:
    """The one private name used (`Connection._sock`) still holds the connected socket in this redis-py."""
    conn = redis.Redis.from_url(own_redis.url).connection_pool.make_connection()
    conn.connect()
    try:
        sock = connection_socket(conn)
        sock.sendall(b"*1\r\n$4\r\nPING\r\n")
        sock.settimeout(5)
        assert sock.recv(100) == b"+PONG\r\n"
    finally:
        conn.disconnect()


# -- the parsing, without a server: any split of any stream gives the messages --------------------------
def resp_pmessage(payload: bytes, channel: bytes, push: bool) -> bytes:
    """How Redis frames one pattern message (RESP2 array or RESP3 push)."""
    parts = (b"pmessage", PATTERN.encode(), channel, payload)
    head = b">4\r\n" if push else b"*4\r\n"
    return head + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


ENVELOPE = (
    b'{"body": "W3sidHlwZSI6ICJ0YXNrLXN0YXJ0ZWQiLCAidXVpZCI6ICJhIiwgInRpbWVzdGFtcCI6IDEuMCwgImhvc3RuYW1lIjogInciLCAi'
    b'dXRjb2Zmc2V0IjogMH1d", "content-encoding": "utf-8", "content-type": "application/json", "headers": {}, '
    b'"properties": {"body_encoding": "base64", '
    b'"delivery_info": {"exchange": "celeryev", "routing_key": "task.multi"}}}'
)


@pytest.mark.unit
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    messages=st.lists(st.one_of(st.binary(max_size=300), st.just(ENVELOPE), st.just(b"{garbage")), max_size=40),
    cuts=st.lists(st.integers(min_value=0, max_value=20_000), max_size=30),
    push=st.booleans(),
    pongs=st.integers(min_value=0, max_value=3),
)
def test_any_split_of_the_stream_gives_every_message_and_the_same_events(
    messages: list[bytes], cuts: list[int], push: bool, pongs: int
) -> None:
    """Read boundaries anywhere (mid-header, mid-payload), pongs between messages: the payloads come out
    whole and in order, and decoding them in batches gives what decoding each one alone gives (garbage
    rejected the same way)."""
    stream = b"*3\r\n$10\r\npsubscribe\r\n$13\r\n" + PATTERN.encode() + b"\r\n:1\r\n"
    for i, m in enumerate(messages):
        stream += resp_pmessage(m, b"/0.celeryev/task.multi", push)
        if i < pongs:
            stream += b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"
    bounds = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    parser = hiredis.Reader()
    got: list[bytes] = []
    batches: list[list[bytes]] = []
    for start, end in itertools.pairwise(bounds):
        parser.feed(stream[start:end])
        batch = payloads(parser)
        got.extend(batch)
        if batch:
            batches.append(batch)
    assert got == messages

    def decoded(groups: list[list[bytes]]) -> tuple[list[Any], int]:
        events: list[Any] = []
        rejected = 0
        for group in groups:
            evs, bad = decode_batch(group)
            events += [{k: v for k, v in e.items() if k != "local_received"} if isinstance(e, dict) else e for e in evs]
            rejected += bad
        return events, rejected

    # One message at a time is what redis-py's get_message() loop handed on.
    assert decoded(batches) == decoded([[m] for m in messages])


@pytest.mark.unit
def test_an_error_reply_or_a_broken_stream_is_an_error() -> None:
    """An error reply (e.g. a command refused) or bytes that are not RESP raise, never pass silently."""
    parser = hiredis.Reader()
    parser.feed(b"-NOPERM this user has no permissions\r\n")
    with pytest.raises(StreamError, match="NOPERM"):
        payloads(parser)
    parser = hiredis.Reader()
    parser.feed(b"!!not resp\r\n")
    with pytest.raises(StreamError):
        payloads(parser)
