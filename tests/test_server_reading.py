"""What the store may hold, the ui shows: odd rows never make a page or the read API fail.

Rows are written straight into a real SQLite store, as another program, an older version or a
hand edit could leave them; a real uvicorn server on 127.0.0.1 reads them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest

import taskscope
from taskscope import _store
from taskscope.exporters import LocalStore
from taskscope.server import pages
from taskscope.server.app import serve_in_thread

T0 = 1_764_000_000_000_000_000
MS = 1_000_000


def put_run(path: Path, run_id: str, **columns: Any) -> None:
    row: dict[str, Any] = {
        "id": run_id, "name": "run", "status": "completed", "input": None, "output": None,
        "error": None, "started_at": T0, "ended_at": T0 + 10 * MS, "metadata": "{}",
        "tags": "[]", "external_run_id": None, "parent_run_id": None, "usage": "{}", "seq": 0,
        "end_seq": None,
    }  # fmt: skip
    row.update(columns)
    _insert(path, "runs", row)


def put_task(path: Path, run_id: str, task_id: str, seq: int, **columns: Any) -> None:
    row: dict[str, Any] = {
        "id": task_id, "run_id": run_id, "parent_id": None, "name": task_id,
        "status": "completed", "input": None, "output": None, "error": None,
        "started_at": T0 + seq * MS, "ended_at": T0 + (seq + 1) * MS, "metadata": "{}",
        "kind": "task", "seq": seq, "end_seq": seq,
    }  # fmt: skip
    row.update(columns)
    _insert(path, "tasks", row)


def put_event(path: Path, run_id: str, event_id: str, seq: int, **columns: Any) -> None:
    row: dict[str, Any] = {
        "id": event_id, "run_id": run_id, "task_id": None, "type": "e", "level": "info",
        "payload": None, "occurred_at": T0, "seq": seq,
    }  # fmt: skip
    row.update(columns)
    _insert(path, "events", row)


def _insert(path: Path, table: str, row: dict[str, Any]) -> None:
    names = ", ".join(row)
    marks = ", ".join(f":{name}" for name in row)
    with closing(_store.connect(path, create=True)) as connection:
        connection.execute(f"INSERT INTO {table} ({names}) VALUES ({marks})", row)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "odd.db"
    _store.connect(path, create=True).close()
    return path


@pytest.fixture
def base(store: Path) -> Iterator[str]:
    with serve_in_thread(pages.pages_app(store)) as url:
        yield url


def read(base: str, path: str) -> Any:
    """GET a read API path: it must answer 200 in the envelope; returns the data."""
    answer = httpx.get(base + path)
    assert answer.status_code == 200, answer.text
    document = answer.json()
    assert document["error"] is None
    return document["data"]


def pages_render(base: str, run_id: str) -> None:
    """The list page and the run page answer 200 (their data comes from the API above)."""
    assert httpx.get(base + "/").status_code == 200
    assert httpx.get(f"{base}/runs/{run_id}").status_code == 200


def test_a_task_name_stored_as_a_blob_is_shown_as_text(base: str, store: Path) -> None:
    """A BLOB name (bytes) is decoded; its bad bytes show as U+FFFD."""
    put_run(store, "r1", name=b"run-\xff")
    put_task(store, "r1", "t1", 1, name=b"task-\xfe-ok")
    put_event(store, "r1", "e1", 2, type=b"ev")
    data = read(base, "/api/runs/r1")
    assert data["run"]["name"] == "run-\ufffd"
    assert [t["name"] for t in data["tasks"]] == ["task-\ufffd-ok"]
    assert [e["type"] for e in data["events"]] == ["ev"]
    assert [r["name"] for r in read(base, "/api/runs")["runs"]] == ["run-\ufffd"]
    pages_render(base, "r1")


def test_text_that_is_not_utf8_is_shown_with_replacement_characters(base: str, store: Path) -> None:
    """TEXT holding invalid UTF-8 (a surrogate escaped by surrogatepass, a stray byte)."""
    bad = "name-\ud800".encode("utf-8", "surrogatepass")
    with closing(_store.connect(store, create=True)) as connection:
        connection.execute(
            "INSERT INTO runs (id, name, status, started_at, seq) "
            "VALUES ('r2', CAST(? AS TEXT), 'completed', ?, 0)",
            (bad, T0),
        )
        connection.execute(
            "INSERT INTO tasks (id, run_id, name, status, started_at, seq, input) "
            "VALUES ('t', 'r2', CAST(? AS TEXT), 'failed', ?, 1, CAST(? AS TEXT))",
            (b"\xc3(", T0, b'"\xff"'),
        )
    data = read(base, "/api/runs/r2")
    assert data["run"]["name"] == "name-\ufffd\ufffd\ufffd"  # three bad bytes, three marks
    (task,) = data["tasks"]
    assert (task["name"], task["input"]) == ("\ufffd(", "\ufffd")
    assert read(base, "/api/runs")["runs"][0]["failed"] == 1
    pages_render(base, "r2")


def test_json_with_escaped_lone_surrogates_is_served_with_the_same_escapes(
    base: str, store: Path
) -> None:
    """JSON text holding "\\ud800" (as LocalStore writes a lone surrogate) reads back exactly."""
    put_run(store, "r3", input='{"k\\udc00": "v\\ud800"}', metadata='{"m": "\\udfff"}')
    put_event(store, "r3", "e", 1, payload='["\\ud83d\\ude00", "\\ud83d"]')
    answer = httpx.get(base + "/api/runs/r3")
    assert answer.status_code == 200 and b'"v\\ud800"' in answer.content
    data = answer.json()["data"]
    assert data["run"]["input"] == {"k\udc00": "v\ud800"}
    assert data["run"]["metadata"] == {"m": "\udfff"}
    assert data["events"][0]["payload"] == ["\U0001f600", "\ud83d"]


@pytest.mark.parametrize(
    ("column", "stored", "expected"),
    [
        ("input", "{not json", "{not json"),
        ("output", "NaN", "NaN"),
        ("input", "[1e999]", "[1e999]"),
        ("metadata", "oops", {"unreadable": "oops"}),
        ("metadata", "[1, 2]", {"unreadable": [1, 2]}),
        ("usage", "{bad", {"unreadable": "{bad"}),
        ("tags", "not-a-list", ["not-a-list"]),
        ("tags", "[1, null]", ["1", "None"]),
        ("error", "plain text", {"message": "plain text"}),
        ("error", '{"message": 5, "type": 7}', {"message": "5"}),
    ],
)
def test_a_column_that_is_not_json_is_shown_as_its_text(
    base: str, store: Path, column: str, stored: str, expected: Any
) -> None:
    """Invalid or unservable JSON in a run column: the stored text, in a documented place."""
    put_run(store, "r4", **{column: stored})
    data = read(base, "/api/runs/r4")
    assert data["run"][column] == expected
    read(base, "/api/runs")
    pages_render(base, "r4")


def test_json_nested_10000_deep_is_shown_as_its_text(base: str, store: Path) -> None:
    """Deeper than Python's parser reaches: the raw text, not a 500."""
    deep = "[" * 10_000 + "]" * 10_000
    put_run(store, "r5", output=deep)
    put_task(store, "r5", "t", 1, input=deep)
    data = read(base, "/api/runs/r5")
    assert data["run"]["output"] == deep and data["tasks"][0]["input"] == deep


