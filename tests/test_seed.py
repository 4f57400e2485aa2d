"""The seed's Python snippet and the AgentOS SDK's "report your own agents" snippets, ported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import taskscope
from taskscope.exporters import InMemoryExporter, JSONLExporter


def parse_pdf(path: str) -> list[str]:
    return ["page one", "page two", "page three"]


def test_seed_snippet_records_run_task_and_states(tmp_path: Path) -> None:
    """The seed's flow, with only the import changed, records run → task → completed."""
    memory = InMemoryExporter()
    client = taskscope.Client(exporters=[memory, JSONLExporter(tmp_path / "runs.jsonl")])

    run = client.start_run(input={"file": "report.pdf"})
    task = run.start_task("parse-pdf", input={"file": "report.pdf"})
    pages = parse_pdf("report.pdf")
    task.complete(output={"pages": len(pages)})
    run.complete(output={"pages": len(pages)})
    assert client.flush()

    (recorded_run,) = memory.runs
    (recorded_task,) = memory.tasks
    assert recorded_run.status == "completed"
    assert recorded_run.input == {"file": "report.pdf"}
    assert recorded_run.output == {"pages": 3}
    assert recorded_task.run_id == recorded_run.id
    assert recorded_task.name == "parse-pdf"
    assert recorded_task.status == "completed"
    assert recorded_task.input == {"file": "report.pdf"}
    assert recorded_task.output == {"pages": 3}
    # A task is created running, then ends once (a short task may arrive only in its final state).
    statuses = [r.status for r in memory.records if r.record_type == "task"]
    assert statuses[-1] == "completed"
    assert statuses[:-1] in ([], ["running"])
    client.shutdown()


def test_events_before_start_task_come_first_in_every_exporter(tmp_path: Path) -> None:
    """Three events emitted before start_task have lower sequence numbers than the task."""
    memory = InMemoryExporter()
    jsonl = tmp_path / "runs.jsonl"
    client = taskscope.Client(exporters=[memory, JSONLExporter(jsonl)])
    with taskscope.testing.capture() as cap:
        run = client.start_run(input={"file": "report.pdf"})
        for index in range(3):
            run.emit("page.seen", {"index": index})
        task = run.start_task("parse-pdf")
        task.complete()
        run.complete()
        assert client.flush()

    views = {
        "memory": (memory.events, memory.tasks),
        "capture": (cap.events, cap.tasks),
    }
    for name, (events, tasks) in views.items():
        assert len(events) == 3, name
        assert max(e.seq for e in events) < tasks[0].seq, name
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    first_seen: dict[str, str] = {}
    for line in lines:
        first_seen.setdefault(line["id"], line["record"])
    assert list(first_seen.values()) == ["run", "event", "event", "event", "task"]
    assert (lines[-1]["record"], lines[-1]["status"]) == ("run", "completed")
    event_seqs = [line["seq"] for line in lines if line["record"] == "event"]
    task_seq = next(line["seq"] for line in lines if line["record"] == "task")
    assert max(event_seqs) < task_seq
    client.shutdown()


def test_skip_and_fail_end_tasks_as_the_seed_describes(
    client: taskscope.Client, memory: InMemoryExporter
) -> None:
    """complete/fail/skip give completed/failed/skipped; fail keeps the message."""
    run = client.start_run()
    fetch = run.start_task("fetch-data", input={"url": "https://api.example.com"})
    cached = run.start_task("lookup")
    fetch.fail(error_message="Connection refused")
    cached.skip()
    run.complete()
    assert client.flush()
    by_name = {t.name: t for t in memory.tasks}
    assert by_name["fetch-data"].status == "failed"
    assert by_name["fetch-data"].error is not None
    assert by_name["fetch-data"].error.message == "Connection refused"
    assert by_name["lookup"].status == "skipped"


