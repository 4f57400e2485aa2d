"""The seed's Python snippet, unchanged, with taskscope's ``Client`` in place of the SDK's.

Run it from the repository root with ``python examples/seed_manual_api.py``.
"""

from __future__ import annotations

from pathlib import Path

from taskscope import Client
from taskscope.exporters import InMemoryExporter

REPORT = Path(__file__).resolve().parent / "data" / "report.txt"


def parse_pdf(path: str) -> list[str]:
    """A stand-in for a PDF parser: the bundled text report, split at form feeds."""
    text = REPORT.read_text(encoding="utf-8")
    return [page for page in text.split("\f") if page.strip()]


memory = InMemoryExporter()
client = Client(exporters=[memory])

# The seed's snippet, verbatim.
run = client.start_run(input={"file": "report.pdf"})
task = run.start_task("parse-pdf", input={"file": "report.pdf"})
pages = parse_pdf("report.pdf")
task.complete(output={"pages": len(pages)})
run.complete(output={"pages": len(pages)})

client.flush(timeout=5.0)
for recorded in memory.tasks:
    print(f"task {recorded.name}: {recorded.status}, output {recorded.output}")
for recorded_run in memory.runs:
    print(f"run: {recorded_run.status}, output {recorded_run.output}")
client.shutdown()
