"""The context variables that hold the current run and the current task.

Two variables, one per concern. Entering a run sets both (a run starts with no current task);
entering a task sets only the task. Every set is undone with its token in a ``finally``, so
nesting unwinds on exceptions and each asyncio task and thread sees its own values. Invariant:
the current task, when there is one, belongs to the current run.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._client import Run, Task

current_run_var: ContextVar[Run | None] = ContextVar("taskscope.current_run", default=None)
current_task_var: ContextVar[Task | None] = ContextVar("taskscope.current_task", default=None)

get_current_run = current_run_var.get
get_current_task = current_task_var.get


def activate_run(run: Run) -> tuple[Token[Any], Token[Any]]:
    """Make ``run`` current with no current task; returns the tokens for ``deactivate_run``."""
    return current_run_var.set(run), current_task_var.set(None)


def deactivate_run(tokens: tuple[Token[Any], Token[Any]]) -> None:
    current_task_var.reset(tokens[1])
    current_run_var.reset(tokens[0])


def silence() -> tuple[Token[Any], Token[Any]]:
    """Switch recording off in this context (a no-op run is current) until ``unsilence``."""
    from ._client import NOOP_RUN

    return activate_run(NOOP_RUN)


def unsilence(tokens: tuple[Token[Any], Token[Any]]) -> None:
    deactivate_run(tokens)
