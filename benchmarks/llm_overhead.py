"""Microseconds instrument_openai adds to a non-streaming chat completion, measured in one run.

Two OpenAI clients of the real SDK make the same call, one instrumented and one not (they swap
roles every other pair of rounds), in alternating rounds so that both see the same machine (and
two Anthropic clients, a
``messages.create`` each, over HTTP). The OpenAI call is measured twice: against the fake API of
tests/llm_fake_server.py over real HTTP on 127.0.0.1, served by a process of its own as a
model's API is (what a user's call looks like, with network noise; the server's work does not
compete with this process for its interpreter lock), and through an in-process ``MockTransport``
answering the same JSON (no sockets, so the difference is taskscope's own time, and the
pipeline's work has no network wait to overlap with). The figure is the median over rounds of
(instrumented - plain) per call (the mean of the two roles' medians): in wall time, in the
calling thread's CPU time, and in the process's CPU time (every thread's: the pipeline's work
for the call is in it, flushed at the end of each batch). CPU times are not inflated by other
programs on the machine; wall time is.
Then taskscope's own time is timed inside the instrumented calls ("own, inside": the median and
90th percentile of the time spent in taskscope's code before and after the SDK's, see
``own_time``), which needs no difference of two noisy medians. The "A/A" row runs the HTTP case
with neither client instrumented: what it shows is the measurement's own noise.
docs/performance.md has the latest figures.

    python benchmarks/llm_overhead.py [--rounds 31] [--calls 100]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anthropic
import httpx2
import openai

import taskscope
from taskscope.integrations import _llm
from tests.llm_fake_server import _chat_json

MESSAGES = [{"role": "user", "content": "Say hello."}]


class DropExporter:
    """Takes batches and keeps nothing: the caller's cost is what is measured."""

    def export(self, batch: Sequence[taskscope.Record]) -> None:
        return None

    def force_flush(self, timeout: float) -> bool:
        return True

    def shutdown(self) -> None:
        return None


def in_process_client() -> openai.OpenAI:
    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, json=_chat_json(json.loads(request.content)))

    transport = httpx2.MockTransport(answer)
    return openai.OpenAI(
        base_url="http://fake.invalid/v1",
        api_key="sk-bench",
        max_retries=0,
        http_client=httpx2.Client(transport=transport),
    )


# The method is looked up at each call, as user code does: instrumenting patches the class.
def chat(client: Any) -> Callable[[], Any]:
    return lambda: client.chat.completions.create(model="gpt-5", messages=MESSAGES)


def message(client: Any) -> Callable[[], Any]:
    return lambda: client.messages.create(
        model="claude-sonnet-4-5", max_tokens=64, messages=MESSAGES
    )


def per_call(call: Callable[[], Any], calls: int) -> tuple[float, float, float]:
    """Wall, caller-thread CPU and process CPU microseconds per call.

    Process CPU counts every thread (the pipeline's work for these calls, flushed at the end,
    and the fake server's, the same for both clients); CPU times are not inflated by other
    programs competing for the cores, which wall time is.
    """
    wall, thread, cpu = time.perf_counter_ns(), time.thread_time_ns(), time.process_time_ns()
    for _ in range(calls):
        call()
    taskscope.flush()
    return (
        (time.perf_counter_ns() - wall) / calls / 1000,
        (time.thread_time_ns() - thread) / calls / 1000,
        (time.process_time_ns() - cpu) / calls / 1000,
    )


