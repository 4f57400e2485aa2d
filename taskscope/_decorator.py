"""``@task`` and ``@run``: decide everything at decoration time, then pick one thin wrapper.

The wrapper kind (function, coroutine function, generator function, async generator function),
the name, the parameter names and the capture policy are fixed when the decorator is applied;
a call does only what that call needs. Wrappers are ``wrapt`` function wrappers, so methods,
classmethods, staticmethods and callable objects bind as they would undecorated, and
``__name__``, ``__doc__``, ``__wrapped__`` and ``inspect.signature`` are those of the function.
"""

from __future__ import annotations

import contextvars
import inspect
import time
from collections.abc import AsyncGenerator, Callable, Generator, Mapping, Sequence
from typing import Any, TypeVar, cast, overload

from . import _accel, _binding, _context
from ._binding import UNBOUND
from ._capture import IMMUTABLE_SCALARS
from ._client import NOOP_RUN, NOOP_TASK, Run, Task
from ._config import settings
from ._convert import TASK_END_RAW, TASK_START
from ._internal import internal_error, warn_once
from ._redact import REDACTED
from ._scope import (
    Frame,
    FrameBlock,
    TaskScope,
    begin_run,
    begin_task,
    close_unfinished,
    fail,
    finish,
    pending_coroutines,
)

F = TypeVar("F", bound=Callable[..., Any])

_time_ns = time.time_ns
_get_task = _context.get_current_task
_get_run = _context.get_current_run
_set_task = _context.current_task_var.set
_reset_task = _context.current_task_var.reset


