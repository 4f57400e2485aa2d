"""A run's timeline as text: the one drawing behind ``ConsoleExporter`` and ``taskscope show``.

The task tree (by ``parent_id``) in sequence order, each task with its status symbol, duration
and a bar on the run's time axis, errors under failed tasks and events under their task. Long
sibling lists are collapsed so a 5,000-task run fits on a screen, and branches deeper than
``MAX_DEPTH`` are cut with a marker, so a 10,000-deep chain does too; the tree is walked with a
stack of its own, never by recursion (issue 17: a tree deeper than ~990 raised RecursionError).
Lines are built as styled segments; plain text ignores the styles, and ``rich`` (when installed
and colour is wanted) paints them. Text goes out in the stream's own encoding: what it cannot
hold becomes ``?``, never a ``UnicodeEncodeError``.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from ._model import EventRecord, RunRecord, TaskRecord

SYMBOLS = {
    "completed": "✓",
    "failed": "✗",
    "skipped": "↷",
    "running": "…",
    "pending": "·",
    "cancelled": "⊘",
}
STYLES = {
    "completed": "green",
    "failed": "bold red",
    "skipped": "yellow",
    "running": "cyan",
    "pending": "dim",
    "cancelled": "magenta",
}
BAR_WIDTH = 40
LABEL_WIDTH = 34
MAX_SIBLINGS = 20
MAX_DEPTH = 50
INDENT_LEVELS = 10  # deeper levels keep this indent and print their level number instead
VALUE_WIDTH = 200

Segment = tuple[str, str | None]
Line = list[Segment]


def format_duration(nanoseconds: int) -> str:
    """``83 ms`` below ten seconds, then ``12.4 s``, then ``3m05s``."""
    ms = nanoseconds / 1_000_000
    if ms < 10_000:
        return f"{round(ms)} ms"
    if ms < 600_000:
        return f"{ms / 1000:.1f} s"
    minutes, seconds = divmod(round(ms / 1000), 60)
    return f"{minutes}m{seconds:02d}s"


def _shorten(text: str, width: int = VALUE_WIDTH) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def describe_event(event: EventRecord) -> str:
    """One line for an event; the LLM and tool helpers' payloads get a readable summary."""
    payload = event.payload
    if isinstance(payload, dict):
        kind = event.type
        if kind == "llm.request" and "model" in payload:
            prompt = payload.get("prompt")
            words = len(prompt.split()) if isinstance(prompt, str) else 0
            return f"{payload['model']}, {words} words of prompt"
        if kind == "llm.response" and "input_tokens" in payload:
            return (
                f"{payload.get('input_tokens', 0)} tokens in, {payload.get('output_tokens', 0)} out"
            )
        if kind == "tool.called" and "tool" in payload:
            return _shorten(f"{payload['tool']} {payload.get('input')}")
        if kind == "tool.returned" and "tool" in payload:
            return _shorten(f"{payload['tool']} -> {payload.get('output')}")
        if kind == "tool.failed" and "tool" in payload:
            return _shorten(f"{payload['tool']}: {payload.get('error')}")
    return _shorten(str(payload))


