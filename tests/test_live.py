"""Live exporters get start/enter/exit/event/end hooks on the caller's thread, in order."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

import taskscope
from taskscope._live import Ending, LiveEvent


class Recorder:
    """A live exporter that logs every hook it receives."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str]] = []
        self.endings: dict[str, Ending] = {}
        self.current: list[str] = []

    def export(self, batch: Sequence[taskscope.Record]) -> None:
        return None

    def force_flush(self, timeout: float) -> bool:
        return True

    def shutdown(self) -> None:
        return None

    def live_start(self, item: taskscope.Run | taskscope.Task) -> Any:
        self.log.append(("start", item.name))
        return item.name

    def live_enter(self, state: Any) -> Any:
        self.log.append(("enter", state))
        self.current.append(state)
        return len(self.current)

    def live_exit(self, state: Any, token: Any) -> None:
        assert token == len(self.current)
        self.current.pop()
        self.log.append(("exit", state))

    def live_event(self, state: Any, event: LiveEvent) -> None:
        self.log.append(("event", f"{state}:{event.type}"))

    def live_end(self, state: Any, ending: Ending) -> None:
        self.log.append(("end", f"{state}:{ending.status}"))
        self.endings[state] = ending


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def test_decorated_calls_and_blocks_drive_the_hooks_in_order(recorder: Recorder) -> None:
    """A run block, a decorated call and an event: start, enter, event, exit, end, nested."""
    client = taskscope.Client([recorder])

    @taskscope.task("step")
    def step() -> int:
        taskscope.emit("step.note")
        return 1

    with client.start_run(name="agent"):
        step()
    assert recorder.log == [
        ("start", "agent"),
        ("enter", "agent"),
        ("start", "step"),
        ("enter", "step"),
        ("event", "step:step.note"),
        ("exit", "step"),
        ("end", "step:completed"),
        ("exit", "agent"),
        ("end", "agent:completed"),
    ]
    assert recorder.current == []
    client.shutdown()


def test_generator_enters_and_exits_per_step(recorder: Recorder) -> None:
    """A generator task is current only while it runs: one enter/exit pair per step."""
    client = taskscope.Client([recorder])

    @taskscope.task("numbers")
    def numbers() -> Iterator[int]:
        yield 1
        yield 2

    with client.start_run(name="agent"):
        assert list(numbers()) == [1, 2]
    steps = [entry for entry in recorder.log if entry[1] == "numbers"]
    assert steps == [("start", "numbers")] + [("enter", "numbers"), ("exit", "numbers")] * 3
    assert recorder.endings["numbers"].status == "completed"
    client.shutdown()


def test_failure_reaches_the_end_hook_with_the_exception(recorder: Recorder) -> None:
    """A failing task's ending carries the exception object and its type."""
    client = taskscope.Client([recorder])

    @taskscope.task("boom")
    async def boom() -> None:
        raise KeyError("missing")

    async def main() -> None:
        with client.start_run(name="agent"):
            await boom()

    with pytest.raises(KeyError):
        asyncio.run(main())
    ending = recorder.endings["boom"]
    assert ending.status == "failed"
    assert isinstance(ending.exception, KeyError)
    assert ending.error is not None and ending.error.type == "KeyError"
    assert recorder.endings["agent"].status == "failed"
    client.shutdown()


def test_manual_tasks_start_and_end_without_entering(recorder: Recorder) -> None:
    """start_task/complete start and end a task; it is never made current."""
    client = taskscope.Client([recorder])
    run = client.start_run(name="agent")
    run.start_task("manual").complete({"ok": True})
    run.complete()
    assert recorder.log == [
        ("start", "agent"),
        ("start", "manual"),
        ("end", "manual:completed"),
        ("end", "agent:completed"),
    ]
    assert recorder.endings["manual"].output == {"ok": True}
    client.shutdown()


def test_a_raising_hook_never_breaks_the_call(caplog: pytest.LogCaptureFixture) -> None:
    """A live exporter whose hooks raise is logged once; the user's code is unaffected."""

    class Broken(Recorder):
        def live_start(self, item: taskscope.Run | taskscope.Task) -> Any:
            raise RuntimeError("no spans today")

    client = taskscope.Client([Broken()])

    @taskscope.task("step")
    def step(x: int) -> int:
        return x + 1

    with client.start_run(name="agent"):
        assert step(1) == 2
        assert step(2) == 3
    messages = [r.getMessage() for r in caplog.records if "no spans today" in r.getMessage()]
    assert len(messages) == 1
    client.shutdown()
