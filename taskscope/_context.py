"""The context variables that hold the current run and the current task.

Two variables, one per concern. Entering a run sets both (a run starts with no current task);
entering a task sets only the task. Every set is undone with its token in a ``finally``, so
nesting unwinds on exceptions and each asyncio task and thread sees its own values. Invariant:
the current task, when there is one, belongs to the current run.

A block that starts in one ``contextvars.Context`` may end in another: a ``with`` block or a
decorated coroutine inside a generator whose steps run in different contexts (an async
generator read through ``asyncio.wait_for``, which wraps each ``__anext__`` in a new asyncio
task before Python 3.12; ``next()`` called through ``Context.run``; a coroutine closed by the
garbage collector after its event loop closed). ``ContextVar.reset`` raises ``ValueError``
there, into user code (issue 17). So every undo here goes through ``reset_task`` and
``deactivate_run``, which reset with the token where it was made and, anywhere else, put the
previous value back only if our value is the current one there, and never raise.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._run import Run
    from ._task import Task

current_run_var: ContextVar[Run | None] = ContextVar("taskscope.current_run", default=None)
current_task_var: ContextVar[Task | None] = ContextVar("taskscope.current_task", default=None)

get_current_run = current_run_var.get
get_current_task = current_task_var.get
_set_run = current_run_var.set
_set_task = current_task_var.set
_reset_run = current_run_var.reset
_reset_task = current_task_var.reset
_MISSING = Token.MISSING


# What ``activate_run`` changed, for ``deactivate_run`` to undo: (run token, task token, run).
# A plain tuple, unpacked by name where it is read: a NamedTuple cost 100 ns more per run entry.
RunTokens = tuple[Token[Any], Token[Any], "Run"]


def _previous(token: Token[Any]) -> Any:
    old = token.old_value
    return None if old is _MISSING else old  # both variables default to None


def reset_task(token: Token[Any], task: Any) -> None:
    """Undo ``current_task_var.set(task)`` (which returned ``token``), in any context."""
    try:
        _reset_task(token)
    except ValueError:  # the token was made in another Context
        # Here, our task is current only if this context was copied from the one that set it
        # (an asyncio task created inside the block): put its predecessor back. Any other
        # value here was never ours to change.
        if get_current_task() is task:
            _set_task(_previous(token))


def activate_run(run: Run) -> RunTokens:
    """Make ``run`` current with no current task; returns the tokens for ``deactivate_run``."""
    return _set_run(run), _set_task(None), run


def deactivate_here(tokens: RunTokens) -> bool:
    """Undo ``activate_run`` if it was made in this context; False (nothing changed) if not."""
    run_token, task_token, _ = tokens
    try:
        _reset_task(task_token)
    except ValueError:
        return False
    _reset_run(run_token)  # set together with the task, so in this same context
    return True


def deactivate_run(tokens: RunTokens) -> None:
    """Undo ``activate_run`` in any context (see the module's docstring), without raising."""
    if deactivate_here(tokens):
        return
    run_token, task_token, run = tokens
    if get_current_run() is run:
        _set_task(_previous(task_token))
        _set_run(_previous(run_token))


# The no-op run (taskscope._noop), made current by ``silence``. It is a Run, defined two layers
# up; taskscope/__init__ hands it over with ``use_noop_run`` once it exists.
_noop_run: Run


def use_noop_run(run: Run) -> None:
    """Set the run ``silence`` makes current (called once, by taskscope/__init__)."""
    global _noop_run
    _noop_run = run


def silence() -> RunTokens:
    """Switch recording off in this context (a no-op run is current) until ``unsilence``."""
    return activate_run(_noop_run)


def unsilence(tokens: RunTokens) -> None:
    deactivate_run(tokens)