def test_independent_tasks_finish_in_any_order(
    client: taskscope.Client, memory: InMemoryExporter
) -> None:
    """Two tasks started together may complete in either order."""
    run = client.start_run()
    users = run.start_task("fetch-users")
    products = run.start_task("fetch-products")
    products.complete(output={"count": 7})
    users.complete(output={"count": 3})
    run.complete()
    assert client.flush()
    assert [t.name for t in memory.tasks] == ["fetch-users", "fetch-products"]
    assert all(t.parent_id is None for t in memory.tasks)
    assert all(t.status == "completed" for t in memory.tasks)


def call_model(prompt: str) -> str:
    return "billing"


def test_sdk_readme_context_manager_snippet(memory: InMemoryExporter) -> None:
    """The SDK README's `with aos.start_run(...)` snippet runs with taskscope.Client as AgentOS."""
    AgentOS = taskscope.Client
    prompt = "classify"

    aos = AgentOS(exporters=[memory])
    with aos.start_run(input={"ticket_id": 4521}) as run:
        step = run.start_span("classify ticket", kind="step")

        llm = step.child("claude-sonnet-4-6", kind="llm")
        answer = call_model(prompt)
        llm.end({"input_tokens": 1240, "output_tokens": 90})

        run.emit_tool_call("lookup_order", {"order_id": 991})
        step.end()
        run.complete({"category": "billing"}, usage={"input_tokens": 1240, "output_tokens": 90})
    assert answer == "billing"
    assert aos.flush()

    (recorded,) = memory.runs
    assert recorded.status == "completed"
    assert recorded.output == {"category": "billing"}
    assert recorded.usage == {"input_tokens": 1240, "output_tokens": 90}
    step_task = next(t for t in memory.tasks if t.name == "classify ticket")
    llm_task = next(t for t in memory.tasks if t.name == "claude-sonnet-4-6")
    assert step_task.kind == "step"
    assert llm_task.kind == "llm"
    assert llm_task.parent_id == step_task.id
    assert llm_task.output == {"input_tokens": 1240, "output_tokens": 90}
    (event,) = memory.events
    assert event.type == "tool.called"
    assert event.payload == {"tool": "lookup_order", "input": {"order_id": 991}}
    aos.shutdown()


def test_sdk_readme_manual_end_snippet(memory: InMemoryExporter) -> None:
    """The SDK README's try/complete/except/fail snippet runs unchanged but for the import."""
    AgentOS = taskscope.Client
    aos = AgentOS(exporters=[memory])

    run = aos.start_run(input={"batch": "2026-09-22"}, external_run_id="nightly-2026-09-22")
    try:
        ...  # do the work
        run.complete({"rows": 1200})
    except Exception as exc:
        run.fail(str(exc))
        raise

    def nightly_job(batch: str) -> None:
        run = aos.start_run(input={"batch": batch})
        try:
            raise RuntimeError("disk full")  # do the work
        except Exception as exc:
            run.fail(str(exc))
            raise

    with pytest.raises(RuntimeError):
        nightly_job("2026-09-23")
    assert aos.flush()
    by_input = {r.input["batch"]: r for r in memory.runs}
    assert by_input["2026-09-22"].status == "completed"
    assert by_input["2026-09-22"].external_run_id == "nightly-2026-09-22"
    assert by_input["2026-09-23"].status == "failed"
    assert by_input["2026-09-23"].error is not None
    assert by_input["2026-09-23"].error.message == "disk full"
    aos.shutdown()


def test_run_with_block_fails_with_traceback_when_the_block_raises(
    client: taskscope.Client, memory: InMemoryExporter
) -> None:
    """A run used as a context manager fails, with type and traceback, if its block raises."""
    with pytest.raises(ValueError, match="bad invoice"), client.start_run(input={"id": 1}):
        raise ValueError("bad invoice")
    assert client.flush()
    (recorded,) = memory.runs
    assert recorded.status == "failed"
    assert recorded.error is not None
    assert recorded.error.type == "ValueError"
    assert recorded.error.message == "bad invoice"
    assert recorded.error.traceback is not None
    assert "raise ValueError" in recorded.error.traceback
