"""A fake OpenAI and Anthropic API on 127.0.0.1: real HTTP, each API's own JSON and SSE.

The real SDKs are pointed at it with ``base_url``. What it answers is chosen by the request's
model, so tests need no shared switches:

- a model containing ``error-429`` or ``error-500`` gets that status and the API's error body;
- a request with ``tools`` gets a tool call back instead of text;
- a chat model containing ``echo`` answers with the last message's text;
- ``"stream": true`` gets server-sent events in the API's format, with usage at the end.

Every request body is kept in ``requests`` (path, parsed JSON) so tests can see what was sent.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

REPLY_WORDS = ["Hello", " from", " the", " fake", " model", "."]
REPLY = "".join(REPLY_WORDS)
TOOL_NAME = "get_weather"
TOOL_ARGUMENTS = {"city": "Paris"}

# Usage the server reports, per API, so tests can assert exact numbers.
OPENAI_USAGE = {"prompt_tokens": 12, "completion_tokens": 7, "cached_tokens": 4}
RESPONSES_USAGE = {"input_tokens": 15, "output_tokens": 8, "cached_tokens": 5}
EMBEDDING_USAGE = {"prompt_tokens": 3}
ANTHROPIC_USAGE = {"input_tokens": 10, "output_tokens": 7, "cache_read": 3, "cache_creation": 2}


class FakeLLMServer:
    """Starts on a free port of 127.0.0.1; use as a context manager so it is stopped."""

    def __init__(self, *, keep_alive: bool = False) -> None:
        # keep_alive: connections are reused (benchmarks); off, each request has its own.
        self.keep_alive = keep_alive
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.fake = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def openai_url(self) -> str:
        return self.url + "/v1"

    def start(self) -> FakeLLMServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out apart: no 40 ms delayed-ACK wait

    def log_message(self, format: str, *args: Any) -> None:
        return None  # quiet test output

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        fake: FakeLLMServer = self.server.fake  # type: ignore[attr-defined]
        if not fake.keep_alive:  # a benchmark's thousands of calls are not kept
            fake.requests.append((self.path, body))
        model = str(body.get("model", ""))
        anthropic = self.path.endswith("/messages")
        for status in (429, 500):
            if f"error-{status}" in model:
                self._error(status, anthropic)
                return
        if "error-midstream" in model:
            self._midstream_error(anthropic)
            return
        if self.path.endswith("/chat/completions"):
            self._answer(body, _chat_events(body), _chat_json(body), done=True)
        elif self.path.endswith("/responses"):
            self._answer(body, _responses_events(body), _responses_json(body))
        elif self.path.endswith("/embeddings"):
            self._json(200, _embeddings_json(body))
        elif anthropic:
            self._answer(body, _anthropic_events(body), _anthropic_json(body))
        else:
            self._json(404, {"error": {"message": f"no route {self.path}"}})

    # -- writing ------------------------------------------------------------------------------

    def _json(
        self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("x-request-id", "req_fake_1")
        if not self.server.fake.keep_alive:  # type: ignore[attr-defined]
            # One request per connection: no idle pooled socket outlives a test's event loop.
            self.send_header("connection", "close")
            self.close_connection = True
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, anthropic: bool) -> None:
        message = "Rate limit reached" if status == 429 else "The server had an error"
        if anthropic:
            kind = "rate_limit_error" if status == 429 else "api_error"
            payload: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
        else:
            kind = "rate_limit_exceeded" if status == 429 else "server_error"
            payload = {"error": {"message": message, "type": kind, "code": kind, "param": None}}
        self._json(status, payload, {"retry-after": "0"})

    def _midstream_error(self, anthropic: bool) -> None:
        """Two chunks of text, then the API's error event (an overloaded server, say)."""
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True
        message = "Something went wrong mid-stream"
        if anthropic:
            start = _anthropic_json({"model": "error-midstream"})
            start.update(content=[], stop_reason=None, usage=_anthropic_usage(1))
            block = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": "Hello"}
            events: list[tuple[str | None, dict[str, Any]]] = [
                ("message_start", {"type": "message_start", "message": start}),
                (
                    "content_block_start",
                    {"type": "content_block_start", "index": 0, "content_block": block},
                ),
                (
                    "content_block_delta",
                    {"type": "content_block_delta", "index": 0, "delta": delta},
                ),
                (
                    "error",
                    {"type": "error", "error": {"type": "overloaded_error", "message": message}},
                ),
            ]
        else:
            chunks = list(_chat_events({"model": "error-midstream", "stream": True}))[:2]
            events = [*chunks, (None, {"error": {"message": message, "type": "server_error"}})]
        for name, data in events:
            head = f"event: {name}\n" if name else ""
            self.wfile.write(f"{head}data: {json.dumps(data)}\n\n".encode())
        self.wfile.flush()

    def _answer(
        self,
        body: dict[str, Any],
        events: Iterator[tuple[str | None, dict[str, Any]]],
        whole: dict[str, Any],
        done: bool = False,
    ) -> None:
        if not body.get("stream"):
            self._json(200, whole)
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            for name, data in events:
                head = f"event: {name}\n" if name else ""
                self.wfile.write(f"{head}data: {json.dumps(data)}\n\n".encode())
                self.wfile.flush()
            if done:
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading: an abandoned stream


