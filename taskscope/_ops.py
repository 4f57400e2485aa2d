"""The intake's operations: what each queued tuple holds, at which position.

Recording appends one tuple per operation to a client's intake; the dispatcher turns them into
records (taskscope._convert). Every op is ``(code, subject, *fields)``, where the subject is the
task for task ops, the run for run ops and events, and a callable for a control op. The
layouts, one per code:

=============================  ==============================================================
code                           tuple
=============================  ==============================================================
``RUN_START``                  ``(code, run)``
``RUN_END``                    ``(code, run, status, output, error, usage, end_ns)``
``TASK_START``                 ``(code, task)``, or the bare task (see below)
``TASK_END``, ``TASK_END_RAW`` ``(code, task, status, output, error, end_ns, metadata)``
``EVENT``                      ``(code, run, task, type, level, payload, occurred_ns, number)``
``CONTROL``                    ``(code, action)``
=============================  ==============================================================

``TASK_END_RAW`` is a task end whose output (an immutable scalar from the hot path, or a value
taskscope built, such as a model's answer) and metadata, if any, are not yet captured: the
dispatcher captures them. ``error`` is an ``ErrorInfo`` or a ``PendingError``.

A task's start is queued as the bare task handle, not a tuple. When the task completes while
that op is still the intake's last, ``end_completed`` (taskscope._task, and its C twin) marks
the op as the end too instead of queuing an end op: a leaf task costs one op.

Plain tuples, not named ones: an op is made on the caller's thread for every call, and a
tuple is the cheapest object to build and unpack. Code that reads one field uses the index
names below; code that reads them all unpacks in the order above.

``taskscope/_speedups.c`` builds and reads these tuples by position: it mirrors this module,
so a change of layout here is a change there too (tests/test_ops.py holds the Python side).
"""

from __future__ import annotations

# The codes: an op's first item.
RUN_START, RUN_END, TASK_START, TASK_END, EVENT, CONTROL, TASK_END_RAW = range(7)

# Every op.
CODE = 0
SUBJECT = 1  # the task (task ops), the run (run ops, events), the action (control)

# RUN_END
RUN_END_STATUS, RUN_END_OUTPUT, RUN_END_ERROR, RUN_END_USAGE, RUN_END_NS = range(2, 7)

# TASK_END and TASK_END_RAW
TASK_END_STATUS, TASK_END_OUTPUT, TASK_END_ERROR, TASK_END_NS, TASK_END_METADATA = range(2, 7)

# EVENT
EVENT_TASK, EVENT_TYPE, EVENT_LEVEL, EVENT_PAYLOAD, EVENT_OCCURRED_NS, EVENT_NUMBER = range(2, 8)

# How long each kind's tuple is.
LENGTH = {
    RUN_START: 2,
    RUN_END: RUN_END_NS + 1,
    TASK_START: 2,
    TASK_END: TASK_END_METADATA + 1,
    TASK_END_RAW: TASK_END_METADATA + 1,
    EVENT: EVENT_NUMBER + 1,
    CONTROL: 2,
}
