"""ConsoleExporter and the shared timeline: what a user sees when a run ends."""

from __future__ import annotations

import contextlib
import io
import sys

import pytest

import taskscope
from taskscope import _timeline
from taskscope.exporters import ConsoleExporter, InMemoryExporter


class _Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def _sample(client: taskscope.Client) -> None:
    with client.start_run(name="agent") as run:
        with run.task("fetch") as fetch:
            run.emit_tool_call("search", {"q": "solar"})
            with run.task("parse"):
                pass
            fetch.output = 1
        run.start_task("cache").skip("cache hit")
        run.start_task("upload").fail(ConnectionError("storage unavailable\nsecond line"))
        run.emit("upload.retrying", {"attempt": 1}, level="warn")


def test_the_timeline_is_printed_when_the_run_ends_not_before() -> None:
    """Mid-run nothing is printed; the run's end prints its whole timeline once."""
    stream = io.StringIO()
    with taskscope.Client([ConsoleExporter(stream)]) as client:
        run = client.start_run(name="agent")
        run.start_task("step").complete()
        assert client.flush()
        assert stream.getvalue() == ""
        run.complete()
        assert client.flush()
    assert stream.getvalue().startswith("✓ run agent ")
    assert stream.getvalue().count("run agent") == 1


def test_tree_symbols_errors_skips_and_events_in_order() -> None:
    """Nesting by parent, ✓ ✗ ↷ symbols, the error's first line and events under their task."""
    stream = io.StringIO()
    with taskscope.Client([ConsoleExporter(stream)]) as client:
        _sample(client)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("✓ run agent ")
    assert lines[1].startswith("  ✓ fetch ")
    assert lines[2] == "    · tool.called: search {'q': 'solar'}"
    assert lines[3].startswith("    ✓ parse ")
    assert lines[4].startswith("  ↷ cache ") and lines[4].endswith("(cache hit)")
    assert lines[5].startswith("  ✗ upload ")
    assert lines[6] == "      error: ConnectionError: storage unavailable"
    assert lines[7] == "  · upload.retrying: {'attempt': 1}"
    assert lines[-1].endswith("4 tasks (2 completed, 1 failed, 1 skipped) · 2 events")


def test_bars_are_proportional_to_the_runs_time_axis() -> None:
    """A task taking half the run has a bar half as wide as the run's, starting where it did."""
    run = taskscope.RunRecord(
        id="r", name="r", status="completed", start_ns=0, end_ns=1_000_000_000, seq=0
    )
    second_half = taskscope.TaskRecord(
        id="t",
        run_id="r",
        parent_id=None,
        name="late",
        status="completed",
        start_ns=500_000_000,
        end_ns=1_000_000_000,
        seq=1,
    )
    lines = _timeline.Timeline(run, [second_half], []).text().splitlines()
    bar = lines[1].split("│")[1]
    assert len(bar) == _timeline.BAR_WIDTH
    assert bar == " " * 20 + "█" * 20
    assert "500 ms" in lines[1] and "1000 ms" in lines[0]


def test_default_stream_is_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    """ConsoleExporter() writes to sys.stderr, leaving stdout to the program."""
    with taskscope.Client([ConsoleExporter()]) as client:
        client.start_run(name="quiet-stdout").complete()
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("✓ run quiet-stdout ")


def test_long_sibling_lists_are_collapsed_but_failures_stay_visible() -> None:
    """5,000 siblings print as the first 20, any failure, and one '… more' line."""
    stream = io.StringIO()
    with taskscope.Client([ConsoleExporter(stream)]) as client, client.start_run() as run:
        for index in range(5_000):
            task = run.start_task(f"item-{index}")
            if index == 4_000:
                task.fail("bad item")
            else:
                task.complete()
    lines = stream.getvalue().splitlines()
    assert len(lines) < 30
    assert [line.split()[1] for line in lines[1:21]] == [f"item-{i}" for i in range(20)]
    assert lines[21].startswith("  ✗ item-4000 ")
    assert lines[23] == "  … 4,979 more (4,979 completed)"


def test_no_colour_when_not_a_terminal_or_no_color_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Colour only for a terminal, and NO_COLOR switches it off even there."""
    assert _timeline.colour_wanted(io.StringIO()) is False
    assert _timeline.colour_wanted(_Terminal()) is True
    monkeypatch.setenv("NO_COLOR", "1")
    assert _timeline.colour_wanted(_Terminal()) is False


def test_plain_text_on_a_terminal_without_rich(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without rich installed, a terminal gets the same plain text, no escape codes."""
    monkeypatch.setitem(sys.modules, "rich", None)
    monkeypatch.setitem(sys.modules, "rich.console", None)
    memory = InMemoryExporter()
    terminal = _Terminal()
    with taskscope.Client([ConsoleExporter(terminal), memory]) as client:
        _sample(client)
    expected = _timeline.Timeline(memory.runs[0], memory.tasks, memory.events).text()
    assert terminal.getvalue() == expected
    assert "\x1b[" not in terminal.getvalue()


