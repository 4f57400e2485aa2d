"""instrument_openai: the real openai SDK against tests/llm_fake_server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import gc
import json
import sys
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import taskscope
from taskscope import _agentos_api as api
from taskscope.exporters import AgentOSExporter, InMemoryExporter
from taskscope.exporters.otel import OTelExporter
from taskscope.integrations import _openai
from taskscope.server.app import create_app, serve_in_thread
from taskscope.testing import capture
from tests.conftest import ended_snapshots
from tests.llm_fake_server import REPLY, TOOL_ARGUMENTS, TOOL_NAME, FakeLLMServer

MESSAGES = [{"role": "user", "content": "Say hello."}]
CHAT_USAGE = {"input_tokens": 12, "output_tokens": 7, "cache_read_tokens": 4}
RESPONSES_USAGE = {"input_tokens": 15, "output_tokens": 8, "cache_read_tokens": 5}
TOOLS = [{"type": "function", "function": {"name": TOOL_NAME, "parameters": {"type": "object"}}}]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as fake:
        yield fake


@pytest.fixture(autouse=True)
def _uninstrumented() -> Iterator[None]:
    yield
    _openai._STATE.clients.clear()
    taskscope.uninstrument_openai()
    assert not _openai._STATE.is_patched


def sync_client(server: FakeLLMServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.openai_url, api_key="sk-test", max_retries=0)


def async_client(server: FakeLLMServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.openai_url, api_key="sk-test", max_retries=0)


def chat_metadata(model: str, **more: Any) -> dict[str, Any]:
    return {
        "provider": "openai",
        "operation": "chat",
        "request_model": model,
        "response_model": f"{model}-2026-01-01",
        "response_id": "chatcmpl-fake1",
        **CHAT_USAGE,
        **more,
    }


def streamed_metadata(task: taskscope.TaskRecord) -> dict[str, Any]:
    """The metadata without the time to first token, after checking it is a duration."""
    meta = dict(task.metadata)
    ttft = meta.pop("time_to_first_token_ms")
    assert isinstance(ttft, float) and 0 <= ttft <= task.duration_ms  # type: ignore[operator]
    return meta


REPLY_MESSAGE = {"role": "assistant", "content": REPLY, "stop_reason": "stop"}


# -- chat completions -------------------------------------------------------------------------


def test_sync_chat_call_is_an_llm_task_with_request_answer_and_usage(
    server: FakeLLMServer,
) -> None:
    """A chat completion becomes a task "chat {model}" of the run; its usage adds to the run's."""
    client = taskscope.instrument_openai(sync_client(server))
    with capture() as cap, taskscope.run("agent"):
        reply = client.chat.completions.create(model="gpt-5", messages=MESSAGES, temperature=0)
    assert reply.choices[0].message.content == REPLY
    task = cap.task("chat gpt-5")
    assert (task.kind, task.status, task.error) == ("llm", "completed", None)
    assert task.input == {"model": "gpt-5", "messages": MESSAGES, "temperature": 0}
    assert task.output == REPLY_MESSAGE
    assert task.metadata == chat_metadata("gpt-5")
    assert task.run_id == cap.run("agent").id
    assert cap.run("agent").usage == CHAT_USAGE
    assert cap.events == []  # the task is the record: no llm.request/llm.response events


def test_async_chat_call_is_recorded_like_a_sync_one(server: FakeLLMServer) -> None:
    """AsyncOpenAI: the same task, input, output and usage; two calls add up in the run."""
    client = taskscope.instrument_openai(async_client(server))

    async def agent() -> None:
        async with taskscope.run("agent"):
            await client.chat.completions.create(model="gpt-5", messages=MESSAGES)
            await client.chat.completions.create(model="gpt-5", messages=MESSAGES)

    with capture() as cap:
        asyncio.run(agent())
    tasks = [t for t in cap.tasks if t.name == "chat gpt-5"]
    assert [(t.status, t.output, t.metadata) for t in tasks] == [
        ("completed", REPLY_MESSAGE, chat_metadata("gpt-5"))
    ] * 2
    assert tasks[0].input == {"model": "gpt-5", "messages": MESSAGES}
    assert cap.run("agent").usage == {key: 2 * value for key, value in CHAT_USAGE.items()}


