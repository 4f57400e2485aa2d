"""An AgentOS stand-in on 127.0.0.1 that checks the order of what it is sent and injects faults.

Used by tests/test_outbox.py and benchmarks/agentos_latency.py. It speaks the ingest API (the
envelope, external_run_id dedupe, task upserts, one close per run), answers after ``delay``
seconds, and while down answers 503, drops the connection or answers 429 with ``Retry-After``,
in turn. What breaks the API's order is written down in ``violations``; what arrives twice is
counted in ``duplicates``.
"""

from __future__ import annotations

import http.server
import itertools
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

KEY = "tsk_standin_key"
FINAL = ("completed", "failed", "skipped")


@dataclass
class Run:
    """One run as the stand-in stored it: its timeline in arrival order."""

    id: str
    external_id: str | None
    agent_id: str
    timeline: list[tuple[str, Any]] = field(default_factory=list)  # ("event", e) / ("task", id)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    spans: dict[str, dict[str, Any]] = field(default_factory=dict)
    ended: str | None = None
    ended_at: float = 0.0


class StandIn:
    """The server; ``close()`` stops it."""

    def __init__(self, delay: float = 0.0, *, retry_after: float = 1.0) -> None:
        self.delay = delay
        self.retry_after = retry_after
        self.down_until = 0.0  # monotonic; down while now < down_until
        self.faults = itertools.cycle(("503", "drop", "429"))
        self.runs: dict[str, Run] = {}
        self.by_external: dict[str, str] = {}
        self.violations: list[str] = []
        self.duplicates: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self.faulted: Counter[str] = Counter()
        self.last_accepted = 0.0
        self.fail_next = 0  # this many requests fault, whatever the time
        self.answered = threading.Event()  # set by the first request the API answers
        self.in_flight = 0
        self.most_in_flight = 0
        self._events_seen: set[str] = set()
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)
        stand_in = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # TCP_NODELAY: answers go out at once

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                with stand_in._lock:
                    stand_in.in_flight += 1
                    stand_in.most_in_flight = max(stand_in.most_in_flight, stand_in.in_flight)
                try:
                    self.serve()
                finally:
                    with stand_in._lock:
                        stand_in.in_flight -= 1

            def serve(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", "0")))
                if stand_in.delay:
                    time.sleep(stand_in.delay)  # the round trip to a distant backend
                fault = stand_in.fault()
                if fault == "drop":
                    self.close_connection = True
                    return
                if fault is not None:
                    extra = {"retry-after": f"{stand_in.retry_after:g}"} if fault == "429" else {}
                    self.answer(int(fault), None, "INJECTED", extra)
                    return
                if self.headers.get("authorization") != f"Bearer {KEY}":
                    self.answer(401, None, "UNAUTHENTICATED")
                    return
                try:
                    body = json.loads(raw)
                except ValueError:
                    self.answer(400, None, "VALIDATION_ERROR")
                    return
                status, data, code = stand_in.handle(self.path, body)
                self.answer(status, data, code)

            def answer(
                self, status: int, data: Any, code: str | None, extra: dict[str, str] | None = None
            ) -> None:
                error = None if code is None else {"code": code, "message": code.lower()}
                content = json.dumps({"data": data, "error": error}).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(content)))
                for name, value in (extra or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(content)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.request_queue_size = 128
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    # -- faults ---------------------------------------------------------------------------------

    def go_down(self, seconds: float) -> None:
        """Fail every request for ``seconds`` from now (503, dropped connection, 429 in turn)."""
        self.down_until = time.monotonic() + seconds

    def recover(self) -> None:
        self.down_until = 0.0

    def fault(self) -> str | None:
        with self._lock:
            if self.fail_next > 0:
                self.fail_next -= 1
            elif time.monotonic() >= self.down_until:
                return None
            fault = next(self.faults)
            self.faulted[fault] += 1
            return fault

    # -- the API --------------------------------------------------------------------------------

    def handle(self, path: str, body: Any) -> tuple[int, Any, str | None]:
        with self._lock:
            self.requests[path.rsplit("/v1/", 1)[-1]] += 1
            self.last_accepted = time.monotonic()
            self.answered.set()
            if path.endswith("/run/start"):
                external = body.get("external_run_id")
                if external in self.by_external:
                    self.duplicates["run.start"] += 1
                    return 200, {"run_id": self.by_external[external]}, None
                run = Run(f"srv-{next(self._numbers)}", external, body.get("agent_id", ""))
                self.runs[run.id] = run
                if external:
                    self.by_external[external] = run.id
                return 200, {"run_id": run.id}, None
            run_found = self.runs.get(body.get("run_id", ""))
            if run_found is None:
                self.violations.append(f"{path} for a run never started: {body.get('run_id')}")
                return 404, None, "NOT_FOUND"
            run = run_found
            if run.ended is not None and not path.endswith(("/complete", "/fail", "/cancel")):
                self.violations.append(f"{path} after the end of {run.id}")
            if path.endswith("/events"):
                for event in body["events"]:
                    self._event(run, event)
                return 200, {"accepted": len(body["events"])}, None
            if path.endswith("/tasks"):
                self._task(run, body["task"])
                return 200, {"task_id": body["task"]["id"]}, None
            kind = path.rsplit("/", 1)[-1]
            if run.ended is not None:
                self.duplicates["run.end"] += 1
            else:
                run.ended, run.ended_at = kind, time.monotonic()
            return 200, {"status": run.ended}, None

    def _event(self, run: Run, event: dict[str, Any]) -> None:
        fingerprint = run.id + json.dumps(event, sort_keys=True)
        if fingerprint in self._events_seen:
            self.duplicates["span" if "span_id" in event else "event"] += 1
            return
        self._events_seen.add(fingerprint)
        if "span_id" in event:
            if event["span_id"] not in run.tasks:
                self.violations.append(f"span {event['span_id']} before its task was created")
            run.spans[event["span_id"]] = event
            return
        run.timeline.append(("event", event))

    def _task(self, run: Run, task: dict[str, Any]) -> None:
        known = run.tasks.get(task["id"])
        if known is None:
            run.tasks[task["id"]] = dict(task)
            run.timeline.append(("task", task["id"]))
            return
        if known["status"] in FINAL:
            if task["status"] == known["status"]:
                self.duplicates["task"] += 1
            else:
                self.violations.append(f"task {task['id']} went {known['status']}→{task['status']}")
            return
        known.update(task)

    # -- reading back ---------------------------------------------------------------------------

    def run_by_external(self, external: str) -> Run | None:
        with self._lock:
            found = self.by_external.get(external)
            return self.runs.get(found) if found else None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5.0)