class Timeline:
    """One run's timeline, built from its records (in any order; sorted by ``seq`` here)."""

    def __init__(
        self,
        run: RunRecord,
        tasks: Iterable[TaskRecord],
        events: Iterable[EventRecord],
        *,
        max_siblings: int = MAX_SIBLINGS,
        max_depth: int = MAX_DEPTH,
    ) -> None:
        self.run = run
        self.max_siblings = max_siblings if max_siblings > 0 else 1 << 62
        self.max_depth = max_depth if max_depth > 0 else 1 << 62
        self.tasks = [task for task in tasks if task.run_id == run.id]
        self.events = [event for event in events if event.run_id == run.id]
        # Children (tasks and events) of each task; None is the run itself. A task whose
        # parent never arrived is drawn at the top rather than lost.
        known = {task.id for task in self.tasks}
        self.below: dict[str | None, list[TaskRecord | EventRecord]] = {}
        for task in self.tasks:
            parent = task.parent_id if task.parent_id in known else None
            self.below.setdefault(parent, []).append(task)
        for event in self.events:
            owner = event.task_id if event.task_id in known else None
            self.below.setdefault(owner, []).append(event)
        self._lift_parent_loops()
        for entries in self.below.values():
            entries.sort(key=lambda entry: entry.seq)
        self.end_ns = self._axis_end()
        self.total_ns = max(self.end_ns - run.start_ns, 1)

    def _reach(self, start: str | None, seen: set[str]) -> None:
        """Add the ids of the tasks under ``start`` (at any depth) to ``seen``."""
        pending = [start]
        while pending:
            for entry in self.below.get(pending.pop(), ()):
                if type(entry) is TaskRecord and entry.id not in seen:
                    seen.add(entry.id)
                    pending.append(entry.id)

    def _lift_parent_loops(self) -> None:
        """Draw at the top the first task of each parent loop (A under B, B under A: only bad
        data makes one), which no walk from the run would reach, so no task is hidden."""
        seen: set[str] = set()
        self._reach(None, seen)
        if len(seen) == len(self.tasks):
            return
        for task in sorted(self.tasks, key=lambda entry: entry.seq):
            if task.id in seen:
                continue
            self.below[task.parent_id].remove(task)
            self.below.setdefault(None, []).append(task)
            seen.add(task.id)
            self._reach(task.id, seen)

    def _axis_end(self) -> int:
        if self.run.end_ns is not None:
            return self.run.end_ns
        ends = [self.run.start_ns]
        ends.extend(task.end_ns or task.start_ns for task in self.tasks)
        ends.extend(event.occurred_ns for event in self.events)
        return max(ends)

    # -- building lines ---------------------------------------------------------------------

    def lines(self) -> list[Line]:
        run = self.run
        out: list[Line] = []
        label = f"{SYMBOLS.get(run.status, '?')} run {run.name}"
        out.append(self._row(label, run.status, run.start_ns, self.end_ns, ""))
        if run.error is not None:
            out.append([(f"  error: {self._error_text(run.error.type, run.error.message)}", "red")])
        self._below(None, out)
        if run.output is not None:
            out.append([(f"output: {_shorten(str(run.output))}", None)])
        if run.usage:
            out.append([(f"tokens: {run.usage}", None)])
        out.append([(self._summary(), "dim")])
        return out

    def _summary(self) -> str:
        counts: Counter[str] = Counter(task.status for task in self.tasks)
        parts = [f"{counts[status]:,} {status}" for status in SYMBOLS if counts[status]]
        detail = f" ({', '.join(parts)})" if parts else ""
        started = self.run.started_at.strftime("%Y-%m-%d %H:%M:%S UTC")
        return (
            f"run {self.run.id} · started {started} · {len(self.tasks):,} tasks{detail} · "
            f"{len(self.events):,} events"
        )

    def _below(self, root: str | None, out: list[Line]) -> None:
        """Draw the tree under ``root`` depth first, with a stack instead of recursion."""
        stack: list[tuple[Iterator[TaskRecord | EventRecord], int, Line | None]] = []
        self._push(root, 1, stack)
        while stack:
            entries, depth, trailer = stack[-1]
            entry = next(entries, None)
            if entry is None:
                stack.pop()
                if trailer is not None:
                    out.append(trailer)
                continue
            indent = _indent(depth)
            if type(entry) is EventRecord:
                style = (
                    "yellow"
                    if entry.level == "warn"
                    else "red"
                    if entry.level == "error"
                    else "dim"
                )
                out.append([(f"{indent}· {entry.type}: {describe_event(entry)}", style)])
            elif type(entry) is TaskRecord:
                self._task(entry, indent, out)
                if depth < self.max_depth:
                    self._push(entry.id, depth + 1, stack)
                elif self.below.get(entry.id):
                    self._deeper(entry.id, depth + 1, out)

    def _push(
        self,
        parent_id: str | None,
        depth: int,
        stack: list[tuple[Iterator[TaskRecord | EventRecord], int, Line | None]],
    ) -> None:
        """Put ``parent_id``'s children on the stack: all, or the first ones and every failure
        (where it failed must stay visible) followed by a line counting the rest."""
        entries = self.below.get(parent_id)
        if not entries:
            return
        if len(entries) <= self.max_siblings:
            stack.append((iter(entries), depth, None))
            return
        shown: list[TaskRecord | EventRecord] = []
        hidden: list[TaskRecord | EventRecord] = []
        for index, entry in enumerate(entries):
            if index < self.max_siblings or (
                type(entry) is TaskRecord and entry.status == "failed"
            ):
                shown.append(entry)
            else:
                hidden.append(entry)
        more = f"{_indent(depth)}… {len(hidden):,} more{self._hidden_detail(hidden)}"
        stack.append((iter(shown), depth, [(more, "dim")]))

    def _deeper(self, parent_id: str, depth: int, out: list[Line]) -> None:
        """One line for everything under ``parent_id``, then its deepest failure (drawn at its
        own level), if any: where a deep chain failed must stay visible too."""
        hidden: list[TaskRecord | EventRecord] = []
        deepest: tuple[int, TaskRecord] | None = None
        pending = [(parent_id, 0)]
        while pending:
            owner, level = pending.pop()
            for entry in self.below.get(owner, ()):
                hidden.append(entry)
                if type(entry) is TaskRecord:
                    pending.append((entry.id, level + 1))
                    if entry.status == "failed" and (deepest is None or level >= deepest[0]):
                        deepest = (level, entry)
        tasks = sum(1 for entry in hidden if type(entry) is TaskRecord)
        if tasks:
            what = f"{tasks:,} deeper task{'s' if tasks != 1 else ''}"
            counts = self._hidden_detail(hidden)
        else:
            what, counts = f"{len(hidden):,} deeper event{'s' if len(hidden) != 1 else ''}", ""
        ending = ", the deepest failure:" if deepest is not None else ""
        out.append([(f"{_indent(depth)}… {what} hidden{counts}{ending}", "dim")])
        if deepest is not None:
            self._task(deepest[1], _indent(depth + deepest[0]), out)

    @staticmethod
    def _hidden_detail(hidden: list[TaskRecord | EventRecord]) -> str:
        counts: Counter[str] = Counter(
            entry.status for entry in hidden if type(entry) is TaskRecord
        )
        parts = [f"{counts[status]:,} {status}" for status in SYMBOLS if counts[status]]
        events = sum(1 for entry in hidden if type(entry) is EventRecord)
        if events:
            parts.append(f"{events:,} events")
        return f" ({', '.join(parts)})" if parts else ""

    def _task(self, task: TaskRecord, indent: str, out: list[Line]) -> None:
        end_ns = task.end_ns if task.end_ns is not None else self.end_ns
        label = f"{indent}{SYMBOLS.get(task.status, '?')} {task.name}"
        reason = task.metadata.get("skip_reason")
        note = f"  ({reason})" if reason else ""
        out.append(self._row(label, task.status, task.start_ns, end_ns, note))
        if task.error is not None:
            text = self._error_text(task.error.type, task.error.message)
            out.append([(f"{indent}    error: {text}", "red")])

    @staticmethod
    def _error_text(kind: str | None, message: str) -> str:
        first = message.strip().splitlines()[0] if message.strip() else ""
        short = kind.rsplit(".", 1)[-1] if kind else None
        return _shorten(f"{short}: {first}" if short else first)

    def _row(self, label: str, status: str, start_ns: int, end_ns: int, note: str) -> Line:
        if len(label) > LABEL_WIDTH - 1:
            label = label[: LABEL_WIDTH - 2] + "…"
        style = STYLES.get(status)
        offset = start_ns - self.run.start_ns
        left = min(BAR_WIDTH - 1, max(0, int(offset / self.total_ns * BAR_WIDTH)))
        size = max(1, min(BAR_WIDTH - left, round((end_ns - start_ns) / self.total_ns * BAR_WIDTH)))
        duration = format_duration(max(0, end_ns - start_ns))
        return [
            (f"{label:<{LABEL_WIDTH}}{duration:>8}  │", style),
            (" " * left, None),
            ("█" * size, style),
            (" " * (BAR_WIDTH - left - size) + "│" + note, None),
        ]

    # -- output -----------------------------------------------------------------------------

    def text(self) -> str:
        """The timeline as plain text, one line per row, ending in a newline."""
        return "".join("".join(text for text, _ in line) + "\n" for line in self.lines())

    def write(self, stream: TextIO, *, colour: bool | None = None) -> None:
        """Write to ``stream``, in colour when it is a terminal and ``NO_COLOR`` is unset."""
        if colour is None:
            colour = colour_wanted(stream)
        writer: Any = stream if isinstance(stream, ReplacingWriter) else ReplacingWriter(stream)
        if colour and _write_rich(self.lines(), writer):
            return
        writer.write(self.text())
        writer.flush()


