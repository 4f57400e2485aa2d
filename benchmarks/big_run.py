"""The 5,000-task run that the `show` and web UI benchmarks draw.

4 phases x 1,249 steps (+ the 4 phases = 5,000 tasks) and one llm.response event per step
(4,996 events), recorded through a real client into a LocalStore file.
"""

from __future__ import annotations

from pathlib import Path

import taskscope
from taskscope.exporters import LocalStore

PHASES = 4
STEPS = 1_249


def record(path: Path) -> str:
    """Record the run into the store at ``path``; its id."""
    with taskscope.Client([LocalStore(path)]) as client, client.start_run(name="big") as run:
        for phase in range(PHASES):
            with run.task(f"phase-{phase}"):
                for step in range(STEPS):
                    with run.task("step", input={"phase": phase, "step": step}) as task:
                        run.emit_llm_response("stand-in", "ok", usage={"input_tokens": 10})
                        task.output = {"ok": True}
            client.flush()  # keep the queue under its bound: nothing dropped
    return run.id
