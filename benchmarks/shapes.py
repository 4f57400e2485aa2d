"""Every call shape's overhead next to wrapt's pass-through and the OpenTelemetry SDK's (issue 14).

For each shape (sync with 2 positional arguments, 1 argument with a default left out, keyword
arguments, a method, an async function awaited in a running loop, a generator and an async
generator of 10 items, ``with run.task()``, ``async with run.task()``, manual
``start_task(...).complete()``, ``run.emit``) four cases are timed in one process, in
interleaved rounds (``benchmarks/run.py``'s ``measure``): the bare call, a wrapt pass-through
of the same shape, taskscope, and the OpenTelemetry SDK doing the same job (a span per call
with the inputs and output as JSON attributes, as ``peers.py`` sets it up; a plain span for
the blocks, a zero-length span with one attribute for ``emit``). Every round ends by flushing
its sink (taskscope's client, the SDK's ``BatchSpanProcessor``), so delivery is part of the
cost and nothing is dropped. The blocks, manual tasks and ``emit`` have no wrapt equivalent:
their overhead is divided by the wrapt overhead of a no-argument call.

Overhead = median time - the bare call's median time. Figures, not gates: the exit code is
0 whatever they are.

    python benchmarks/shapes.py [--rounds 9] [--calls 2000] [--json out.json]
    TASKSCOPE_PURE_PYTHON=1 python benchmarks/shapes.py   # the pure-Python twin
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import functools
import json
import os
import platform
import statistics
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import wrapt

import taskscope

sys.path.insert(0, str(Path(__file__).parent))
import run as harness  # benchmarks/run.py: the measuring loop

INNER = 10  # awaits (or async-generator loops) per round trip through the event loop
ITEMS = 10  # items per generator


@wrapt.decorator
def passthrough(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    return wrapped(*args, **kwargs)


def two(a: int, b: int) -> int:
    return a + b


def with_default(a: int, b: int = 2) -> int:
    return a + b


def nothing() -> None:
    return None


async def two_async(a: int, b: int) -> int:
    return a + b


def items(n: int) -> Iterator[int]:
    yield from range(n)


async def async_items(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


class Agent:
    def step(self, a: int, b: int) -> int:
        return a + b

    traced_step = taskscope.task("step")(step)
    wrapt_step = passthrough(step)
    otel_step: Any = None  # set once the tracer exists


class OTel:
    """The OpenTelemetry SDK: a TracerProvider, a BatchSpanProcessor, a counting exporter."""

    available = True

    def __init__(self) -> None:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        class Counting(SpanExporter):
            count = 0

            def export(self, spans: Sequence[Any]) -> SpanExportResult:
                Counting.count += len(spans)
                return SpanExportResult.SUCCESS

        self.exporter = Counting()
        self.provider = TracerProvider()
        self.provider.add_span_processor(
            BatchSpanProcessor(self.exporter, max_queue_size=1_000_000)
        )
        self.tracer = self.provider.get_tracer("shapes")

    def flush(self) -> None:
        self.provider.force_flush()

    def traced(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """What an OpenTelemetry user writes to record a call's inputs and output."""
        tracer = self.tracer
        name = fn.__qualname__
        if asyncio.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def coroutine(*args: Any, **kwargs: Any) -> Any:
                with tracer.start_as_current_span(name) as span:
                    span.set_attribute("input.value", json.dumps([args, kwargs]))
                    result = await fn(*args, **kwargs)
                    span.set_attribute("output.value", json.dumps(result))
                    return result

            return coroutine

        @functools.wraps(fn)
        def function(*args: Any, **kwargs: Any) -> Any:
            with tracer.start_as_current_span(name) as span:
                span.set_attribute("input.value", json.dumps([args, kwargs], default=repr))
                result = fn(*args, **kwargs)
                span.set_attribute("output.value", json.dumps(result))
                return result

        return function

    def traced_generator(self, fn: Callable[..., Iterator[Any]]) -> Callable[..., Any]:
        tracer = self.tracer

        @functools.wraps(fn)
        def generator(*args: Any, **kwargs: Any) -> Iterator[Any]:
            with tracer.start_as_current_span(fn.__qualname__) as span:
                span.set_attribute("input.value", json.dumps([args, kwargs]))
                produced = []
                for item in fn(*args, **kwargs):
                    produced.append(item)
                    yield item
                span.set_attribute("output.value", json.dumps(produced))

        return generator

    def traced_async_generator(self, fn: Callable[..., AsyncIterator[Any]]) -> Callable[..., Any]:
        tracer = self.tracer

        @functools.wraps(fn)
        async def generator(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            with tracer.start_as_current_span(fn.__qualname__) as span:
                span.set_attribute("input.value", json.dumps([args, kwargs]))
                produced = []
                async for item in fn(*args, **kwargs):
                    produced.append(item)
                    yield item
                span.set_attribute("output.value", json.dumps(produced))

        return generator


class NoOTel:
    """Stands in for ``OTel`` when the OpenTelemetry SDK is not installed: no OTel cases."""

    available = False
    tracer: Any = None

    class exporter:  # read as otel.exporter.count
        count = 0

    def flush(self) -> None:
        return None

    def traced(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        return fn

    traced_generator = traced_async_generator = traced


class Shape:
    def __init__(self, name: str, per_call: int, reference: str | None) -> None:
        self.name = name
        self.per_call = per_call  # calls of the shape per timed call (event-loop round trips)
        self.reference = reference  # None: wrapt of the same shape; else another shape's wrapt
        self.cases: dict[str, harness.Case] = {}


def build(client: taskscope.Client, otel: OTel | NoOTel) -> list[Shape]:
    run = client.start_run(name="shapes")
    loop = asyncio.new_event_loop()
    context = contextvars.copy_context()

    def enter() -> None:
        taskscope._context.activate_run(run)
        if otel.available:  # the spans' parent, as the run is the tasks'
            from opentelemetry import context as otel_context
            from opentelemetry import trace

            parent_span = otel.tracer.start_span("parent")
            otel_context.attach(trace.set_span_in_context(parent_span))

    context.run(enter)
    tracer = otel.tracer
    task = taskscope.task
    Agent.otel_step = otel.traced(Agent.step)
    agent = Agent()

    shapes: list[Shape] = []

    def shape(
        name: str,
        bare: Callable[[], Any],
        wrapt_call: Callable[[], Any] | None,
        ours: Callable[[], Any],
        theirs: Callable[[], Any],
        per_call: int = 1,
        reference: str | None = None,
    ) -> None:
        made = Shape(name, per_call, reference)
        calls = {"bare": bare, "wrapt": wrapt_call, "taskscope": ours, "otel": theirs}
        for kind, call in calls.items():
            if call is None or (kind == "otel" and not otel.available):
                continue
            harness.contexts[call] = context
            case = harness.Case(f"{name} | {kind}", call)
            if kind == "taskscope":
                case.settle = client.flush
            elif kind == "otel":
                case.settle = otel.flush
            made.cases[kind] = case
        shapes.append(made)

    def sync(name: str, fn: Callable[..., Any], call: Callable[[Callable[..., Any]], Any]) -> None:
        t, w, o = task(fn.__name__)(fn), passthrough(fn), otel.traced(fn)
        shape(name, lambda: call(fn), lambda: call(w), lambda: call(t), lambda: call(o))

    sync("sync, 2 positional", two, lambda f: f(1, 2))
    sync("sync, 1 arg + default left out", with_default, lambda f: f(1))
    sync("sync, keyword args", two, lambda f: f(a=1, b=2))
    shape(
        "method",
        lambda: agent.step(1, 2),
        lambda: agent.wrapt_step(1, 2),
        lambda: agent.traced_step(1, 2),
        lambda: agent.otel_step(1, 2),
    )

    def awaited(fn: Callable[..., Any]) -> Callable[[], Any]:
        async def driver() -> None:
            for _ in range(INNER):
                await fn(1, 2)

        return lambda: loop.run_until_complete(driver())

    shape(
        "async function, awaited",
        awaited(two_async),
        awaited(passthrough(two_async)),
        awaited(task("two_async")(two_async)),
        awaited(otel.traced(two_async)),
        per_call=INNER,
    )

    def drained(fn: Callable[..., Any]) -> Callable[[], Any]:
        return lambda: [None for _ in fn(ITEMS)]

    shape(
        f"generator of {ITEMS} items",
        drained(items),
        drained(passthrough(items)),
        drained(task("items")(items)),
        drained(otel.traced_generator(items)),
    )

    def drained_async(fn: Callable[..., Any]) -> Callable[[], Any]:
        async def driver() -> None:
            for _ in range(INNER):
                async for _item in fn(ITEMS):
                    pass

        return lambda: loop.run_until_complete(driver())

    shape(
        f"async generator of {ITEMS} items",
        drained_async(async_items),
        drained_async(passthrough(async_items)),
        drained_async(task("async_items")(async_items)),
        drained_async(otel.traced_async_generator(async_items)),
        per_call=INNER,
    )
    wrapt_nothing = passthrough(nothing)
    shape(
        "no-arg call (reference)",
        nothing,
        wrapt_nothing,
        task("nothing")(nothing),
        otel.traced(nothing),
    )
    reference = "no-arg call (reference)"

    def block() -> None:
        with run.task("block"):
            pass

    def otel_block() -> None:
        with tracer.start_as_current_span("block"):
            pass

    shape("with run.task()", lambda: None, None, block, otel_block, reference=reference)

    def in_loop(body: Callable[[], Any]) -> Callable[[], Any]:
        async def driver() -> None:
            for _ in range(INNER):
                await body()

        return lambda: loop.run_until_complete(driver())

    async def pass_() -> None:
        return None

    async def async_block() -> None:
        async with run.task("block"):
            pass

    async def otel_async_block() -> None:
        with tracer.start_as_current_span("block"):
            pass

    shape(
        "async with run.task()",
        in_loop(pass_),
        None,
        in_loop(async_block),
        in_loop(otel_async_block),
        per_call=INNER,
        reference=reference,
    )
    shape(
        "manual start_task + complete",
        lambda: None,
        None,
        lambda: run.start_task("manual").complete(),
        lambda: tracer.start_span("manual").end(),
        reference=reference,
    )
    shape(
        "run.emit",
        lambda: None,
        None,
        lambda: run.emit("tick", {"i": 1}),
        lambda: tracer.start_span("tick", attributes={"i": 1}).end(),
        reference=reference,
    )
    return shapes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=20_000, help="most calls per case per round")
    parser.add_argument("--json", type=Path, default=None, help="also write the table here")
    parser.add_argument("--only", default="", help="only shapes whose name contains this")
    args = parser.parse_args(argv)

    sink = harness.CountingExporter()
    client = taskscope.Client([sink], max_queue_size=1_000_000)
    try:
        otel: OTel | NoOTel = OTel()
    except ImportError:
        print("(the OpenTelemetry SDK is not installed: no OTel column; nox -s bench has it)")
        otel = NoOTel()
    shapes = build(client, otel)
    if args.only:
        keep = {"no-arg call (reference)"}
        shapes = [s for s in shapes if args.only in s.name or s.name in keep]
    cases = [case for s in shapes for case in s.cases.values()]
    harness.measure(cases, args.rounds, args.calls)
    client.flush(30)
    otel.flush()
    by_name = {s.name: s for s in shapes}

    def median(s: Shape, kind: str) -> float:
        return statistics.median(s.cases[kind].samples) / s.per_call

    rows = []
    for s in shapes:
        bare = median(s, "bare")
        ours = median(s, "taskscope") - bare
        theirs = median(s, "otel") - bare if "otel" in s.cases else 0.0
        ref = by_name[s.reference] if s.reference else s
        wrapt_overhead = median(ref, "wrapt") - median(ref, "bare")
        rows.append(
            {
                "shape": s.name,
                "bare_ns": round(bare, 1),
                "wrapt_overhead_ns": round(wrapt_overhead, 1),
                "taskscope_overhead_ns": round(ours, 1),
                "otel_overhead_ns": round(theirs, 1),
                "x_wrapt": round(ours / wrapt_overhead, 2),
                "x_otel": round(ours / theirs, 3) if theirs > 0 else None,
            }
        )
    stats = client.stats()
    header = (
        f"taskscope {taskscope.__version__}, Python {platform.python_version()}, "
        f"{os.cpu_count()} cores; {args.rounds} rounds × ≤{args.calls} calls; "
        f"hot path in {taskscope._accel.implementation()}"
    )
    print(header)
    print()
    print("| shape | bare ns | wrapt ovh ns | taskscope ovh ns | OTel ovh ns | ÷ wrapt | ÷ OTel |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        x_otel = row["x_otel"]
        print(
            f"| {row['shape']} | {row['bare_ns']:.0f} | {row['wrapt_overhead_ns']:.0f} | "
            f"{row['taskscope_overhead_ns']:.0f} | {row['otel_overhead_ns']:.0f} | "
            f"{row['x_wrapt']:.2f} | {'-' if x_otel is None else f'{x_otel:.3f}'} |"
        )
    print()
    print(
        f"records delivered: {sink.count}; dropped: {stats['dropped']}; "
        f"OpenTelemetry spans delivered: {otel.exporter.count}"
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"header": header, "rows": rows, "stats": stats}
        args.json.write_text(json.dumps(payload, indent=2))
    client.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
