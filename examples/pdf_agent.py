"""A small document agent, instrumented with taskscope.

Run it from the repository root with ``python examples/pdf_agent.py``. The agent parses
``examples/data/report.txt`` into pages, classifies the document (served from a cache), looks up
two facts with tools running concurrently, summarises each page with a stand-in model, and
publishes the summary to a flaky store that fails once. Then it prints the run's timeline, drawn
from what an ``InMemoryExporter`` received; the same records are appended to a JSONL file.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import taskscope
from taskscope.exporters import InMemoryExporter, JSONLExporter

REPORT = Path(__file__).resolve().parent / "data" / "report.txt"
JSONL_PATH = Path(".taskscope") / "runs.jsonl"
MODEL = "local-stand-in-1"

# What the agent "knows" without calling out: a warm cache and two tiny tool backends.
CLASSIFICATION_CACHE = {"Northwind Solar — Annual Report 2024": "annual-report"}
TICKERS = {"Northwind Solar": "NWSR"}
EXCHANGE_RATES = {("EUR", "USD"): 1.08}

# taskscope has no module-level flush yet; a run handle reaches its client (run.flush()).
RUN_HANDLES: list[taskscope.Run] = []


# -- the agent's steps --------------------------------------------------------------------


@taskscope.task("parse-pdf")
def parse_pdf(path: str) -> list[str]:
    """Split the document into pages at form feeds (or ``--- page ---`` lines)."""
    text = Path(path).read_text(encoding="utf-8").replace("--- page ---", "\f")
    return [page.strip() for page in text.split("\f") if page.strip()]


@taskscope.task("classify-document")
def classify_document(title: str) -> str:
    """Label the document; a cache hit makes the work unnecessary, so the task is skipped."""
    cached = CLASSIFICATION_CACHE.get(title)
    if cached is not None:
        taskscope.current_task().skip("cache hit")
        return cached
    label = "annual-report" if "Annual Report" in title else "other"
    CLASSIFICATION_CACHE[title] = label
    return label


@taskscope.task("lookup-ticker")
async def lookup_ticker(company: str) -> str:
    run = taskscope.current_run()
    run.emit_tool_call("ticker_search", {"company": company})
    await asyncio.sleep(0.083)  # a network round trip
    ticker = TICKERS[company]
    run.emit_tool_return("ticker_search", {"ticker": ticker})
    return ticker


@taskscope.task("fetch-exchange-rate")
async def fetch_exchange_rate(base: str, quote: str) -> float:
    run = taskscope.current_run()
    run.emit_tool_call("fx_rate", {"base": base, "quote": quote})
    await asyncio.sleep(0.062)
    rate = EXCHANGE_RATES[(base, quote)]
    run.emit_tool_return("fx_rate", {"rate": rate})
    return rate


@taskscope.task("gather-facts")
async def gather_facts(company: str) -> dict[str, Any]:
    """Both tools run at once; each is a child of this task, neither of the other."""
    ticker, rate = await asyncio.gather(lookup_ticker(company), fetch_exchange_rate("EUR", "USD"))
    return {"ticker": ticker, "eur_usd": rate}


async def stand_in_model(prompt: str) -> tuple[str, dict[str, int]]:
    """A deterministic local stand-in for a model API: 52 to 142 ms, answer from the prompt."""
    await asyncio.sleep(0.052 + 0.03 * (len(prompt) % 4))
    body = prompt.split("\n", 1)[1]
    first_sentence = body.replace("\n", " ").split(". ")[0].strip().rstrip(".") + "."
    usage = {"input_tokens": len(prompt.split()), "output_tokens": len(first_sentence.split())}
    return first_sentence, usage


@taskscope.task("summarise-page")
async def summarise_page(number: int, text: str) -> str:
    run = taskscope.current_run()
    prompt = f"Summarise page {number} in one sentence:\n{text}"
    run.emit_llm_request(MODEL, prompt)
    answer, usage = await stand_in_model(prompt)
    run.emit_llm_response(MODEL, answer, usage=usage)
    return answer


@taskscope.task("summarise")
async def summarise(pages: list[str]) -> str:
    answers = [await summarise_page(number, page) for number, page in enumerate(pages, 1)]
    return " ".join(answers)


class FlakyStore:
    """Object storage that is unavailable on the first request, as real ones sometimes are."""

    def __init__(self) -> None:
        self.requests = 0
        self.objects: dict[str, str] = {}

    def put(self, key: str, text: str) -> str:
        self.requests += 1
        time.sleep(0.022)
        if self.requests == 1:
            raise ConnectionError("storage unavailable (503 Service Unavailable)")
        self.objects[key] = text
        return f"store://{key}"


STORE = FlakyStore()


@taskscope.task("upload-summary")
def upload_summary(key: str, summary: str, attempt: int) -> str:
    return STORE.put(key, summary)


@taskscope.task("publish")
def publish(key: str, summary: str, attempts: int = 3) -> str:
    """Retry the upload; each attempt is its own task, so the failed one stays visible."""
    for attempt in range(1, attempts + 1):
        try:
            return upload_summary(key, summary, attempt)
        except ConnectionError:
            taskscope.emit("upload.retrying", {"attempt": attempt}, level="warn")
    raise ConnectionError(f"upload of {key} failed {attempts} times")


@taskscope.run("pdf-agent")
async def pdf_agent(path: str) -> dict[str, Any]:
    RUN_HANDLES.append(taskscope.current_run())
    pages = parse_pdf(path)
    title = pages[0].splitlines()[0]
    company = title.split(" — ")[0]
    kind = classify_document(title)
    facts = await gather_facts(company)
    summary = await summarise(pages)
    location = publish("summaries/northwind-2024.txt", summary)
    return {"pages": len(pages), "kind": kind, "location": location, **facts}


# -- the timeline, drawn from an InMemoryExporter's records -------------------------------

SYMBOLS = {"completed": "✓", "failed": "✗", "skipped": "↷", "running": "…", "cancelled": "⊘"}
BAR_WIDTH = 40
LABEL_WIDTH = 34


def rounded_ms(nanoseconds: int) -> int:
    """Milliseconds rounded to 10 ms, so the printout does not flicker from run to run."""
    return round(nanoseconds / 1e7) * 10


def bar(start_ms: int, length_ms: int, total_ms: int) -> str:
    left = min(BAR_WIDTH - 1, int(start_ms / total_ms * BAR_WIDTH))
    size = max(1, min(BAR_WIDTH - left, round(length_ms / total_ms * BAR_WIDTH)))
    return (" " * left + "█" * size).ljust(BAR_WIDTH)


def describe(event: taskscope.EventRecord) -> str:
    payload = event.payload
    if event.type == "llm.request":
        return f"{payload['model']}, {len(payload['prompt'].split())} words of prompt"
    if event.type == "llm.response":
        return f"{payload['input_tokens']} tokens in, {payload['output_tokens']} out"
    if event.type == "tool.called":
        return f"{payload['tool']} {payload['input']}"
    if event.type == "tool.returned":
        return f"{payload['tool']} -> {payload['output']}"
    return str(payload)


class Timeline:
    """One run's task tree (by parent_id) with its events, in sequence order."""

    def __init__(self, memory: InMemoryExporter, run: taskscope.RunRecord) -> None:
        assert run.end_ns is not None, "draw a run once it has ended"
        self.run = run
        self.end_ns = run.end_ns
        self.total_ms = max(rounded_ms(run.end_ns - run.start_ns), 10)
        # Child tasks and events of each task (None: the run itself), to interleave by seq.
        self.below: dict[str | None, list[Any]] = defaultdict(list)
        for task in memory.tasks:
            if task.run_id == run.id:
                self.below[task.parent_id].append(task)
        for event in memory.events:
            if event.run_id == run.id:
                self.below[event.task_id].append(event)

    def print(self) -> None:
        run = self.run
        label = f"{SYMBOLS[run.status]} run {run.name}"
        print(f"{label:<{LABEL_WIDTH}}{self.total_ms:>6} ms  │{'█' * BAR_WIDTH}│")
        self._print_below(None, 1)
        print(f"output: {run.output}")
        print(f"tokens: {run.usage}")

    def _print_below(self, parent_id: str | None, depth: int) -> None:
        indent = "  " * depth
        for entry in sorted(self.below[parent_id], key=lambda entry: entry.seq):
            if isinstance(entry, taskscope.EventRecord):
                print(f"{indent}· {entry.type}: {describe(entry)}")
                continue
            self._print_task(entry, indent)
            self._print_below(entry.id, depth + 1)

    def _print_task(self, task: taskscope.TaskRecord, indent: str) -> None:
        end_ns = task.end_ns if task.end_ns is not None else self.end_ns
        duration = rounded_ms(end_ns - task.start_ns)
        offset = rounded_ms(task.start_ns - self.run.start_ns)
        label = f"{indent}{SYMBOLS[task.status]} {task.name}"
        reason = task.metadata.get("skip_reason")
        note = f"  ({reason})" if reason else ""
        drawn = bar(offset, duration, self.total_ms)
        print(f"{label:<{LABEL_WIDTH}}{duration:>6} ms  │{drawn}│{note}")
        if task.error is not None:
            print(f"{indent}    error: {task.error.type}: {task.error.message}")


def main() -> None:
    memory = InMemoryExporter()
    taskscope.configure(exporters=[JSONLExporter(JSONL_PATH), memory])
    asyncio.run(pdf_agent(str(REPORT)))
    if not RUN_HANDLES[-1].flush(timeout=5.0):
        print("warning: not every record reached the exporters")
    for run in memory.runs:
        Timeline(memory, run).print()
    print(f"records written to {JSONL_PATH}")


if __name__ == "__main__":
    main()
