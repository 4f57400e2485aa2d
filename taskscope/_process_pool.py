"""``taskscope.ProcessPoolExecutor``: work sent to other processes joins the submitter's run.

A worker process has its own context and its own pipeline. Each submitted call carries the
submitter's run and task (``inject``) and runs inside ``attach`` on the worker, so the tasks it
records are children of the task that submitted it, in the same run, exported by the worker's
own exporters (built from the same ``TASKSCOPE_*`` variables, a forked worker's inherited).
The worker flushes after each call: when ``future.result()`` returns, what the call recorded
has reached the worker's exporters (a shared store, say), not only at the worker's exit.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, MutableMapping
from typing import Any, ParamSpec, TypeVar

from ._config import flush
from ._propagation import RUN_ID_HEADER, attach, inject

P = ParamSpec("P")
R = TypeVar("R")

# How long a worker waits for its records to be exported before returning a result anyway.
FLUSH_TIMEOUT = 10.0


def call_attached(
    carrier: MutableMapping[str, str], fn: Callable[..., R], /, *args: Any, **kwargs: Any
) -> R:
    """Run ``fn`` in the run and under the task named in ``carrier``, then flush."""
    try:
        with attach(carrier):
            return fn(*args, **kwargs)
    finally:
        flush(FLUSH_TIMEOUT)


class ProcessPoolExecutor(concurrent.futures.ProcessPoolExecutor):
    """A drop-in ``ProcessPoolExecutor`` whose work is recorded under the submitting task.

    ``fn`` must pickle (a decorated or plain function defined at a module's top level).
    Outside any run, calls are submitted as they are.
    """

    def submit(
        self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[R]:
        carrier = dict(inject())
        if RUN_ID_HEADER not in carrier:
            return super().submit(fn, *args, **kwargs)
        return super().submit(call_attached, carrier, fn, *args, **kwargs)