def test_times_and_numbers_of_the_wrong_type_are_converted(base: str, store: Path) -> None:
    """A time stored as text or a float, and a sequence number as text, still place the row."""
    put_run(store, "r6", started_at=str(T0), ended_at=float(T0 + 5 * MS), seq="0")
    put_task(store, "r6", "t", 1, started_at="garbage", end_seq="x", ended_at=None)
    data = read(base, "/api/runs/r6")
    assert data["run"]["start_ms"] == T0 / MS
    assert data["run"]["duration_ms"] == pytest.approx(5.0, abs=0.001)  # a float of ns is inexact
    assert (data["tasks"][0]["seq"], data["tasks"][0]["started_at"]) == (
        1,
        "1970-01-01T00:00:00+00:00",
    )


def test_a_parent_cycle_in_the_store_shows_every_task(base: str, store: Path) -> None:
    """A->B->C->A plus D under C: each task is reachable from the run, the cut one noted."""
    put_run(store, "r7")
    for seq, (task_id, parent) in enumerate([("A", "C"), ("B", "A"), ("C", "B"), ("D", "C")]):
        put_task(store, "r7", task_id, seq + 1, parent_id=parent)
    put_task(store, "r7", "S", 5, parent_id="S")  # its own parent
    tasks = read(base, "/api/runs/r7")["tasks"]
    assert [(t["id"], t["parent_id"], t["metadata"]) for t in tasks] == [
        ("A", None, {"parent_cycle": "C"}),
        ("B", "A", {}),
        ("C", "B", {}),
        ("D", "C", {}),
        ("S", None, {"parent_cycle": "S"}),
    ]
    pages_render(base, "r7")


