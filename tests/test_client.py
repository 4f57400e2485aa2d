"""The manual API: states, StateError, events and their helpers, usage, no-op objects."""

from __future__ import annotations

import pytest

import taskscope
from taskscope.exporters import InMemoryExporter


def test_ending_a_task_twice_raises_state_error(client: taskscope.Client) -> None:
    """A task ends exactly once; the error names the task and its state."""
    run = client.start_run()
    task = run.start_task("parse-pdf")
    task.complete()
    with pytest.raises(taskscope.StateError, match=r"task 'parse-pdf' .* already completed"):
        task.fail("late")
    with pytest.raises(taskscope.StateError, match="already completed"):
        task.skip()


def test_ending_a_run_twice_raises_state_error(client: taskscope.Client) -> None:
    """A run ends exactly once."""
    run = client.start_run(name="agent")
    run.cancel("user pressed stop")
    with pytest.raises(taskscope.StateError, match=r"run 'agent' .* already cancelled"):
        run.complete()


def test_cancel_records_the_reason(client: taskscope.Client, memory: InMemoryExporter) -> None:
    """run.cancel(reason) ends the run cancelled with the reason as its error message."""
    client.start_run().cancel("user pressed stop")
    assert client.flush()
    (run,) = memory.runs
    assert run.status == "cancelled"
    assert run.error is not None and run.error.message == "user pressed stop"


def test_fail_with_detail_and_with_an_exception(
    client: taskscope.Client, memory: InMemoryExporter
) -> None:
    """run.fail takes a message and detail, or an exception with its traceback."""
    client.start_run(name="a").fail("quota exceeded", {"limit": 10})
    try:
        raise TimeoutError("model took too long")
    except TimeoutError as exc:
        client.start_run(name="b").fail(exc)
    assert client.flush()
    by_name = {r.name: r for r in memory.runs}
    assert by_name["a"].error is not None
    assert by_name["a"].error.message == "quota exceeded"
    assert by_name["a"].error.detail == {"limit": 10}
    error_b = by_name["b"].error
    assert error_b is not None and error_b.type == "TimeoutError"
    assert error_b.traceback is not None and "model took too long" in error_b.traceback


def test_event_helpers_use_the_well_known_types(
    client: taskscope.Client, memory: InMemoryExporter
) -> None:
    """The llm/tool helpers emit llm.request/response and tool.called/returned/failed."""
    run = client.start_run()
    run.emit_llm_request("gpt", "Summarise", {"temperature": 0})
    run.emit_llm_response("gpt", "Short.", usage={"input_tokens": 12, "output_tokens": 3})
    run.emit_tool_call("search", {"q": "x"})
    run.emit_tool_return("search", {"hits": 2})
    run.emit_tool_error("search", TimeoutError("slow"))
    run.emit("invoice.validated", {"amount": 12.5}, level="debug")
    run.complete()
    assert client.flush()
    assert [(e.type, e.level) for e in memory.events] == [
        ("llm.request", "info"),
        ("llm.response", "info"),
        ("tool.called", "info"),
        ("tool.returned", "info"),
        ("tool.failed", "error"),
        ("invoice.validated", "debug"),
    ]
    assert memory.events[0].payload == {"model": "gpt", "prompt": "Summarise", "temperature": 0}
    assert memory.events[1].payload == {
        "model": "gpt",
        "response": "Short.",
        "input_tokens": 12,
        "output_tokens": 3,
    }
    assert memory.events[4].payload == {"tool": "search", "error": "slow"}
    # With no usage given, the run's usage is the sum of its llm.response events.
    assert memory.runs[0].usage == {"input_tokens": 12, "output_tokens": 3}


def test_bad_level_is_recorded_marked_not_raised(
    client: taskscope.Client, memory: InMemoryExporter, caplog: pytest.LogCaptureFixture
) -> None:
    """An unknown level does not crash the agent: the event is kept as info and marked."""
    run = client.start_run()
    run.emit("odd.level", {"x": 1}, level="fatal")
    assert client.flush()
    (event,) = memory.events
    assert event.level == "info"
    assert event.payload == {"payload": {"x": 1}, "taskscope.invalid_level": "fatal"}
    assert any("is not one of debug" in r.getMessage() for r in caplog.records)


def test_events_attach_to_the_current_task_of_their_run(
    client: taskscope.Client, memory: InMemoryExporter
) -> None:
    """An event emitted inside a task's block carries that task's id."""
    with client.start_run() as run:
        run.emit("before")
        with run.task("work") as work:
            taskscope.emit("inside")
        run.emit("after")
    assert client.flush()
    by_type = {e.type: e for e in memory.events}
    assert by_type["before"].task_id is None
    assert by_type["inside"].task_id == work.id
    assert by_type["after"].task_id is None


def test_no_current_run_or_task_gives_no_op_objects() -> None:
    """Outside a run, current_run()/current_task() are no-op objects, safe to call."""
    task = taskscope.current_task()
    run = taskscope.current_run()
    assert not task.is_recording() and not run.is_recording()
    task.skip("nothing to do")
    task.complete()
    run.emit("ignored")
    taskscope.emit("ignored too")


def test_records_carry_utc_datetimes_and_ids(
    client: taskscope.Client, memory: InMemoryExporter
) -> None:
    """started_at/ended_at are timezone-aware UTC datetimes; ids are UUID-shaped strings."""
    import uuid
    from datetime import timezone

    run = client.start_run()
    task = run.start_task("t")
    task.complete()
    run.complete()
    assert client.flush()
    recorded = memory.tasks[0]
    assert recorded.started_at.tzinfo is timezone.utc
    assert recorded.ended_at is not None and recorded.ended_at >= recorded.started_at
    assert uuid.UUID(recorded.id).version == 4
    assert recorded.id == task.id == task.task_id
    assert memory.runs[0].id == run.run_id


def test_client_as_context_manager_shuts_down(memory: InMemoryExporter) -> None:
    """Leaving `with Client(...)` flushes everything and stops the pipeline."""
    with taskscope.Client([memory]) as client:
        client.start_run().complete()
    assert [r.status for r in memory.runs] == ["completed"]


def test_exporters_from_environment(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """TASKSCOPE_EXPORTERS=jsonl:PATH configures Client(); unknown names are clear errors."""
    from pathlib import Path

    path = Path(str(tmp_path)) / "env.jsonl"
    monkeypatch.setenv("TASKSCOPE_EXPORTERS", f"jsonl:{path}")
    with taskscope.Client() as client:
        client.start_run().complete()
    assert path.read_text().count("\n") == 2
    monkeypatch.setenv("TASKSCOPE_EXPORTERS", "carrier-pigeon")
    with pytest.raises(taskscope.ConfigurationError, match=r"'carrier-pigeon'.*jsonl:PATH"):
        taskscope.Client()


def test_no_op_task_keeps_nothing_written_to_it() -> None:
    """Writing output or metadata to the shared no-op task stores nothing."""
    task = taskscope.current_task()
    task.output = {"big": list(range(1000))}
    task.metadata["attempt"] = 1
    assert task.output is None
    assert task.metadata == {}