def test_rich_paints_the_same_lines_on_a_terminal() -> None:
    """With rich installed, a terminal gets the same text with colour codes."""
    pytest.importorskip("rich")
    memory = InMemoryExporter()
    terminal = _Terminal()
    with taskscope.Client([ConsoleExporter(terminal), memory]) as client:
        _sample(client)
    painted = terminal.getvalue()
    assert "\x1b[" in painted
    plain = _timeline.Timeline(memory.runs[0], memory.tasks, memory.events).text()
    assert "✗ upload" in painted and plain.splitlines()[2] in painted


def test_taskscope_exporters_names_console_local_and_unknown_ones(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    """TASKSCOPE_EXPORTERS=console,local and none work; an unknown name is a one-line error."""
    monkeypatch.setenv("TASKSCOPE_EXPORTERS", f"console, local:{tmp_path}/x.db")
    with taskscope.Client() as client:
        assert [type(e).__name__ for e in client.exporters] == ["ConsoleExporter", "LocalStore"]
    monkeypatch.setenv("TASKSCOPE_EXPORTERS", "none")
    with taskscope.Client() as client:
        assert client.exporters == []
    monkeypatch.setenv("TASKSCOPE_EXPORTERS", "local,zipkin")
    with pytest.raises(taskscope.ConfigurationError, match="does not know"):
        taskscope.Client()


def test_a_10000_deep_tree_prints_in_a_bounded_number_of_lines() -> None:
    """10,000 nested with blocks: no RecursionError, 50 levels then one line for the rest."""
    stream = io.StringIO()
    exporter = ConsoleExporter(stream)
    with taskscope.Client([exporter], max_queue_size=50_000) as client:
        with client.start_run(name="deep") as run, contextlib.ExitStack() as levels:
            for level in range(1, 10_001):
                levels.enter_context(run.task(f"level-{level}"))
        assert client.flush()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 + 50 + 1 + 1
    assert lines[0].startswith("✓ run deep ")
    assert lines[50].startswith("                 50 ✓ level-50 ")
    assert lines[51] == "                 51 … 9,950 deeper tasks hidden (9,950 completed)"
    assert lines[52].endswith("· 10,000 tasks (10,000 completed) · 0 events")


def test_max_depth_counts_hidden_events_and_keeps_wide_cuts() -> None:
    """Events alone below the cut get their own count; a wide level past it is not drawn."""
    stream = io.StringIO()
    exporter = ConsoleExporter(stream, max_depth=1)
    with taskscope.Client([exporter]) as client, client.start_run(name="agent") as run:
        with run.task("only-events"):
            run.emit("a")
            run.emit("b")
        with run.task("wide"):
            for index in range(30):
                run.start_task(f"child-{index}").complete()
    lines = stream.getvalue().splitlines()
    assert lines[1].startswith("  ✓ only-events ")
    assert lines[2] == "    … 2 deeper events hidden"
    assert lines[3].startswith("  ✓ wide ")
    assert lines[4] == "    … 30 deeper tasks hidden (30 completed)"
    assert len(lines) == 6


def test_a_stream_in_a_legacy_encoding_gets_replacement_characters() -> None:
    """A cp1252 stream: '?' for what it cannot hold, never UnicodeEncodeError."""
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="cp1252", newline="\n")
    with (
        taskscope.Client([ConsoleExporter(stream)]) as client,
        client.start_run(name="报告 😀") as run,
    ):
        run.start_task("naïve").fail("错误")
    stream.flush()
    lines = raw.getvalue().decode("cp1252").splitlines()
    assert lines[0].startswith("? run ?? ? ")
    assert lines[1].startswith("  ? naïve ")  # what cp1252 holds is kept
    assert lines[2] == "      error: ??"


def test_tasks_in_a_parent_loop_are_drawn_not_hidden() -> None:
    """Bad data (A under B, B under A, S under itself): every task is drawn, nothing loops."""
    run = taskscope.RunRecord(id="r", name="r", status="completed", start_ns=0, end_ns=10, seq=0)

    def task(ident: str, parent: str | None, seq: int) -> taskscope.TaskRecord:
        return taskscope.TaskRecord(
            id=ident,
            run_id="r",
            parent_id=parent,
            name=ident,
            status="completed",
            start_ns=seq,
            end_ns=seq + 1,
            seq=seq,
        )

    tasks = [task("A", "B", 1), task("B", "A", 2), task("C", "A", 3), task("S", "S", 4)]
    lines = _timeline.Timeline(run, [task("ok", None, 5), *tasks], []).text().splitlines()
    assert [line[:12].rstrip() for line in lines[1:-1]] == [
        "  ✓ A",
        "    ✓ B",
        "    ✓ C",
        "  ✓ S",
        "  ✓ ok",
    ]
