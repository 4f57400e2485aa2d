"""instrument_anthropic: the real anthropic SDK against tests/llm_fake_server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

import taskscope
from taskscope.exporters import InMemoryExporter
from taskscope.integrations import _anthropic
from taskscope.testing import capture
from tests.conftest import ended_snapshots
from tests.llm_fake_server import REPLY, TOOL_ARGUMENTS, TOOL_NAME, FakeLLMServer

MESSAGES = [{"role": "user", "content": "Say hello."}]
TOOLS = [{"name": TOOL_NAME, "input_schema": {"type": "object"}}]
# Anthropic's input_tokens (10) leaves out the cached ones (3 read, 2 written): added back in.
USAGE = {"input_tokens": 15, "output_tokens": 7, "cache_read_tokens": 3, "cache_creation_tokens": 2}
REPLY_MESSAGE = {"role": "assistant", "content": REPLY, "stop_reason": "end_turn"}
TOOL_MESSAGE = {
    "role": "assistant",
    "content": "Let me check.",
    "tool_calls": [{"id": "toolu_1", "name": TOOL_NAME, "arguments": TOOL_ARGUMENTS}],
    "stop_reason": "tool_use",
}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as fake:
        yield fake


@pytest.fixture(autouse=True)
def _uninstrumented() -> Iterator[None]:
    yield
    _anthropic._STATE.clients.clear()
    taskscope.uninstrument_anthropic()
    assert not _anthropic._STATE.is_patched


def sync_client(server: FakeLLMServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="test-key", max_retries=0)


def async_client(server: FakeLLMServer) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=server.url, api_key="test-key", max_retries=0)


def metadata(model: str = "claude-x", **more: Any) -> dict[str, Any]:
    return {
        "provider": "anthropic",
        "operation": "chat",
        "request_model": model,
        "response_model": f"{model}-2026-01-01",
        "response_id": "msg_fake1",
        **USAGE,
        **more,
    }


def streamed_metadata(task: taskscope.TaskRecord) -> dict[str, Any]:
    """The metadata without the time to first token, after checking it is a duration."""
    meta = dict(task.metadata)
    ttft = meta.pop("time_to_first_token_ms")
    assert isinstance(ttft, float) and 0 <= ttft <= task.duration_ms  # type: ignore[operator]
    return meta


def test_sync_message_is_an_llm_task_with_request_answer_and_usage(server: FakeLLMServer) -> None:
    """messages.create becomes a task "chat {model}"; its usage is the task's and the run's."""
    client = taskscope.instrument_anthropic(sync_client(server))
    with capture() as cap, taskscope.run("agent"):
        reply = client.messages.create(model="claude-x", max_tokens=100, messages=MESSAGES)
    assert reply.content[0].text == REPLY  # type: ignore[union-attr]
    task = cap.task("chat claude-x")
    assert (task.kind, task.status, task.error) == ("llm", "completed", None)
    assert task.input == {"model": "claude-x", "max_tokens": 100, "messages": MESSAGES}
    assert task.output == REPLY_MESSAGE
    assert task.metadata == metadata()
    assert cap.run("agent").usage == USAGE


def test_async_message_with_tool_use(server: FakeLLMServer) -> None:
    """AsyncAnthropic: text and tool_use blocks become content and tool_calls."""

    async def agent() -> None:
        async with async_client(server) as client, taskscope.run("agent"):
            taskscope.instrument_anthropic(client)
            await client.messages.create(
                model="claude-x", max_tokens=100, messages=MESSAGES, tools=TOOLS
            )

    with capture() as cap:
        asyncio.run(agent())
    task = cap.task("chat claude-x")
    assert (task.status, task.output, task.metadata) == ("completed", TOOL_MESSAGE, metadata())
    assert cap.run("agent").usage == USAGE


def test_sync_stream_is_assembled_with_usage_from_start_and_last_delta(
    server: FakeLLMServer,
) -> None:
    """A stream: the task ends when exhausted, with the whole text and the final usage."""
    client = taskscope.instrument_anthropic(sync_client(server))
    with capture() as cap, taskscope.run("agent"):
        stream = client.messages.create(
            model="claude-x", max_tokens=100, messages=MESSAGES, stream=True
        )
        assert [t.status for t in cap.tasks] == ["running"]
        events = [event.type for event in stream]
    assert events[0] == "message_start" and events[-1] == "message_stop"
    task = cap.task("chat claude-x")
    assert task.status == "completed"
    assert task.input == {
        "model": "claude-x",
        "max_tokens": 100,
        "messages": MESSAGES,
        "stream": True,
    }
    assert task.output == REPLY_MESSAGE
    assert streamed_metadata(task) == metadata(stream=True)
    assert cap.run("agent").usage == USAGE


def test_async_stream_with_tool_use_is_assembled(server: FakeLLMServer) -> None:
    """An async stream of text and input_json deltas: the tool call's arguments parsed whole."""

    async def agent() -> None:
        async with async_client(server) as client, taskscope.run("agent"):
            taskscope.instrument_anthropic(client)
            stream = await client.messages.create(
                model="claude-x", max_tokens=100, messages=MESSAGES, tools=TOOLS, stream=True
            )
            async with stream:
                async for _ in stream:
                    pass

    with capture() as cap:
        asyncio.run(agent())
    task = cap.task("chat claude-x")
    assert task.output == {**TOOL_MESSAGE, "content": REPLY}
    assert streamed_metadata(task) == metadata(stream=True)
    assert cap.run("agent").usage == USAGE


