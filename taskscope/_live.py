"""Live exporters: the few that must act on the caller's thread as things happen.

OpenTelemetry is the case in point: a span must be started when a task starts and be the
current span while the task's body runs, so that spans made inside it (an HTTP client's, an
LLM SDK's) nest under it. A live exporter gets hooks for that; every other exporter is fed in
batches by the pipeline. When no client has a live exporter, the hot path pays one attribute
check (``run._live``) and nothing else.

Hooks run on the caller's thread, so they must be quick, and they never break the caller: an
exception in a hook is logged once and the call goes on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeGuard, runtime_checkable

from ._internal import warn_once
from ._model import ErrorInfo

if TYPE_CHECKING:
    from ._run import Run
    from ._task import Task

LiveStates = list[tuple["LiveExporter", Any]]


@dataclass(slots=True)
class Ending:
    """How a run or task ended, for live exporters (timestamps are the recorded ones)."""

    status: str
    output: Any
    error: ErrorInfo | None
    exception: BaseException | None
    end_ns: int
    metadata: dict[str, Any]
    usage: dict[str, int]


@dataclass(slots=True)
class LiveEvent:
    """An event as it is emitted, for live exporters."""

    type: str
    level: str
    payload: Any
    occurred_ns: int


@runtime_checkable
class LiveExporter(Protocol):
    """Hooks called on the caller's thread. ``item`` is the Run or Task handle."""

    def live_start(self, item: Run | Task) -> Any:
        """A run or task started; return this exporter's state for it (a span, say)."""

    def live_enter(self, state: Any) -> Any:
        """Its body starts running here (again, for a generator); return a token."""

    def live_exit(self, state: Any, token: Any) -> None:
        """Its body stops running here (for now)."""

    def live_event(self, state: Any, event: LiveEvent) -> None:
        """An event was emitted while it was the current task (or run)."""

    def live_end(self, state: Any, ending: Ending) -> None:
        """It ended."""


def is_run(item: Run | Task) -> TypeGuard[Run]:
    """Whether a hook's ``item`` is a run (else a task).

    The handles sit a layer above the exporters, so an exporter asks this instead of using
    ``isinstance`` with classes it cannot import.
    """
    return item._is_run


def is_task(item: Run | Task) -> TypeGuard[Task]:
    """Whether a hook's ``item`` is a task (else a run)."""
    return not item._is_run


def live_exporters(exporters: Any) -> tuple[LiveExporter, ...]:
    return tuple(e for e in exporters if isinstance(e, LiveExporter))


def _complain(hook: LiveExporter, what: str, problem: Exception) -> None:
    name = type(hook).__name__
    warn_once(
        f"live:{name}:{what}",
        "taskscope: %s.%s raised %s: %s (your code keeps running; later failures are not logged)",
        name,
        what,
        type(problem).__name__,
        problem,
    )


def start(hooks: tuple[LiveExporter, ...], item: Run | Task) -> LiveStates:
    states: LiveStates = []
    for hook in hooks:
        try:
            states.append((hook, hook.live_start(item)))
        except Exception as problem:
            _complain(hook, "live_start", problem)
    return states


def enter(states: LiveStates) -> list[Any]:
    tokens = []
    for hook, state in states:
        try:
            tokens.append(hook.live_enter(state))
        except Exception as problem:
            tokens.append(None)
            _complain(hook, "live_enter", problem)
    return tokens


def exit(states: LiveStates, tokens: list[Any]) -> None:
    for (hook, state), token in zip(reversed(states), reversed(tokens), strict=False):
        try:
            hook.live_exit(state, token)
        except Exception as problem:
            _complain(hook, "live_exit", problem)


def _each(states: LiveStates, name: str, argument: Any) -> None:
    for hook, state in states:
        try:
            getattr(hook, name)(state, argument)
        except Exception as problem:
            _complain(hook, name, problem)


def event(states: LiveStates, happened: LiveEvent) -> None:
    _each(states, "live_event", happened)


def end(states: LiveStates, ending: Ending) -> None:
    _each(states, "live_end", ending)


def state_of(item: Run | Task | None, hook: LiveExporter) -> Any:
    """This exporter's state for ``item`` (a parent task, say), or None."""
    if item is None:
        return None
    for owner, state in item._live:
        if owner is hook:
            return state
    return None
