"""The generator and async generator wrappers of ``@task`` and ``@run``.

A generator's task spans its iteration (it starts at the first ``next()``), under the run and
task current where the generator was created; its output is the items it yielded, bounded,
or ``reduce(items)``; a failure keeps the items so far (issue 15).
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncGenerator, Callable, Generator
from typing import TYPE_CHECKING, Any, cast

from . import _accel, _context
from ._capture import PLAIN_TYPES
from ._config import settings
from ._scope import Frame, end_returned, fail, fast_run, finish, reset_task, start_task
from ._spec import Opener, Spec, processed

if TYPE_CHECKING:
    from ._client import Run, Task

_get_run = _context.get_current_run
_get_task = _context.get_current_task
_set_task = _context.current_task_var.set
_reset_task = _context.current_task_var.reset


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


def _keeps_plain(items: Items) -> bool:
    """Whether an int, bool or None item is captured as it is (kept without a call)."""
    spec = items.spec
    return (
        items.raw is None
        and spec.capture_output
        and spec.process_output is None
        and settings.capturer.redactor.callback is None
    )


def _short_road(
    generator: Generator[Any, Any, Any], frame: Frame, task: Task, items: Items
) -> Generator[Any, Any, Any]:
    """The loop of ``generator_wrapper`` for a task that only needs to be current at each step.

    Its task is the only thing made current around each ``next()`` (no run to activate, no
    live exporter); items that the capturer keeps as they are (int, bool, None, with no
    redaction callback) are appended without a call. Otherwise the same as the general loop.
    """
    plain = _keeps_plain(items)
    kept, limit = items.items, items.limit
    send, throw = generator.send, generator.throw
    to_send: Any = None
    to_throw: BaseException | None = None
    while True:
        token = _set_task(task)
        try:
            if to_throw is not None:
                thrown, to_throw = to_throw, None
                item = throw(thrown)
            else:
                item = send(to_send)
        except StopIteration as stop:
            reset_task(token, task)
            end_returned(frame.run, task, items.output(task), False)
            return stop.value
        except BaseException as exc:
            reset_task(token, task)
            fail(frame, exc, items.partial(task))
            raise
        try:
            _reset_task(token)
        except ValueError:  # made in another Context: see taskscope._context
            reset_task(token, task)
        if plain and item.__class__ in PLAIN_TYPES and len(kept) < limit:
            kept.append(item)
        else:
            items.add(item)
        try:
            to_send = yield item
        except GeneratorExit:  # close(), a break, or garbage collection
            token = _set_task(task)
            try:
                generator.close()
            except BaseException as exc:
                reset_task(token, task)
                fail(frame, exc, items.partial(task))
                raise
            reset_task(token, task)
            finish(frame, items.output(task), closed_early=True)
            raise
        except BaseException as exc:  # thrown in by the consumer: pass it on
            to_throw, to_send = exc, None


def _frame_loop(
    generator: Generator[Any, Any, Any], frame: Frame, items: Items
) -> Generator[Any, Any, Any]:
    """The general loop: the frame (task, and run when needed) made current at each step."""
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


def _iterate(
    generator: Generator[Any, Any, Any], frame: Frame, items: Items
) -> Generator[Any, Any, Any]:
    """Run ``generator`` inside ``frame``: on the short road when only its task is made current
    (C's ``TaskIter`` steps, or the Python twin ``_short_road``), else the general loop."""
    task = frame.task
    if task is None or frame.activates_run or frame.owns_run or task._live:
        return (yield from _frame_loop(generator, frame, items))
    speedups = _accel.speedups
    if speedups is None:
        return (yield from _short_road(generator, frame, task, items))
    kept = items.items if _keeps_plain(items) else None
    steps = speedups.TaskIter(generator, task, kept, items.limit, items.add, reset_task)
    try:
        value = yield from steps  # each step in C: the task current, the item kept
    except GeneratorExit:  # close(), a break, or garbage collection
        finish(frame, items.output(task), closed_early=True)
        raise
    except BaseException as exc:
        fail(frame, exc, items.partial(task))
        raise
    end_returned(frame.run, task, items.output(task), False)
    return value


def _in_c(opener: Opener, traced: Callable[..., Any], short: bool) -> Callable[..., Any] | None:
    """The C twin of a short-road ``wrapper`` below (``_speedups.TracedCall``), or None."""
    speedups = _accel.speedups
    task_call = getattr(opener, "task_call", None)
    if speedups is None or task_call is None or not short:
        return None
    return cast(
        Callable[..., Any], speedups.TracedCall(task_call, opener.prepare, traced, opener.spec.name)
    )


def generator_wrapper(opener: Opener) -> Callable[..., Any]:
    spec = opener.spec
    name = spec.name
    kind = spec.kind
    # The short road (see _scope): a task, no metadata, its run known at creation.
    short = opener.opens_task and not spec.metadata

    def traced(
        generator: Generator[Any, Any, Any],
        captured_input: Any,
        origin: contextvars.Context,
        run: Run | None,
        parent: Task | None,
    ) -> Generator[Any, Any, Any]:
        # The task starts at the first next(): the iteration is the task.
        if run is not None and run.recording and not run._live:
            task = start_task(run, parent, name, captured_input, None, kind)
            speedups = _accel.speedups
            if speedups is None and _get_run() is run:  # _iterate's Python road, one level up
                return (
                    yield from _short_road(generator, Frame(task, run, False), task, Items(spec))
                )
            if speedups is not None and _get_run() is run:  # _iterate's C road, inline
                items = Items(spec)
                kept = items.items if _keeps_plain(items) else None
                steps = speedups.TaskIter(generator, task, kept, items.limit, items.add, reset_task)
                try:
                    value = yield from steps
                except GeneratorExit:
                    finish(Frame(task, run, False), items.output(task), closed_early=True)
                    raise
                except BaseException as exc:
                    fail(Frame(task, run, False), exc, items.partial(task))
                    raise
                end_returned(run, task, items.output(task), False)
                return value
            frame: Frame | None = Frame(task, run, False, activates_run=_get_run() is not run)
        else:
            frame = begin_in(origin, opener, captured_input)
        if frame is None:
            return (yield from generator)
        return (yield from _iterate(generator, frame, Items(spec)))

    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        captured = opener.prepare(instance, args, kwargs)
        origin = contextvars.copy_context()
        parent = _get_task() if short else None
        run = fast_run(parent) if short else None
        return named(traced(wrapped(*args, **kwargs), captured, origin, run, parent), spec)

    return _in_c(opener, traced, short) or wrapper


def async_generator_wrapper(opener: Opener) -> Callable[..., Any]:
    spec = opener.spec
    name = spec.name
    kind = spec.kind
    short_spec = opener.opens_task and not spec.metadata  # see generator_wrapper

    async def traced(
        generator: AsyncGenerator[Any, Any],
        captured_input: Any,
        origin: contextvars.Context,
        run: Run | None,
        parent: Task | None,
    ) -> AsyncGenerator[Any, Any]:
        if run is not None and run.recording and not run._live:
            started = start_task(run, parent, name, captured_input, None, kind)
            speedups = _accel.speedups
            if speedups is not None and _get_run() is run:  # each step a TaskAsyncIter await
                items = Items(spec)
                kept = items.items if _keeps_plain(items) else None
                steps = speedups.TaskAsyncIter(
                    generator, started, kept, items.limit, items.add, reset_task
                )
                step = steps
                while True:
                    try:
                        item = await step  # the task current while the body runs, item kept
                    except StopAsyncIteration:
                        end_returned(run, started, items.output(started), False)
                        return
                    except BaseException as exc:  # CancelledError included: failed
                        fail(Frame(started, run, False), exc, items.partial(started))
                        raise
                    try:
                        sent = yield item
                    except GeneratorExit:  # aclose(), a break, or garbage collection
                        try:
                            await steps.aclose()
                        except BaseException as exc:
                            fail(Frame(started, run, False), exc, items.partial(started))
                            raise
                        finish(Frame(started, run, False), items.output(started), closed_early=True)
                        raise
                    except BaseException as exc:  # thrown in by the consumer: pass it on
                        step = steps.athrow(exc)
                    else:
                        step = steps if sent is None else steps.asend(sent)
            frame: Frame | None = Frame(started, run, False, activates_run=_get_run() is not run)
        else:
            frame = begin_in(origin, opener, captured_input)
        task: Task | None = frame.task if frame is not None else None
        items = Items(spec)
        # The short road: only the task is made current at each step (see _short_road).
        short = (
            frame is not None
            and task is not None
            and not frame.activates_run
            and not frame.owns_run
            and not task._live
        )
        plain = short and _keeps_plain(items)
        kept, limit = items.items, items.limit

        def enter() -> Any:
            if short:
                return _set_task(task)
            return frame.activate() if frame is not None else None

        def leave(tokens: Any) -> None:
            if short:
                assert task is not None
                reset_task(tokens, task)
            elif frame is not None:
                frame.deactivate(tokens)

        to_send: Any = None
        to_throw: BaseException | None = None
        while True:
            tokens = _set_task(task) if short else enter()
            try:
                if to_throw is not None:
                    thrown, to_throw = to_throw, None
                    item = await generator.athrow(thrown)
                else:
                    item = await generator.asend(to_send)
            except StopAsyncIteration:
                if frame is not None:
                    leave(tokens)
                    finish(frame, items.output(frame.task))
                return
            except BaseException as exc:  # CancelledError included: failed, with its type
                if frame is not None:
                    leave(tokens)
                    fail(frame, exc, items.partial(frame.task))
                raise
            if short:
                try:
                    _reset_task(tokens)
                except ValueError:  # made in another Context: see taskscope._context
                    reset_task(tokens, task)  # type: ignore[arg-type]
                if plain and item.__class__ in PLAIN_TYPES and len(kept) < limit:
                    kept.append(item)
                else:
                    items.add(item)
            elif frame is not None:
                frame.deactivate(tokens)
                items.add(item)
            try:
                to_send = yield item
            except GeneratorExit:
                tokens = enter()
                try:
                    await generator.aclose()
                except BaseException as exc:
                    if frame is not None:
                        leave(tokens)
                        fail(frame, exc, items.partial(frame.task))
                    raise
                if frame is not None:
                    leave(tokens)
                    finish(frame, items.output(frame.task), closed_early=True)
                raise
            except BaseException as exc:
                to_throw, to_send = exc, None

    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        captured = opener.prepare(instance, args, kwargs)
        origin = contextvars.copy_context()
        parent = _get_task() if short_spec else None
        run = fast_run(parent) if short_spec else None
        return named(traced(wrapped(*args, **kwargs), captured, origin, run, parent), spec)

    return _in_c(opener, traced, short_spec) or wrapper
