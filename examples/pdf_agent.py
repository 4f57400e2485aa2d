"""A small document agent, instrumented with taskscope.

Run it from the repository root with ``python examples/pdf_agent.py``. The agent parses
``examples/data/report.txt`` into pages, classifies the document (served from a cache), looks up
two facts with tools running concurrently, summarises each page with a stand-in model, and
publishes the summary to a flaky store that fails once. The run lands in the local store
(``.taskscope/taskscope.db``), its timeline is printed when it ends, and ``taskscope show latest``
draws it again later.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import taskscope
from taskscope.exporters import ConsoleExporter, LocalStore

REPORT = Path(__file__).resolve().parent / "data" / "report.txt"
MODEL = "local-stand-in-1"

# What the agent "knows" without calling out: a warm cache and two tiny tool backends.
CLASSIFICATION_CACHE = {"Northwind Solar — Annual Report 2024": "annual-report"}
TICKERS = {"Northwind Solar": "NWSR"}
EXCHANGE_RATES = {("EUR", "USD"): 1.08}


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
    pages = parse_pdf(path)
    title = pages[0].splitlines()[0]
    company = title.split(" — ")[0]
    kind = classify_document(title)
    facts = await gather_facts(company)
    summary = await summarise(pages)
    location = publish("summaries/northwind-2024.txt", summary)
    return {"pages": len(pages), "kind": kind, "location": location, **facts}


def see_again_command() -> str:
    """``taskscope show latest``, spelled so it works from here (the venv may not be active)."""
    script = Path(sys.executable).with_name("taskscope")
    if shutil.which("taskscope") or not script.exists():
        return "taskscope show latest"
    with contextlib.suppress(ValueError):
        script = script.relative_to(Path.cwd())
    return f"{script} show latest"


def main() -> None:
    # Runs land in the local store (.taskscope/taskscope.db, or $TASKSCOPE_DB); the console
    # exporter prints each run's timeline to stderr when it ends.
    store = LocalStore()
    taskscope.configure(exporters=[store, ConsoleExporter()])
    result = asyncio.run(pdf_agent(str(REPORT)))
    if not taskscope.flush(timeout=5.0):
        print("warning: not every record reached the exporters")
    print(f"published {result['location']} ({result['pages']} pages, {result['kind']})")
    print(f"run stored in {store.path}; see it again with:")
    print(f"  {see_again_command()}")


if __name__ == "__main__":
    main()
