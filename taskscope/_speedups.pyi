"""Types of the C hot path (taskscope/_speedups.c); its Python twins are the reference."""

from collections import deque
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

class Intake:
    items: deque[Any]
    maxsize: int
    wake_at: int
    def __init__(
        self,
        items: deque[Any],
        maxsize: int,
        wake_at: int,
        on_wake: Callable[[], None],
        on_full: Callable[[tuple[Any, ...]], None],
    ) -> None: ...
    def __call__(self, op: tuple[Any, ...], /) -> None: ...

class TaskBase:
    """The task handle's fields; ``taskscope._client.Task`` derives from it."""

class TaskCall:
    def __init__(
        self,
        *,
        spec: Any,
        name: str,
        kind: str,
        names: tuple[str, ...],
        metadata: dict[str, Any] | None,
        outside: Callable[..., Any],
        generic: Callable[..., Any],
        capture_slow: Callable[..., Any],
        finish_slow: Callable[[Any, Any], None],
        capture_input: bool,
        raw_output: bool,
        unbound: object,
        defaults: tuple[tuple[str, Any], ...] = (),
        merge_kwargs: bool = False,
        method: bool = False,
    ) -> None: ...
    def __call__(
        self, wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any], /
    ) -> Any: ...
    def capture(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any], /) -> Any: ...

class MethodTwin:
    """What a decorated method's bound method calls: ``call(function, unbound, args, kwargs)``."""

    __wrapped__: Callable[..., Any]
    def __init__(
        self, function: Callable[..., Any], call: Callable[..., Any], unbound: object, /
    ) -> None: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...
    def __getattr__(self, name: str) -> Any: ...

class ScopeBase:
    """``taskscope._scope.TaskScope``'s base: its fields and its short road (see there)."""

    name: str
    _input: Any
    _metadata: Any
    _kind: str
    _run: Any
    _entries: list[Any]
    def __init__(
        self,
        name: str,
        *,
        input: Any = None,
        metadata: Any = None,
        kind: str = "task",
        run: Any = None,
    ) -> None: ...
    def __enter__(self) -> Any: ...
    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any, /) -> None: ...
    def __aenter__(self) -> Any: ...
    def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any, /) -> Any: ...

class TaskIter:
    """A generator's steps with its task current (``taskscope._generators``)."""

    def __init__(
        self,
        generator: Any,
        task: Any,
        kept: list[Any] | None,
        limit: int,
        add: Callable[[Any], None],
        reset: Callable[[Any, Any], None],
        /,
    ) -> None: ...
    def __iter__(self) -> TaskIter: ...
    def __next__(self) -> Any: ...
    def send(self, value: Any, /) -> Any: ...
    def throw(self, *args: Any) -> Any: ...
    def close(self) -> None: ...

class TaskAsyncIter:
    """An async generator's steps with its task current (``taskscope._generators``)."""

    def __init__(
        self,
        generator: Any,
        task: Any,
        kept: list[Any] | None,
        limit: int,
        add: Callable[[Any], None],
        reset: Callable[[Any, Any], None],
        /,
    ) -> None: ...
    def __await__(self) -> TaskAsyncIter: ...
    def __iter__(self) -> TaskAsyncIter: ...
    def __next__(self) -> Any: ...
    def asend(self, value: Any, /) -> TaskAsyncIter: ...
    def athrow(self, exc: BaseException, /) -> TaskAsyncIter: ...
    def aclose(self) -> TaskAsyncIter: ...
    def send(self, value: Any, /) -> Any: ...
    def throw(self, *args: Any) -> Any: ...
    def close(self) -> None: ...

class TracedCall:
    """A decorated coroutine or (async) generator function's wrapt wrapper."""

    def __init__(
        self,
        capture: Any,
        prepare: Callable[[Any, tuple[Any, ...], dict[str, Any]], Any],
        traced: Callable[..., Any],
        name: str | None = None,
        /,
    ) -> None: ...
    def __call__(
        self, wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any], /
    ) -> Any: ...

class TaskAwait:
    """An async function's task around its coroutine (``taskscope._decorator``)."""

    task: Any
    run: Any
    owns_run: bool
    def __await__(self) -> TaskAwait: ...
    def __iter__(self) -> TaskAwait: ...
    def __next__(self) -> Any: ...
    def send(self, value: Any, /) -> Any: ...
    def throw(self, *args: Any) -> Any: ...
    def close(self) -> None: ...

def start_task(
    run: Any, parent: Any, name: str, input: Any, metadata: Any, kind: str, managed: bool = True, /
) -> Any: ...
def end_task(run: Any, task: Any, result: Any, captured: bool = False, /) -> bool: ...
def emit(run: Any, type: Any, payload: Any, level: Any, /) -> bool: ...
def method_type(base: type, name: str, /) -> type: ...
def use_scope_type(scope_type: type, /) -> Any: ...
def await_short(coroutine: Any, captured: Any, config: tuple[Any, ...], /) -> TaskAwait | None: ...
def await_task(
    coroutine: Any, run: Any, parent: Any, captured: Any, config: tuple[Any, ...], /
) -> TaskAwait: ...
def setup(
    *,
    task_var: ContextVar[Any],
    run_var: ContextVar[Any],
    settings: Any,
    task_type: type,
    task_record: type,
    event_record: type,
    report_error: Callable[[str, BaseException], None],
    next_number: Iterator[int],
    task_fields: tuple[str, ...],
    event_fields: tuple[str, ...],
    run_type: type,
) -> None: ...
def flat_copy(
    mapping: Any, judged: dict[str, bool], max_items: int, max_bytes: int, max_str: int, /
) -> dict[str, Any] | None: ...
def plain_tree(
    value: Any,
    judged: dict[str, bool],
    max_items: int,
    max_depth: int,
    max_bytes: int,
    max_str: int,
    scan: bool,
    /,
) -> Any: ...
def could_hold_secret(text: str, /) -> bool: ...
def convert(
    ops: list[tuple[Any, ...]],
    start: int,
    prefix: str,
    capture: Callable[[Any], Any],
    str_limit: int,
    error_info: Callable[[Any], Any],
    run_start: Callable[[Any], Any],
    run_end: Callable[[tuple[Any, ...]], Any],
    /,
) -> tuple[list[Any], int]: ...
def track(obj: object, /) -> None: ...
