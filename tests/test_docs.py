"""Every ```python block of README.md and docs/*.md, and every examples/*.py, runs as shown.

Each block runs alone (a fresh interpreter, a temporary working directory, no
TASKSCOPE_EXPORTERS), so blocks must be self-contained. A comment line ``# prints: TEXT`` in a
block is a line the block must print.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
# reference.md is generated from docstrings by mkdocstrings (nox -s docs): no blocks of its own.
DOC_FILES = [
    ROOT / "README.md",
    *sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "reference.md"),
]
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)
PRINTS = re.compile(r"^\s*# prints: (.*)$", re.MULTILINE)


def _blocks() -> list[Any]:
    params = []
    for path in DOC_FILES:
        text = path.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            name = path.relative_to(ROOT).as_posix()
            params.append(pytest.param(match.group(1), id=f"{name}:{line}"))
    return params


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKSCOPE_")}
    # The checkout comes first, whether or not taskscope is installed in this interpreter.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=_environment(),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
    )


def test_the_docs_have_python_blocks() -> None:
    """Every page of docs/ and the README shows at least one runnable Python block."""
    for path in DOC_FILES:
        assert FENCE.search(path.read_text(encoding="utf-8")), f"{path.name} has no python block"


@pytest.mark.parametrize("source", _blocks())
def test_doc_block_runs_and_prints_what_it_says(source: str, tmp_path: Path) -> None:
    """A reader who pastes the block into a file and runs it sees the lines it promises."""
    script = tmp_path / "block.py"
    script.write_text(source, encoding="utf-8")
    result = _run([str(script)], tmp_path)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    printed = result.stdout.splitlines()
    for expected in PRINTS.findall(source):
        assert expected in printed, f"missing line {expected!r} in:\n{result.stdout}"


# Lines each example prints: pdf_agent's timeline comes from the ConsoleExporter, on stderr.
EXAMPLES = {
    "pdf_agent": [
        r"^✓ run pdf-agent +\d+ ms",
        r"^  ✓ parse-pdf +\d+ ms",
        r"^  ↷ classify-document +\d+ ms .*\(cache hit\)$",
        r"^    ✓ lookup-ticker +\d+ ms",
        r"^      · tool\.called: ticker_search \{'company': 'Northwind Solar'\}$",
        r"^      · tool\.returned: ticker_search -> \{'ticker': 'NWSR'\}$",
        r"^    ✓ fetch-exchange-rate +\d+ ms",
        r"^      · llm\.response: \d+ tokens in, \d+ out$",
        r"^    ✗ upload-summary +\d+ ms",
        r"^        error: ConnectionError: storage unavailable \(503 Service Unavailable\)$",
        r"^    ✓ upload-summary +\d+ ms",
        r"^output: \{'pages': 3, 'kind': 'annual-report', ",
        r"^run [0-9a-f-]{36} · .* · 12 tasks \(10 completed, 1 failed, 1 skipped\) · 11 events$",
        r"^published store://summaries/northwind-2024\.txt \(3 pages, annual-report\)$",
        r"^run stored in \.taskscope/taskscope\.db; see it again with:$",
        r"^  (\S*/)?taskscope show latest$",
    ],
    # Run without a backend here (tests/e2e/otel_phoenix_e2e.py runs it against Phoenix).
    "otel_phoenix": [
        r"^trace_id: [0-9a-f]{32}$",
        r"^pdf-agent \[AGENT\] OK$",
        r"^  parse-pdf \[CHAIN\] OK$",
        r"^  classify-document \[CHAIN\] UNSET$",
        r"^    lookup-ticker \[CHAIN\] OK$",
        r"^    upload-summary \[CHAIN\] ERROR$",
        r"^published store://summaries/northwind-2024\.txt \(3 pages, annual-report\)$",
        r"^  chat gpt-4o-mini \[LLM\] OK$",  # the model call, by instrument_openai
    ],
    "seed_manual_api": [
        r"^task parse-pdf: completed, output \{'pages': 3\}$",
        r"^run: completed, output \{'pages': 3\}$",
    ],
    "thread_fanout": [
        *(rf"^fetch-page {i}: completed, parent is fan-out$" for i in range(4)),
        r"^all 4 children in the same run: True$",
    ],
}


def _run_example(name: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return _run([str(ROOT / "examples" / f"{name}.py")], cwd)


def test_every_example_is_checked() -> None:
    """Each file in examples/ has its expected output listed here."""
    assert {p.stem for p in (ROOT / "examples").glob("*.py")} == set(EXAMPLES)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_runs_and_prints_its_timeline(name: str, tmp_path: Path) -> None:
    """``python examples/NAME.py`` exits 0 and prints what it shows (stdout and stderr)."""
    result = _run_example(name, tmp_path)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    printed = result.stdout + result.stderr
    for pattern in EXAMPLES[name]:
        assert re.search(pattern, printed, re.MULTILINE), (
            f"no line matches {pattern!r} in:\n{printed}"
        )


def test_pdf_agent_prints_the_failed_attempt_before_the_retry(tmp_path: Path) -> None:
    """The timeline shows the failed upload, its error, then the attempt that completed."""
    lines = _run_example("pdf_agent", tmp_path).stderr.splitlines()
    uploads = [i for i, line in enumerate(lines) if "upload-summary" in line]
    assert len(uploads) == 2
    assert "✗" in lines[uploads[0]] and "✓" in lines[uploads[1]]
    assert lines[uploads[0] + 1].strip().startswith("error: ConnectionError")


def test_show_latest_draws_the_run_the_example_just_printed(tmp_path: Path) -> None:
    """After pdf_agent.py, ``python -m taskscope show latest`` prints the same timeline."""
    example = _run_example("pdf_agent", tmp_path)
    assert example.returncode == 0, example.stderr
    assert (tmp_path / ".taskscope" / "taskscope.db").is_file()
    shown = _run(["-m", "taskscope", "show", "latest"], tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == example.stderr
    lines = shown.stdout.splitlines()
    statuses = [line.split()[0] for line in lines[1:] if re.match(r"^ +[✓✗↷…] ", line)]
    assert len(statuses) >= 6
    assert statuses.count("✗") == 1 and statuses.count("↷") == 1
    assert any(line.startswith("    ✓ ") for line in lines), "no nested task"
    assert any(line.lstrip().startswith("· ") for line in lines), "no event"