# -- OpenAI chat completions --------------------------------------------------------------------


def _openai_usage() -> dict[str, Any]:
    prompt, completion = OPENAI_USAGE["prompt_tokens"], OPENAI_USAGE["completion_tokens"]
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": OPENAI_USAGE["cached_tokens"]},
    }


def _answered_model(body: dict[str, Any]) -> str:
    return str(body.get("model", "")) + "-2026-01-01"


def _chat_json(body: dict[str, Any]) -> dict[str, Any]:
    text = REPLY
    if "echo" in str(body.get("model", "")):
        text = str(body["messages"][-1]["content"])
    message: dict[str, Any] = {"role": "assistant", "content": text}
    finish = "stop"
    if body.get("tools"):
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": TOOL_NAME, "arguments": json.dumps(TOOL_ARGUMENTS)},
                }
            ],
        }
        finish = "tool_calls"
    return {
        "id": "chatcmpl-fake1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": _answered_model(body),
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": _openai_usage(),
    }


def _chat_events(body: dict[str, Any]) -> Iterator[tuple[str | None, dict[str, Any]]]:
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": "chatcmpl-fake1",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": _answered_model(body),
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if include_usage:
            out["usage"] = None
        return out

    if body.get("tools"):
        arguments = json.dumps(TOOL_ARGUMENTS)
        yield None, chunk({"role": "assistant", "content": None})
        first = {"index": 0, "id": "call_1", "type": "function"}
        yield (
            None,
            chunk({"tool_calls": [{**first, "function": {"name": TOOL_NAME, "arguments": ""}}]}),
        )
        for part in (arguments[:6], arguments[6:]):
            yield None, chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]})
        yield None, chunk({}, "tool_calls")
    else:
        yield None, chunk({"role": "assistant", "content": ""})
        for word in REPLY_WORDS:
            yield None, chunk({"content": word})
        yield None, chunk({}, "stop")
    if include_usage:
        last = chunk({})
        last["choices"] = []
        last["usage"] = _openai_usage()
        yield None, last


# -- OpenAI Responses API ---------------------------------------------------------------------


