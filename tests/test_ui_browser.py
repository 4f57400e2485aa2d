"""The ui in a real browser: Debian's chromium, headless, driven by Playwright, against a real
uvicorn server on 127.0.0.1. Skipped (with the reason) where chromium or playwright is missing;
``.ci/run`` installs both.

The pdf_agent test saves screenshots of both pages to build/screenshots/ (docs/images/ with
TASKSCOPE_UPDATE_SCREENSHOTS=1, the copies docs/ui.md shows).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette", reason="the ui needs starlette: pip install 'taskscope[ui]'")
pytest.importorskip("uvicorn", reason="the ui needs uvicorn: pip install 'taskscope[ui]'")

import taskscope
from taskscope import _store
from taskscope._model import ErrorInfo, EventRecord, RunRecord, TaskRecord
from taskscope.exporters import LocalStore
from taskscope.server.pages import pages_app

from .ui_support import browser_missing, chromium, get_json, serve

MISSING = browser_missing()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(MISSING is not None, reason=f"browser tests skipped: {MISSING}"),
]
ROOT = Path(__file__).resolve().parents[1]
# Screenshots of each run land in build/screenshots/ (ignored by git); with
# TASKSCOPE_UPDATE_SCREENSHOTS=1 they go to docs/images/, the copies docs/ui.md shows.
IMAGES = (
    ROOT / "docs" / "images"
    if os.environ.get("TASKSCOPE_UPDATE_SCREENSHOTS") == "1"
    else ROOT / "build" / "screenshots"
)
IMAGES.mkdir(parents=True, exist_ok=True)
T0 = 1_764_000_000_000_000_000
MS = 1_000_000


class Watched:
    """A page with everything that would betray a script running: dialogs and console errors."""

    def __init__(self, context: Any) -> None:
        self.page = context.new_page()
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.page.on("dialog", self._dialog)
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def _console(self, message: Any) -> None:
        if message.type in ("error", "warning"):
            self.errors.append(f"console {message.type}: {message.text}")

    def open(self, url: str) -> Any:
        self.page.goto(url)
        self.page.wait_for_selector("body[data-ready='1']", timeout=10_000)
        return self.page

    def assert_quiet(self) -> None:
        assert self.dialogs == [], self.dialogs
        assert self.errors == [], self.errors


def write(path: Path, *records: Any) -> None:
    with closing(_store.connect(path, create=True)) as connection:
        _store.write_batch(connection, list(records))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as context:
        yield context


@pytest.fixture(scope="module")
def agent_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The store ``python examples/pdf_agent.py`` leaves behind."""
    directory = tmp_path_factory.mktemp("agent")
    path = directory / "taskscope.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKSCOPE_")}
    env["TASKSCOPE_DB"] = str(path)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "pdf_agent.py")],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return path


@pytest.fixture(scope="module")
def agent_base(agent_store: Path) -> Iterator[str]:
    with serve(pages_app(agent_store)) as url:
        yield url


BARS = """() => Array.from(document.querySelectorAll('#spacer .row')).map((row) => {
  const bar = row.querySelector('.bar').getBoundingClientRect();
  const track = row.querySelector('.track').getBoundingClientRect();
  return {id: row.dataset.taskId, status: row.dataset.status,
          name: row.querySelector('.name').textContent,
          failedPath: row.classList.contains('failed-path'),
          symbol: row.querySelector('.sym').textContent,
          left: bar.left - track.left, width: bar.width, track: track.width};
})"""


