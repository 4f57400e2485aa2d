"""Per-call cost of taskscope's hot path next to its floors, measured in one process.

Each case is a zero-argument callable that does one call of the kind measured. Cases are
timed in interleaved rounds (every case once per round, in a shuffled order) after a warm-up,
with the garbage collector left on as in a real program, so slow drifts of this shared machine
hit every case alike; the table reports the median and the spread (inter-quartile range) of
the per-call time over the rounds, its ratio to the bare call and to the floor (a contextvar
set+reset pair, the least any context-tracking wrapper does), and each case's overhead (time
minus the bare call) as a ratio to the wrapt pass-through's overhead. Ratios measured in the
same run are the figures to compare; absolute nanoseconds drift between runs.

    python benchmarks/run.py [--rounds 15] [--calls 20000] [--json results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import functools
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import wrapt

import taskscope


class CountingExporter:
    """Receives every record and keeps only a count: the pipeline's real work, no storage."""

    def __init__(self) -> None:
        self.count = 0

    def export(self, batch: Sequence[taskscope.Record]) -> None:
        self.count += len(batch)

    def force_flush(self, timeout: float) -> bool:
        return True

    def shutdown(self) -> None:
        return None


def two(a: int, b: int) -> int:
    return a + b


def none() -> None:
    return None


