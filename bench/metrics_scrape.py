"""`python -m bench.metrics_scrape`: how long a /metrics scrape takes with 100k retained tasks.

50 task names, 5 queues, 10 workers (the shape of a busy cluster), and at the 2000-name cap.
Reports medians over 30 scrapes; asserts nothing (the machine is shared).
"""

from __future__ import annotations

import logging
import statistics
import time

from dashboard import create_app
from dashboard.processes import start_redis, stop_process

log = logging.getLogger("bench")


def _fill(state: object, names: int, tasks: int = 100_000) -> None:
    now = time.time()
    batch = []
    for i in range(tasks):
        t = now - tasks + i
        common = {"uuid": f"t{i}", "hostname": f"w{i % 10}@h", "utcoffset": 0}
        batch += [
            dict(common, type="task-sent", name=f"app.t{i % names}", queue=f"q{i % 5}", timestamp=t, local_received=t),
            dict(common, type="task-received", timestamp=t + 0.1, local_received=t + 0.1),
            dict(common, type="task-started", timestamp=t + 0.2, local_received=t + 0.2),
            dict(common, type="task-succeeded", timestamp=t + 0.5, local_received=t + 0.5, runtime=0.3),
        ]
        if len(batch) > 8000:
            state.events(batch)  # type: ignore[attr-defined]
            batch = []
    state.events(batch)  # type: ignore[attr-defined]


def measure(names: int, url: str) -> tuple[float, int]:
    """(median seconds, bytes) of 30 scrapes of an app holding 100k tasks over `names` task names."""
    app = create_app({"ASYNC_MODE": "threading", "INGEST_ENABLED": False, "BROKER_URL": url})
    try:
        _fill(app.extensions["dashboard"].state, names)
        client = app.test_client()
        size = len(client.get("/metrics").data)  # warm-up, and the one queue read
        times = []
        for _ in range(30):
            started = time.perf_counter()
            client.get("/metrics")
            times.append(time.perf_counter() - started)
        return statistics.median(times), size
    finally:
        app.extensions["dashboard"].stop()


def main() -> None:
    """Print the two figures."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    proc, url = start_redis()
    try:
        for names in (50, 2000):
            median, size = measure(names, url)
            log.info(
                "/metrics, 100k tasks, %d names: median %.1f ms over 30 scrapes, %d bytes", names, median * 1000, size
            )
    finally:
        stop_process(proc)


if __name__ == "__main__":
    main()
