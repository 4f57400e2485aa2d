"""Every call shape's overhead counted in CPU instructions, next to wrapt's (issue 14).

``shapes.py`` times each shape; on a shared machine its ratios move by a third between runs.
This counts instead: each case of ``shapes.py`` (the bare call, the wrapt pass-through,
taskscope) runs ``--calls`` times in a child process under valgrind's callgrind, which counts
the instructions every thread executed (the dispatcher's conversion and the delivery to the
sink included, as ``shapes.py`` includes them by flushing). A child that builds the same
shapes and calls nothing is the baseline subtracted from each. Instructions are not time (a
cache miss costs more than an add), but the same code counts the same on any run, so a
change's effect is read without the machine's noise, and the ratio to wrapt's instructions is
the work each shape does beyond a pass-through.

Needs valgrind (Debian's ``valgrind``); several minutes. Figures, not gates: exit code 0.

    python benchmarks/instructions.py [--calls 20000] [--jobs 2] [--only generator]
    TASKSCOPE_PURE_PYTHON=1 python benchmarks/instructions.py   # the pure-Python twin
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
KINDS = ("bare", "wrapt", "taskscope")


def child(shape_name: str, kind: str, calls: int) -> None:
    """In the child: build every shape, call one case ``calls`` times, deliver, stop."""
    sys.path.insert(0, str(HERE))
    import run as harness
    import shapes

    import taskscope

    sink = harness.CountingExporter()
    client = taskscope.Client([sink], max_queue_size=1_000_000)
    built = shapes.build(client, shapes.NoOTel())
    if calls:
        case = next(s for s in built if s.name == shape_name).cases[kind]
        call = case.call

        def loop() -> None:
            for _ in range(calls):
                call()

        (case.context.run(loop) if case.context is not None else loop())
    client.flush(60)
    client.shutdown()


def count(shape_name: str, kind: str, calls: int) -> int:
    """The instructions a child executed, all threads, from callgrind's summary."""
    with tempfile.TemporaryDirectory() as scratch:
        done = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={scratch}/out",
                sys.executable,
                __file__,
                "--child",
                shape_name,
                kind,
                str(calls),
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
            check=False,
        )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"{shape_name} | {kind}: callgrind failed\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--jobs", type=int, default=2, help="children under valgrind at once")
    parser.add_argument("--only", default="", help="only shapes whose name contains this")
    parser.add_argument(
        "--child", nargs=3, metavar=("SHAPE", "KIND", "CALLS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)")
        return 0

    sys.path.insert(0, str(HERE))
    import run as harness
    import shapes

    import taskscope

    probe = shapes.build(taskscope.Client([harness.CountingExporter()]), shapes.NoOTel())
    reference = "no-arg call (reference)"
    wanted = [s for s in probe if args.only in s.name or s.name == reference]
    jobs: dict[tuple[str, str], int] = {}
    work = [(s.name, kind) for s in wanted for kind in KINDS if kind in s.cases]
    with ThreadPoolExecutor(args.jobs) as pool:
        baseline = pool.submit(count, reference, "bare", 0)
        futures = {item: pool.submit(count, item[0], item[1], args.calls) for item in work}
        base = baseline.result()
        for item, future in futures.items():
            jobs[item] = future.result() - base

    def per_call(name: str, kind: str) -> float:
        shape = next(s for s in wanted if s.name == name)
        return jobs[(name, kind)] / args.calls / shape.per_call

    print(
        f"taskscope {taskscope.__version__}, Python {platform.python_version()}; instructions "
        f"per call (all threads, delivery included), {args.calls} calls per case; hot path in "
        f"{taskscope._accel.implementation()}"
    )
    print()
    print("| shape | bare | wrapt overhead | taskscope overhead | ÷ wrapt |")
    print("|---|---:|---:|---:|---:|")
    for shape in wanted:
        ref = shape.reference or shape.name
        bare = per_call(shape.name, "bare")
        ours = per_call(shape.name, "taskscope") - bare
        theirs = per_call(ref, "wrapt") - per_call(ref, "bare")
        print(f"| {shape.name} | {bare:,.0f} | {theirs:,.0f} | {ours:,.0f} | {ours / theirs:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