def _response_object(body: dict[str, Any], status: str, text: str | None) -> dict[str, Any]:
    output: list[dict[str, Any]] = []
    if text is not None and body.get("tools"):
        output.append(
            {
                "type": "function_call",
                "id": "fc_1",
                "call_id": "call_1",
                "name": TOOL_NAME,
                "arguments": json.dumps(TOOL_ARGUMENTS),
                "status": "completed",
            }
        )
    elif text is not None:
        output.append(
            {
                "type": "message",
                "id": "msg_1",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        )
    inputs, outputs = RESPONSES_USAGE["input_tokens"], RESPONSES_USAGE["output_tokens"]
    usage = {
        "input_tokens": inputs,
        "output_tokens": outputs,
        "total_tokens": inputs + outputs,
        "input_tokens_details": {"cached_tokens": RESPONSES_USAGE["cached_tokens"]},
        "output_tokens_details": {"reasoning_tokens": 0},
    }
    return {
        "id": "resp_fake1",
        "object": "response",
        "created_at": 1_700_000_000,
        "status": status,
        "model": _answered_model(body),
        "output": output,
        "usage": usage if status == "completed" else None,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "metadata": {},
    }


def _responses_json(body: dict[str, Any]) -> dict[str, Any]:
    return _response_object(body, "completed", REPLY)


def _responses_events(body: dict[str, Any]) -> Iterator[tuple[str | None, dict[str, Any]]]:
    seq = iter(range(1000))

    def event(kind: str, **fields: Any) -> tuple[str, dict[str, Any]]:
        return kind, {"type": kind, "sequence_number": next(seq), **fields}

    yield event("response.created", response=_response_object(body, "in_progress", None))
    item = {"type": "message", "id": "msg_1", "status": "in_progress", "role": "assistant"}
    yield event("response.output_item.added", output_index=0, item={**item, "content": []})
    part = {"type": "output_text", "text": "", "annotations": []}
    yield event(
        "response.content_part.added", item_id="msg_1", output_index=0, content_index=0, part=part
    )
    for word in REPLY_WORDS:
        yield event(
            "response.output_text.delta",
            item_id="msg_1",
            output_index=0,
            content_index=0,
            delta=word,
            logprobs=[],
        )
    yield event(
        "response.output_text.done",
        item_id="msg_1",
        output_index=0,
        content_index=0,
        text=REPLY,
        logprobs=[],
    )
    yield event("response.completed", response=_responses_json(body))


# -- OpenAI embeddings ------------------------------------------------------------------------


def _embeddings_json(body: dict[str, Any]) -> dict[str, Any]:
    inputs = body.get("input")
    count = len(inputs) if isinstance(inputs, list) else 1
    tokens = EMBEDDING_USAGE["prompt_tokens"]
    return {
        "object": "list",
        "model": _answered_model(body),
        "data": [
            {"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3, 0.4]}
            for i in range(count)
        ],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


# -- Anthropic messages -----------------------------------------------------------------------


def _anthropic_usage(output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": ANTHROPIC_USAGE["input_tokens"],
        "output_tokens": output_tokens,
        "cache_read_input_tokens": ANTHROPIC_USAGE["cache_read"],
        "cache_creation_input_tokens": ANTHROPIC_USAGE["cache_creation"],
    }


def _anthropic_json(body: dict[str, Any]) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": REPLY}]
    stop = "end_turn"
    if body.get("tools"):
        content = [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": TOOL_NAME, "input": TOOL_ARGUMENTS},
        ]
        stop = "tool_use"
    return {
        "id": "msg_fake1",
        "type": "message",
        "role": "assistant",
        "model": _answered_model(body),
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": _anthropic_usage(ANTHROPIC_USAGE["output_tokens"]),
    }


def _anthropic_events(body: dict[str, Any]) -> Iterator[tuple[str | None, dict[str, Any]]]:
    start = _anthropic_json(body)
    start.update(content=[], stop_reason=None, usage=_anthropic_usage(1))
    yield "message_start", {"type": "message_start", "message": start}
    block = {"type": "text", "text": ""}
    yield "content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}
    yield "ping", {"type": "ping"}
    for word in REPLY_WORDS:
        delta = {"type": "text_delta", "text": word}
        yield "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
    yield "content_block_stop", {"type": "content_block_stop", "index": 0}
    stop = "end_turn"
    if body.get("tools"):
        tool = {"type": "tool_use", "id": "toolu_1", "name": TOOL_NAME, "input": {}}
        yield (
            "content_block_start",
            {"type": "content_block_start", "index": 1, "content_block": tool},
        )
        arguments = json.dumps(TOOL_ARGUMENTS)
        for part in (arguments[:5], arguments[5:]):
            delta = {"type": "input_json_delta", "partial_json": part}
            yield "content_block_delta", {"type": "content_block_delta", "index": 1, "delta": delta}
        yield "content_block_stop", {"type": "content_block_stop", "index": 1}
        stop = "tool_use"
    yield (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": None},
            "usage": {"output_tokens": ANTHROPIC_USAGE["output_tokens"]},
        },
    )
    yield "message_stop", {"type": "message_stop"}


def main() -> None:
    """Serve until stdin closes, in a process of its own (benchmarks: its CPU is not ours).

    Prints ``listening <url>`` once it accepts connections.
    """
    import sys

    with FakeLLMServer(keep_alive="--keep-alive" in sys.argv) as server:
        print(f"listening {server.url}", flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