def passthrough_functools(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def inner(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return inner


@wrapt.decorator
def passthrough_wrapt(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    return wrapped(*args, **kwargs)


var: contextvars.ContextVar[int] = contextvars.ContextVar("bench", default=0)


def contextvar_pair() -> None:
    var.reset(var.set(1))


contexts: dict[Callable[[], Any], contextvars.Context] = {}


class Case:
    def __init__(self, name: str, call: Callable[[], Any], check: Callable[[], bool] | None = None):
        self.name = name
        self.call = call
        self.context = contexts.get(call)  # the context its rounds run in, if not the main one
        self.check = check  # True when the case really recorded something
        self.samples: list[float] = []
        self.calls = 0  # calls per round, calibrated so that every case takes similar time
        # Runs inside the timed region after the calls: the case's background work (delivery
        # to its sink) is part of its cost, and no case leaves work behind for the next one.
        self.settle: Callable[[], Any] = lambda: None


def build_cases(client: taskscope.Client) -> list[Case]:
    task_two = taskscope.task("two")(two)
    task_none = taskscope.task("none")(none)

    @taskscope.task("agen")
    async def async_task(a: int, b: int) -> int:
        return a + b

    @taskscope.task("gen")
    def generator_task(n: int) -> Iterator[int]:
        yield from range(n)

    run = client.start_run(name="bench")
    loop = asyncio.new_event_loop()
    items_per_generator = 100

    context = contextvars.copy_context()
    context.run(lambda: taskscope._context.activate_run(run))

    def in_run(fn: Callable[[], Any]) -> Callable[[], Any]:
        # Marks the call as one to make with the run current: a round of it runs inside a
        # context where the run is active (one context.run per round, not per call).
        contexts[fn] = context
        return fn

    coroutine_call = in_run(lambda: loop.run_until_complete(async_task(1, 2)))

    def bare_coroutine() -> None:
        async def plain(a: int, b: int) -> int:
            return a + b

        loop.run_until_complete(plain(1, 2))

    def generator_per_item() -> None:
        for _ in generator_task(items_per_generator):
            pass

    def with_block() -> None:
        with run.task("block"):
            pass

    def manual() -> None:
        run.start_task("manual").complete()

    def emit() -> None:
        run.emit("bench.tick", {"i": 1})

    def recorded(call: Callable[[], Any]) -> Callable[[], bool]:
        """Valid when one more call, alone, records something that reaches every client's tap."""

        def check() -> bool:
            with taskscope.testing.capture() as cap:
                context = contexts.get(call)
                if context is not None:
                    context.run(call)
                else:
                    call()
            return bool(cap.tasks or cap.events)

        return check

    def measured(name: str, call: Callable[[], Any]) -> Case:
        case = Case(name, call, recorded(call))
        case.settle = client.flush
        return case

    functools_two = passthrough_functools(two)
    wrapt_two = passthrough_wrapt(two)
    return [
        Case("bare call", lambda: two(1, 2)),
        Case("functools.wraps pass-through", lambda: functools_two(1, 2)),
        Case("wrapt pass-through", lambda: wrapt_two(1, 2)),
        Case("contextvar set+reset (floor)", contextvar_pair),
        measured("@task, 2 args + return, in a run", in_run(lambda: task_two(1, 2))),
        measured("@task, no args, in a run", in_run(task_none)),
        Case("bare coroutine via run_until_complete", bare_coroutine),
        measured("@task async, in a run", coroutine_call),
        measured(
            f"@task generator, per item ({items_per_generator} items)", in_run(generator_per_item)
        ),
        measured("with run.task()", with_block),
        measured("manual start_task + complete", manual),
        measured("run.emit", emit),
    ]


def off_cases() -> list[Case]:
    taskscope.configure(auto_run=False)
    outside = taskscope.task("outside")(two)
    unsampled = taskscope.Client([CountingExporter()], sample_rate=0.0)
    dead_run = unsampled.start_run()
    in_unsampled = taskscope.task("unsampled")(two)
    context = contextvars.copy_context()
    context.run(lambda: taskscope._context.activate_run(dead_run))

    def records_nothing(call: Callable[[], Any]) -> Callable[[], bool]:
        def check() -> bool:
            with taskscope.testing.capture() as cap:
                call()
            return not (cap.runs or cap.tasks or cap.events)

        return check

    def off(name: str, call: Callable[[], Any]) -> Case:
        return Case(name, call, records_nothing(call))

    return [
        off("off: @task outside a run, auto_run=False", lambda: outside(1, 2)),
        off("off: @task in an unsampled run", lambda: context.run(in_unsampled, 1, 2)),
    ]


def measure(cases: list[Case], rounds: int, calls: int, round_seconds: float = 0.05) -> None:
    """Interleaved rounds; each round of a case = its calls plus its settle, timed together."""

    def timed_round(case: Case, count: int) -> float:
        def loop() -> None:
            call = case.call
            for _ in range(count):
                call()

        started = time.perf_counter_ns()
        if case.context is not None:
            case.context.run(loop)
        else:
            loop()
        case.settle()
        return (time.perf_counter_ns() - started) / count

    for case in cases:  # warm-up, then calibrate: slow peers get fewer calls per round
        per_call = timed_round(case, 200)
        case.calls = max(20, min(calls, int(round_seconds * 1e9 / max(per_call, 1.0))))
    for _ in range(rounds):
        order = cases[:]
        random.shuffle(order)
        for case in order:
            case.samples.append(timed_round(case, case.calls))


def report(cases: list[Case], per_item: dict[str, int]) -> list[dict[str, Any]]:
    medians = {c.name: statistics.median(c.samples) for c in cases}
    bare = medians["bare call"]
    floor = medians["contextvar set+reset (floor)"]
    wrapt_overhead = medians["wrapt pass-through"] - bare
    rows = []
    for case in cases:
        median = medians[case.name] / per_item.get(case.name, 1)
        quartiles = statistics.quantiles(case.samples, n=4)
        spread = (quartiles[2] - quartiles[0]) / per_item.get(case.name, 1)
        valid = case.check() if case.check else True
        rows.append(
            {
                "case": case.name,
                "median_ns": round(median, 1),
                "iqr_ns": round(spread, 1),
                "x_bare": round(median / bare, 2),
                "x_floor": round(median / floor, 2),
                "overhead_x_wrapt": round((median - bare) / wrapt_overhead, 2),
                "valid": valid,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument(
        "--calls",
        type=int,
        default=3_000,
        help="most calls per case per round (kept under the queue bound, so nothing is dropped)",
    )
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/hot_path.json"))
    parser.add_argument("--no-peers", action="store_true", help="skip the other libraries")
    args = parser.parse_args(argv)

    sink = CountingExporter()
    client = taskscope.Client([sink])
    cases = build_cases(client) + off_cases()
    if not args.no_peers:
        sys.path.insert(0, str(Path(__file__).parent))
        import peers

        for name, call, recorded in peers.available():
            case = Case(name, call, lambda recorded=recorded: recorded() > 0)
            case.settle = recorded  # flushes the peer's own pipeline
            cases.append(case)
    measure(cases, args.rounds, args.calls)
    delivered_all = client.flush(30)
    per_item = {c.name: 100 for c in cases if "per item" in c.name}
    rows = report(cases, per_item)

    print(
        f"taskscope {taskscope.__version__}, Python {platform.python_version()}, "
        f"{platform.machine()}, {os.cpu_count()} cores; {args.rounds} rounds × {args.calls} calls; "
        f"hot path in {taskscope._accel.implementation()}"
    )
    print()
    print(
        "| case | median ns/call | IQR ns | × bare | × floor | overhead ÷ wrapt overhead | valid |"
    )
    print("|---|---:|---:|---:|---:|---:|---|")
    for row in rows:
        print(
            f"| {row['case']} | {row['median_ns']:.0f} | {row['iqr_ns']:.0f} | "
            f"{row['x_bare']:.2f} | {row['x_floor']:.2f} | {row['overhead_x_wrapt']:.2f} | "
            f"{'yes' if row['valid'] else 'INVALID'} |"
        )
    stats = client.stats()
    print()
    print(
        f"records delivered: {sink.count}; dropped: {stats['dropped']}"
        + ("" if delivered_all else " (the pipeline fell behind: figures exclude dropped work)")
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rows": rows, "stats": stats}, indent=2))
    client.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
