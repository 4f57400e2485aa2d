"""A decorated function in an importable module, called inside a Ray remote function.

It pickles by reference, so the worker imports this module and records the call as a child
of the remote task. (A decorated function of the driver's ``__main__`` is copied by value by
cloudpickle, as a plain function: see docs/process-pools-and-ray.md.)
"""

from __future__ import annotations

import taskscope


@taskscope.task("describe")
def describe(x: int) -> str:
    return f"item {x}"