def test_a_10000_deep_parent_chain_is_served(base: str, store: Path) -> None:
    """Ten thousand nested tasks: every one listed with its parent, no recursion limit hit."""
    put_run(store, "r8")
    rows = [
        (f"t{i}", "r8", f"t{i - 1}" if i else None, f"t{i}", "completed", T0, i + 1)
        for i in range(10_000)
    ]
    with closing(_store.connect(store, create=True)) as connection:
        connection.executemany(
            "INSERT INTO tasks (id, run_id, parent_id, name, status, started_at, seq) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    data = read(base, "/api/runs/r8")
    assert len(data["tasks"]) == 10_000 and data["run"]["tasks"] == 10_000
    assert data["tasks"][-1]["parent_id"] == "t9998"
    assert all(task["metadata"] == {} for task in data["tasks"])
    assert read(base, "/api/runs")["runs"][0]["tasks"] == 10_000


@pytest.mark.parametrize(
    "path",
    ["/api/runs?name=%ED%A0%80", "/api/runs?q=%FF%FE", "/api/runs/%ED%A0%80",
     "/api/runs?name=" + "%25" * 500, "/runs/%FF", "/api/runs?status=%00"],
)  # fmt: skip
def test_odd_bytes_in_the_address_never_make_a_500(base: str, store: Path, path: str) -> None:
    """Bytes that are not UTF-8 in the query or the run id: 200, 400 or 404 in the envelope."""
    put_run(store, "r9")
    answer = httpx.get(base + path)
    assert answer.status_code in (200, 400, 404), answer.text
    if path.startswith("/api/"):
        assert set(json.loads(answer.content)) == {"data", "error"}


def test_what_localstore_records_with_surrogates_is_served(tmp_path: Path) -> None:
    """A task named and fed with os.fsdecode(b"\\xff") through LocalStore: page and API answer."""
    path = tmp_path / "lib.db"
    odd = os.fsdecode(b"file-\xff")
    with (
        taskscope.Client(exporters=[LocalStore(path)]) as client,
        client.start_run(name="files") as run,
        run.task(odd, input={"path": odd}),
    ):
        pass
    with serve_in_thread(pages.pages_app(path)) as url:
        (listed,) = read(url, "/api/runs")["runs"]
        (task,) = read(url, f"/api/runs/{listed['id']}")["tasks"]
        pages_render(url, listed["id"])
    assert task["name"] == "file-\\udcff"  # LocalStore keeps it as text: the six characters
    assert task["input"] == {"path": odd}  # inside JSON: the escape, read back as the same string
