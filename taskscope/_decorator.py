"""``@task`` and ``@run``: decide everything at decoration time, then pick one thin wrapper.

The wrapper kind (function, coroutine function, generator function, async generator function),
the name, the parameter names and the capture policy are fixed when the decorator is applied;
a call does only what that call needs. Wrappers are ``wrapt`` function wrappers, so methods,
classmethods, staticmethods and callable objects bind as they would undecorated, and
``__name__``, ``__doc__``, ``__wrapped__`` and ``inspect.signature`` are those of the function.
What is decided once lives in ``_spec``, the generator wrappers in ``_generators``, and the
wrapt proxies (binding, pickling) in ``_binding``.

Longer than 500 lines because each wrapper here keeps its short road (C, and the Python twin
the tests hold it to) next to its general road, so the two can be read against each other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast, overload

from . import _accel, _binding, _context
from ._binding import UNBOUND
from ._capture import IMMUTABLE_SCALARS
from ._client import NOOP_RUN, NOOP_TASK, Run, Task
from ._config import settings
from ._generators import async_generator_wrapper, generator_wrapper
from ._internal import internal_error, warn_once
from ._scope import (
    Frame,
    FrameBlock,
    TaskScope,
    begin_run,
    begin_task,
    close_unfinished,
    end_returned,
    fail,
    fast_run,
    finish,
    pending_coroutines,
    reset_task,
    start_task,
)
from ._spec import Opener, Spec, callable_kind, with_tags
from ._task import end_completed

F = TypeVar("F", bound=Callable[..., Any])

_get_task = _context.get_current_task
_get_run = _context.get_current_run
_set_task = _context.current_task_var.set
_reset_task = _context.current_task_var.reset


# -- how a body is opened and closed: a task (the hot path) or a run --------------------------


class _TaskOpener:
    opens_task = True

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        # The C wrapper's capture (its bound-argument table) when the C module is in use.
        speedups = _accel.speedups
        self.task_call = _task_call(speedups, spec, None, None, None) if speedups else None
        self.capture: Callable[[Any, tuple[Any, ...], dict[str, Any]], Any] = (
            self.task_call.capture if self.task_call is not None else spec.captured_input
        )

    def prepare(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if _get_run() is None and (settings.disabled or not settings.auto_run):
            return None
        return self.capture(None if instance is UNBOUND else instance, args, kwargs)

    def begin(self, captured_input: Any) -> Frame | None:
        spec = self.spec
        return begin_task(spec.name, captured_input, spec.metadata, spec.kind)


class _RunOpener:
    opens_task = False

    def __init__(self, spec: Spec) -> None:
        self.spec = spec

    def prepare(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if settings.disabled:
            return None
        return self.spec.captured_input(None if instance is UNBOUND else instance, args, kwargs)

    def begin(self, captured_input: Any) -> Frame | None:
        spec = self.spec
        return begin_run(spec.name, captured_input, spec.metadata, spec.tags)


def _sync_task_wrapper(spec: Spec) -> Callable[..., Any]:
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
            run._put(task)  # its start op: the bare handle, as the C road queues it
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
                end_completed(run, task, result, True)
            else:
                task._finish_managed(spec.task_output(task, result))
        except Exception:
            internal_error("task-end")
        return result

    return wrapper


def _c_task_wrapper(speedups: Any, spec: Spec, generic: Callable[..., Any]) -> Callable[..., Any]:
    """The same hot path as ``_sync_task_wrapper``'s, run by ``taskscope._speedups``."""

    def outside(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if settings.disabled or not settings.auto_run:
            return wrapped(*args, **kwargs)
        return generic(wrapped, instance, args, kwargs)

    def finish(task: Task, result: Any) -> None:
        task._finish_managed(spec.task_output(task, result))

    return cast(Callable[..., Any], _task_call(speedups, spec, outside, generic, finish))


def _c_method_wrapper(spec: Spec) -> Callable[..., Any] | None:
    """The C sync wrapper for calls as ``fn(self, *args)`` (see ``_binding._method_types``).

    Its first argument is the instance; its Python fallbacks get a bound method and the rest,
    as from wrapt's bound wrapper. None without the C module.
    """
    speedups = _accel.speedups
    if speedups is None:
        return None
    generic = _sync_wrapper(_TaskOpener(spec))

    def outside(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if settings.disabled or not settings.auto_run:
            return wrapped(*args, **kwargs)
        return generic(wrapped, instance, args, kwargs)

    def finish(task: Task, result: Any) -> None:
        task._finish_managed(spec.task_output(task, result))

    return cast(
        Callable[..., Any], _task_call(speedups, spec, outside, generic, finish, method=True)
    )


def _task_call(
    speedups: Any, spec: Spec, outside: Any, generic: Any, finish: Any, method: bool = False
) -> Any:
    """``_speedups.TaskCall`` for ``spec``: the sync wrapper, and the others' input capture."""
    return speedups.TaskCall(
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
        defaults=spec.binder.defaults,
        merge_kwargs=spec.binder.var_keyword is None,
        method=method,
    )


def _sync_wrapper(opener: Opener) -> Callable[..., Any]:
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


def _coroutine_wrapper(opener: Opener) -> Callable[..., Any]:
    spec = opener.spec
    # The short road (see _scope): a task, no metadata, in a recording run with no live exporter.
    short = isinstance(opener, _TaskOpener) and not spec.metadata
    name = spec.name
    kind = spec.kind
    raw = spec.capture_output and spec.process_output is None
    speedups = _accel.speedups

    def finish_returned(task: Task, result: Any) -> None:
        end_returned(task.run, task, result if raw else spec.task_output(task, result), raw)

    # What the C road (_speedups.await_task) needs; its layout is fixed there.
    config = (name, kind, raw, finish_returned, pending_coroutines, close_unfinished, reset_task)

    async def traced(coroutine: Any, captured_input: Any) -> Any:
        if short and speedups is not None:  # finding the run, start, forwarding and end in C
            awaiter = speedups.await_short(coroutine, captured_input, config)
            if awaiter is not None:
                return await awaiter
        elif short:
            parent = _get_task()
            run = fast_run(parent)
            if run is not None:
                try:
                    task = start_task(run, parent, name, captured_input, None, kind)
                except Exception:
                    internal_error("task-start")
                    return await coroutine
                pending = Frame(task, run, False)
                token = _set_task(task)
                pending_coroutines.add(pending)
                try:
                    result = await coroutine
                except GeneratorExit:
                    reset_task(token, task)
                    close_unfinished(pending)
                    raise
                except BaseException as exc:
                    reset_task(token, task)
                    task._fail_managed(exc)
                    raise
                finally:
                    pending_coroutines.discard(pending)
                reset_task(token, task)
                end_returned(run, task, result if raw else spec.task_output(task, result), raw)
                return result
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

    if speedups is not None and isinstance(opener, _TaskOpener):  # the same, in C
        return cast(
            Callable[..., Any], speedups.TracedCall(opener.task_call, opener.prepare, traced)
        )
    return wrapper


_WRAPPERS: dict[str, Callable[[Any], Callable[..., Any]]] = {
    "function": _sync_wrapper,
    "coroutine": _coroutine_wrapper,
    "generator": generator_wrapper,
    "async_generator": async_generator_wrapper,
}


def _instrument(fn: F, spec: Spec, opener: Opener) -> F:
    if settings.disabled_at_import and settings.disabled:
        return fn  # TASKSCOPE_DISABLED=1 before import: the function itself, at no cost
    enabled = spec.enabled
    if enabled is False:
        return fn  # switched off where it is applied: the function itself, at no cost
    kind = callable_kind(fn)
    if spec.reduce is not None and kind not in ("generator", "async_generator"):
        raise TypeError(
            f"reduce= combines the items a generator yields, and {spec.name!r} is not a "
            "generator function; use process_output= to change a returned value."
        )
    plain = kind == "function" and isinstance(opener, _TaskOpener)
    wrapper = _sync_task_wrapper(spec) if plain else _WRAPPERS[kind](opener)
    switch = _switch(enabled, spec.name) if callable(enabled) else None
    # Every wrapper takes UNBOUND for "no instance" (the openers' prepare maps it to None), so
    # any plain function skips wrapt's per-call bound-method probe (see _binding).
    method_wrapper = _c_method_wrapper(spec) if plain and _binding.defined_in_class(fn) else None
    return cast(F, _binding.make(fn, wrapper, switch, True, method_wrapper))


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
        metadata = with_tags(options.get("metadata"), options.get("tags", ()))
        super().__init__(name or "", metadata=metadata, kind=options.get("kind", "task"))
        self._options = options
        self.named = name is not None

    def __call__(self, fn: F) -> F:
        target: Any = fn
        if not callable(target) and not isinstance(target, (classmethod, staticmethod)):
            raise TypeError(
                f"taskscope.task decorates callables, not {type(target).__name__} objects."
            )
        spec = Spec(fn, name=self.name if self.named else None, **self._options)
        return _instrument(fn, spec, _TaskOpener(spec))

    def __enter__(self) -> Task:
        if not self.named:
            raise TypeError('taskscope.task() used as a with block needs a name: task("phase").')
        return super().__enter__()


class RunDecorator(FrameBlock):
    """What ``taskscope.run(...)`` returns: a decorator for an entry point, or a with block."""

    def __init__(self, name: str | None, options: dict[str, Any]) -> None:
        super().__init__()
        self.name = name
        self._options = options

    def __call__(self, fn: F) -> F:
        spec = Spec(fn, name=self.name, **self._options)
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
