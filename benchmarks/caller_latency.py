"""How long a record call can take on the caller's thread while the exporter is hung.

Records 50,000 events into a 10,000-record queue whose only exporter never returns, timing
every call, and prints the median, the 99.9th percentile and the slowest call, with the drop
count. The caller must never wait on the exporter: the slowest call stays in the
microseconds-to-a-few-milliseconds range (a thread switch), however long the exporter hangs.

    python benchmarks/caller_latency.py
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Sequence

import taskscope


class HungExporter:
    def __init__(self) -> None:
        self.release = threading.Event()

    def export(self, batch: Sequence[taskscope.Record]) -> None:
        self.release.wait()

    def force_flush(self, timeout: float) -> bool:
        return True

    def shutdown(self) -> None:
        return None


def main() -> None:
    hung = HungExporter()
    client = taskscope.Client([hung], max_queue_size=10_000)
    run = client.start_run(name="latency")
    timings: list[int] = []
    clock = time.perf_counter_ns
    for index in range(50_000):
        level = "error" if index % 100 == 0 else "info"
        started = clock()
        run.emit("tick", {"index": index}, level=level)
        timings.append(clock() - started)
    client.flush(timeout=0.5)
    timings.sort()
    stats = client.stats()
    print("caller-thread time per run.emit against a hung exporter (50,000 calls):")
    print(f"  median {statistics.median(timings) / 1000:.1f} µs")
    print(f"  p99.9  {timings[int(len(timings) * 0.999)] / 1000:.1f} µs")
    print(f"  max    {timings[-1] / 1e6:.2f} ms")
    print(f"  recorded {stats['recorded']}, dropped {stats['dropped']}")
    hung.release.set()
    client.shutdown(timeout=5)


if __name__ == "__main__":
    main()
