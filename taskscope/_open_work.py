"""A run belongs to the process that started it: forks, and the end of the process.

A forked child goes on inside its parent's runs and tasks without ending them; a process that
exits (or gets SIGTERM) ends what it started and left open, so nothing stays "running" for ever.
"""

from __future__ import annotations

import itertools
import os
import weakref
from typing import TYPE_CHECKING

from . import _context, _pipeline
from ._model import ErrorInfo

if TYPE_CHECKING:
    from ._run import Run

open_runs: weakref.WeakSet[Run] = weakref.WeakSet()
_joins = itertools.count()
INHERITED = "running in the parent process"  # a forked child's view of the parent's open tasks


def foreign_seq_base() -> int:
    """Where a process numbers its records of a run it did not start (fork, attach).

    Each such handle numbers from a range of its own, (pid + 1) * 2**30 plus 2**24 per handle,
    so numbers never collide with the owner's (below 2**30) nor between processes alive at
    once, and stay below 2**53, exact in JavaScript. They sort after the owner's records.
    """
    return ((os.getpid() & 0x3FFFFF) + 1) << 30 | (next(_joins) & 0x3F) << 24


def _adopt_after_fork() -> None:
    # The child goes on inside the parent's runs and tasks, which the parent still ends: here
    # they must not end (a sys.exit in the child would fail them) nor reuse the parent's
    # sequence numbers. Runs become joined ones; the open tasks of this thread, inherited.
    for run in list(open_runs):
        if run.status == "running" and not run._remote:
            run._remote = True
            run._seq = foreign_seq_base()
    task = _context.get_current_task()
    while task is not None and task.recording:
        if task.status == "running":
            task.status = INHERITED
        task = task.parent


def _fix_ids_before_fork() -> None:
    # Ids are formatted lazily from a per-process prefix, which a child gets anew: the ids the
    # child refers to (its parent task, its run) must be the ones the parent records.
    for run in list(open_runs):
        _ = run.id
    task = _context.get_current_task()
    while task is not None and task.recording:
        _ = task.id
        task = task.parent


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_fix_ids_before_fork, after_in_child=_adopt_after_fork)


def end_open_work(why: str) -> None:
    """The process is going (exit, SIGTERM): nothing it started may stay "running" for ever.

    The tasks open here (the current thread's, where a signal handler runs) fail and the runs
    this process started and left open are cancelled, each with ``why``.
    """
    task = _context.get_current_task()
    while task is not None and task.recording:
        if task.status == "running" and not task.run._remote:
            task._end("failed", None, ErrorInfo(message=why, type="Interrupted"))
        task = task.parent
    for pipeline in _pipeline.all_pipelines():  # the open tasks of other threads, manual ones
        pipeline.interrupt_open_tasks(why)
    for run in list(open_runs):
        if run.status == "running" and not run._remote:
            run._end("cancelled", None, ErrorInfo(message=why, type="cancelled"), None)