def test_pdf_agent_run_in_the_list_and_its_waterfall(browser: Any, agent_base: str) -> None:
    """Acceptance 1: the list shows the run; the detail page has one bar per task, widths
    proportional to durations (± 2 px), the failed task marked with its error on click, the
    skipped task marked, and the events in sequence order. Screenshots are saved."""
    _, body = get_json(f"{agent_base}/api/runs")
    (run,) = body["data"]["runs"]
    _, body = get_json(f"{agent_base}/api/runs/{run['id']}")
    detail = body["data"]
    tasks = {task["id"]: task for task in detail["tasks"]}
    axis = detail["run"]["axis_ms"]
    watched = Watched(browser)

    page = watched.open(agent_base + "/")
    row = page.locator(f"#runs-body tr[data-run-id='{run['id']}']")
    assert row.locator("td").nth(0).inner_text() == "pdf-agent"
    assert "completed" in row.locator("td").nth(1).inner_text()
    assert row.locator("td").nth(4).inner_text() == "12"
    assert row.locator("td").nth(5).inner_text() == "1"
    IMAGES.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(IMAGES / "ui-runs.png"))

    row.locator("a").click()
    page.wait_for_url(f"**/runs/{run['id']}")
    page.wait_for_selector("#spacer .row[data-task-id]:not([data-task-id=''])")
    rows = page.evaluate(BARS)
    task_rows = [r for r in rows if r["id"]]
    assert sorted(r["id"] for r in task_rows) == sorted(tasks), "one bar per task"
    for drawn in task_rows:
        task = tasks[drawn["id"]]
        width = max(1.0, drawn["track"] * task["duration_ms"] / axis)
        left = drawn["track"] * task["offset_ms"] / axis
        assert abs(drawn["width"] - width) <= 2, (task["name"], drawn["width"], width)
        assert abs(drawn["left"] - left) <= 2, (task["name"], drawn["left"], left)
    # The longest bar is visibly longer than the short ones: the proportion is real.
    assert max(r["width"] for r in task_rows) > 100

    (failed,) = [r for r in task_rows if r["status"] == "failed"]
    assert failed["name"] == "upload-summary" and failed["symbol"] == "✗" and failed["failedPath"]
    publish = next(r for r in task_rows if r["name"] == "publish")
    assert publish["failedPath"], "the failed task's parent is on the highlighted path"
    assert not next(r for r in task_rows if r["name"] == "parse-pdf")["failedPath"]
    (skipped,) = [r for r in task_rows if r["status"] == "skipped"]
    assert skipped["name"] == "classify-document" and skipped["symbol"] == "↷"
    note = page.locator(f".row[data-task-id='{skipped['id']}'] .note")
    assert note.inner_text() == "(cache hit)"

    seqs = page.eval_on_selector_all("#events-body tr", "rows => rows.map(r => +r.dataset.seq)")
    assert seqs == [event["seq"] for event in detail["events"]] and seqs == sorted(seqs)
    assert len(seqs) == 11
    types = page.eval_on_selector_all(
        "#events-body td.type", "cells => cells.map(c => c.textContent)"
    )
    assert types[:2] == ["tool.called", "tool.called"] and types[-1] == "upload.retrying"

    assert page.locator("#task-error").count() == 0
    page.click(f".row[data-task-id='{failed['id']}']")
    error = page.locator("#task-error")
    error.wait_for()
    assert error.inner_text() == "ConnectionError: storage unavailable (503 Service Unavailable)"
    assert "Traceback (most recent call last)" in page.locator("#task-traceback pre").inner_text()
    assert '"attempt": 1' in page.locator("#task-input pre").inner_text()
    assert page.url.endswith(f"/runs/{run['id']}?task={failed['id']}")
    page.screenshot(path=str(IMAGES / "ui-run.png"), full_page=True)

    # The URL is the state: opening it again shows the same task.
    page = watched.open(page.url)
    page.locator("#task-error").wait_for()
    assert page.locator(".row.selected").get_attribute("data-task-id") == failed["id"]
    watched.assert_quiet()


XSS = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "javascript:alert(1)",
]