def _indent(depth: int) -> str:
    """Two spaces a level; past ``INDENT_LEVELS`` the level's number, so names stay readable."""
    if depth <= INDENT_LEVELS:
        return "  " * depth
    return f"{depth:>{2 * INDENT_LEVELS - 1}} "


class ReplacingWriter:
    """A text stream's stand-in whose ``write`` never raises ``UnicodeEncodeError``.

    A Windows console, ``PYTHONIOENCODING=cp1252`` or a redirect to a file in a legacy encoding
    cannot hold Chinese text, emoji or a lone surrogate read back from the store; such
    characters are written as the encoding's replacement (``?``) instead (issue 17). Everything
    else (``isatty``, ``encoding``, ``fileno``) is the wrapped stream's.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except UnicodeEncodeError:
            # TextIOWrapper encodes the whole text before writing any of it: nothing is doubled.
            encoding = getattr(self.stream, "encoding", None) or "ascii"
            return self.stream.write(text.encode(encoding, "replace").decode(encoding))

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def colour_wanted(stream: Any) -> bool:
    """Colour only for a terminal, and never when ``NO_COLOR`` is set (no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (OSError, ValueError):
        return False


def _write_rich(lines: list[Line], stream: TextIO) -> bool:
    """Paint the lines with rich; False when rich is not installed."""
    try:
        from rich.console import Console
        from rich.text import Text
    except ImportError:
        return False
    console = Console(file=stream, force_terminal=True, highlight=False, soft_wrap=True)
    for line in lines:
        console.print(Text.assemble(*((text, style or "") for text, style in line)))
    return True