def measure(
    make: Callable[[], Any], rounds: int, calls: int, *, neither: bool = False, **options: bool
) -> dict[str, float]:
    """The A/B figures; ``neither``: two plain clients (A/A), the measurement's noise floor.

    The two clients swap roles every other pair of rounds (the one that records is
    instrumented, the other not), so a bias of one client's own (its connection, its server
    thread: the A/A row showed up to ±8 µs of it) counts for and against in equal parts: the
    figure is the mean of the two roles' medians.
    """
    clients = [make(), make()]
    anthropic_sdk = isinstance(clients[0], anthropic.Anthropic)
    call = message if anthropic_sdk else chat
    instrument = taskscope.instrument_anthropic if anthropic_sdk else taskscope.instrument_openai
    uninstrument = (
        taskscope.uninstrument_anthropic if anthropic_sdk else taskscope.uninstrument_openai
    )
    calls_of = [call(client) for client in clients]
    kinds = ("plain", "recorded", "wall", "thread", "cpu")
    samples: list[dict[str, list[float]]] = [{key: [] for key in kinds} for _ in clients]
    with taskscope.run("llm-overhead"):
        for index in range(rounds):
            recorder = (index // 2) % 2  # which client records in this round
            plain, recorded = calls_of[1 - recorder], calls_of[recorder]
            if not neither:
                uninstrument(clients[1 - recorder])
                instrument(clients[recorder], **options)
            if index < 2:  # warm both in their role: connections, imports, caches
                per_call(plain, 20)
                per_call(recorded, 20)
            if index % 2 == 0:
                p, r = per_call(plain, calls), per_call(recorded, calls)
            else:
                r, p = per_call(recorded, calls), per_call(plain, calls)
            taken = samples[recorder]
            taken["plain"].append(p[0])
            taken["recorded"].append(r[0])
            taken["wall"].append(r[0] - p[0])
            taken["thread"].append(r[1] - p[1])
            taken["cpu"].append(r[2] - p[2])
        inside = own_time(calls_of[recorder], rounds * calls // 2) if not neither else [0.0, 0.0]
    if not neither:
        uninstrument(clients[recorder])
    result = {
        key: statistics.mean(statistics.median(role[key]) for role in samples) for key in kinds
    }
    result["inside"] = statistics.median(inside)
    result["inside_p90"] = statistics.quantiles(inside, n=10)[-1]
    return result


def own_time(call: Callable[[], Any], calls: int) -> list[float]:
    """µs of taskscope's own code in each call, timed inside it: from entering the recording
    wrapper to handing the request to the SDK, plus from the SDK's return to the wrapper's.

    The SDK's time is left out by construction (no difference of two noisy medians), and the
    caches are as cold as a real call leaves them; the four clock reads add about 0.2 µs.
    """
    clock = time.perf_counter_ns
    spent: list[float] = []
    record = _llm.record_sync

    def timed(original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        marks: list[int] = []

        def sdk(*sdk_args: Any, **sdk_kwargs: Any) -> Any:
            marks.append(clock())
            try:
                return original(*sdk_args, **sdk_kwargs)
            finally:
                marks.append(clock())

        entered = clock()
        result = record(sdk, *args, **kwargs)
        left = clock()
        if len(marks) == 2:
            spent.append(((marks[0] - entered) + (left - marks[1])) / 1000)
        return result

    _llm.record_sync = timed  # the SDK wrappers look it up at each call
    try:
        for index in range(calls):
            call()
            if index % 100 == 99:
                taskscope.flush()
    finally:
        _llm.record_sync = record
    return spent[len(spent) // 10 :]  # the first tenth warms up


def warm(calls: int = 20_000) -> float:
    """µs per call of the recording wrapper alone, caches warm: a stand-in for the SDK method
    returns a ready ChatCompletion, so nothing but taskscope's code runs, again and again."""
    from openai.types.chat import ChatCompletion

    from taskscope.integrations import _openai

    body = {"model": "gpt-5", "messages": MESSAGES}
    response = ChatCompletion.model_validate(_chat_json(body))
    operation = _llm.Operation("openai", "chat", _openai.chat_answer)
    types = _llm.SDKTypes(openai.Stream, openai.AsyncStream, _llm.sentinels(openai))
    options = _llm.Options()

    def sdk(resource: Any, **kwargs: Any) -> Any:
        return response

    samples = []
    with taskscope.run("llm-overhead-warm"):
        for _ in range(11):
            started = time.thread_time_ns()
            for _ in range(calls // 10):
                _llm.record_sync(sdk, None, (), body, operation, types, options)
            samples.append((time.thread_time_ns() - started) / (calls // 10) / 1000)
            taskscope.flush()
    return statistics.median(samples[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--calls", type=int, default=100)
    args = parser.parse_args()
    taskscope.configure(exporters=[DropExporter()])
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.llm_fake_server", "--keep-alive"],
        cwd=Path(__file__).resolve().parent.parent,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdin is not None and server.stdout is not None
    try:
        url = server.stdout.readline().split()[-1]  # "listening http://127.0.0.1:PORT"

        def over_http() -> openai.OpenAI:
            return openai.OpenAI(base_url=url + "/v1", api_key="sk-bench", max_retries=0)

        def anthropic_over_http() -> anthropic.Anthropic:
            return anthropic.Anthropic(base_url=url, api_key="sk-ant-bench", max_retries=0)

        cases = {
            "fake API over HTTP": measure(over_http, args.rounds, args.calls),
            "Anthropic, fake API over HTTP": measure(anthropic_over_http, args.rounds, args.calls),
            "A/A: neither instrumented": measure(over_http, args.rounds, args.calls, neither=True),
            "in-process transport": measure(in_process_client, args.rounds, args.calls),
            "in-process, capture_input=False": measure(
                in_process_client, args.rounds, args.calls, capture_input=False
            ),
        }
    finally:
        server.stdin.close()
        server.wait(10)
    taskscope.flush()
    print(
        f"{'case':32} {'plain':>8} {'instrumented':>13} {'added: wall':>12}"
        f" {'caller CPU':>11} {'process CPU':>12} {'own, inside':>12} {'p90':>6}"
        "   (µs per call, medians)"
    )
    for name, row in cases.items():
        print(
            f"{name:32} {row['plain']:8.1f} {row['recorded']:13.1f} {row['wall']:12.1f}"
            f" {row['thread']:11.1f} {row['cpu']:12.1f} {row['inside']:12.1f}"
            f" {row['inside_p90']:6.1f}"
        )
    print(f"the recording wrapper alone, caches warm: {warm():.2f} µs of caller CPU per call")


if __name__ == "__main__":
    main()