def test_captured_markup_renders_as_text(browser: Any, tmp_path: Path) -> None:
    """Acceptance 2: script tags, attribute breakouts and javascript: URLs in a run's name,
    input, output, error, metadata, event payloads and even its id stay text: no dialog, no
    console error, no element made from them."""
    path = tmp_path / "xss.db"
    run_id = 'run-"><img src=x onerror=alert(1)>'
    everything = {"script": XSS[0], "break": XSS[1], "url": XSS[2], XSS[0]: XSS[1]}
    write(
        path,
        RunRecord(
            id=run_id,
            name=XSS[0],
            status="failed",
            start_ns=T0,
            end_ns=T0 + 50 * MS,
            seq=0,
            input=everything,
            output=XSS[2],
            error=ErrorInfo(XSS[1], XSS[0], {"href": XSS[2]}, XSS[0]),
            metadata={"link": XSS[2]},
            tags=[XSS[1]],
            external_run_id=XSS[2],
            usage={XSS[1]: 1},
        ),
        TaskRecord(
            id="t-1",
            run_id=run_id,
            parent_id=None,
            name=XSS[1],
            status="failed",
            start_ns=T0,
            end_ns=T0 + 20 * MS,
            seq=1,
            input=everything,
            output={"href": XSS[2]},
            error=ErrorInfo(XSS[0], XSS[1], everything, XSS[1]),
            metadata={"skip_reason": XSS[0], XSS[1]: XSS[2]},
            kind=XSS[0],
        ),
        EventRecord("e-1", run_id, "t-1", XSS[0], "error", everything, T0 + MS, 2),
    )
    watched = Watched(browser)
    with serve(pages_app(path)) as base:
        page = watched.open(base + "/")
        page.locator("#runs-body tr[data-run-id]").wait_for()
        assert page.locator("#runs-body a").inner_text() == XSS[0]
        page.locator("#runs-body a").click()
        page.wait_for_selector("#spacer .row[data-task-id='t-1']")
        assert page.locator("#run-header h1").inner_text() == XSS[0]
        assert page.locator("#run-error").inner_text() == f"{XSS[0]}: {XSS[1]}"
        page.click("#spacer .row[data-task-id='t-1']")
        page.locator("#task-error").wait_for()
        assert page.locator(".detail-name").inner_text() == XSS[1]
        assert XSS[2] in page.locator("#task-output pre").inner_text()
        page.wait_for_timeout(300)
        counts = page.evaluate(
            "() => [document.images.length, document.scripts.length, document.links.length]"
        )
        # No <img> made from data; only ui.js; the one link is "← all runs" (and brand).
        assert counts[0] == 0 and counts[1] == 1
        hrefs = page.eval_on_selector_all("a", "links => links.map(a => a.getAttribute('href'))")
        assert all(href == "/" for href in hrefs), hrefs
        page = watched.open(base + "/?name=" + "%3Cscript%3E")
        page.locator("#runs-body tr[data-run-id]").wait_for()
        assert page.locator("#name").input_value() == "<script>"
    watched.assert_quiet()


def test_a_new_run_appears_in_the_list_within_two_seconds(browser: Any, tmp_path: Path) -> None:
    """Acceptance 4 (through the store): a run recorded by another thread while the list is
    open shows up within 2 s, and its status follows when it ends; the open detail page of a
    running run shows new tasks as they arrive."""
    path = tmp_path / "live.db"
    with taskscope.Client([LocalStore(path)]) as client:
        with client.start_run(name="earlier"):
            pass
        client.flush()
        watched = Watched(browser)
        with serve(pages_app(path)) as base:
            page = watched.open(base + "/")
            page.locator("#runs-body tr[data-run-id]").wait_for()
            started: dict[str, Any] = {}

            def record() -> None:
                started["run"] = client.start_run(name="arrives-live", input={"n": 1})
                client.flush()
                started["at"] = time.monotonic()

            writer = threading.Thread(target=record)
            writer.start()
            writer.join()
            run = started["run"]
            row = page.locator(f"#runs-body tr[data-run-id='{run.id}']")
            row.wait_for(timeout=2_000)
            assert time.monotonic() - started["at"] < 2.0
            assert row.get_attribute("data-status") == "running"

            other = Watched(browser)
            detail = other.open(f"{base}/runs/{run.id}")
            task = run.start_task("late-step")
            client.flush()
            detail.wait_for_selector(f".row[data-task-id='{task.id}']", timeout=2_000)
            task.complete({"ok": True})
            run.complete({"done": True})
            client.flush()
            detail.wait_for_selector(".row.run-row[data-status='completed']", timeout=2_000)
            page.wait_for_selector(
                f"#runs-body tr[data-run-id='{run.id}'][data-status='completed']", timeout=2_000
            )
            other.assert_quiet()
    watched.assert_quiet()


