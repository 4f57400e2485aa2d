"""AgentOSExporter against a real ingest server, and taskscope ui's ingest API (issue 5).

Every test talks HTTP over 127.0.0.1 to the real ingest app (``taskscope.server``) under
uvicorn; faults come from a small proxy in front of it that answers 503/429, drops connections
or hangs before the request reaches the app, so what the app stored is what was delivered.
"""

from __future__ import annotations

import http.server
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

import taskscope
from taskscope import _agentos_api as api
from taskscope import _cli, _store
from taskscope.exporters import AgentOSExporter, InMemoryExporter
from taskscope.exporters._http import backoff, parse_retry_after
from taskscope.server.app import create_app, serve_in_thread

ROOT = Path(__file__).resolve().parents[1]
KEY = "tsk_test_key"


# -- servers -----------------------------------------------------------------------------------


@dataclass
class Seen:
    """One request the proxy received: when, where, what, and what it did with it."""

    at: float
    path: str
    body: Any
    fault: str | None
    status: int | None = None


Rule = Callable[[int, str, Any], "str | None"]


class FaultProxy:
    """A threaded HTTP proxy on 127.0.0.1 that injects faults before forwarding to ``upstream``."""

    def __init__(self, upstream: str, rule: Rule | None = None) -> None:
        self.upstream = httpx.Client(base_url=upstream, timeout=10.0)
        self.rule = rule
        self.faults: deque[str] = deque()
        self.seen: list[Seen] = []
        self.release = threading.Event()
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else every answer waits out a delayed ACK

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", "0")))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                with proxy._lock:
                    number = len(proxy.seen)
                    fault = proxy.faults.popleft() if proxy.faults else None
                    if fault is None and proxy.rule is not None:
                        fault = proxy.rule(number, self.path, body)
                    entry = Seen(time.monotonic(), self.path, body, fault)
                    proxy.seen.append(entry)
                if fault in ("drop", "hang"):
                    if fault == "hang":
                        proxy.release.wait(30.0)
                    self.close_connection = True
                    return
                if fault in ("503", "429"):
                    status = int(fault)
                    payload = {"data": None, "error": {"code": "INJECTED", "message": fault}}
                    extra = {"retry-after": "1"} if status == 429 else {}
                    self._answer(status, json.dumps(payload).encode(), extra)
                    entry.status = status
                    return
                headers = {"authorization": self.headers.get("authorization", "")}
                reply = proxy.upstream.post(self.path, content=raw, headers=headers)
                entry.status = reply.status_code
                self._answer(reply.status_code, reply.content, {})

            def _answer(self, status: int, content: bytes, extra: dict[str, str]) -> None:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(content)))
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(content)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5.0)
        self.upstream.close()

    def faults_seen(self, kind: str) -> int:
        return sum(1 for entry in self.seen if entry.fault == kind)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """The store file the ingest server writes into."""
    return tmp_path / "ui.db"


@pytest.fixture
def ingest_url(db: Path) -> Iterator[str]:
    """taskscope ui's app, served by uvicorn on a free loopback port for the test."""
    with serve_in_thread(create_app(db, ingest_key=KEY)) as url:
        yield url


@pytest.fixture
def proxy(ingest_url: str) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of the ingest server."""
    made = FaultProxy(ingest_url)
    yield made
    made.close()


def exporter(url: str, **options: Any) -> AgentOSExporter:
    """An exporter with tiny backoffs, so retries take milliseconds."""
    settings: dict[str, Any] = {"backoff": 0.002, "max_backoff": 0.05, "timeout": 5.0}
    settings.update(options)
    key = settings.pop("api_key", KEY)
    return AgentOSExporter(key, "agent-1", url, **settings)


def stored(db: Path, run_id: str = "latest") -> _store.StoredRun:
    """The run as ``taskscope show`` reads it from the store."""
    connection = _store.connect(db, create=False)
    try:
        [found] = _store.find_run_ids(connection, run_id)
        result = _store.load_run(connection, found)
    finally:
        connection.close()
    assert result is not None
    return result


def stream(run: _store.StoredRun) -> list[tuple[str, str]]:
    """The run's timeline as (kind, name) pairs in sequence order."""
    items: list[tuple[int, str, str]] = [(t.seq, "task", t.name) for t in run.tasks]
    items += [(e.seq, "event", e.type) for e in run.events]
    return [(kind, name) for _, kind, name in sorted(items)]


