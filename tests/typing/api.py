"""User-style code that mypy --strict must accept: decorated callables keep their types."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any

from typing_extensions import assert_type

import taskscope
from taskscope.exporters import ConsoleExporter, Exporter, InMemoryExporter, LocalStore


@taskscope.task
def bare(path: str, pages: int = 1) -> list[str]:
    return [path] * pages


@taskscope.task("named", capture_output=False, ignore=("token",))
def named(path: str, token: str = "") -> int:
    return len(path)


@taskscope.task("fetch")
async def fetch(url: str) -> bytes:
    await asyncio.sleep(0)
    return url.encode()


@taskscope.task("rows")
def rows(count: int) -> Iterator[int]:
    yield from range(count)


@taskscope.task("stream")
async def stream(count: int) -> AsyncIterator[str]:
    for index in range(count):
        yield str(index)


class Agent:
    @taskscope.task("method")
    def method(self, x: int) -> float:
        return x / 2

    @classmethod
    @taskscope.task("classmethod")
    def build(cls, name: str) -> Agent:
        return cls()

    @staticmethod
    @taskscope.task("staticmethod")
    def helper(flag: bool) -> bool:
        return not flag


class Scorer:
    def __call__(self, text: str) -> float:
        return float(len(text))


scorer = taskscope.task("score")(Scorer())


@taskscope.run("agent")
async def main(invoice_id: str) -> dict[str, str]:
    return {"invoice": invoice_id}


assert_type(bare("a"), list[str])
assert_type(named("a", token="t"), int)
fetching = fetch("u")
_fetching_type = assert_type(fetching, Coroutine[Any, Any, bytes])
fetching.close()
assert_type(rows(3), Iterator[int])
assert_type(stream(3), AsyncIterator[str])
assert_type(Agent().method(1), float)
assert_type(Agent.build("x"), Agent)
assert_type(Agent.helper(True), bool)
assert_type(scorer("abc"), float)
entry = main("INV-1")
_entry_type = assert_type(entry, Coroutine[Any, Any, dict[str, str]])
entry.close()

memory = InMemoryExporter()
client = taskscope.Client(exporters=[memory])
run = client.start_run(input={"file": "report.pdf"}, name="pdf-agent")
assert_type(run, taskscope.Run)
task = run.start_task("parse-pdf", input={"file": "report.pdf"})
assert_type(task, taskscope.Task)
task.complete(output={"pages": 3})
run.emit("invoice.validated", {"amount": 12.5}, level="info")
run.complete(output={"pages": 3}, usage={"input_tokens": 10})
assert_type(client.flush(timeout=5.0), bool)

with client.start_run(name="pdf-agent") as current, current.task("summarise") as step:
    assert_type(step, taskscope.Task)
    step.output = {"summary": "..."}

with taskscope.task("phase") as phase:
    assert_type(phase, taskscope.Task)

assert_type(taskscope.current_task(), taskscope.Task)
assert_type(taskscope.current_run(), taskscope.Run)
headers = taskscope.inject({})
with taskscope.attach(headers) as joined:
    assert_type(joined, "taskscope.Run | None")

with taskscope.testing.capture() as cap:
    bare("x")
assert_type(cap.task("bare"), taskscope.TaskRecord)
assert_type(cap.tasks, list[taskscope.TaskRecord])

store: Exporter = LocalStore("runs.db")
console: Exporter = ConsoleExporter()
taskscope.configure(exporters=[LocalStore(), ConsoleExporter(max_siblings=50), store, console])

from taskscope.exporters import OTelExporter  # noqa: E402  (loaded on first use)

spans: Exporter = OTelExporter()
taskscope.configure(exporters=[OTelExporter(tracer_provider=None), LocalStore()])
