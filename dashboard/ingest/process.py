"""The event reader process: broker I/O and decoding on a core of its own, batches to the dashboard.

Reading the pub/sub stream, decoding kombu envelopes (JSON, base64) and analyzing failures cost
about 40 % of ingest's CPU (bench/README.md: 0.6 of 1.6 s per 100k events of a real worker's
stream). In the web server's process that work would hold the GIL while the gevent hub waits for
it before every socket write, and it would share one core with applying events to the state, so
the dashboard runs `python -m dashboard.ingest.process` as a child process instead: it reads the
broker, decodes, analyzes failed and retried events (`stream.with_analysis`), and sends batches
over a socketpair; the dashboard applies them on its hub in slices between socket writes.

Wire format, both ways: a 4-byte big-endian length, then one JSON object (orjson). The dashboard
sends one config object first; the reader then sends
  {"k": "c", "r": reconnects}                       subscribed (again)
  {"k": "d", "e": error, "r": reconnects}           the stream failed; reconnecting
  {"k": "b", "ev": [...], "m": n, "x": n, "t": at}  events of n envelopes, x undecodable, read at `at`
The reader exits when the dashboard closes its end (or dies: PR_SET_PDEATHSIG); the dashboard
starts a new one when it exits, with the reconnect backoff.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from .stream import Ingest, Reader, batch_frame

log = logging.getLogger(__name__)

HEADER = struct.Struct("!I")
MAX_FRAME = 256 << 20  # a frame longer than this is a broken stream, not a batch
SOCKET_BUFFER = 4 << 20  # bytes the kernel may hold between reader and dashboard (absorbs bursts)
RECV_CHUNK = 256 << 10
STOP_GRACE = 2.0


class FrameError(RuntimeError):
    """The other end sent something that is not a frame of this format."""


def encode_frame(obj: Any) -> bytes:
    """One frame: length prefix and JSON."""
    body = orjson.dumps(obj)
    return HEADER.pack(len(body)) + body


def decode_frame(body: bytes | memoryview) -> Any:
    """The object of one frame's body."""
    return orjson.loads(body)