def groups(pairs: list[tuple[str, str]]) -> list[Any]:
    """A timeline as events (names) and the set of tasks between two events."""
    out: list[Any] = []
    for kind, name in pairs:
        if kind == "event":
            out.append(name)
        elif out and isinstance(out[-1], set):
            out[-1].add(name)
        else:
            out.append({name})
    return out


def seed_flow(client: taskscope.Client) -> None:
    """The seed's flow: events, then tasks completed/skipped/failed (one nested), run complete."""
    run = client.start_run({"file": "report.pdf"}, name="pdf-agent")
    run.emit("pdf.received", {"bytes": 2048})
    run.emit_tool_call("reader", {"path": "report.pdf"})
    with run.task("parse-pdf", input={"file": "report.pdf"}) as parse:
        with run.task("read-pages", input={"pages": 3}) as inner:
            run.emit("page.read", {"page": 1}, level="debug")
            inner.output = {"read": 3}
        parse.output = {"pages": 3}
    run.start_task("classify").skip("cache hit")
    upload = run.start_task("upload", input={"to": "store"})
    run.emit_tool_error("uploader", "Connection refused")
    upload.fail("Connection refused")
    run.complete(output={"summary": "three pages"}, usage={"input_tokens": 12})


# -- acceptance 1: the seed flow -----------------------------------------------------------------


def test_seed_flow_arrives_unrejected_in_order_with_a_span_tree(
    proxy: FaultProxy, db: Path
) -> None:
    """The seed flow is accepted request by request; states, order and span tree are right."""
    sender = exporter(proxy.url)
    client = taskscope.Client([sender])
    seed_flow(client)
    assert client.flush(10.0)
    client.shutdown()

    assert proxy.seen and all(entry.status == 200 for entry in proxy.seen)
    assert sender.stats()["dropped"] == 0 and sender.stats()["retries"] == 0
    start = proxy.seen[0]
    assert start.path == api.RUN_START
    assert start.body["external_run_id"] and start.body["trigger_type"] == "sdk"
    assert start.body["input"] == {"file": "report.pdf"}
    upserts = [e.body["task"] for e in proxy.seen if e.path == api.TASKS]
    # Each task ended before its creation went out, so it is sent once, in its final state.
    assert sorted((u["name"], u["status"]) for u in upserts) == [
        ("classify", "skipped"),
        ("parse-pdf", "completed"),
        ("read-pages", "completed"),
        ("upload", "failed"),
    ]
    by_task = {u["name"]: u for u in upserts}
    assert by_task["upload"]["error_message"] == "Connection refused"
    assert by_task["parse-pdf"]["input"] == {"file": "report.pdf"}
    assert by_task["parse-pdf"]["output"] == {"pages": 3}
    spans = [ev for e in proxy.seen if e.path == api.EVENTS for ev in e.body["events"]]
    spans = [ev for ev in spans if "span_id" in ev]
    by_name = {span["type"]: span for span in spans}
    assert by_name["read-pages"]["parent_span_id"] == by_name["parse-pdf"]["span_id"]
    assert "parent_span_id" not in by_name["parse-pdf"]
    assert by_name["upload"]["level"] == "error" and by_name["upload"]["kind"] == "task"
    assert proxy.seen[-1].path == api.RUN_COMPLETE
    assert proxy.seen[-1].body["input_tokens"] == 12

    run = stored(db)
    assert run.run.status == "completed" and run.run.output == {"summary": "three pages"}
    assert run.run.usage == {"input_tokens": 12}
    states = {task.name: task.status for task in run.tasks}
    assert states == {
        "parse-pdf": "completed",
        "read-pages": "completed",
        "classify": "skipped",
        "upload": "failed",
    }
    ids = {task.name: task.id for task in run.tasks}
    parents = {task.name: task.parent_id for task in run.tasks}
    assert parents["read-pages"] == ids["parse-pdf"] and parents["parse-pdf"] is None
    # Tasks between two events go out together, so siblings may swap; a child follows its
    # parent and every event keeps its place.
    assert groups(stream(run)) == [
        "pdf.received",
        "tool.called",
        {"parse-pdf", "read-pages"},
        "page.read",
        {"classify", "upload"},
        "tool.failed",
    ]
    seqs = {task.name: task.seq for task in run.tasks}
    assert seqs["parse-pdf"] < seqs["read-pages"]