def big_run(path: Path, tasks: int = 5_000) -> tuple[str, str, str]:
    """A run of 4 phases with 1,249 steps each (5,000 tasks), one failed step in phase 2.

    Returns the run id, the failed step's id and the id of a step deep in phase 3.
    """
    run_id = "big-run"
    records: list[Any] = []
    seq = 1
    per_phase = (tasks - 4) // 4
    failed_id = deep_id = ""
    for phase in range(4):
        phase_id = f"phase-{phase}"
        start = phase * per_phase * 2
        records.append(
            TaskRecord(phase_id, run_id, None, phase_id, "completed", T0 + start * MS, seq,
                       end_ns=T0 + (start + per_phase * 2) * MS)
        )  # fmt: skip
        seq += 1
        for step in range(per_phase):
            step_id = f"step-{phase}-{step}"
            status: Any = "failed" if (phase, step) == (2, 700) else "completed"
            at = T0 + (start + step * 2) * MS
            records.append(
                TaskRecord(step_id, run_id, phase_id, f"step {phase}.{step}", status, at, seq,
                           input={"phase": phase, "step": step}, end_ns=at + MS,
                           error=ErrorInfo("bad step") if status == "failed" else None)
            )  # fmt: skip
            records.append(
                EventRecord(f"e-{step_id}", run_id, step_id, "tick", "info", {}, at, seq + 1)
            )
            seq += 2
            if status == "failed":
                failed_id = step_id
            if (phase, step) == (3, 1_000):
                deep_id = step_id
    end = T0 + 4 * per_phase * 2 * MS
    records.insert(0, RunRecord(run_id, "big", "failed", T0, 0, end_ns=end))
    write(path, *records)
    return run_id, failed_id, deep_id


def test_a_5000_task_run_stays_usable(browser: Any, tmp_path: Path) -> None:
    """Only the rows in view exist in the page; folded subtrees open on demand; a task deep in
    the run opens from its URL; the failed step's subtree starts unfolded."""
    path = tmp_path / "big.db"
    run_id, failed_id, deep_id = big_run(path)
    watched = Watched(browser)
    with serve(pages_app(path)) as base:
        started = time.monotonic()
        page = watched.open(f"{base}/runs/{run_id}")
        page.wait_for_selector("#spacer .row")
        assert time.monotonic() - started < 5
        assert page.locator("#spacer .row").count() < 120, "rows are virtualised"
        # Folded: 4 phases + the 1,249 steps of the phase holding the failure (+ the run row).
        height = page.evaluate("() => document.getElementById('spacer').offsetHeight")
        assert height == (1 + 4 + 1_249) * 24
        page.click("#expand-all")
        height = page.evaluate("() => document.getElementById('spacer').offsetHeight")
        assert height == 5_001 * 24
        page.evaluate(
            "() => { const v = document.getElementById('viewport'); v.scrollTop = v.scrollHeight; }"
        )
        page.wait_for_selector("#spacer .row[data-task-id='step-3-1248']")
        assert page.locator("#spacer .row").count() < 120

        page = watched.open(f"{base}/runs/{run_id}?task={deep_id}")
        page.wait_for_selector(f"#spacer .row.selected[data-task-id='{deep_id}']")
        assert page.locator(".detail-name").inner_text() == "step 3.1000"
        page.click(f"#spacer .row[data-task-id='{deep_id}']")
        page.click("#collapse-all")
        page.wait_for_selector(f"#spacer .row[data-task-id='{deep_id}']")
        assert failed_id
    watched.assert_quiet()


def test_a_run_sent_by_the_agentos_sdk_appears_within_two_seconds(
    browser: Any, tmp_path: Path
) -> None:
    """Acceptance 4: the official AgentOS SDK reports a run to ``taskscope ui``'s ingest API;
    the open run list shows it within 2 s, then its end, without a reload."""
    agentos = pytest.importorskip(
        "agentos", reason="needs the AgentOS SDK: pip install pyagentos-sdk"
    )
    from taskscope.server.app import create_app, serve_in_thread

    path = tmp_path / "ingest.db"
    key = "tsk_test_key"
    watched = Watched(browser)
    with serve_in_thread(create_app(path, ingest_key=key)) as base:
        page = watched.open(base + "/")
        sdk = agentos.AgentOS(api_key=key, agent_id="agent-ui-test", base_url=base)
        try:
            run = sdk.start_run(input={"question": "<b>where did time go?</b>"})
            sent = time.monotonic()
            row = page.locator(f"#runs-body tr[data-run-id='{run.run_id}']")
            row.wait_for(timeout=2_000)
            assert time.monotonic() - sent < 2.0
            assert row.get_attribute("data-status") == "running"
            task = run.start_task("lookup", input={"q": 1})
            task.complete({"answer": 42})
            run.complete({"ok": True})
            ended = time.monotonic()
            page.wait_for_selector(
                f"#runs-body tr[data-run-id='{run.run_id}'][data-status='completed']",
                timeout=2_000,
            )
            assert time.monotonic() - ended < 2.0
            assert row.locator("td").nth(4).inner_text() == "1"
        finally:
            sdk.shutdown()
    watched.assert_quiet()