# -- the recorded scenario and its check ---------------------------------------------------------


def record_runs(
    client: Any, runs: int = 10, tasks: int = 20, events: int = 5
) -> tuple[list[str], float]:
    """Record ``runs`` runs of ``tasks`` tasks and ``events`` events spread among them.

    Returns the taskscope run ids and the longest time one record call took (seconds).
    """
    every = max(1, tasks // max(1, events))
    ids: list[str] = []
    worst = 0.0
    for number in range(runs):
        began = time.perf_counter()
        run = client.start_run({"run": number}, name=f"run-{number}")
        worst = max(worst, time.perf_counter() - began)
        ids.append(run.id)
        emitted = 0
        for index in range(tasks):
            began = time.perf_counter()
            if index % every == 0 and emitted < events:
                run.emit("step.reached", {"k": emitted})
                emitted += 1
            task = run.start_task(f"task-{index:03d}", input={"i": index})
            task.complete(output={"i": index})
            worst = max(worst, time.perf_counter() - began)
        began = time.perf_counter()
        run.complete(output={"tasks": tasks})
        worst = max(worst, time.perf_counter() - began)
    return ids, worst


def expected_groups(tasks: int = 20, events: int = 5) -> list[Any]:
    """The timeline of one recorded run: event numbers, and the set of tasks between them."""
    every = max(1, tasks // max(1, events))
    out: list[Any] = []
    emitted = 0
    for index in range(tasks):
        if index % every == 0 and emitted < events:
            out.append(emitted)
            emitted += 1
            out.append(set())
        if not out or not isinstance(out[-1], set):
            out.append(set())
        out[-1].add(f"task-{index:03d}")
    return out


def problems(stand_in: StandIn, run_ids: list[str], tasks: int = 20, events: int = 5) -> list[str]:
    """What is wrong with the delivery of ``run_ids``: missing, out of order, twice."""
    found: list[str] = list(stand_in.violations)
    found += [f"{count} {what} sent twice" for what, count in stand_in.duplicates.items() if count]
    wanted = expected_groups(tasks, events)
    for run_id in run_ids:
        run = stand_in.run_by_external(run_id)
        if run is None:
            found.append(f"run {run_id} never arrived")
            continue
        if run.ended != "complete":
            found.append(f"run {run_id} ended as {run.ended}")
        names = {task_id: task["name"] for task_id, task in run.tasks.items()}
        groups: list[Any] = []
        for kind, item in run.timeline:
            if kind == "event":
                groups.append(item["payload"]["k"])
            elif groups and isinstance(groups[-1], set):
                groups[-1].add(names[item])
            else:
                groups.append({names[item]})
        if groups != wanted:
            found.append(f"run {run_id} timeline {groups} is not {wanted}")
        states = sorted({task["status"] for task in run.tasks.values()})
        if states != ["completed"] or len(run.spans) != tasks:
            found.append(f"run {run_id}: task states {states}, {len(run.spans)} spans")
    return found