def test_the_stream_helper_is_recorded(server: FakeLLMServer) -> None:
    """messages.stream(): one streaming task, ended when the helper's block ends."""
    client = taskscope.instrument_anthropic(sync_client(server))
    with capture() as cap, taskscope.run("agent"):
        manager = client.messages.stream(model="claude-x", max_tokens=100, messages=MESSAGES)
        assert cap.tasks == []  # the request is made when the block is entered
        with manager as stream:
            assert stream.get_final_text() == REPLY
    task = cap.task("chat claude-x")
    assert task.input == {
        "model": "claude-x",
        "max_tokens": 100,
        "messages": MESSAGES,
        "stream": True,
    }
    assert (task.status, task.output) == ("completed", REPLY_MESSAGE)
    assert streamed_metadata(task) == metadata(stream=True)
    assert cap.run("agent").usage == USAGE


def test_the_async_stream_helper_is_recorded(server: FakeLLMServer) -> None:
    """AsyncAnthropic's messages.stream(): the same task, tool call included."""

    async def agent() -> str:
        async with async_client(server) as client, taskscope.run("agent"):
            taskscope.instrument_anthropic(client)
            async with client.messages.stream(
                model="claude-x", max_tokens=100, messages=MESSAGES, tools=TOOLS
            ) as stream:
                message = await stream.get_final_message()
        return message.stop_reason or ""

    with capture() as cap:
        assert asyncio.run(agent()) == "tool_use"
    task = cap.task("chat claude-x")
    assert task.output == {**TOOL_MESSAGE, "content": REPLY}
    assert streamed_metadata(task) == metadata(stream=True)


def test_stream_abandoned_after_three_chunks_ends_once_closed_early(
    server: FakeLLMServer, memory: InMemoryExporter
) -> None:
    """Dropped after three events: one end, closed_early, the text and usage that arrived."""
    client = taskscope.instrument_anthropic(sync_client(server))
    with taskscope.run("agent") as run:
        stream = client.messages.create(
            model="claude-x", max_tokens=100, messages=MESSAGES, stream=True
        )
        # message_start, content_block_start, then the first text delta (pings are skipped).
        for _ in range(3):
            next(stream)
        del stream
        gc.collect()
    taskscope.flush()
    [task] = ended_snapshots(memory, "chat claude-x")
    assert task.status == "completed"
    assert task.output == {"role": "assistant", "content": "Hello", "stop_reason": None}
    started = {**USAGE, "output_tokens": 1}  # message_start's count: the last delta never came
    assert streamed_metadata(task) == metadata(stream=True, **started, closed_early=True)
    [ended_run] = [r for r in memory.records if r.record_type == "run" and r.end_ns is not None]
    assert (ended_run.id, ended_run.usage) == (run.id, started)  # type: ignore[union-attr]


def test_async_stream_closed_early(server: FakeLLMServer, memory: InMemoryExporter) -> None:
    """``await stream.close()`` after three events: one end, closed_early."""

    async def agent() -> None:
        async with async_client(server) as client, taskscope.run("agent"):
            taskscope.instrument_anthropic(client)
            stream = await client.messages.create(
                model="claude-x", max_tokens=100, messages=MESSAGES, stream=True
            )
            for _ in range(3):
                await stream.__anext__()
            await stream.close()

    asyncio.run(agent())
    taskscope.flush()
    [task] = ended_snapshots(memory, "chat claude-x")
    assert (task.status, task.metadata["closed_early"]) == ("completed", True)
    assert task.output == {"role": "assistant", "content": "Hello", "stop_reason": None}


