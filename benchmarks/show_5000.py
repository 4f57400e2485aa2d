"""How long ``taskscope show`` takes on a 5,000-task run (target: under a second).

Records a run of 4 phases x 1,249 steps (+ the 4 phases = 5,000 tasks, 4,996 events) through a
real client into a temporary store, then times, best of five:

- ``show`` in-process: opening the store, loading the run, building and writing the timeline;
- ``python -m taskscope show latest``: the same from a fresh interpreter, as a user types it.

Run with ``python benchmarks/show_5000.py``.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from big_run import record

from taskscope._cli import main as cli_main


def best_of(runs: int, action: object) -> float:
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        action()  # type: ignore[operator]
        timings.append(time.perf_counter() - started)
    return min(timings)


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "bench.db"
        started = time.perf_counter()
        record(path)
        print(f"recorded 5,000 tasks in {time.perf_counter() - started:.2f} s")

        def show_in_process() -> None:
            with contextlib.redirect_stdout(io.StringIO()) as out:
                assert cli_main(["show", "latest", "--db", str(path)]) == 0
            assert "5,000 tasks (5,000 completed) · 4,996 events" in out.getvalue()
            assert "… 1,229 more (1,229 completed)" in out.getvalue()

        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}

        def show_command() -> None:
            subprocess.run(
                [sys.executable, "-m", "taskscope", "show", "latest", "--db", str(path)],
                check=True,
                stdout=subprocess.DEVNULL,
                env=env,
            )

        inside = best_of(5, show_in_process)
        command = best_of(5, show_command)
        print(f"taskscope show, 5,000 tasks, in-process:           {inside * 1000:.0f} ms")
        print(f"python -m taskscope show latest, 5,000 tasks:      {command * 1000:.0f} ms")
        print("target: under 1,000 ms:", "met" if max(inside, command) < 1.0 else "MISSED")


if __name__ == "__main__":
    main()