def test_events_go_in_batches_of_at_most_fifty_in_order(proxy: FaultProxy, db: Path) -> None:
    """120 events in a row are three calls (50, 50, 20), stored in the order emitted."""
    client = taskscope.Client([exporter(proxy.url)])
    with client.start_run(name="many") as run:
        for index in range(120):
            run.emit("tick.counted", {"i": index})
    assert client.flush(10.0)
    client.shutdown()
    sizes = [len(e.body["events"]) for e in proxy.seen if e.path == api.EVENTS]
    assert sizes == [50, 50, 20]
    assert [event.payload["i"] for event in stored(db).events] == list(range(120))


def test_limits_nulls_and_non_object_values_follow_the_api(proxy: FaultProxy, db: Path) -> None:
    """A 10,000-char error is cut to 4,000 with a marker; scalars are wrapped; no null is sent."""
    client = taskscope.Client([exporter(proxy.url)])
    run = client.start_run("just text", name="limits")
    task = run.start_task("scalar")
    task.complete(output=42)
    run.emit("odd.payload", ["a", "b"])
    run.fail("x" * 10_000, error_detail={"step": 3})
    assert client.flush(10.0)
    client.shutdown()

    assert all(entry.status == 200 for entry in proxy.seen)
    for entry in proxy.seen:
        assert None not in entry.body.values()
    fail = proxy.seen[-1].body
    assert len(fail["error_message"]) == api.MAX_ERROR_MESSAGE
    assert fail["error_message"].endswith("chars]") and "…[truncated" in fail["error_message"]
    assert fail["error_detail"]["detail"] == {"step": 3}
    run_back = stored(db)
    assert run_back.run.status == "failed" and run_back.run.input == {"value": "just text"}
    assert run_back.run.error is not None and len(run_back.run.error.message) == 4000
    assert run_back.tasks[0].output == {"value": 42}
    assert run_back.events[0].payload == {"value": ["a", "b"]}


# -- acceptance 2: faults ------------------------------------------------------------------------