@pytest.mark.parametrize(
    ("status", "error"),
    [(429, anthropic.RateLimitError), (500, anthropic.InternalServerError)],
)
def test_api_error_fails_the_task_and_reaches_the_caller_unchanged(
    server: FakeLLMServer, status: int, error: type[anthropic.APIStatusError]
) -> None:
    """A 429 or 500: the SDK's own exception for the caller; the task failed with its type."""
    client = taskscope.instrument_anthropic(sync_client(server))
    with capture() as cap, taskscope.run("agent"), pytest.raises(error) as raised:
        client.messages.create(model=f"error-{status}", max_tokens=100, messages=MESSAGES)
    assert type(raised.value) is error and raised.value.status_code == status
    task = cap.task(f"chat error-{status}")
    assert task.status == "failed"
    assert task.error is not None and task.error.type == f"anthropic.{error.__name__}"
    assert task.error.message == str(raised.value)
    assert task.metadata == {
        "provider": "anthropic",
        "operation": "chat",
        "request_model": f"error-{status}",
        "status_code": status,
    }
    assert cap.run("agent").usage == {}


def test_async_error_fails_the_task(server: FakeLLMServer) -> None:
    """AsyncAnthropic answered 500: the SDK's exception, a failed task, a failed run."""

    async def agent() -> None:
        async with async_client(server) as client, taskscope.run("agent"):
            taskscope.instrument_anthropic(client)
            await client.messages.create(model="error-500", max_tokens=100, messages=MESSAGES)

    with capture() as cap, pytest.raises(anthropic.InternalServerError):
        asyncio.run(agent())
    task = cap.task("chat error-500")
    assert (task.status, task.metadata["status_code"]) == ("failed", 500)
    assert cap.run("agent").status == "failed"


def test_a_stream_that_fails_midway_fails_the_task(server: FakeLLMServer) -> None:
    """An error event mid-stream: the caller gets the SDK's exception, the task fails."""
    client = taskscope.instrument_anthropic(sync_client(server))
    with (
        capture() as cap,
        taskscope.run("agent"),
        pytest.raises(anthropic.APIStatusError) as raised,
    ):
        for _ in client.messages.create(
            model="error-midstream", max_tokens=100, messages=MESSAGES, stream=True
        ):
            pass
    task = cap.task("chat error-midstream")
    assert task.status == "failed"
    assert task.error is not None and task.error.type == exception_type(raised.value)


def exception_type(error: BaseException) -> str:
    return f"{type(error).__module__}.{type(error).__qualname__}"


def test_global_form_auto_run_and_uninstrument(server: FakeLLMServer) -> None:
    """instrument_anthropic(): every client; outside a run, a run of the call's own."""
    client = sync_client(server)
    taskscope.instrument_anthropic()
    with capture() as cap:
        client.messages.create(model="claude-x", max_tokens=100, messages=MESSAGES)
        taskscope.uninstrument_anthropic()
        client.messages.create(model="claude-y", max_tokens=100, messages=MESSAGES)
    assert [t.name for t in cap.tasks] == ["chat claude-x"]
    assert (cap.run("chat claude-x").usage, len(cap.runs)) == (USAGE, 1)


def test_a_stream_outside_a_run_keeps_its_run_open_until_it_ends(server: FakeLLMServer) -> None:
    """Outside a run, a streaming call's own run ends with the stream, holding its usage."""
    client = taskscope.instrument_anthropic(sync_client(server))
    with capture() as cap:
        stream = client.messages.create(
            model="claude-x", max_tokens=100, messages=MESSAGES, stream=True
        )
        assert [(r.name, r.status) for r in cap.runs] == [("chat claude-x", "running")]
        for _ in stream:
            pass
    assert [(r.name, r.status, r.usage) for r in cap.runs] == [
        ("chat claude-x", "completed", USAGE)
    ]
    assert taskscope.current_run() is None or not taskscope.current_run().is_recording()


def test_capture_input_false_leaves_the_prompt_out(server: FakeLLMServer) -> None:
    """capture_input=False: the request is not recorded; the answer and usage are."""
    client = taskscope.instrument_anthropic(sync_client(server), capture_input=False)
    with capture() as cap, taskscope.run("agent"):
        client.messages.create(model="claude-x", max_tokens=100, messages=MESSAGES)
    task = cap.task("chat claude-x")
    assert (task.input, task.output, task.metadata) == (None, REPLY_MESSAGE, metadata())