def test_tool_calls_are_the_output(server: FakeLLMServer) -> None:
    """A tool call answer: the output lists it (id, name, arguments as sent) and the reason."""
    client = taskscope.instrument_openai(sync_client(server))
    with capture() as cap, taskscope.run("agent"):
        client.chat.completions.create(model="gpt-5", messages=MESSAGES, tools=TOOLS)
    assert cap.task("chat gpt-5").output == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "name": TOOL_NAME, "arguments": json.dumps(TOOL_ARGUMENTS)}
        ],
        "stop_reason": "tool_calls",
    }


def test_sync_stream_lasts_until_exhausted_and_asks_for_usage(server: FakeLLMServer) -> None:
    """A stream: the output is the assembled message, usage comes from the chunk asked for."""
    client = taskscope.instrument_openai(sync_client(server))
    with capture() as cap, taskscope.run("agent"):
        stream = client.chat.completions.create(model="gpt-5", messages=MESSAGES, stream=True)
        assert [t.status for t in cap.tasks] == ["running"]
        chunks = list(stream)
    # The usage-only chunk was asked for by taskscope, so the caller does not see it.
    assert all(chunk.choices for chunk in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == REPLY
    assert server.requests[-1][1]["stream_options"] == {"include_usage": True}
    task = cap.task("chat gpt-5")
    assert task.status == "completed"
    assert task.input == {"model": "gpt-5", "messages": MESSAGES, "stream": True}
    assert task.output == REPLY_MESSAGE
    assert streamed_metadata(task) == chat_metadata("gpt-5", stream=True)
    assert cap.run("agent").usage == CHAT_USAGE


def test_async_stream_with_tool_calls_is_assembled(server: FakeLLMServer) -> None:
    """An async stream of tool-call fragments ends as one tool call with its whole arguments."""
    client = taskscope.instrument_openai(async_client(server))

    async def agent() -> list[Any]:
        async with taskscope.run("agent"):
            stream = await client.chat.completions.create(
                model="gpt-5", messages=MESSAGES, tools=TOOLS, stream=True
            )
            return [chunk async for chunk in stream]

    with capture() as cap:
        chunks = asyncio.run(agent())
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    task = cap.task("chat gpt-5")
    assert task.output == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "name": TOOL_NAME, "arguments": json.dumps(TOOL_ARGUMENTS)}
        ],
        "stop_reason": "tool_calls",
    }
    assert streamed_metadata(task) == chat_metadata("gpt-5", stream=True)
    assert cap.run("agent").usage == CHAT_USAGE


def test_the_callers_stream_options_are_left_alone(server: FakeLLMServer) -> None:
    """stream_options set by the caller are sent as they are: no usage chunk, no usage."""
    client = taskscope.instrument_openai(sync_client(server))
    with capture() as cap, taskscope.run("agent"):
        stream = client.chat.completions.create(
            model="gpt-5", messages=MESSAGES, stream=True, stream_options={"include_usage": False}
        )
        list(stream)
    assert server.requests[-1][1]["stream_options"] == {"include_usage": False}
    task = cap.task("chat gpt-5")
    meta = streamed_metadata(task)
    assert meta == {
        "provider": "openai",
        "operation": "chat",
        "request_model": "gpt-5",
        "response_model": "gpt-5-2026-01-01",
        "response_id": "chatcmpl-fake1",
        "stream": True,
    }
    assert (task.status, task.output) == ("completed", REPLY_MESSAGE)
    assert cap.run("agent").usage == {}


