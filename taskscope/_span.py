"""Span: the AgentOS SDK's span API on a run, recorded as a task."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._settings import settings
from ._task import check_name

if TYPE_CHECKING:
    from ._run import Run
    from ._task import Task


class Span:
    """The AgentOS SDK's span (``run.start_span``, ``.child``, ``.end``), kept as a task."""

    def __init__(
        self,
        run: Run,
        name: str,
        *,
        kind: str | None = None,
        parent: Task | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> None:
        check_name(name, "start_span")
        self._run = run
        self._task = run._open_task(
            name, settings.capturer.value(payload), None, kind or "span", False, parent
        )

    @property
    def id(self) -> str:
        return self._task.id

    def child(
        self, name: str, *, kind: str | None = None, payload: Mapping[str, Any] | None = None
    ) -> Span:
        return Span(self._run, name, kind=kind, parent=self._task, payload=payload)

    def end(self, payload: Mapping[str, Any] | None = None) -> None:
        """Record the span as completed; a second end is ignored, as in the SDK."""
        if not self._task.is_ended:
            self._task.complete(payload)

    def fail(self, error: BaseException | str, payload: Mapping[str, Any] | None = None) -> None:
        if not self._task.is_ended:
            self._task.fail(error, error_detail=payload)
