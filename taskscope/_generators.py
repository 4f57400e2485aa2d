"""The generator and async generator wrappers of ``@task`` and ``@run``.

A generator's task spans its iteration (it starts at the first ``next()``), under the run and
task current where the generator was created; its output is the items it yielded, bounded,
or ``reduce(items)``; a failure keeps the items so far (issue 15).
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncGenerator, Callable, Generator
from typing import TYPE_CHECKING, Any

from . import _context
from ._config import settings
from ._scope import Frame, fail, finish
from ._spec import Opener, Spec, processed

if TYPE_CHECKING:
    from ._client import Task

_get_run = _context.get_current_run


class Items:
    """A generator's yielded items, captured as they pass and bounded.

    With ``reduce=`` the items are kept as they are, all of them, for the reducer to see the
    whole stream; its result is the output.
    """

    __slots__ = ("extra", "items", "limit", "raw", "spec")

    def __init__(self, spec: Spec) -> None:
        self.items: list[Any] = []
        self.extra = 0
        self.limit = settings.capturer.limits.max_items
        self.spec = spec
        self.raw: list[Any] | None = [] if spec.reduce is not None else None

    def add(self, item: Any) -> None:
        if not self.spec.capture_output:
            return
        if self.raw is not None:
            self.raw.append(item)
        elif len(self.items) < self.limit:
            self.items.append(self.spec.captured_output(item))
        else:
            self.extra += 1

    def output(self, task: Task | None) -> Any:
        spec = self.spec
        if not spec.capture_output:
            return spec.task_output(task, None)
        if spec.reduce is not None and self.raw is not None:
            return spec.captured_output(processed(spec.reduce, self.raw, "reduce"))
        if self.extra:
            return [*self.items, f"…[truncated {self.extra} items]"]
        return self.items

    def partial(self, task: Task | None) -> Any:
        """The output of a generator that failed: the items so far, None if there were none."""
        if self.spec.capture_output and not self.items and not self.raw:
            return None
        return self.output(task)


def begin_in(origin: contextvars.Context, opener: Opener, captured_input: Any) -> Frame | None:
    """Open a generator's frame under the run and task current where it was created.

    A generator's body runs at each ``next()``, often after the call that made it returned
    (a streamed answer, a FastAPI ``StreamingResponse``): its parent is the task current at
    creation, not at the first ``next()`` (issue 15). Nested tasks see its run as current.
    """
    frame = origin.run(opener.begin, captured_input)
    if frame is not None and frame.task is not None and not frame.owns_run:
        frame.activates_run = _get_run() is not frame.run
    return frame


def named(generator: Any, spec: Spec) -> Any:
    # What a parent that returns this generator records as its output names the generator's
    # task (``<generator object stream-pages ...>``), not this module's wrapper.
    generator.__name__ = generator.__qualname__ = spec.name
    return generator


def generator_wrapper(opener: Opener) -> Callable[..., Any]:
    spec = opener.spec

    def traced(
        generator: Generator[Any, Any, Any], captured_input: Any, origin: contextvars.Context
    ) -> Generator[Any, Any, Any]:
        # The task starts at the first next(): the iteration is the task.
        frame = begin_in(origin, opener, captured_input)
        if frame is None:
            return (yield from generator)
        items = Items(spec)
        to_send: Any = None
        to_throw: BaseException | None = None
        while True:
            tokens = frame.activate()
            try:
                if to_throw is not None:
                    thrown, to_throw = to_throw, None
                    item = generator.throw(thrown)
                else:
                    item = generator.send(to_send)
            except StopIteration as stop:
                frame.deactivate(tokens)
                finish(frame, items.output(frame.task))
                return stop.value
            except BaseException as exc:
                frame.deactivate(tokens)
                fail(frame, exc, items.partial(frame.task))
                raise
            frame.deactivate(tokens)
            items.add(item)
            try:
                to_send = yield item
            except GeneratorExit:  # close(), a break, or garbage collection
                tokens = frame.activate()
                try:
                    generator.close()
                except BaseException as exc:
                    frame.deactivate(tokens)
                    fail(frame, exc, items.partial(frame.task))
                    raise
                frame.deactivate(tokens)
                finish(frame, items.output(frame.task), closed_early=True)
                raise
            except BaseException as exc:  # thrown in by the consumer: pass it on
                to_throw, to_send = exc, None

    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        captured = opener.prepare(instance, args, kwargs)
        origin = contextvars.copy_context()
        return named(traced(wrapped(*args, **kwargs), captured, origin), spec)

    return wrapper


def async_generator_wrapper(opener: Opener) -> Callable[..., Any]:
    spec = opener.spec

    async def traced(
        generator: AsyncGenerator[Any, Any], captured_input: Any, origin: contextvars.Context
    ) -> AsyncGenerator[Any, Any]:
        frame = begin_in(origin, opener, captured_input)
        items = Items(spec)
        to_send: Any = None
        to_throw: BaseException | None = None
        while True:
            tokens = frame.activate() if frame is not None else None
            try:
                if to_throw is not None:
                    thrown, to_throw = to_throw, None
                    item = await generator.athrow(thrown)
                else:
                    item = await generator.asend(to_send)
            except StopAsyncIteration:
                if frame is not None:
                    frame.deactivate(tokens)
                    finish(frame, items.output(frame.task))
                return
            except BaseException as exc:  # CancelledError included: failed, with its type
                if frame is not None:
                    frame.deactivate(tokens)
                    fail(frame, exc, items.partial(frame.task))
                raise
            if frame is not None:
                frame.deactivate(tokens)
                items.add(item)
            try:
                to_send = yield item
            except GeneratorExit:
                tokens = frame.activate() if frame is not None else None
                try:
                    await generator.aclose()
                except BaseException as exc:
                    if frame is not None:
                        frame.deactivate(tokens)
                        fail(frame, exc, items.partial(frame.task))
                    raise
                if frame is not None:
                    frame.deactivate(tokens)
                    finish(frame, items.output(frame.task), closed_early=True)
                raise
            except BaseException as exc:
                to_throw, to_send = exc, None

    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        captured = opener.prepare(instance, args, kwargs)
        origin = contextvars.copy_context()
        return named(traced(wrapped(*args, **kwargs), captured, origin), spec)

    return wrapper
