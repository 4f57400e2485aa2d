"""What a decorator decides once, where it is applied: the name, the binding, the capture.

``Spec`` holds everything about a decorated callable that does not change between calls;
``Binder`` turns a call's arguments into ``{parameter: value}`` without ``Signature.bind``.
Split from ``_decorator`` so that the wrappers (there and in ``_generators``) share it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ._config import settings
from ._internal import warn_once
from ._redact import REDACTED

if TYPE_CHECKING:
    from ._client import Task
    from ._scope import Frame


class Opener(Protocol):
    """How a wrapper opens its body: a task (``@task``) or a run (``@run``)."""

    spec: Spec
    opens_task: bool  # a task (``@task``), not a run (``@run``)

    def prepare(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any: ...

    def begin(self, captured_input: Any) -> Frame | None: ...


class Binder:
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
        # The fast capture takes every parameter by position: not when that would leave out a
        # keyword-only parameter's default (defaults are inputs too).
        keyword_only = any(p.kind is kinds.KEYWORD_ONLY for p in parameters)
        self.positional_count = -1 if keyword_only else len(positional)
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


class Spec:
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
        self.name = name or callable_name(fn)
        self.capture_input = capture_input
        self.capture_output = capture_output
        self.ignore = ignore
        self.process_input = process_input
        self.process_output = process_output
        self.metadata = with_tags(metadata, tags) if kind != "run" else copy_metadata(metadata)
        self.kind = kind
        self.tags = tags
        self.enabled = enabled
        self.reduce = reduce
        self.binder = Binder(fn)
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
            # (strict=False: the lengths were just compared; strict=True cost 120 ns more.)
            return capturer.arguments(dict(zip(binder.positional, args, strict=False)))
        bound = binder.bind(instance, args, kwargs)
        if self.process_input is not None:
            return capturer.value(processed(self.process_input, bound, "process_input"))
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
            value = processed(self.process_output, value, "process_output")
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


def copy_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return dict(metadata) if metadata else None


def with_tags(metadata: Mapping[str, Any] | None, tags: tuple[str, ...]) -> dict[str, Any] | None:
    """A task's metadata with its tags under ``"tags"``: task records have no tags field."""
    merged = copy_metadata(metadata)
    if tags:
        merged = merged or {}
        merged["tags"] = [*merged.get("tags", ()), *tags]
    return merged


def processed(processor: Callable[[Any], Any], value: Any, what: str) -> Any:
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


def callable_name(fn: Any) -> str:
    target = getattr(fn, "__func__", fn)
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None)
    if name is None:
        name = type(target).__qualname__
    return str(name)


def callable_kind(fn: Any) -> str:
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