def test_callers_usage_chunk_reaches_the_caller(server: FakeLLMServer) -> None:
    """Usage asked for by the caller: they get the usage chunk, and so does the task."""
    client = taskscope.instrument_openai(sync_client(server))
    with capture() as cap, taskscope.run("agent"):
        chunks = list(
            client.chat.completions.create(
                model="gpt-5",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 12
    assert streamed_metadata(cap.task("chat gpt-5")) == chat_metadata("gpt-5", stream=True)


def test_stream_abandoned_after_three_chunks_ends_once_closed_early(
    server: FakeLLMServer, memory: InMemoryExporter
) -> None:
    """A stream dropped after three chunks ends its task once, closed_early, with what arrived."""
    client = taskscope.instrument_openai(sync_client(server))
    with taskscope.run("agent"):
        stream = client.chat.completions.create(model="gpt-5", messages=MESSAGES, stream=True)
        for _ in range(3):
            next(stream)
        del stream
        gc.collect()
    taskscope.flush()
    [task] = ended_snapshots(memory, "chat gpt-5")
    assert task.status == "completed"
    assert task.output == {"role": "assistant", "content": "Hello from", "stop_reason": None}
    assert streamed_metadata(task) == {
        "provider": "openai",
        "operation": "chat",
        "request_model": "gpt-5",
        "response_model": "gpt-5-2026-01-01",
        "response_id": "chatcmpl-fake1",
        "stream": True,
        "closed_early": True,
    }


def test_stream_closed_early_in_a_with_block(
    server: FakeLLMServer, memory: InMemoryExporter
) -> None:
    """Leaving ``with stream:`` after three chunks closes it: one end, closed_early."""
    client = taskscope.instrument_openai(sync_client(server))
    with taskscope.run("agent"):
        with client.chat.completions.create(
            model="gpt-5", messages=MESSAGES, stream=True
        ) as stream:
            for _ in range(3):
                next(stream)
        assert stream.response.is_closed
        stream.close()  # a second close changes nothing
    taskscope.flush()
    [task] = ended_snapshots(memory, "chat gpt-5")
    assert task.metadata["closed_early"] is True
    assert task.output["content"] == "Hello from"


def test_async_stream_closed_early(server: FakeLLMServer, memory: InMemoryExporter) -> None:
    """``await stream.close()`` after three chunks: one end, closed_early, what arrived."""
    client = taskscope.instrument_openai(async_client(server))

    async def agent() -> None:
        async with taskscope.run("agent"):
            stream = await client.chat.completions.create(
                model="gpt-5", messages=MESSAGES, stream=True
            )
            for _ in range(3):
                await stream.__anext__()
            await stream.close()

    asyncio.run(agent())
    taskscope.flush()
    [task] = ended_snapshots(memory, "chat gpt-5")
    assert (task.status, task.metadata["closed_early"]) == ("completed", True)
    assert task.output["content"] == "Hello from"


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error"), [(429, openai.RateLimitError), (500, openai.InternalServerError)]
)
def test_api_error_fails_the_task_and_reaches_the_caller_unchanged(
    server: FakeLLMServer, status: int, error: type[openai.APIStatusError]
) -> None:
    """A 429 or 500: the caller gets the SDK's own exception; the task fails with its type."""
    client = taskscope.instrument_openai(sync_client(server))
    with capture() as cap, taskscope.run("agent"), pytest.raises(error) as raised:
        client.chat.completions.create(model=f"error-{status}", messages=MESSAGES)
    assert type(raised.value) is error and raised.value.status_code == status
    task = cap.task(f"chat error-{status}")
    assert task.status == "failed"
    assert task.error is not None and task.error.type == f"openai.{error.__name__}"
    assert task.error.message == str(raised.value)
    assert task.metadata == {
        "provider": "openai",
        "operation": "chat",
        "request_model": f"error-{status}",
        "status_code": status,
    }
    assert cap.run("agent").status == "completed"  # the caller may have handled it


def test_async_stream_error_fails_the_task(server: FakeLLMServer) -> None:
    """An async streaming call answered 429: the SDK's exception, a failed task."""
    client = taskscope.instrument_openai(async_client(server))

    async def agent() -> None:
        async with taskscope.run("agent"):
            await client.chat.completions.create(model="error-429", messages=MESSAGES, stream=True)

    with capture() as cap, pytest.raises(openai.RateLimitError):
        asyncio.run(agent())
    task = cap.task("chat error-429")
    assert (task.status, task.metadata["status_code"]) == ("failed", 429)
    assert cap.run("agent").status == "failed"


def test_a_stream_that_fails_midway_fails_the_task(server: FakeLLMServer) -> None:
    """An error event after two chunks: the caller gets the SDK's APIError, the task fails."""
    client = taskscope.instrument_openai(sync_client(server))
    received: list[Any] = []
    with capture() as cap, taskscope.run("agent"):
        stream = client.chat.completions.create(
            model="error-midstream", messages=MESSAGES, stream=True
        )
        with pytest.raises(openai.APIError) as raised:
            received.extend(stream)
    assert len(received) == 2 and "went wrong" in str(raised.value)
    task = cap.task("chat error-midstream")
    assert (task.status, task.error.type) == ("failed", "openai.APIError")  # type: ignore[union-attr]


def test_an_answer_taskscope_cannot_read_still_reaches_the_caller(
    server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in reading the answer: logged once, the task ends without output, the call goes on."""
    from taskscope import _internal

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug in taskscope")

    monkeypatch.setattr(_internal, "RAISE_INTERNAL_ERRORS", False)
    monkeypatch.setattr(_openai, "assistant_message", broken)
    client = taskscope.instrument_openai(sync_client(server))
    with capture() as cap, taskscope.run("agent"):
        reply = client.chat.completions.create(model="gpt-5", messages=MESSAGES)
        client.chat.completions.create(model="gpt-5", messages=MESSAGES)
    assert reply.choices[0].message.content == REPLY
    assert [(t.status, t.output) for t in cap.tasks] == [("completed", None)] * 2
    logged = [r.getMessage() for r in caplog.records if r.name == "taskscope"]
    assert logged == [
        "taskscope hit an internal error (llm-answer); your code keeps running, only this "
        "record may be incomplete. Please report it."
    ]


# -- the Responses API and embeddings ---------------------------------------------------------


RESPONSE_MESSAGE = {"role": "assistant", "content": REPLY, "stop_reason": "completed"}


def responses_metadata(**more: Any) -> dict[str, Any]:
    return {
        "provider": "openai",
        "operation": "chat",
        "request_model": "gpt-5",
        "response_model": "gpt-5-2026-01-01",
        "response_id": "resp_fake1",
        **RESPONSES_USAGE,
        **more,
    }


def test_responses_api_sync_and_streaming(server: FakeLLMServer) -> None:
    """responses.create, plain and streamed: the text, the status as stop reason, the usage."""
    client = taskscope.instrument_openai(sync_client(server))
    with capture() as cap, taskscope.run("agent"):
        client.responses.create(model="gpt-5", input="Say hello.")
        events = list(client.responses.create(model="gpt-5", input="Say hello.", stream=True))
    assert events[-1].type == "response.completed"
    plain, streamed = cap.tasks
    assert (plain.name, plain.input, plain.output) == (
        "chat gpt-5",
        {"model": "gpt-5", "input": "Say hello."},
        RESPONSE_MESSAGE,
    )
    assert plain.metadata == responses_metadata()
    assert streamed.output == RESPONSE_MESSAGE
    assert streamed_metadata(streamed) == responses_metadata(stream=True)
    assert "stream_options" not in server.requests[-1][1]
    assert cap.run("agent").usage == {key: 2 * value for key, value in RESPONSES_USAGE.items()}


def test_responses_api_async(server: FakeLLMServer) -> None:
    """AsyncOpenAI.responses.create is recorded the same way."""
    client = taskscope.instrument_openai(async_client(server))

    async def agent() -> None:
        async with taskscope.run("agent"):
            await client.responses.create(model="gpt-5", input="Say hello.")
            stream = await client.responses.create(model="gpt-5", input="Say hello.", stream=True)
            async for _ in stream:
                pass

    with capture() as cap:
        asyncio.run(agent())
    assert [(t.name, t.status, t.output) for t in cap.tasks] == [
        ("chat gpt-5", "completed", RESPONSE_MESSAGE)
    ] * 2
    assert cap.run("agent").usage == {key: 2 * value for key, value in RESPONSES_USAGE.items()}


def test_embeddings_record_counts_not_vectors(server: FakeLLMServer) -> None:
    """embeddings.create: a task "embeddings {model}" whose output is how many vectors, how long."""
    client = taskscope.instrument_openai(sync_client(server))
    with capture() as cap, taskscope.run("agent"):
        client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    task = cap.task("embeddings text-embedding-3-small")
    assert (task.kind, task.input) == (
        "llm",
        {"model": "text-embedding-3-small", "input": ["a", "b"]},
    )
    assert task.output == {"embeddings": 2, "dimensions": 4}
    assert task.metadata == {
        "provider": "openai",
        "operation": "embeddings",
        "request_model": "text-embedding-3-small",
        "response_model": "text-embedding-3-small-2026-01-01",
        "input_tokens": 3,
    }
    assert cap.run("agent").usage == {"input_tokens": 3}


# -- which calls record -----------------------------------------------------------------------


def test_outside_a_run_a_call_gets_a_run_of_its_own(server: FakeLLMServer) -> None:
    """Like @task outside a run: an auto-run named after the call, holding the task and usage."""
    client = taskscope.instrument_openai(sync_client(server))
    with capture() as cap:
        client.chat.completions.create(model="gpt-5", messages=MESSAGES)
    run = cap.run("chat gpt-5")
    assert (run.status, run.usage) == ("completed", CHAT_USAGE)
    assert cap.task("chat gpt-5").run_id == run.id


def test_outside_a_run_with_auto_run_off_nothing_is_recorded(server: FakeLLMServer) -> None:
    """auto_run=False: the call works and nothing is recorded, as for @task."""
    taskscope.configure(auto_run=False)
    client = taskscope.instrument_openai(sync_client(server))
    with capture() as cap:
        reply = client.chat.completions.create(model="gpt-5", messages=MESSAGES)
    assert reply.choices[0].message.content == REPLY
    assert (cap.runs, cap.tasks) == ([], [])


def test_a_client_form_records_only_that_client(server: FakeLLMServer) -> None:
    """instrument_openai(client) leaves other clients alone; calling it twice records once."""
    mine = sync_client(server)
    assert taskscope.instrument_openai(mine) is mine
    taskscope.instrument_openai(mine)
    other = sync_client(server)
    with capture() as cap, taskscope.run("agent"):
        mine.chat.completions.create(model="mine", messages=MESSAGES)
        other.chat.completions.create(model="other", messages=MESSAGES)
    assert [t.name for t in cap.tasks] == ["chat mine"]


def test_the_global_form_records_every_client_until_undone(server: FakeLLMServer) -> None:
    """instrument_openai() records clients made after it (and before); uninstrument stops it."""
    before = sync_client(server)
    assert taskscope.instrument_openai() is None
    taskscope.instrument_openai()
    after = async_client(server)

    async def call(model: str) -> None:
        await after.chat.completions.create(model=model, messages=MESSAGES)

    with capture() as cap, taskscope.run("agent"):
        before.chat.completions.create(model="before", messages=MESSAGES)
        asyncio.run(call("after"))
        taskscope.uninstrument_openai()
        before.chat.completions.create(model="undone", messages=MESSAGES)
    assert [t.name for t in cap.tasks] == ["chat before", "chat after"]
    assert not _openai._STATE.is_patched


def test_capture_input_false_leaves_the_prompt_out(server: FakeLLMServer) -> None:
    """capture_input=False: no request in the record; the model is still in name and metadata."""
    client = taskscope.instrument_openai(sync_client(server), capture_input=False)
    with capture() as cap, taskscope.run("agent"):
        client.chat.completions.create(model="gpt-5", messages=MESSAGES)
    task = cap.task("chat gpt-5")
    assert (task.input, task.output) == (None, REPLY_MESSAGE)
    assert task.metadata["request_model"] == "gpt-5"


def test_the_request_is_redacted_and_headers_are_left_out(server: FakeLLMServer) -> None:
    """Secrets in a prompt are scrubbed like any input; extra_headers never reach the record."""
    client = taskscope.instrument_openai(sync_client(server))
    messages = [{"role": "user", "content": "use api_key=sk-live-123 please"}]
    with capture() as cap, taskscope.run("agent"):
        client.chat.completions.create(
            model="gpt-5", messages=messages, extra_headers={"X-Secret": "s3cr3t"}
        )
    assert cap.task("chat gpt-5").input == {
        "model": "gpt-5",
        "messages": [{"role": "user", "content": "use api_key=[REDACTED] please"}],
    }


def test_the_answer_is_redacted_and_bounded_like_any_output(server: FakeLLMServer) -> None:
    """The answer is captured off the caller's thread, with the same redaction and limits."""
    taskscope.configure(capture_limits=taskscope.CaptureLimits(max_string_length=60))
    client = taskscope.instrument_openai(sync_client(server))
    said = "the key is api_key=sk-live-123, " + "x" * 100
    with capture() as cap, taskscope.run("agent"):
        reply = client.chat.completions.create(
            model="gpt-echo", messages=[{"role": "user", "content": said}]
        )
    assert reply.choices[0].message.content == said  # the caller's answer is untouched
    assert cap.task("chat gpt-echo").output == {
        "role": "assistant",
        "content": "the key is api_key=[REDACTED], " + "x" * 29 + "…[truncated 72 chars]",
        "stop_reason": "stop",
    }


def test_the_metadata_is_redacted_and_bounded_like_any_metadata(server: FakeLLMServer) -> None:
    """The model names in the metadata (captured off the caller's thread too) are scrubbed and
    cut like any captured text: the request's at the call, the answer's by the dispatcher."""
    taskscope.configure(capture_limits=taskscope.CaptureLimits(max_string_length=40))
    client = taskscope.instrument_openai(sync_client(server))
    model = "gpt-5 password=hunter2 " + "m" * 30
    with capture() as cap, taskscope.run("agent"):
        client.chat.completions.create(model=model, messages=MESSAGES)
    [task] = [t for t in cap.tasks if t.kind == "llm"]
    scrubbed = "gpt-5 password=[REDACTED] " + "m" * 30
    assert task.metadata["request_model"] == scrubbed[:40] + "…[truncated 13 chars]"
    assert task.metadata["response_model"] == scrubbed[:40] + "…[truncated 24 chars]"
    assert {key: task.metadata[key] for key in CHAT_USAGE} == CHAT_USAGE
    assert task.metadata["response_id"] == "chatcmpl-fake1"


def test_instrument_with_something_else_says_what_it_takes() -> None:
    """A wrong argument: a TypeError naming the client classes."""
    with pytest.raises(TypeError, match=r"instrument_openai\(\) takes a openai.OpenAI or"):
        taskscope.instrument_openai(object())


def test_without_the_sdk_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """openai not installed: a ConfigurationError naming the extra to install."""
    monkeypatch.setitem(sys.modules, "openai", None)  # what `import openai` sees when missing
    with pytest.raises(taskscope.ConfigurationError) as raised:
        taskscope.instrument_openai()
    assert str(raised.value) == (
        "instrument_openai() needs the openai package: pip install 'taskscope[openai]'."
    )
    assert not _openai._STATE.is_patched


def test_the_stream_helper_is_recorded(server: FakeLLMServer) -> None:
    """chat.completions.stream() goes through create: one task with the assembled answer."""
    client = taskscope.instrument_openai(sync_client(server))
    with (
        capture() as cap,
        taskscope.run("agent"),
        client.chat.completions.stream(model="gpt-5", messages=MESSAGES) as stream,
    ):
        final = stream.get_final_completion()
    assert final.choices[0].message.content == REPLY
    task = cap.task("chat gpt-5")
    assert (task.status, task.output) == ("completed", REPLY_MESSAGE)
    assert streamed_metadata(task) == chat_metadata("gpt-5", stream=True)


def test_the_responses_stream_helper_is_recorded(server: FakeLLMServer) -> None:
    """responses.stream() goes through create too: one task, the final response's answer."""
    client = taskscope.instrument_openai(sync_client(server))
    with (
        capture() as cap,
        taskscope.run("agent"),
        client.responses.stream(model="gpt-5", input="Say hello.") as stream,
    ):
        for _ in stream:
            pass
    assert stream.get_final_response().output_text == REPLY
    task = cap.task("chat gpt-5")
    assert (task.status, task.output) == ("completed", RESPONSE_MESSAGE)
    assert streamed_metadata(task) == responses_metadata(stream=True)


# -- OpenTelemetry ----------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_otel_span_has_genai_and_openinference_attributes(
    server: FakeLLMServer, stream: bool
) -> None:
    """The OTel exporter: an LLM span with the GenAI and OpenInference model and token names;
    a stream's span ends with the stream, with the same attributes."""
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    taskscope.configure(exporters=[OTelExporter(provider)])
    client = taskscope.instrument_openai(sync_client(server))
    with taskscope.run("agent"):
        if stream:
            chunks = client.chat.completions.create(model="gpt-5", messages=MESSAGES, stream=True)
            assert [s.name for s in spans.get_finished_spans()] == []
            list(chunks)
            assert [s.name for s in spans.get_finished_spans()] == ["chat gpt-5"]
        else:
            client.chat.completions.create(model="gpt-5", messages=MESSAGES)
    taskscope.flush()
    [span] = [s for s in spans.get_finished_spans() if s.name == "chat gpt-5"]
    attributes = dict(span.attributes or {})
    expected = {
        "openinference.span.kind": "LLM",
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-5",
        "gen_ai.response.model": "gpt-5-2026-01-01",
        "gen_ai.response.id": "chatcmpl-fake1",
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 7,
        "gen_ai.usage.cache_read.input_tokens": 4,
        "llm.provider": "openai",
        "llm.system": "openai",
        "llm.model_name": "gpt-5-2026-01-01",
        "llm.token_count.prompt": 12,
        "llm.token_count.completion": 7,
        "llm.token_count.total": 19,
        "llm.token_count.prompt_details.cache_read": 4,
    }
    assert {key: attributes.get(key) for key in expected} == expected
    provider.shutdown()


# -- AgentOS ----------------------------------------------------------------------------------


def test_agentos_gets_the_llm_span_with_token_counts(server: FakeLLMServer, tmp_path: Any) -> None:
    """The AgentOS exporter: the call is an llm span whose payload has the token counts,
    and the run completes with the run's usage; the ingest server accepts both."""
    from tests.test_agentos import KEY, FaultProxy

    with serve_in_thread(create_app(tmp_path / "ui.db", ingest_key=KEY)) as ingest:
        proxy = FaultProxy(ingest)
        try:
            sender = AgentOSExporter(KEY, "agent-1", proxy.url, timeout=5.0)
            recorder = taskscope.Client([sender])
            client = taskscope.instrument_openai(sync_client(server))
            with recorder.start_run(name="agent"):
                client.chat.completions.create(model="gpt-5", messages=MESSAGES)
            assert recorder.flush(10.0)
            recorder.shutdown()
        finally:
            proxy.close()
    assert proxy.seen and all(entry.status == 200 for entry in proxy.seen)
    events = [ev for e in proxy.seen if e.path == api.EVENTS for ev in e.body["events"]]
    [span] = [ev for ev in events if ev.get("span_id")]
    assert (span["type"], span["kind"]) == ("chat gpt-5", "llm")
    assert span["payload"] == {"status": "completed", **CHAT_USAGE}
    [complete] = [e.body for e in proxy.seen if e.path == api.RUN_COMPLETE]
    assert {key: complete[key] for key in CHAT_USAGE} == CHAT_USAGE


# -- the web UI -------------------------------------------------------------------------------


def test_the_ui_shows_the_model_and_tokens_of_a_model_call(
    server: FakeLLMServer, tmp_path: Any
) -> None:
    """taskscope ui: a model call's task detail names the model that answered and its tokens."""
    pytest.importorskip("starlette", reason="the ui needs starlette: pip install 'taskscope[ui]'")
    from taskscope.exporters import LocalStore
    from taskscope.server.pages import pages_app
    from tests.ui_support import browser_missing, chromium, serve

    missing = browser_missing()
    if missing is not None:
        pytest.skip(f"browser tests skipped: {missing}")
    db = tmp_path / "ui.db"
    client = taskscope.instrument_openai(sync_client(server))
    with capture() as cap, taskscope.Client([LocalStore(db)]) as recorder:
        with recorder.start_run(name="agent") as run:
            client.chat.completions.create(model="gpt-5", messages=MESSAGES)
        task_id = cap.task("chat gpt-5").id
    with serve(pages_app(db)) as base, chromium() as browser:
        page = browser.new_page()
        page.goto(f"{base}/runs/{run.id}?task={task_id}")
        page.wait_for_selector("body[data-ready='1']", timeout=10_000)
        page.locator("dd.llm-model").wait_for()
        assert page.locator("dd.llm-model").inner_text() == "gpt-5-2026-01-01"
        assert page.locator("dd.llm-tokens").inner_text() == "12 in · 7 out"


# -- where the task sits, and how the answer is read --------------------------------------------


def test_a_call_inside_a_task_is_its_child_in_its_run(server: FakeLLMServer) -> None:
    """The model call's task hangs under the task current at the call, in that task's run."""
    client = taskscope.instrument_openai(sync_client(server))

    @taskscope.task("plan")
    def plan() -> str | None:
        reply = client.chat.completions.create(model="gpt-5", messages=MESSAGES)
        return reply.choices[0].message.content

    with capture() as cap, taskscope.run("agent"):
        assert plan() == REPLY
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    parent, nested, top = cap.task("plan"), cap.task("chat gpt-5"), cap.task("chat gpt-4o")
    run = cap.run("agent")
    assert (nested.parent_id, nested.run_id) == (parent.id, run.id)
    assert (top.parent_id, top.run_id) == (None, run.id)
    assert nested.start_ns >= parent.start_ns and nested.end_ns <= parent.end_ns  # type: ignore[operator]
    assert [t.metadata for t in (nested, top)] == [chat_metadata("gpt-5"), chat_metadata("gpt-4o")]
    assert run.usage == {key: 2 * value for key, value in CHAT_USAGE.items()}


def completion(choices: list[dict[str, Any]], usage: dict[str, Any] | None) -> Any:
    from openai.types.chat import ChatCompletion

    return ChatCompletion.model_validate(
        {
            "id": "chatcmpl-x",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-5-2026",
            "choices": choices,
            "usage": usage,
        }
    )


def choice(index: int, text: str) -> dict[str, Any]:
    message = {"role": "assistant", "content": text}
    return {"index": index, "message": message, "finish_reason": "stop", "logprobs": None}


def test_several_choices_are_a_list_and_none_is_no_output() -> None:
    """n=2: both messages in order; no choices at all: no output; usage read when present."""
    usage = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    two = _openai.chat_answer(completion([choice(0, "a"), choice(1, "b")], usage))
    assert two.output == [
        {"role": "assistant", "content": "a", "stop_reason": "stop"},
        {"role": "assistant", "content": "b", "stop_reason": "stop"},
    ]
    assert (two.model, two.id, two.usage) == (
        "gpt-5-2026",
        "chatcmpl-x",
        {"input_tokens": 3, "output_tokens": 4},
    )
    none = _openai.chat_answer(completion([], None))
    assert (none.output, none.model, none.id, none.usage) == (
        None,
        "gpt-5-2026",
        "chatcmpl-x",
        None,
    )


def test_usage_counts_keep_whole_numbers_only() -> None:
    """Counts are whole numbers: bools, floats, text and absent values are left out."""
    import enum

    from taskscope.integrations._answer import usage_counts

    class Tokens(enum.IntEnum):
        FIVE = 5

    assert usage_counts(1, 2, 3, 4) == {
        "input_tokens": 1,
        "output_tokens": 2,
        "cache_read_tokens": 3,
        "cache_creation_tokens": 4,
    }
    assert usage_counts(Tokens.FIVE, True, 1.5, "7") == {"input_tokens": 5}
    assert usage_counts(None, 0) == {"output_tokens": 0}
    assert usage_counts(None, None, False, None) is None
