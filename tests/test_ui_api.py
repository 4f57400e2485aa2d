"""The ui's JSON API, pages and headers, served by a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette", reason="the ui needs starlette: pip install 'taskscope[ui]'")
pytest.importorskip("uvicorn", reason="the ui needs uvicorn: pip install 'taskscope[ui]'")

from taskscope import _store
from taskscope._model import ErrorInfo, EventRecord, RunRecord, TaskRecord
from taskscope.server import pages

from .ui_support import get, get_json, serve

SERVER_DIR = Path(pages.__file__).resolve().parent
T0 = 1_764_000_000_000_000_000  # a fixed start, in ns since the epoch
MS = 1_000_000


def write(path: Path, *records: Any) -> None:
    """Put records in the store at ``path`` exactly as given (times, ids and all)."""
    with closing(_store.connect(path, create=True)) as connection:
        _store.write_batch(connection, list(records))


def run_record(
    run_id: str, name: str, start_ms: int, status: Any = "completed", **kw: Any
) -> RunRecord:
    end = None if status == "running" else T0 + (start_ms + 100) * MS
    return RunRecord(
        id=run_id, name=name, status=status, start_ns=T0 + start_ms * MS, seq=0, end_ns=end, **kw
    )


def task_record(
    run_id: str, task_id: str, seq: int, start_ms: int, end_ms: int | None, **kw: Any
) -> TaskRecord:
    return TaskRecord(
        id=task_id,
        run_id=run_id,
        parent_id=kw.pop("parent_id", None),
        name=kw.pop("name", task_id),
        status=kw.pop("status", "completed"),
        start_ns=T0 + start_ms * MS,
        end_ns=None if end_ms is None else T0 + end_ms * MS,
        seq=seq,
        **kw,
    )


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """Three runs: an old completed one, a failed one with tasks and events, a running one."""
    path = tmp_path / "ui.db"
    write(
        path,
        run_record("run-old-0001", "nightly-report", 0),
        run_record("run-fail-0002", "pdf-agent", 1_000, status="failed", input={"file": "a.pdf"}),
        task_record("run-fail-0002", "t-parse", 1, 1_000, 1_040, name="parse"),
        task_record(
            "run-fail-0002",
            "t-upload",
            3,
            1_050,
            1_070,
            name="upload",
            parent_id="t-parse",
            status="failed",
            error=ErrorInfo("storage unavailable", "ConnectionError", None, "Traceback ..."),
        ),
        EventRecord(
            "e-1", "run-fail-0002", "t-parse", "pages.found", "info", {"n": 3}, T0 + 1_000 * MS, 2
        ),
        EventRecord(
            "e-2", "run-fail-0002", None, "upload.retrying", "warn", {}, T0 + 1_001 * MS, 4
        ),
        run_record("run-live-0003", "pdf-agent", 2_000, status="running"),
    )
    return path


@pytest.fixture
def base(store: Path) -> Iterator[str]:
    with serve(pages.pages_app(store)) as url:
        yield url


def test_the_run_list_is_newest_first_with_counts(base: str) -> None:
    """/api/runs gives every run, newest first, with its task and failed-task counts."""
    status, body = get_json(f"{base}/api/runs")
    assert status == 200 and body["error"] is None
    data = body["data"]
    assert [run["id"] for run in data["runs"]] == ["run-live-0003", "run-fail-0002", "run-old-0001"]
    assert data["total"] == 3
    failed = data["runs"][1]
    assert (failed["name"], failed["status"], failed["tasks"], failed["failed"]) == (
        "pdf-agent",
        "failed",
        2,
        1,
    )
    assert failed["duration_ms"] == 100.0
    assert failed["start_ms"] == (T0 + 1_000 * MS) / MS
    assert data["runs"][0]["duration_ms"] is None  # still running


@pytest.mark.parametrize(
    ("query", "ids"),
    [
        ("status=failed", ["run-fail-0002"]),
        ("status=running", ["run-live-0003"]),
        ("name=pdf", ["run-live-0003", "run-fail-0002"]),
        ("name=PDF-AG", ["run-live-0003", "run-fail-0002"]),
        ("name=%25", []),  # a literal %, not a wildcard
        ("name=pdf&status=failed", ["run-fail-0002"]),
        ("q=0001", ["run-old-0001"]),
        ("q=run-live", ["run-live-0003"]),
        ("limit=1&offset=1", ["run-fail-0002"]),
        ("limit=2&offset=2", ["run-old-0001"]),
    ],
)
def test_the_run_list_filters_searches_and_pages(base: str, query: str, ids: list[str]) -> None:
    """Status and name filters, run id search and limit/offset pick the runs a user asked for."""
    status, body = get_json(f"{base}/api/runs?{query}")
    assert status == 200
    assert [run["id"] for run in body["data"]["runs"]] == ids


def test_the_total_counts_every_match_not_just_the_page(base: str) -> None:
    """The pager needs the number of matching runs, whatever the page size."""
    _, body = get_json(f"{base}/api/runs?name=pdf&limit=1")
    assert body["data"]["total"] == 2 and len(body["data"]["runs"]) == 1


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=201", "limit=abc", "offset=-1", "status=exploded"]
)
def test_bad_list_parameters_get_a_400_that_says_why(base: str, query: str) -> None:
    """A bad parameter is a VALIDATION_ERROR in the envelope, naming the parameter."""
    status, body = get_json(f"{base}/api/runs?{query}")
    assert status == 400
    assert body["data"] is None and body["error"]["code"] == "VALIDATION_ERROR"
    assert query.split("=")[0] in body["error"]["message"]


def test_a_run_comes_with_its_tasks_and_events_on_its_own_time_axis(base: str) -> None:
    """/api/runs/ID: the run, tasks and events in sequence order, times relative to the run."""
    status, body = get_json(f"{base}/api/runs/run-fail-0002")
    assert status == 200
    data = body["data"]
    assert data["run"]["axis_ms"] == 100.0 and data["run"]["tasks"] == 2
    assert data["run"]["input"] == {"file": "a.pdf"}
    assert [(t["id"], t["offset_ms"], t["duration_ms"]) for t in data["tasks"]] == [
        ("t-parse", 0.0, 40.0),
        ("t-upload", 50.0, 20.0),
    ]
    upload = data["tasks"][1]
    assert upload["parent_id"] == "t-parse"
    assert upload["error"] == {
        "message": "storage unavailable",
        "type": "ConnectionError",
        "traceback": "Traceback ...",
    }
    assert [(e["seq"], e["type"], e["offset_ms"]) for e in data["events"]] == [
        (2, "pages.found", 0.0),
        (4, "upload.retrying", 1.0),
    ]


def test_a_running_runs_axis_ends_at_the_latest_record(base: str, store: Path) -> None:
    """Like the terminal timeline, a run still going is drawn up to the last thing seen."""
    write(store, task_record("run-live-0003", "t-live", 1, 2_000, None, status="running"))
    write(
        store, EventRecord("e-9", "run-live-0003", "t-live", "tick", "info", 1, T0 + 2_030 * MS, 2)
    )
    _, body = get_json(f"{base}/api/runs/run-live-0003")
    assert body["data"]["run"]["axis_ms"] == 30.0
    assert body["data"]["tasks"][0]["duration_ms"] is None


def test_an_unknown_run_is_a_404_in_the_envelope(base: str) -> None:
    """A run id that is not stored gets NOT_FOUND, with the id in the message."""
    status, body = get_json(f"{base}/api/runs/nope")
    assert status == 404
    assert body["data"] is None and body["error"]["code"] == "NOT_FOUND"
    assert "'nope'" in body["error"]["message"]


def test_no_store_yet_is_an_empty_list_and_creates_no_file(tmp_path: Path) -> None:
    """The ui started before any run was recorded shows no runs; it does not make a file."""
    path = tmp_path / "later.db"
    with serve(pages.pages_app(path)) as url:
        status, body = get_json(f"{url}/api/runs")
        assert status == 200 and body["data"]["runs"] == [] and body["data"]["total"] == 0
        assert get_json(f"{url}/api/runs/x")[0] == 404
    assert not path.exists()


def test_a_foreign_file_is_reported_not_touched(tmp_path: Path) -> None:
    """A file that is not a taskscope store gets a 503 naming it, and stays as it was."""
    path = tmp_path / "notes.db"
    path.write_bytes(b"not a database at all")
    with serve(pages.pages_app(path)) as url:
        status, body = get_json(f"{url}/api/runs")
    assert status == 503 and "is not a taskscope store" in body["error"]["message"]
    assert path.read_bytes() == b"not a database at all"


@pytest.mark.parametrize(
    "path",
    ["/", "/runs/run-fail-0002", "/api/runs", "/api/runs/run-fail-0002", "/api/runs/nope",
     "/static/ui.js", "/static/ui.css", "/static/missing.js", "/no-such-page"],
)  # fmt: skip
def test_every_response_carries_the_security_headers(base: str, path: str) -> None:
    """CSP default-src 'self', nosniff and no-referrer on pages, API, static files and errors."""
    _, headers, _ = get(base + path)
    assert headers["content-security-policy"] == "default-src 'self'"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"


def test_pages_and_assets_have_the_right_types(base: str) -> None:
    """HTML pages, a JavaScript file and a stylesheet, each with its own content type."""
    assert get(base + "/")[1]["content-type"].startswith("text/html")
    assert get(base + "/runs/anything")[1]["content-type"].startswith("text/html")
    assert "javascript" in get(base + "/static/ui.js")[1]["content-type"]
    assert get(base + "/static/ui.css")[1]["content-type"].startswith("text/css")
    assert get(base + "/api/runs")[1]["content-type"] == "application/json"


def test_the_pages_have_no_inline_script_or_style() -> None:
    """The CSP forbids inline script and style, so the templates must not rely on either."""
    for template in (SERVER_DIR / "templates").glob("*.html"):
        html = template.read_text(encoding="utf-8")
        for tag in re.findall(r"<script\b[^>]*>", html):
            assert re.search(r'\ssrc="/static/', tag), f"{template.name}: inline script {tag}"
        assert not re.search(r"\son[a-z]+\s*=", html), f"{template.name}: an on* handler"
        assert not re.search(r"\sstyle\s*=", html), f"{template.name}: a style attribute"
        assert "<style" not in html and "http://" not in html and "https://" not in html


def test_the_script_never_parses_data_as_html() -> None:
    """ui.js builds the DOM with textContent only: no innerHTML, document.write or eval."""
    script = (SERVER_DIR / "static" / "ui.js").read_text(encoding="utf-8")
    code = "\n".join(line for line in script.splitlines() if not line.strip().startswith("//"))
    for risky in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                  "new Function", "setAttribute('style'", "javascript:"):  # fmt: skip
        assert risky not in code, risky


def test_captured_markup_is_served_as_json_text(base: str, store: Path) -> None:
    """A payload full of markup comes back as a JSON string, byte for byte."""
    payload = '<script>alert(1)</script>"><img src=x onerror=alert(1)>'
    write(store, run_record("run-xss-0004", payload, 3_000, input={"html": payload}))
    _, headers, _ = get(f"{base}/api/runs/run-xss-0004")
    assert headers["content-type"] == "application/json"
    _, body = get_json(f"{base}/api/runs/run-xss-0004")
    assert (
        body["data"]["run"]["name"] == payload and body["data"]["run"]["input"]["html"] == payload
    )


# -- the read key ---------------------------------------------------------------------------------


@pytest.fixture
def keyed(store: Path) -> Iterator[str]:
    with serve(pages.pages_app(store, read_key="s3cret-key")) as url:
        yield url


def test_with_a_read_key_the_api_wants_a_bearer_key(keyed: str) -> None:
    """Bound beyond loopback: no key or a wrong one is 401 UNAUTHENTICATED; the key reads."""
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-key"}):
        status, body = get_json(f"{keyed}/api/runs", headers)
        assert status == 401 and body["error"]["code"] == "UNAUTHENTICATED", headers
        assert "Authorization: Bearer" in body["error"]["message"]
    status, body = get_json(f"{keyed}/api/runs", {"Authorization": "Bearer s3cret-key"})
    assert status == 200 and body["data"]["total"] == 3


def test_with_a_read_key_a_page_url_with_the_key_sets_a_cookie(keyed: str) -> None:
    """?key=KEY once: a redirect without the key that sets an HttpOnly, SameSite cookie."""
    assert get(f"{keyed}/")[0] == 401
    assert get(f"{keyed}/runs/run-fail-0002?key=wrong")[0] == 401
    status, headers, _ = get(f"{keyed}/runs/run-fail-0002?key=s3cret-key&task=t-upload")
    assert status == 303
    assert headers["location"] == "/runs/run-fail-0002?task=t-upload"
    cookie = headers["set-cookie"]
    assert cookie.startswith(f"{pages.KEY_COOKIE}=s3cret-key;")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    sent = {"Cookie": f"{pages.KEY_COOKIE}=s3cret-key"}
    assert get(f"{keyed}/runs/run-fail-0002", sent)[0] == 200
    assert get_json(f"{keyed}/api/runs/run-fail-0002", sent)[0] == 200
    assert get(f"{keyed}/static/ui.js")[0] == 200  # code, not data: no key needed


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True),
     ("localhost", True), ("0.0.0.0", False), ("192.168.1.5", False), ("::", False),
     ("example.org", False)],
)  # fmt: skip
def test_only_loopback_addresses_read_without_a_key(host: str, loopback: bool) -> None:
    """is_loopback decides whether ``taskscope ui --host HOST`` asks for a key to read."""
    assert pages.is_loopback(host) is loopback


def test_the_list_reads_a_busy_store_quickly(base: str, store: Path) -> None:
    """Reading while a writer holds the file in WAL mode neither blocks nor fails."""
    with closing(_store.connect(store, create=True)) as writer:
        writer.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        status, _ = get_json(f"{base}/api/runs")
        writer.execute("ROLLBACK")
    assert status == 200 and time.monotonic() - started < 2