def test_faults_lose_nothing_duplicate_nothing_and_keep_order(
    proxy: FaultProxy, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """503×8, 429×2, two drops, a hang: 300 tasks and 300 events arrive once and in order."""
    plan = {3: "503", 20: "429", 40: "drop", 60: "hang", 80: "drop", 100: "429"}

    def rule(number: int, path: str, body: Any) -> str | None:
        if 3 <= number < 11:
            return "503"
        return plan.get(number)

    proxy.rule = rule
    sender = exporter(proxy.url, timeout=0.5, max_retries=10)
    client = taskscope.Client([sender])
    worst = 0.0
    run = client.start_run({"n": 300}, name="faults")
    for index in range(300):
        began = time.perf_counter()
        run.emit("step.noted", {"i": index})
        task = run.start_task(f"task-{index:03d}", input={"i": index})
        task.complete(output={"i": index})
        worst = max(worst, time.perf_counter() - began)
    began = time.perf_counter()
    run.complete(output={"done": True})
    worst = max(worst, time.perf_counter() - began)
    assert client.flush(60.0)
    # flush() makes the records durable (the outbox); delivery itself may take longer.
    assert sender.wait_delivered(60.0)
    client.shutdown()

    assert proxy.faults_seen("503") == 8 and proxy.faults_seen("429") == 2
    assert proxy.faults_seen("drop") == 2 and proxy.faults_seen("hang") == 1
    assert sender.stats()["retries"] == 13 and sender.stats()["dropped"] == 0
    # Retry-After: 1 was honoured: the request after each 429 came a second later.
    for index, entry in enumerate(proxy.seen):
        if entry.fault == "429":
            assert proxy.seen[index + 1].at - entry.at >= 0.95
    back = stored(db)
    assert back.run.status == "completed"
    assert [task.name for task in back.tasks] == [f"task-{i:03d}" for i in range(300)]
    assert all(task.status == "completed" and task.output == task.input for task in back.tasks)
    assert [event.payload["i"] for event in back.events] == list(range(300))
    assert stream(back) == [
        pair for i in range(300) for pair in (("event", "step.noted"), ("task", f"task-{i:03d}"))
    ]
    with capsys.disabled():
        print(
            f"\n[agentos faults] retries={sender.stats()['retries']} "
            f"requests={sender.stats()['requests']} max caller time per record "
            f"call={worst * 1000:.3f} ms"
        )
    assert worst < 0.25  # generous: the point is that no call waits on the network


def test_a_failing_run_does_not_hold_back_another(proxy: FaultProxy, db: Path) -> None:
    """While run A's start is refused with 503s, run B is delivered whole."""
    first_a: dict[str, str] = {}

    def rule(number: int, path: str, body: Any) -> str | None:
        if path == api.RUN_START and body.get("agent_id") == "agent-a":
            first_a.setdefault("seen", "yes")
            if sum(1 for e in proxy.seen if e.path == api.RUN_START) < 4:
                return "503"
        return None

    proxy.rule = rule
    client = taskscope.Client([exporter(proxy.url, backoff=0.05, max_backoff=0.2)])
    with client.start_run(name="a", agent_id="agent-a") as run_a:
        run_a.emit("a.event", {})
    with client.start_run(name="b", agent_id="agent-b") as run_b:
        for index in range(3):
            run_b.start_task(f"b-{index}").complete()
    assert client.flush(10.0)
    client.shutdown()
    paths = [(e.path, (e.body or {}).get("agent_id"), e.status) for e in proxy.seen]
    b_done = next(i for i, e in enumerate(proxy.seen) if e.path == api.RUN_COMPLETE)
    a_started = next(i for i, p in enumerate(paths) if p == (api.RUN_START, "agent-a", 200))
    assert b_done < a_started, paths
    connection = _store.connect(db, create=False)
    try:
        statuses = sorted(s.run.status for s in _store.list_runs(connection))
    finally:
        connection.close()
    assert statuses == ["completed", "completed"]


def test_exit_with_a_hung_backend_takes_the_shutdown_timeout_not_longer(tmp_path: Path) -> None:
    """A backend that never answers delays exit by about shutdown_timeout (1 s), not 30 s."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)  # accepted by the kernel, never answered
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    script = textwrap.dedent(
        f"""
        import time, taskscope
        from taskscope.exporters import AgentOSExporter
        client = taskscope.Client(
            [AgentOSExporter("key", "agent", {url!r}, timeout=30.0)], shutdown_timeout=1.0
        )
        with client.start_run(name="hung") as run:
            for i in range(5):
                run.start_task(f"t{{i}}").complete()
        print("recorded", flush=True)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        with subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env
        ) as child:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "recorded"
            began = time.monotonic()
            child.wait(timeout=20)
            took = time.monotonic() - began
    finally:
        listener.close()
    print(f"\n[agentos exit] exit after recording took {took:.2f} s (shutdown_timeout=1.0)")
    assert child.returncode == 0
    assert took < 4.0


# -- acceptance 3: a wrong key -------------------------------------------------------------------


