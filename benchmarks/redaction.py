"""What redaction by value shape costs on the hot path: @task calls that carry strings.

benchmarks/run.py times ``@task`` with int arguments, which never reach the string test. This
times the same call with text arguments and a text result, the kind shape redaction must look
at: innocent text (the common case, which a character test lets through without a regex),
and text with a secret in it (which is scrubbed). Rounds are interleaved, as in run.py. Then
the time to scrub long text: 10,000 characters of this repository's docs (prose with code,
URLs and options in it, as prompts and tool outputs have), and 20,000 characters of hostile text
(long runs that a careless regular expression would take quadratic time over), the size of a
traceback taskscope keeps.

    python benchmarks/redaction.py [--rounds 21] [--calls 3000]
"""

from __future__ import annotations

import argparse
import contextvars
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import taskscope


class CountingExporter:
    """Receives every record and keeps only a count."""

    def __init__(self) -> None:
        self.count = 0

    def export(self, batch: Sequence[taskscope.Record]) -> None:
        self.count += len(batch)

    def force_flush(self, timeout: float) -> bool:
        return True

    def shutdown(self) -> None:
        return None


def greet(name: str, city: str) -> str:
    return f"{name} of {city}"


def connect(dsn: str, note: str) -> str:
    return note


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--calls", type=int, default=3_000)
    args = parser.parse_args(argv)

    client = taskscope.Client([CountingExporter()])
    run = client.start_run(name="bench-redaction")
    context = contextvars.copy_context()
    context.run(lambda: taskscope._context.activate_run(run))
    task_greet = taskscope.task("greet")(greet)
    task_connect = taskscope.task("connect")(connect)
    cases: dict[str, Callable[[], Any]] = {
        "@task, 2 innocent str args + str return": lambda: task_greet(
            "Ada Lovelace", "London, the capital"
        ),
        "@task, a DSN with a password + str return": lambda: task_connect(
            "postgres://ada:hunter2@db.internal:5432/app", "connected"
        ),
        "@task, 2 int args + return (run.py's case)": lambda: task_two(1, 2),
    }
    task_two = taskscope.task("two")(lambda a, b: a + b)
    samples: dict[str, list[float]] = {name: [] for name in cases}

    def timed(call: Callable[[], Any], count: int) -> float:
        def loop() -> None:
            for _ in range(count):
                call()

        started = time.perf_counter_ns()
        context.run(loop)
        client.flush()
        return (time.perf_counter_ns() - started) / count

    for call in cases.values():
        timed(call, 200)
    for _ in range(args.rounds):
        order = list(cases.items())
        random.shuffle(order)
        for name, call in order:
            samples[name].append(timed(call, args.calls))

    print(
        f"taskscope {taskscope.__version__}, Python {platform.python_version()}, "
        f"{os.cpu_count()} cores; {args.rounds} rounds × {args.calls} calls; "
        f"hot path in {taskscope._accel.implementation()}"
    )
    print()
    print("| case | median ns/call | IQR ns |")
    print("|---|---:|---:|")
    for name, values in samples.items():
        quartiles = statistics.quantiles(values, n=4)
        print(f"| {name} | {statistics.median(values):.0f} | {quartiles[2] - quartiles[0]:.0f} |")
    client.shutdown()

    redactor = taskscope.Redactor()
    docs = Path(__file__).resolve().parent.parent / "docs"
    size = 20_000
    hostile = {
        "docs/decisions.md, first 10,000 chars": (docs / "decisions.md").read_text()[:10_000],
        "docs/capture-and-redaction.md, first 10,000": (
            docs / "capture-and-redaction.md"
        ).read_text()[:10_000],
        "a.a.a.a… then ://": "a." * (size // 2) + "://",
        "x://a:x://a:…": "x://a:" * (size // 6),
        "a-a-a-a… then =": "a-" * (size // 2) + "=",
        "token=x token=x …": "token=x " * (size // 8),
        "password=[[[[…": "password=" + "[" * size,
        "('k', 'a ('k', 'a …": "('k', 'a " * (size // 9),
    }
    print()
    print("| long text (hostile: 20,000 chars) | ms to scrub, best of 5 |")
    print("|---|---:|")
    for name, text in hostile.items():
        best = []
        for _ in range(5):
            started = time.perf_counter_ns()
            redactor.scrub_text(text)
            best.append(time.perf_counter_ns() - started)
        print(f"| {name} | {min(best) / 1e6:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
