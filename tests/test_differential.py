"""Random programs of API calls record the same on the C hot path and on its Python twin.

Hypothesis writes programs as data (calls of decorated sync, async, generator and
async-generator functions and methods with positional, keyword and default arguments,
``with`` and ``async with`` blocks, manual ``start_task`` ended by complete/fail/skip or left
open, events, an output or metadata set by hand, exceptions, nesting, a sampled-out run and
the shared no-op task). The whole batch runs once in a fresh interpreter per path (this file is
also the interpreter's script), and each program's results and records are compared: ids are
renamed by order of appearance and times reduced to whether a record ended, so only what the
two paths decide is compared.

``TASKSCOPE_DIFF_EXAMPLES`` sets the batch size (500 by default, as CI runs it).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

EXAMPLES = int(os.environ.get("TASKSCOPE_DIFF_EXAMPLES", "500"))
LEVELS = ["debug", "info", "warn", "error"]
EXCEPTIONS = ["ValueError", "KeyError", "Stop"]
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"

# -- the programs: plain JSON data, so one batch is handed to both interpreters ------------------


def _strategies() -> Any:
    from hypothesis import strategies as st

    secretish = st.sampled_from(
        [
            "sk-4417abcdefabcdef",
            "Bearer tok-4417-abcdef",
            "postgres://ada:pw-4417@db/app",
            "see token=tk-4417",
            "https://example.com/?q=1",
            "hunter2",
        ]
    )
    text = st.one_of(st.text(max_size=12), secretish, st.just("x" * 3000))
    keys = st.one_of(
        st.sampled_from(["a", "api_key", "password", "note", "token", "n"]), st.text(max_size=6)
    )
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        text,
    )

    def containers(inner: Any) -> Any:
        return st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(keys, inner, max_size=4),
            st.builds(lambda items: {"$tuple": items}, st.lists(inner, max_size=3)),
            st.builds(lambda v: {"$thing": v}, inner),
        )

    values = st.recursive(
        st.one_of(scalars, st.builds(lambda b: {"$bytes": b}, st.text(max_size=8))),
        containers,
        max_leaves=8,
    )

    def args_for(name: str) -> Any:
        v = values
        shapes = {
            "pos2": [
                st.tuples(st.tuples(v, v), st.just({})),
                st.tuples(st.tuples(v), st.fixed_dictionaries({"b": v})),
                st.tuples(st.just(()), st.fixed_dictionaries({"a": v, "b": v})),
            ],
            "dflt": [
                st.tuples(st.tuples(v), st.just({})),
                st.tuples(st.tuples(v, v), st.just({})),
                st.tuples(st.tuples(v), st.fixed_dictionaries({}, optional={"b": v, "c": v})),
            ],
            "var": [st.tuples(st.lists(v, max_size=3), st.dictionaries(keys, v, max_size=3))],
            "quiet": [st.tuples(st.tuples(v), st.just({}))],
            "ignored": [st.tuples(st.tuples(v), st.fixed_dictionaries({"secret": v}))],
            "processed": [st.tuples(st.tuples(v), st.fixed_dictionaries({}, optional={"b": v}))],
            "method": [
                st.tuples(st.tuples(v), st.just({})),
                st.tuples(st.tuples(v), st.fixed_dictionaries({"y": v})),
            ],
            "cmethod": [st.tuples(st.tuples(v), st.just({}))],
            "static": [st.tuples(st.tuples(v), st.just({}))],
        }[name]
        wrong = st.tuples(st.lists(v, min_size=4, max_size=5), st.just({}))  # a TypeError
        return st.one_of(*shapes, wrong).map(lambda pair: [list(pair[0]), pair[1]])

    names = ["pos2", "dflt", "var", "quiet", "ignored", "processed", "method", "cmethod", "static"]
    call = st.sampled_from(names).flatmap(
        lambda name: args_for(name).map(lambda a: ["call", name, a[0], a[1]])
    )
    raise_op = st.builds(lambda kind, msg: ["raise", kind, msg], st.sampled_from(EXCEPTIONS), text)
    emit = st.builds(
        lambda t, payload, level: ["emit", t, payload, level],
        st.one_of(st.sampled_from(["step", "tool.call", "note"]), st.text(max_size=8)),
        values,
        st.sampled_from([*LEVELS, "loud"]),
    )
    output = st.builds(lambda v: ["output", v], values)
    off = st.builds(
        lambda end, v: ["off", end, v], st.sampled_from(["complete", "fail", "skip"]), values
    )
    meta = st.builds(lambda k, v: ["meta", k, v], keys, values)
    leaf = st.one_of(call, call, raise_op, emit, output, meta, off)

    def with_bodies(body: Any) -> Any:
        endings = st.sampled_from(["ok", "output", "raise", "skip", "complete", "fail"])
        return st.one_of(
            st.builds(lambda b: ["nest", b], body),
            st.builds(
                lambda a, b, k: ["async", a, b, k], values, body, st.sampled_from(["", *EXCEPTIONS])
            ),
            st.builds(
                lambda n, take, fail_at, b: ["gen", n, take, fail_at, b],
                st.integers(0, 4),
                st.integers(-1, 5),
                st.integers(-1, 4),
                body,
            ),
            st.builds(
                lambda n, take, fail_at, b: ["agen", n, take, fail_at, b],
                st.integers(0, 4),
                st.integers(-1, 5),
                st.integers(-1, 4),
                body,
            ),
            st.builds(
                lambda form, name, inp, b, end, v: ["with", form, name, inp, b, end, v],
                st.sampled_from(["run", "deco", "async"]),
                st.sampled_from(["block", "step"]),
                values,
                body,
                endings,
                values,
            ),
            st.builds(
                lambda name, inp, b, end, v: ["manual", name, inp, b, end, v],
                st.sampled_from(["manual", "job"]),
                values,
                body,
                st.sampled_from(["complete", "fail", "skip", "open", "twice"]),
                values,
            ),
        )

    op = st.recursive(leaf, lambda body: with_bodies(st.lists(body, max_size=4)), max_leaves=12)
    return st.lists(op, min_size=1, max_size=6)


def _collect_programs(count: int) -> list[list[Any]]:
    from hypothesis import HealthCheck, Phase, given, settings

    programs: list[list[Any]] = []

    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(_strategies())
    def collect(program: list[Any]) -> None:
        programs.append(program)

    collect()
    return programs


# -- the interpreter side: run a batch, print each program's normalised outcome -----------------


def _run_batch(programs: list[list[Any]]) -> list[Any]:
    import asyncio
    import contextvars
    import dataclasses
    from concurrent.futures import ThreadPoolExecutor

    import taskscope
    from taskscope.exporters import InMemoryExporter

    class Stop(BaseException):
        """Escapes ``except Exception`` (as KeyboardInterrupt would) without stopping Python."""

    class Thing:
        def __init__(self, value: Any) -> None:
            self.value = value

        def __repr__(self) -> str:
            return f"Thing({self.value!r})"

    errors: dict[str, type[BaseException]] = {"ValueError": ValueError, "KeyError": KeyError}
    errors["Stop"] = Stop

    def decode(value: Any) -> Any:
        if isinstance(value, list):
            return [decode(v) for v in value]
        if isinstance(value, dict):
            if len(value) == 1:
                ((key, inner),) = value.items()
                if key == "$tuple":
                    return tuple(decode(v) for v in inner)
                if key == "$bytes":
                    return inner.encode()
                if key == "$thing":
                    return Thing(decode(inner))
            return {k: decode(v) for k, v in value.items()}
        return value

    @taskscope.task("pos2")
    def pos2(a: Any, b: Any) -> Any:
        return [a, b]

    @taskscope.task("dflt", metadata={"team": "x"})
    def dflt(a: Any, b: Any = 2, *, c: Any = None) -> Any:
        return {"a": a, "b": b, "c": c}

    @taskscope.task("var", kind="tool", tags=["t1"])
    def var(*args: Any, **kwargs: Any) -> Any:
        return {"n": len(args), "keys": sorted(kwargs)}

    @taskscope.task("quiet", capture_input=False, capture_output=False)
    def quiet(a: Any) -> Any:
        return a

    @taskscope.task("ignored", ignore=("secret",))
    def ignored(a: Any, secret: Any = None) -> Any:
        return a

    @taskscope.task(
        "processed",
        process_input=lambda bound: {"keys": sorted(bound)},
        process_output=lambda out: repr(out)[:20],
    )
    def processed(a: Any, b: Any = 0) -> Any:
        return (a, b)

    class Agent:
        @taskscope.task("method")
        def act(self, x: Any, y: Any = 1) -> Any:
            return [x, y]

        @taskscope.task("cmethod")
        @classmethod
        def make(cls, x: Any) -> Any:
            return [cls.__name__, x]

        @staticmethod
        @taskscope.task("static")
        def pure(x: Any) -> Any:
            return x

    agent = Agent()
    callables = {
        "pos2": pos2,
        "dflt": dflt,
        "var": var,
        "quiet": quiet,
        "ignored": ignored,
        "processed": processed,
        "method": agent.act,
        "cmethod": Agent.make,
        "static": Agent.pure,
    }

    @taskscope.task("nest")
    def nest(body: Any) -> Any:
        return run_ops(body)

    @taskscope.task("async")
    async def async_step(a: Any, body: Any, raises: str = "") -> Any:
        await asyncio.sleep(0)
        out = run_ops(body)
        if raises:
            raise errors[raises](f"async {a!r}"[:40])
        return out

    @taskscope.task("gen")
    def gen(n: int, fail_at: int, body: Any) -> Any:
        run_ops(body)
        for i in range(n):
            if i == fail_at:
                raise ValueError(f"gen {i}")
            yield i

    @taskscope.task("agen")
    async def agen(n: int, fail_at: int, body: Any) -> Any:
        run_ops(body)
        for i in range(n):
            await asyncio.sleep(0)
            if i == 1:  # the body's ops again after a suspension, between items
                run_ops(body)
            if i == fail_at:
                raise ValueError(f"agen {i}")
            yield i

    def run_async(make: Any, *args: Any) -> Any:
        # An async op inside an async one: its own loop on a thread, in the caller's context
        # (asyncio.run refuses to nest), joined before the next op.
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(make(*args))
        context = contextvars.copy_context()
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(context.run, lambda: asyncio.run(make(*args))).result()

    def take(items: Any, count: int) -> Any:
        got = []
        try:
            for item in items:
                if len(got) == count:
                    break
                got.append(item)
        finally:
            items.close()
        return got

    async def atake(items: Any, count: int) -> Any:
        # Driven by asend (the value sent is ignored by the body); a take of exactly 1 throws
        # a KeyError in after the first item, which the body does not catch.
        got = []
        try:
            while len(got) < count:
                try:
                    got.append(await items.asend(len(got) or None))
                except StopAsyncIteration:
                    break
                if count == 1:
                    await items.athrow(KeyError("thrown in"))
        finally:
            await items.aclose()
        return got

    def end_block(block: Any, end: str, value: Any) -> None:
        if end == "output":
            block.output = value
        elif end == "raise":
            raise ValueError(f"block {value!r}"[:40])
        elif end == "skip":
            block.skip(f"skip {value!r}"[:20])
        elif end == "complete":
            block.complete(value)
        elif end == "fail":
            block.fail(f"fail {value!r}"[:40])

    async def async_block(name: str, inp: Any, body: Any, end: str, value: Any) -> Any:
        async with taskscope.current_run().task(name, input=inp) as block:
            out = run_ops(body)
            end_block(block, end, value)
        return out

    def run_op(op: list[Any]) -> Any:
        kind = op[0]
        if kind == "call":
            return callables[op[1]](*decode(op[2]), **decode(op[3]))
        if kind == "raise":
            raise errors[op[1]](op[2])
        if kind == "emit":
            return taskscope.emit(op[1], decode(op[2]), op[3])
        if kind == "output":
            taskscope.current_task().output = decode(op[1])
            return None
        if kind == "meta":
            taskscope.current_task().metadata[op[1]] = decode(op[2])
            return None
        if kind == "nest":
            return nest(op[1])
        if kind == "async":
            return run_async(async_step, decode(op[1]), op[2], op[3])
        if kind == "gen":
            return take(gen(op[1], op[3], op[4]), op[2] if op[2] >= 0 else 99)
        if kind == "agen":
            return run_async(lambda: atake(agen(op[1], op[3], op[4]), op[2] if op[2] >= 0 else 99))
        if kind == "with":
            form, name, inp, body, end, value = op[1:]
            inp, value = decode(inp), decode(value)
            if form == "async":
                return run_async(async_block, name, inp, body, end, value)
            scope = (
                taskscope.current_run().task(name, input=inp)
                if form == "run"
                else taskscope.task(name)
            )
            with scope as block:
                out = run_ops(body)
                end_block(block, end, value)
            return out
        if kind == "off":  # a sampled-out run and the no-op task: nothing records, both stay open
            end, value = op[1], decode(op[2])
            noop = contextvars.Context().run(taskscope.current_task)
            run = unsampled.start_run(name="off")
            started = run.start_task("off", input=value)
            for handle in (started, noop):
                if end == "complete":
                    handle.complete(value)
                else:
                    getattr(handle, end)("no")
            with run.task("off-block") as block:
                pass
            run.complete()
            states = [started.status, noop.status, block.status, started.is_recording()]
            return [type(started).__name__, *states]
        if kind == "manual":
            name, inp, body, end, value = op[1:]
            started = taskscope.current_run().start_task(name, input=decode(inp))
            out = run_ops(body)
            if end == "complete":
                started.complete(decode(value))
            elif end == "fail":
                started.fail(f"failed {value!r}"[:40])
            elif end == "skip":
                started.skip("not needed")
            elif end == "twice":
                started.complete(decode(value))
                started.complete(decode(value))
            return out
        raise AssertionError(f"unknown op {kind}")

    def run_ops(ops: list[Any]) -> list[Any]:
        results = []
        for op in ops:
            try:
                results.append(["returned", run_op(op)])
            except (Exception, Stop) as exc:
                results.append(["raised", type(exc).__name__, str(exc)[:200]])
        return results

    memory = InMemoryExporter()
    client = taskscope.Client([memory])
    unsampled = taskscope.Client([memory], sample_rate=0.0)
    outcomes = []
    runs = []
    for number, program in enumerate(programs):
        with client.start_run(name=f"example {number}") as run:
            outcomes.append(run_ops(program))
        runs.append(run.id)
    assert client.flush(timeout=60)
    client.shutdown()
    unsampled.shutdown()

    by_run: dict[str, list[Any]] = {run_id: [] for run_id in runs}
    for record in memory.records:
        by_run[record.id if isinstance(record, taskscope.RunRecord) else record.run_id].append(
            record
        )

    def normalise(records: list[Any]) -> list[Any]:
        # The last snapshot of each run and task (a start and its end may come as one record
        # or as two, by when the dispatcher woke), then events, in sequence order.
        final: dict[str, Any] = {}
        for record in records:
            final[record.id] = record
        names: dict[str, str] = {}

        def rename(value: Any) -> Any:
            return names.setdefault(value, f"id{len(names)}") if value else value

        rows = []
        for record in sorted(
            final.values(), key=lambda r: (type(r).__name__ != "RunRecord", r.seq)
        ):
            row: dict[str, Any] = {"record": type(record).__name__}
            for field in dataclasses.fields(record):
                value = getattr(record, field.name)
                if field.name in ("id", "run_id", "parent_id", "task_id", "parent_run_id"):
                    value = rename(value)
                elif field.name in ("start_ns", "end_ns", "occurred_ns"):
                    continue
                elif field.name == "error" and value is not None:
                    value = dataclasses.asdict(value)
                    value["traceback"] = bool(value["traceback"])
                row[field.name] = value
            if hasattr(record, "end_ns"):
                row["ended"] = record.end_ns is not None
                row["ordered"] = record.end_ns is None or record.end_ns >= record.start_ns
            rows.append(row)
        return rows

    return [
        {"results": outcome, "records": normalise(by_run[run_id])}
        for outcome, run_id in zip(outcomes, runs, strict=True)
    ]


def _main() -> None:
    programs = json.loads(Path(sys.argv[1]).read_text())
    from taskscope import _accel

    outcomes = _run_batch(programs)
    out = {"implementation": _accel.implementation(), "outcomes": outcomes}
    text = json.dumps(out, default=repr, sort_keys=True)
    # Ids inside messages and values (not in id fields): renamed by order of appearance.
    names: dict[str, str] = {}
    text = re.sub(UUID, lambda m: names.setdefault(m[0], f"uuid{len(names)}"), text)
    Path(sys.argv[2]).write_text(text)


# -- the test --------------------------------------------------------------------------------------


def _both(programs: list[list[Any]], where: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    batch = where / "programs.json"
    batch.write_text(json.dumps(programs))
    outcomes = []
    for pure in (False, True):
        out = where / f"out-{int(pure)}.json"
        env = {**os.environ, "TASKSCOPE_PURE_PYTHON": "1" if pure else ""}
        done = subprocess.run(
            [sys.executable, __file__, str(batch), str(out)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-4000:]
        outcomes.append(json.loads(out.read_text(), parse_constant=str))  # NaN == NaN here
    return outcomes[0], outcomes[1]


def _differing(programs: list[list[Any]], where: Path) -> list[int]:
    return _compare(*_both(programs, where))


def _compare(in_c: dict[str, Any], in_python: dict[str, Any]) -> list[int]:
    pairs = zip(in_c["outcomes"], in_python["outcomes"], strict=True)
    return [n for n, (c, p) in enumerate(pairs) if c != p]


def _shrink(program: list[Any], where: Path) -> list[Any]:
    """A smaller program that still differs: drop one op or unwrap one body at a time, trying
    every candidate of a round in one batch."""
    while True:
        candidates = []
        for n, op in enumerate(program):
            candidates.append(program[:n] + program[n + 1 :])
            for body in _bodies(op):
                candidates.append(program[:n] + body + program[n + 1 :])
        candidates = [c for c in candidates if c]
        if not candidates:
            return program
        differing = _differing(candidates, where)
        if not differing:
            return program
        program = min((candidates[n] for n in differing), key=lambda c: len(json.dumps(c)))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_random_programs_record_the_same_on_c_and_python(tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("taskscope._speedups") is None:
        pytest.skip("the C hot path is not built here: there is one path only")
    programs = _collect_programs(EXAMPLES)
    assert len(programs) >= min(EXAMPLES, 400)  # Hypothesis may skip a few duplicates
    in_c, in_python = _both(programs, tmp_path)
    assert in_c["implementation"] == "C"
    assert in_python["implementation"] == "Python"
    differing = _compare(in_c, in_python)
    if differing:
        smallest = _shrink(programs[differing[0]], tmp_path)
        c, p = _both([smallest], tmp_path)
        where = "\n".join(_differences(c["outcomes"][0], p["outcomes"][0])[:12])
        pytest.fail(
            f"{len(differing)} of {len(programs)} programs differ; the smallest found:\n"
            f"{json.dumps(smallest)[:3000]}\nwhere (C | Python):\n{where}"
        )
    # The programs did what they are for: every kind of op ran, and records came out.
    kinds = {op[0] for program in programs for op in _walk(program)}
    assert kinds >= {"call", "raise", "emit", "output", "meta", "nest", "async", "gen"}
    assert kinds >= {"agen", "with", "manual", "off"}
    records = [row for outcome in in_c["outcomes"] for row in outcome["records"]]
    statuses = {row["status"] for row in records if row["record"] == "TaskRecord"}
    assert statuses >= {"completed", "failed", "skipped"}
    assert sum(row["record"] == "EventRecord" for row in records) > 0


def _differences(c: Any, p: Any, path: str = "") -> list[str]:
    """Where two outcomes differ, one line per place (values cut to 300 characters)."""
    if type(c) is not type(p) or not isinstance(c, (dict, list)):
        return [] if c == p else [f"{path or '/'}: {json.dumps(c)[:300]} | {json.dumps(p)[:300]}"]
    if isinstance(c, dict):
        keys = sorted(set(c) | set(p))
        pairs = [(f"{path}/{k}", c.get(k, "<missing>"), p.get(k, "<missing>")) for k in keys]
    else:
        pairs = [(f"{path}[{n}]", a, b) for n, (a, b) in enumerate(zip(c, p, strict=False))]
        if len(c) != len(p):
            pairs.append((f"{path}.length", len(c), len(p)))
    return [line for where, a, b in pairs for line in _differences(a, b, where)]


BODY_AT = {"nest": 1, "async": 2, "gen": 4, "agen": 4, "with": 4, "manual": 3}


def _bodies(op: list[Any]) -> list[list[Any]]:
    """The ops an op runs inside itself (none for a leaf)."""
    at = BODY_AT.get(op[0])
    return [op[at]] if at is not None and op[at] else []


def _walk(ops: list[Any]) -> Any:
    for op in ops:
        yield op
        for body in _bodies(op):
            yield from _walk(body)


if __name__ == "__main__":
    _main()