class FrameBuffer:
    """Reassembles frames from the bytes of a stream socket."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> Iterator[Any]:
        """Add received bytes; yield the frames now complete, decoded one at a time (a burst's decoded
        events are alive one frame at a time, not a whole read's worth)."""
        buf = self._buf
        buf += data
        pos = 0
        try:
            while len(buf) - pos >= HEADER.size:
                (size,) = HEADER.unpack_from(buf, pos)
                if size > MAX_FRAME:
                    raise FrameError(f"frame of {size} bytes")
                end = pos + HEADER.size + size
                if len(buf) < end:
                    break
                body = bytes(buf[pos + HEADER.size : end])
                pos = end
                yield decode_frame(body)
        finally:
            if pos:
                del buf[:pos]


def read_frame(sock: Any, buffer: FrameBuffer) -> Any:
    """Block until one whole frame has arrived (used for the config frame); None at EOF."""
    data = b""
    while True:
        for frame in buffer.feed(data):
            return frame
        data = sock.recv(RECV_CHUNK)
        if not data:
            return None


# -- in the reader process ---------------------------------------------------------------------------
class SocketSink:
    """A Sink that sends every report to the dashboard as a frame."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def subscribed(self, reconnects: int) -> None:
        """The stream is subscribed (again)."""
        self._send({"k": "c", "r": reconnects})

    def failed(self, error: str, reconnects: int) -> None:
        """The stream failed; reconnecting."""
        self._send({"k": "d", "e": error, "r": reconnects})

    def batch(self, events: list[Any], messages: int, rejected: int, at: float) -> None:
        """A decoded batch."""
        self._send(batch_frame(events, messages, rejected, at))

    def _send(self, obj: Any) -> None:
        try:
            self.sock.sendall(encode_frame(obj))
        except OSError:
            # The dashboard is gone (or stopping us): nobody is left to read what we decode.
            os._exit(0)


def _exit_when_parent_closes(sock: socket.socket, reader: Reader) -> None:
    try:
        while sock.recv(4096):
            pass  # the dashboard sends nothing after the config
    except OSError:
        pass
    reader.stop()
    time.sleep(STOP_GRACE)
    os._exit(0)  # the reader did not return in time (a broker connect hanging): leave anyway


def main(argv: list[str] | None = None) -> int:
    """`python -m dashboard.ingest.process FD`: read config from the socket FD, then stream batches on it."""
    args = sys.argv[1:] if argv is None else argv
    sock = socket.socket(fileno=int(args[0]))
    config = read_frame(sock, FrameBuffer())
    if not isinstance(config, dict):
        return 2
    logging.basicConfig(
        level=str(config.get("log_level", "INFO")).upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    reader = Reader(
        config["broker_url"],
        mode=config.get("mode", "auto"),
        reconnect_min=float(config.get("reconnect_min", 0.5)),
        reconnect_max=float(config.get("reconnect_max", 2.0)),
    )
    signal.signal(signal.SIGTERM, lambda *_: reader.stop())
    threading.Thread(target=_exit_when_parent_closes, args=(sock, reader), daemon=True).start()
    reader.run(SocketSink(sock))
    return 0


# -- in the dashboard process ------------------------------------------------------------------------
def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class ReaderProcess:
    """Runs the reader process and feeds its frames to `ingest`; restarts it when it exits.

    `run()` is the feed loop: it belongs where the state is applied (a greenlet on the gevent hub, or
    a thread in threading mode); `wrap_socket` makes its socket cooperative there, `sleep` waits."""

    def __init__(
        self,
        ingest: Ingest,
        *,
        log_level: str = "INFO",
        wrap_socket: Callable[[socket.socket], Any] = lambda s: s,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.ingest = ingest
        self.log_level = log_level
        self.wrap_socket = wrap_socket
        self.sleep = sleep
        self.starts = 0
        self.proc: subprocess.Popen | None = None
        self._sock: Any = None
        self._stopping = False

    def run(self) -> None:
        """Start the reader and apply its frames until stop(); a reader that dies is started again."""
        delay = self.ingest.reconnect_min
        while not self._stopping:
            started = time.monotonic()
            try:
                self._feed(self._start())
                why = f"event reader exited ({self._exit_code()})"
            except Exception as exc:  # noqa: BLE001 - a broken reader must not end ingest
                why = f"event reader failed: {type(exc).__name__}: {exc}"
            self._reap()
            if self._stopping:
                break
            log.warning("%s; starting a new one in %.1fs", why, delay)
            self.ingest.failed(why)
            self.sleep(delay)
            delay = (
                self.ingest.reconnect_min
                if time.monotonic() - started > 60
                else min(delay * 2, self.ingest.reconnect_max)
            )
        self.ingest.stopped()

    def stop(self) -> None:
        """Stop feeding and end the reader process."""
        self._stopping = True
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # the feed loop's recv returns at once
            except OSError:
                pass
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()

    def _start(self) -> Any:
        ours, theirs = socket.socketpair()
        for s in (ours, theirs):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        env = dict(os.environ)
        # The reader imports this package: make it importable from a source checkout too.
        root = str(Path(__file__).resolve().parents[2])  # the directory that holds the dashboard package
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        try:
            self.proc = subprocess.Popen(
                # -P: not the working directory first on sys.path, where another checkout's `dashboard`
                # could shadow the one this process runs (the reader must be the same code).
                [sys.executable, "-P", "-m", "dashboard.ingest.process", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                env=env,
                preexec_fn=_die_with_parent,
            )
        finally:
            theirs.close()
        self.starts += 1
        ingest = self.ingest
        # Secrets travel on the socket, never on the command line (`ps` shows that to everyone).
        ours.sendall(
            encode_frame(
                {
                    "broker_url": ingest.broker_url,
                    "mode": ingest.mode,
                    "reconnect_min": ingest.reconnect_min,
                    "reconnect_max": ingest.reconnect_max,
                    "log_level": self.log_level,
                }
            )
        )
        sock = self._sock = self.wrap_socket(ours)
        return sock

    def _feed(self, sock: Any) -> None:
        buffer = FrameBuffer()
        frame = self.ingest.frame
        while not self._stopping:
            data = sock.recv(RECV_CHUNK)
            if not data:
                return
            for obj in buffer.feed(data):
                frame(obj)

    def _wait(self, seconds: float) -> int | None:
        # Polls with self.sleep: Popen.wait() would block the gevent hub.
        proc = self.proc
        deadline = time.monotonic() + seconds
        while proc is not None and proc.poll() is None and time.monotonic() < deadline:
            self.sleep(0.02)
        return None if proc is None else proc.poll()

    def _exit_code(self) -> str:
        if self.proc is None:
            return "never started"
        code = self._wait(STOP_GRACE)
        if code is None:
            return "closed its socket"
        return f"signal {-code}" if code < 0 else f"code {code}"

    def _reap(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            if self._wait(STOP_GRACE) is None:
                proc.kill()
                self._wait(STOP_GRACE)


if __name__ == "__main__":
    sys.exit(main())