class _Binder:
    """A call's arguments as ``{parameter: value}``, without ``Signature.bind`` per call."""

    def __init__(self, fn: Any) -> None:
        target = fn.__func__ if isinstance(fn, (classmethod, staticmethod)) else fn
        try:
            parameters = list(inspect.signature(target).parameters.values())
        except (TypeError, ValueError):  # builtins without a signature
            parameters = []
        kinds = inspect.Parameter
        positional = [
            p.name
            for p in parameters
            if p.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD)
        ]
        self.positional = tuple(positional)
        self.positional_count = len(positional)
        self.after_first = tuple(positional[1:])  # when wrapt passes self/cls as ``instance``
        self.var_positional = next(
            (p.name for p in parameters if p.kind is kinds.VAR_POSITIONAL), None
        )
        self.var_keyword = next((p.name for p in parameters if p.kind is kinds.VAR_KEYWORD), None)
        self.keywords = frozenset(
            p.name
            for p in parameters
            if p.kind in (kinds.POSITIONAL_OR_KEYWORD, kinds.KEYWORD_ONLY)
        )
        self.defaults = tuple((p.name, p.default) for p in parameters if p.default is not p.empty)
        self.names = tuple(p.name for p in parameters)

    def bind(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        names = self.after_first if instance is not None and self.positional else self.positional
        bound = dict(zip(names, args, strict=False))
        if len(args) > len(names):
            extra = list(args[len(names) :])
            bound[self.var_positional or "args"] = extra
        if kwargs:
            var_keyword = self.var_keyword
            if var_keyword is None:
                bound.update(kwargs)
            else:
                keywords = self.keywords
                rest = {}
                for key, value in kwargs.items():
                    if key in keywords:
                        bound[key] = value
                    else:
                        rest[key] = value
                if rest:
                    bound[var_keyword] = rest
        if self.defaults:
            for key, default in self.defaults:
                if key not in bound:
                    bound[key] = default
        return bound


class _Spec:
    """Everything about a decorated callable that does not change between calls."""

    def __init__(
        self,
        fn: Any,
        *,
        name: str | None,
        capture_input: bool,
        capture_output: bool,
        ignore: tuple[str, ...],
        process_input: Callable[[dict[str, Any]], Any] | None,
        process_output: Callable[[Any], Any] | None,
        metadata: Mapping[str, Any] | None,
        kind: str,
        tags: tuple[str, ...] = (),
        enabled: bool | Callable[[], bool] = True,
        reduce: Callable[[list[Any]], Any] | None = None,
    ) -> None:
        self.name = name or _callable_name(fn)
        self.capture_input = capture_input
        self.capture_output = capture_output
        self.ignore = ignore
        self.process_input = process_input
        self.process_output = process_output
        self.metadata = _with_tags(metadata, tags) if kind != "run" else _copy(metadata)
        self.kind = kind
        self.tags = tags
        self.enabled = enabled
        self.reduce = reduce
        self.binder = _Binder(fn)
        self._redactor: Any = None
        self._capturer: Any = None  # set once the fast path is known to be safe
        self._secret_params: tuple[str, ...] = ()

    def captured_input(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not self.capture_input:
            return None
        binder = self.binder
        capturer = settings.capturer
        if (
            capturer is self._capturer
            and not kwargs
            and instance is None
            and len(args) == binder.positional_count
        ):
            # The common call: every parameter passed by position, no secret names, nothing
            # to ignore or process. Captured here, on the caller's thread: handing the raw
            # arguments to the dispatcher instead was measured to cost more in all (another
            # core reading them back), for a little less time here.
            return capturer.arguments(dict(zip(binder.positional, args, strict=True)))
        bound = binder.bind(instance, args, kwargs)
        if self.process_input is not None:
            return capturer.value(_processed(self.process_input, bound, "process_input"))
        for key in self.ignore:
            bound.pop(key, None)
        redactor = capturer.redactor
        if redactor is not self._redactor:  # parameter names are checked once per redactor
            self._secret_params = tuple(n for n in binder.names if redactor.is_secret_key(n))
            self._redactor = redactor
            simple = not self._secret_params and not self.ignore and self.process_input is None
            self._capturer = capturer if simple and not binder.var_positional else None
        for key in self._secret_params:
            if key in bound:
                bound[key] = REDACTED
        return capturer.arguments(bound)

    def captured_output(self, value: Any) -> Any:
        if not self.capture_output:
            return None
        if self.process_output is not None:
            value = _processed(self.process_output, value, "process_output")
        return settings.capturer.value(value)

    def task_output(self, task: Task | None, value: Any) -> Any:
        """What a task that returned ``value`` records: the value, or what the body set.

        With ``capture_output=False`` the return value is not read, but an output the body
        set itself (``current_task().output = ...``) is recorded, as in a ``with`` block.
        """
        if self.capture_output:
            return self.captured_output(value)
        manual = task.output if task is not None else None
        return settings.capturer.value(manual) if manual is not None else None


def _copy(metadata: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return dict(metadata) if metadata else None


def _with_tags(metadata: Mapping[str, Any] | None, tags: tuple[str, ...]) -> dict[str, Any] | None:
    """A task's metadata with its tags under ``"tags"``: task records have no tags field."""
    merged = _copy(metadata)
    if tags:
        merged = merged or {}
        merged["tags"] = [*merged.get("tags", ()), *tags]
    return merged


def _processed(processor: Callable[[Any], Any], value: Any, what: str) -> Any:
    try:
        return processor(value)
    except Exception as exc:
        warn_once(
            f"{what}:{getattr(processor, '__qualname__', processor)!s}",
            "taskscope: %s raised %s; the value is recorded as a marker and the call goes on.",
            what,
            type(exc).__name__,
        )
        return f"<{what} raised {type(exc).__name__}>"


def _callable_name(fn: Any) -> str:
    target = getattr(fn, "__func__", fn)
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None)
    if name is None:
        name = type(target).__qualname__
    return str(name)


def _callable_kind(fn: Any) -> str:
    target = fn.__func__ if isinstance(fn, (classmethod, staticmethod)) else fn
    # A callable object is classified by its class's __call__ (e.g. an ``async def __call__``).
    call_method = vars(type(target)).get("__call__") if not inspect.isroutine(target) else None
    for candidate in (target, call_method):
        if candidate is None:
            continue
        if inspect.isasyncgenfunction(candidate):
            return "async_generator"
        if inspect.iscoroutinefunction(candidate):
            return "coroutine"
        if inspect.isgeneratorfunction(candidate):
            return "generator"
        if inspect.isfunction(candidate) or inspect.ismethod(candidate):
            break
    return "function"


# -- how a body is opened and closed: a task (the hot path) or a run --------------------------


class _TaskOpener:
    def __init__(self, spec: _Spec) -> None:
        self.spec = spec

    def prepare(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if _get_run() is None and (settings.disabled or not settings.auto_run):
            return None
        return self.spec.captured_input(instance, args, kwargs)

    def begin(self, captured_input: Any) -> Frame | None:
        spec = self.spec
        return begin_task(spec.name, captured_input, spec.metadata, spec.kind)


class _RunOpener:
    def __init__(self, spec: _Spec) -> None:
        self.spec = spec

    def prepare(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if settings.disabled:
            return None
        return self.spec.captured_input(instance, args, kwargs)

    def begin(self, captured_input: Any) -> Frame | None:
        spec = self.spec
        return begin_run(spec.name, captured_input, spec.metadata, spec.tags)


_Opener = _TaskOpener | _RunOpener


def _sync_task_wrapper(spec: _Spec) -> Callable[..., Any]:
    """The hot path: a decorated function called inside a run."""
    generic = _sync_wrapper(_TaskOpener(spec))
    speedups = _accel.speedups
    if speedups is not None:
        return _c_task_wrapper(speedups, spec, generic)
    name = spec.name
    kind = spec.kind
    capture_output = spec.capture_output
    process_output = spec.process_output

    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if instance is UNBOUND:
            instance = None
        parent = _get_task()
        if parent is None:
            run = _get_run()
            if run is None:  # outside any run: a run of its own, or a pass-through
                if settings.disabled or not settings.auto_run:
                    return wrapped(*args, **kwargs)
                return generic(wrapped, instance, args, kwargs)
        else:
            run = parent.run
        if not run.recording:
            return wrapped(*args, **kwargs)
        if run._live:  # a live exporter (OpenTelemetry) needs the frame-based path
            return generic(wrapped, instance, args, kwargs)
        try:
            captured = spec.captured_input(instance, args, kwargs)
            metadata = spec.metadata
            task = Task(
                run, parent, name, captured, dict(metadata) if metadata else None, kind, True
            )
            run._put((TASK_START, task))
        except Exception:
            internal_error("task-start")
            return wrapped(*args, **kwargs)
        token = _set_task(task)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            _reset_task(token)
            task._fail_managed(exc)
            raise
        _reset_task(token)
        try:
            if (
                type(result) in IMMUTABLE_SCALARS
                and capture_output
                and process_output is None
                and task.status == "running"
                and task._skip_reason is None
                and task._metadata is None
            ):
                # Completed with a scalar: handed over as it is, captured off this thread.
                task.status = "completed"
                run._put((TASK_END_RAW, task, "completed", result, None, _time_ns(), None))
            else:
                task._finish_managed(spec.task_output(task, result))
        except Exception:
            internal_error("task-end")
        return result

    return wrapper


def _c_task_wrapper(speedups: Any, spec: _Spec, generic: Callable[..., Any]) -> Callable[..., Any]:
    """The same hot path as ``_sync_task_wrapper``'s, run by ``taskscope._speedups``."""

    def outside(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if settings.disabled or not settings.auto_run:
            return wrapped(*args, **kwargs)
        return generic(wrapped, instance, args, kwargs)

    def finish(task: Task, result: Any) -> None:
        task._finish_managed(spec.task_output(task, result))

    return cast(
        Callable[..., Any],
        speedups.TaskCall(
            spec=spec,
            name=spec.name,
            kind=spec.kind,
            names=spec.binder.positional,
            metadata=spec.metadata or None,
            outside=outside,
            generic=generic,
            capture_slow=spec.captured_input,
            finish_slow=finish,
            capture_input=spec.capture_input,
            raw_output=spec.capture_output and spec.process_output is None,
            unbound=UNBOUND,
        ),
    )


def _sync_wrapper(opener: _Opener) -> Callable[..., Any]:
    spec = opener.spec

    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        frame = opener.begin(opener.prepare(instance, args, kwargs))
        if frame is None:
            return wrapped(*args, **kwargs)
        tokens = frame.activate()
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            frame.deactivate(tokens)
            fail(frame, exc)
            raise
        frame.deactivate(tokens)
        finish(frame, spec.task_output(frame.task, result))
        return result

    return wrapper


def _coroutine_wrapper(opener: _Opener) -> Callable[..., Any]:
    spec = opener.spec

    async def traced(coroutine: Any, captured_input: Any) -> Any:
        frame = opener.begin(captured_input)  # the task starts when the coroutine runs
        if frame is None:
            return await coroutine
        tokens = frame.activate()
        pending_coroutines.add(frame)
        try:
            result = await coroutine
        except GeneratorExit:
            # Closed while pending (its loop closed, or it was garbage-collected), often from
            # another context than the one it started in: deactivate copes with that.
            frame.deactivate(tokens)
            close_unfinished(frame)
            raise
        except BaseException as exc:
            frame.deactivate(tokens)
            fail(frame, exc)
            raise
        finally:
            pending_coroutines.discard(frame)
        frame.deactivate(tokens)
        finish(frame, spec.task_output(frame.task, result))
        return result

    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        # Inputs are captured at call time; the task's clock starts at the first await.
        captured = opener.prepare(instance, args, kwargs)
        return traced(wrapped(*args, **kwargs), captured)

    return wrapper


class _Items:
    """A generator's yielded items, captured as they pass and bounded.

    With ``reduce=`` the items are kept as they are, all of them, for the reducer to see the
    whole stream; its result is the output.
    """

    __slots__ = ("extra", "items", "limit", "raw", "spec")

    def __init__(self, spec: _Spec) -> None:
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
            return spec.captured_output(_processed(spec.reduce, self.raw, "reduce"))
        if self.extra:
            return [*self.items, f"…[truncated {self.extra} items]"]
        return self.items

    def partial(self, task: Task | None) -> Any:
        """The output of a generator that failed: the items so far, None if there were none."""
        if self.spec.capture_output and not self.items and not self.raw:
            return None
        return self.output(task)


def _begin_in(origin: contextvars.Context, opener: _Opener, captured_input: Any) -> Frame | None:
    """Open a generator's frame under the run and task current where it was created.

    A generator's body runs at each ``next()``, often after the call that made it returned
    (a streamed answer, a FastAPI ``StreamingResponse``): its parent is the task current at
    creation, not at the first ``next()`` (issue 15). Nested tasks see its run as current.
    """
    frame = origin.run(opener.begin, captured_input)
    if frame is not None and frame.task is not None and not frame.owns_run:
        frame.activates_run = _get_run() is not frame.run
    return frame


def _named(generator: Any, spec: _Spec) -> Any:
    # What a parent that returns this generator records as its output names the generator's
    # task (``<generator object stream-pages ...>``), not this module's wrapper.
    generator.__name__ = generator.__qualname__ = spec.name
    return generator


def _generator_wrapper(opener: _Opener) -> Callable[..., Any]:
    spec = opener.spec

    def traced(
        generator: Generator[Any, Any, Any], captured_input: Any, origin: contextvars.Context
    ) -> Generator[Any, Any, Any]:
        # The task starts at the first next(): the iteration is the task.
        frame = _begin_in(origin, opener, captured_input)
        if frame is None:
            return (yield from generator)
        items = _Items(spec)
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
        return _named(traced(wrapped(*args, **kwargs), captured, origin), spec)

    return wrapper


def _async_generator_wrapper(opener: _Opener) -> Callable[..., Any]:
    spec = opener.spec

    async def traced(
        generator: AsyncGenerator[Any, Any], captured_input: Any, origin: contextvars.Context
    ) -> AsyncGenerator[Any, Any]:
        frame = _begin_in(origin, opener, captured_input)
        items = _Items(spec)
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
        return _named(traced(wrapped(*args, **kwargs), captured, origin), spec)

    return wrapper


_WRAPPERS: dict[str, Callable[[Any], Callable[..., Any]]] = {
    "function": _sync_wrapper,
    "coroutine": _coroutine_wrapper,
    "generator": _generator_wrapper,
    "async_generator": _async_generator_wrapper,
}


def _instrument(fn: F, spec: _Spec, opener: _Opener) -> F:
    if settings.disabled_at_import and settings.disabled:
        return fn  # TASKSCOPE_DISABLED=1 before import: the function itself, at no cost
    enabled = spec.enabled
    if enabled is False:
        return fn  # switched off where it is applied: the function itself, at no cost
    kind = _callable_kind(fn)
    if spec.reduce is not None and kind not in ("generator", "async_generator"):
        raise TypeError(
            f"reduce= combines the items a generator yields, and {spec.name!r} is not a "
            "generator function; use process_output= to change a returned value."
        )
    plain = kind == "function" and isinstance(opener, _TaskOpener)
    wrapper = _sync_task_wrapper(spec) if plain else _WRAPPERS[kind](opener)
    switch = _switch(enabled, spec.name) if callable(enabled) else None
    return cast(F, _binding.make(fn, wrapper, switch, plain))


def _switch(enabled: Callable[[], bool], name: str) -> Callable[[], bool]:
    """``enabled`` asked at each call; one that raises records the call, with a warning once."""

    def switch() -> bool:
        try:
            return bool(enabled())
        except Exception as exc:
            warn_once(
                f"enabled:{name}",
                "taskscope: enabled= of %r raised %s; the call is recorded and goes on.",
                name,
                type(exc).__name__,
            )
            return True

    return switch


# -- the public decorators ---------------------------------------------------------------------


class TaskDecorator(TaskScope):
    """What ``taskscope.task(...)`` returns: a decorator, and a ``with`` block too."""

    def __init__(self, name: str | None, options: dict[str, Any]) -> None:
        metadata = _with_tags(options.get("metadata"), options.get("tags", ()))
        super().__init__(name or "", metadata=metadata, kind=options.get("kind", "task"))
        self._options = options
        self._named = name is not None

    def __call__(self, fn: F) -> F:
        target: Any = fn
        if not callable(target) and not isinstance(target, (classmethod, staticmethod)):
            raise TypeError(
                f"taskscope.task decorates callables, not {type(target).__name__} objects."
            )
        spec = _Spec(fn, name=self.name if self._named else None, **self._options)
        return _instrument(fn, spec, _TaskOpener(spec))

    def __enter__(self) -> Task:
        if not self._named:
            raise TypeError('taskscope.task() used as a with block needs a name: task("phase").')
        return super().__enter__()


class RunDecorator(FrameBlock):
    """What ``taskscope.run(...)`` returns: a decorator for an entry point, or a with block."""

    def __init__(self, name: str | None, options: dict[str, Any]) -> None:
        super().__init__()
        self.name = name
        self._options = options

    def __call__(self, fn: F) -> F:
        spec = _Spec(fn, name=self.name, **self._options)
        return _instrument(fn, spec, _RunOpener(spec))

    def __enter__(self) -> Run:
        options = self._options
        frame = begin_run(self.name or "run", None, options.get("metadata"), options["tags"])
        self._enter_frame(frame)
        return frame.run if frame is not None else NOOP_RUN

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self._exit_frame(exc)

    async def __aenter__(self) -> Run:
        return self.__enter__()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self._exit_frame(exc)


def _options(
    capture_input: bool,
    capture_output: bool,
    ignore: tuple[str, ...] | list[str],
    process_input: Callable[[dict[str, Any]], Any] | None,
    process_output: Callable[[Any], Any] | None,
    metadata: Mapping[str, Any] | None,
    kind: str,
    tags: Sequence[str],
    enabled: bool | Callable[[], bool],
    reduce: Callable[[list[Any]], Any] | None,
) -> dict[str, Any]:
    if isinstance(tags, str):
        raise TypeError(f"tags= takes a list of labels, not the str {tags!r}: tags=[{tags!r}].")
    if not isinstance(enabled, bool) and not callable(enabled):
        raise TypeError(
            f"enabled= takes a bool or a function of no arguments, not {type(enabled).__name__}."
        )
    return {
        "capture_input": capture_input,
        "capture_output": capture_output,
        "ignore": tuple(ignore),
        "process_input": process_input,
        "process_output": process_output,
        "metadata": metadata,
        "kind": kind,
        "tags": tuple(tags),
        "enabled": enabled,
        "reduce": reduce,
    }


@overload
def task(fn: F, /) -> F: ...


@overload
def task(
    name: str | None = None,
    /,
    *,
    capture_input: bool = True,
    capture_output: bool = True,
    ignore: tuple[str, ...] | list[str] = (),
    process_input: Callable[[dict[str, Any]], Any] | None = None,
    process_output: Callable[[Any], Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    kind: str = "task",
    tags: Sequence[str] = (),
    enabled: bool | Callable[[], bool] = True,
    reduce: Callable[[list[Any]], Any] | None = None,
) -> TaskDecorator: ...


def task(
    name: Any = None,
    /,
    *,
    capture_input: bool = True,
    capture_output: bool = True,
    ignore: tuple[str, ...] | list[str] = (),
    process_input: Callable[[dict[str, Any]], Any] | None = None,
    process_output: Callable[[Any], Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    kind: str = "task",
    tags: Sequence[str] = (),
    enabled: bool | Callable[[], bool] = True,
    reduce: Callable[[list[Any]], Any] | None = None,
) -> Any:
    """Record a function's calls as tasks: ``@task``, ``@task("name")``, ``with task("name")``.

    Works on functions, ``async def``, generators, async generators, methods, classmethods,
    staticmethods and callable objects. Outside any run, a call opens a run of its own unless
    ``configure(auto_run=False)``. ``tags`` land in the task's ``metadata["tags"]``;
    ``enabled=False`` leaves the function undecorated, a callable ``enabled`` is asked at each
    call; ``reduce`` turns a generator's list of yielded items into its output.
    """
    options = _options(
        capture_input,
        capture_output,
        ignore,
        process_input,
        process_output,
        metadata,
        kind,
        tags,
        enabled,
        reduce,
    )
    if name is None or isinstance(name, str):
        return TaskDecorator(name, options)
    return TaskDecorator(None, options)(name)


@overload
def run(fn: F, /) -> F: ...


@overload
def run(
    name: str | None = None,
    /,
    *,
    capture_input: bool = True,
    capture_output: bool = True,
    ignore: tuple[str, ...] | list[str] = (),
    process_input: Callable[[dict[str, Any]], Any] | None = None,
    process_output: Callable[[Any], Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    tags: Sequence[str] = (),
    enabled: bool | Callable[[], bool] = True,
    reduce: Callable[[list[Any]], Any] | None = None,
) -> RunDecorator: ...


def run(
    name: Any = None,
    /,
    *,
    capture_input: bool = True,
    capture_output: bool = True,
    ignore: tuple[str, ...] | list[str] = (),
    process_input: Callable[[dict[str, Any]], Any] | None = None,
    process_output: Callable[[Any], Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    tags: Sequence[str] = (),
    enabled: bool | Callable[[], bool] = True,
    reduce: Callable[[list[Any]], Any] | None = None,
) -> Any:
    """Open a run around an entry point: ``@run("invoice-agent")`` or ``with run("name")``.

    Inside another run, the new run records that run as its parent. ``tags`` are the run's
    tags; ``enabled`` and ``reduce`` work as on ``task``.
    """
    options = _options(
        capture_input,
        capture_output,
        ignore,
        process_input,
        process_output,
        metadata,
        "run",
        tags,
        enabled,
        reduce,
    )
    if name is None or isinstance(name, str):
        return RunDecorator(name, options)
    return RunDecorator(None, options)(name)


def current_task() -> Task:
    """The task current here; a no-op task (``is_recording() is False``) when there is none."""
    current = _get_task()
    return current if current is not None else NOOP_TASK


def current_run() -> Run:
    """The run current here; a no-op run (``is_recording() is False``) when there is none."""
    current = _get_run()
    return current if current is not None else NOOP_RUN


def emit(type: str, payload: Any = None, level: str = "info") -> None:
    """Record an event in the current run, under the current task; dropped outside a run."""
    current = _get_run()
    if current is not None:
        current.emit(type, payload, level)