def test_a_wrong_key_warns_once_and_counts_the_records_dropped(
    proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """401: nothing raised, one warning naming it, every record counted as dropped."""
    sender = exporter(proxy.url, api_key="aos_agent_wrong")
    client = taskscope.Client([sender])
    with caplog.at_level(logging.WARNING, logger="taskscope"):
        for name in ("one", "two"):
            with client.start_run(name=name) as run:
                run.emit("x.y", {})
                run.start_task("t").complete()
        delivered = client.flush(10.0)
        client.shutdown()
    assert not delivered
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "401" in warnings[0].getMessage() and "UNAUTHENTICATED" in warnings[0].getMessage()
    # Per run: start, event, task (collapsed: one record), end.
    assert sender.stats()["dropped"] == 8 and sender.stats()["sent"] == 0
    assert {entry.status for entry in proxy.seen} == {401}


# -- acceptance 4: the official SDK against a real `taskscope ui` process ------------------------


@pytest.fixture
def ui_process(db: Path) -> Iterator[str]:
    """``python -m taskscope ui`` on a free port with a known key; interrupted after the test."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TASKSCOPE_INGEST_KEY": KEY}
    child = subprocess.Popen(
        [sys.executable, "-m", "taskscope", "ui", "--db", str(db), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.startswith("taskscope ui: serving http://127.0.0.1:"), line
        url = line.split()[3]
        deadline = time.monotonic() + 10
        while True:  # uvicorn accepts once its startup finished
            try:
                socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), 1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        yield url
    finally:
        child.send_signal(signal.SIGINT)
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        for stream_ in (child.stdout, child.stderr):
            if stream_ is not None:
                stream_.close()


def test_the_official_sdk_reports_into_taskscope_ui(ui_process: str, db: Path) -> None:
    """pyagentos-sdk's seed flow and spans land in the store; `taskscope show` draws them."""
    agentos = pytest.importorskip("agentos")
    aos = agentos.AgentOS(api_key=KEY, agent_id="agent-1", base_url=ui_process)
    run = aos.start_run(input={"file": "report.pdf"})
    run.emit("pdf.received", {"bytes": 2048})
    parse = run.start_task("parse-pdf", input={"file": "report.pdf"})
    parse.complete(output={"pages": 3})
    run.start_task("classify-document").skip()
    upload = run.start_task("upload-summary")
    upload.fail("Connection refused")
    plan = run.start_span("plan", kind="step")
    llm = plan.child("gpt-4.1", kind="llm")
    llm.end({"input_tokens": 120, "output_tokens": 9})
    plan.end()
    run.emit_tool_error("uploader", "Connection refused")
    run.complete(output={"pages": 3}, usage={"input_tokens": 120, "output_tokens": 9})
    aos.shutdown()

    shown = subprocess.run(
        [sys.executable, "-m", "taskscope", "show", "latest", "--db", str(db), "--no-color"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=30,
    )
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert "✓ run agent-1" in text
    for line in ("✓ parse-pdf", "↷ classify-document", "✗ upload-summary", "✓ plan", "✓ gpt-4.1"):
        assert line in text, text
    assert "pdf.received" in text and "tool.failed" in text
    back = stored(db)
    names = {task.id: task.name for task in back.tasks}
    llm_task = next(task for task in back.tasks if task.name == "gpt-4.1")
    assert names[llm_task.parent_id or ""] == "plan" and llm_task.kind == "llm"
    assert back.run.usage == {"input_tokens": 120, "output_tokens": 9}

    wrong = agentos.AgentOS(api_key="aos_agent_wrong", agent_id="agent-1", base_url=ui_process)
    with pytest.raises(agentos.AgentOSAuthError):
        wrong.start_run(input={})
    wrong.shutdown()
    answer = httpx.post(f"{ui_process}{api.RUN_START}", json={"agent_id": "a"})
    assert answer.status_code == 401
    assert answer.json()["data"] is None
    assert answer.json()["error"]["code"] == "UNAUTHENTICATED"


# -- acceptance 5: AgentOSExporter -> taskscope ui round trip ------------------------------------


@taskscope.task
def fetch(url: str) -> dict[str, Any]:
    """A leaf task with a dict output."""
    taskscope.emit("fetch.done", {"url": url})
    return {"status": 200}


@taskscope.task("count-words")
def count_words(text: str) -> int:
    """A task with a scalar output (sent as {"value": ...})."""
    return len(text.split())


@taskscope.task
def flaky() -> None:
    """A task that fails."""
    raise ValueError("flaky went wrong")


def _wire(value: Any) -> Any:
    return value if value is None or isinstance(value, dict) else {"value": value}


def test_exporter_into_taskscope_ui_round_trips(ingest_url: str, db: Path) -> None:
    """`taskscope show --json` of the ingested run equals the in-process recording."""
    memory = InMemoryExporter()
    taskscope.configure(exporters=[memory, exporter(ingest_url)])

    @taskscope.run("round-trip")
    def agent(topic: str) -> dict[str, Any]:
        current = taskscope.current_run()
        assert current is not None
        with current.task("gather", input={"topic": topic}):
            fetch("https://example.org/a")
            fetch("https://example.org/b")
        taskscope.emit("gathered.all", {"count": 2}, level="info")
        words = count_words("one two three")
        with pytest.raises(ValueError, match="flaky"):
            flaky()
        current.start_task("cached").skip("cache hit")
        return {"words": words}

    agent("solar")
    assert taskscope.flush(10.0)

    code = _cli.main(["show", "latest", "--json", "--db", str(db)])
    assert code == 0
    run_in = memory.runs[0]
    back = stored(db)
    assert back.run.status == run_in.status == "completed"
    assert back.run.input == _wire(run_in.input) and back.run.output == _wire(run_in.output)
    assert back.run.external_run_id == run_in.id

    def tasks_view(tasks: list[taskscope.TaskRecord]) -> list[tuple[Any, ...]]:
        names = {task.id: task.name for task in tasks}
        return [
            (
                task.name,
                task.status,
                _wire(task.input),
                _wire(task.output) if task.status != "failed" else None,
                task.error.message if task.error else None,
                names.get(task.parent_id or ""),
                task.kind,
            )
            for task in sorted(tasks, key=lambda t: t.start_ns // 1000)
        ]

    assert tasks_view(back.tasks) == tasks_view(memory.tasks)
    events_in = [(e.type, e.level, _wire(e.payload)) for e in memory.events]
    assert [(e.type, e.level, e.payload) for e in back.events] == events_in

    def in_process_stream() -> list[tuple[str, str]]:
        items = [(t.seq, "task", t.name) for t in memory.tasks]
        items += [(e.seq, "event", e.type) for e in memory.events]
        return [(kind, name) for _, kind, name in sorted(items)]

    # Tasks between two events may be stored in either order (they go out together).
    assert groups(stream(back)) == groups(in_process_stream())
    by_name = {task.name: task for task in back.tasks}
    original = {task.name: task for task in memory.tasks}
    # The spans carried the client's own times.
    assert by_name["gather"].start_ns // 1000 == original["gather"].start_ns // 1000


# -- the ingest API's validation -----------------------------------------------------------------


def _post(url: str, path: str, body: Any, key: str | None = KEY) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(url + path, content=content, headers=headers)


def _error_code(response: httpx.Response) -> str:
    document = response.json()
    assert document["data"] is None
    return str(document["error"]["code"])


def test_ingest_rejects_what_agentos_rejects(ingest_url: str) -> None:
    """Nulls, bad statuses and levels, 51 events, bad JSON, unknown runs, no key, big bodies."""
    started = _post(ingest_url, api.RUN_START, {"agent_id": "a", "external_run_id": "e1"})
    assert started.status_code == 200 and started.json()["error"] is None
    run_id = started.json()["data"]["run_id"]
    again = _post(ingest_url, api.RUN_START, {"agent_id": "a", "external_run_id": "e1"})
    assert again.json()["data"]["run_id"] == run_id  # deduplicated on external_run_id

    event = {"type": "a.b", "level": "info", "payload": {}, "occurred_at": "2025-01-01T00:00:00Z"}
    cases: list[tuple[str, Any, int, str]] = [
        (api.RUN_START, {"agent_id": "a", "parent_run_id": None}, 400, "VALIDATION_ERROR"),
        (api.RUN_START, {"agent_id": "a", "trigger_type": "cron"}, 400, "VALIDATION_ERROR"),
        (api.RUN_START, b"{not json", 400, "VALIDATION_ERROR"),
        (api.EVENTS, {"run_id": run_id, "events": [event] * 51}, 400, "VALIDATION_ERROR"),
        (api.EVENTS, {"run_id": run_id, "events": [{**event, "level": "fatal"}]}, 400, ""),
        (api.EVENTS, {"run_id": run_id, "events": [{**event, "payload": None}]}, 400, ""),
        (api.EVENTS, {"run_id": "nope", "events": [event]}, 404, "NOT_FOUND"),
        (api.TASKS, {"run_id": run_id, "task": {"id": "t", "name": "t", "status": "ok"}}, 400, ""),
        (api.RUN_FAIL, {"run_id": run_id, "error_message": "x" * 4001}, 400, ""),
        (api.RUN_COMPLETE, {"run_id": run_id, "input_tokens": -1}, 400, ""),
    ]
    for path, body, status, code in cases:
        answer = _post(ingest_url, path, body)
        assert answer.status_code == status, (path, body, answer.text)
        assert _error_code(answer) == (code or "VALIDATION_ERROR")
    assert _post(ingest_url, api.EVENTS, {"run_id": run_id, "events": [event]}).status_code == 200
    huge = {"run_id": run_id, "events": [{**event, "payload": {"x": "y" * 1_100_000}}]}
    too_big = _post(ingest_url, api.EVENTS, huge)
    assert too_big.status_code == 413 and _error_code(too_big) == "PAYLOAD_TOO_LARGE"
    for key in (None, "wrong"):
        refused = _post(ingest_url, api.EVENTS, {"run_id": run_id, "events": [event]}, key)
        assert refused.status_code == 401 and _error_code(refused) == "UNAUTHENTICATED"
    assert _error_code(httpx.get(ingest_url + api.RUN_START)) == "METHOD_NOT_ALLOWED"


def test_ingest_task_upserts_end_once_and_runs_close_once(ingest_url: str, db: Path) -> None:
    """An ended task or run stays as it first ended, so retried calls change nothing."""
    run_id = _post(ingest_url, api.RUN_START, {"agent_id": "a"}).json()["data"]["run_id"]
    for status in ("running", "completed", "failed"):
        body = {"run_id": run_id, "task": {"id": "t1", "name": "t1", "status": status}}
        assert _post(ingest_url, api.TASKS, body).status_code == 200
    for path in (api.RUN_COMPLETE, api.RUN_CANCEL):
        assert _post(ingest_url, path, {"run_id": run_id}).json()["data"]["status"] == "completed"
    back = stored(db, run_id)
    assert [(t.name, t.status) for t in back.tasks] == [("t1", "completed")]
    assert back.run.status == "completed"


# -- construction, configuration, retry schedule -------------------------------------------------


def test_construction_names_the_missing_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """No key or no agent id: a ConfigurationError saying which and how to set it."""
    for name in ("AGENTOS_API_KEY", "AGENTOS_AGENT_ID", "AGENTOS_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(taskscope.ConfigurationError, match="api_key= or set AGENTOS_API_KEY"):
        AgentOSExporter(agent_id="a")
    with pytest.raises(taskscope.ConfigurationError, match="agent_id= or set AGENTOS_AGENT_ID"):
        AgentOSExporter(api_key="k")
    with pytest.raises(taskscope.ConfigurationError, match="not an http"):
        AgentOSExporter("k", "a", "agentos-ai.dev")
    monkeypatch.setenv("AGENTOS_API_KEY", "aos_agent_x")
    monkeypatch.setenv("AGENTOS_AGENT_ID", "agent-7")
    monkeypatch.setenv("AGENTOS_BASE_URL", "http://127.0.0.1:9/")
    made = AgentOSExporter()
    assert made.agent_id == "agent-7" and made.base_url == "http://127.0.0.1:9"
    assert "aos_agent_x" not in repr(made)
    made.shutdown()
    monkeypatch.setenv("TASKSCOPE_EXPORTERS", "agentos")
    with taskscope.Client() as client:
        assert [type(e).__name__ for e in client.exporters] == ["AgentOSExporter"]


def test_retry_schedule_doubles_with_jitter_and_reads_retry_after() -> None:
    """Backoff doubles within its cap with ±20 %; Retry-After takes seconds or an HTTP date."""
    assert backoff(0, 0.25, 30, rand=0.5) == pytest.approx(0.25)
    assert backoff(3, 0.25, 30, rand=0.0) == pytest.approx(2.0 * 0.8)
    assert backoff(20, 0.25, 30, rand=1.0) == pytest.approx(30 * 1.2)
    assert parse_retry_after("1") == 1.0 and parse_retry_after("soon") is None
    now = datetime(2025, 1, 1, tzinfo=timezone.utc)
    later = format_datetime(now + timedelta(seconds=7), usegmt=True)
    assert parse_retry_after(later, now=now.timestamp()) == pytest.approx(7.0)
    assert api.clip("x" * 10, 10) == "x" * 10 and len(api.clip("x" * 5000, 4000)) == 4000


def test_ui_command_warns_off_loopback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`taskscope ui --host 0.0.0.0` warns before serving (the server itself is stubbed here)."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr("taskscope.server.app.serve", lambda path, **options: calls.append(options))
    assert _cli.main(["ui", "--db", str(tmp_path / "x.db"), "--host", "0.0.0.0"]) == 0
    assert "warning: listening on 0.0.0.0" in capsys.readouterr().err
    assert calls[0]["host"] == "0.0.0.0" and calls[0]["port"] == 8765
    assert _cli.main(["ui", "--db", str(tmp_path / "x.db")]) == 0
    assert "warning" not in capsys.readouterr().err
