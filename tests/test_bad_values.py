"""A bad value costs its own record at most: never the batch, other runs, or the user's call."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import taskscope
from taskscope import _store
from taskscope._model import RunRecord, TaskRecord
from taskscope.exporters import JSONLExporter, LocalStore

SURROGATE = os.fsdecode(b"\xff")  # a lone surrogate: what a filename that is not UTF-8 gives


def _record_with(client: taskscope.Client, where: str) -> None:
    """One run holding a lone surrogate in ``where``."""
    text = f"bad{SURROGATE}value"
    tags = [text] if where == "tag" else []
    with client.start_run(name="odd", tags=tags) as run:
        if where == "name":
            with run.task(text):
                pass
        elif where == "input":
            with run.task("step", input={"path": text}):
                pass
        elif where == "metadata key":
            with run.task("step", metadata={text: 1}):
                pass
        elif where == "event type":
            run.emit(text, {"ok": True})
        elif where == "output":
            run.start_task("step").complete(output=[text])


def _around(client: taskscope.Client, where: str) -> None:
    with client.start_run(name="before") as run, run.task("kept", input={"n": 1}):
        pass
    _record_with(client, where)
    with client.start_run(name="after") as run, run.task("kept", input={"n": 2}):
        pass


def _stored(path: Path) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as connection:
        return connection.execute(
            "SELECT runs.name, runs.status, count(tasks.id) FROM runs "
            "LEFT JOIN tasks ON tasks.run_id = runs.id GROUP BY runs.id ORDER BY runs.started_at"
        ).fetchall()


WHERE = ["name", "input", "metadata key", "event type", "tag", "output"]


@pytest.mark.parametrize("where", WHERE)
def test_a_lone_surrogate_costs_nothing_in_the_store(tmp_path: Path, where: str) -> None:
    """The runs before and after are whole, and the odd run is stored too, escaped."""
    path = tmp_path / "store.db"
    client = taskscope.Client([LocalStore(path)])
    _around(client, where)
    assert client.shutdown()
    stored = _stored(path)
    assert [row[:2] for row in stored] == [
        ("before", "completed"),
        ("odd", "completed"),
        ("after", "completed"),
    ]
    assert stored[0][2] == 1 and stored[2][2] == 1
    assert client.stats()["dropped"] == 0
    assert client.stats()["exporters"]["LocalStore"]["failed"] == 0
    # Everything reads back through the CLI's reader, which decodes every column.
    with contextlib.closing(_store.connect(path, create=False)) as connection:
        for summary in _store.list_runs(connection):
            loaded = _store.load_run(connection, summary.run.id)
            assert loaded is not None
            json.dumps([record.name if hasattr(record, "name") else "" for record in loaded.tasks])


def test_json_text_keeps_the_lone_surrogate_exactly(tmp_path: Path) -> None:
    """Inside JSON columns the surrogate is a JSON escape: the value reads back unchanged."""
    path = tmp_path / "store.db"
    client = taskscope.Client([LocalStore(path)])
    with client.start_run(name="odd") as run, run.task("step", input={"path": SURROGATE}):
        pass
    assert client.shutdown()
    with contextlib.closing(_store.connect(path, create=False)) as connection:
        (summary,) = _store.list_runs(connection)
        loaded = _store.load_run(connection, summary.run.id)
    assert loaded is not None
    assert loaded.tasks[0].input == {"path": SURROGATE}


def test_a_surrogate_in_a_task_name_is_stored_backslash_escaped(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    client = taskscope.Client([LocalStore(path)])
    with client.start_run(name="odd") as run, run.task(f"name{SURROGATE}"):
        pass
    assert client.shutdown()
    with contextlib.closing(sqlite3.connect(path)) as connection:
        assert connection.execute("SELECT name FROM tasks").fetchall() == [("name\\udcff",)]


@pytest.mark.parametrize("where", WHERE)
def test_a_lone_surrogate_costs_nothing_in_jsonl(tmp_path: Path, where: str) -> None:
    path = tmp_path / "records.jsonl"
    client = taskscope.Client([JSONLExporter(path)])
    _around(client, where)
    assert client.shutdown()
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    runs = [line["name"] for line in lines if line["record"] == "run" and line["ended_at"]]
    assert runs == ["before", "odd", "after"]
    kept = [line for line in lines if line["record"] == "task" and line["name"] == "kept"]
    assert [line["input"] for line in kept if line["ended_at"]] == [{"n": 1}, {"n": 2}]
    assert client.stats()["exporters"]["JSONLExporter"]["failed"] == 0


@pytest.mark.parametrize("name", [None, ["x"], object(), 3, b"x"], ids=repr)
def test_a_name_that_is_not_text_is_refused_at_the_call(tmp_path: Path, name: Any) -> None:
    """A TypeError naming the call, at the call; the runs around it are stored whole."""
    path = tmp_path / "store.db"
    client = taskscope.Client([LocalStore(path)])
    with client.start_run(name="before") as run, run.task("kept"):
        pass
    with client.start_run(name="middle") as run:
        with pytest.raises(TypeError, match=r"start_task\(\) takes the name as a str"):
            run.start_task(name)
        with pytest.raises(TypeError, match=r"task\(\) takes the name as a str"):
            run.task(name)
        with pytest.raises(TypeError, match=r"start_span\(\) takes the name as a str"):
            run.start_span(name)
    if name is not None:  # start_run(name=None) means the default name
        with pytest.raises(TypeError, match=r"start_run\(\) takes the name as a str"):
            client.start_run(name=name)
    with client.start_run(name="after") as run, run.task("kept"):
        pass
    assert client.shutdown()
    assert _stored(path) == [
        ("before", "completed", 1),
        ("middle", "completed", 0),
        ("after", "completed", 1),
    ]


def _task(ident: str, run_id: str, name: Any) -> TaskRecord:
    return TaskRecord(ident, run_id, None, name, "completed", 1, 1, None, None, None, 2, 2)


def _run(ident: str) -> RunRecord:
    return RunRecord(ident, "run", "completed", 1, 0, None, None, None, 5, 9)


@pytest.mark.parametrize("name", [None, ["x"], object(), b"x", f"a{SURROGATE}"], ids=repr)
def test_a_record_sqlite_refuses_costs_only_itself(tmp_path: Path, name: Any) -> None:
    """Records handed straight to the store (by an exporter of the user's, say): the batch's
    other records are stored, and the count of the refused ones is returned."""
    path = tmp_path / "store.db"
    connection = _store.connect(path, create=True)
    batch = [
        _run("r1"),
        _task("t1", "r1", "good"),
        _task("t2", "r1", name),
        _task("t3", "r1", "ok"),
    ]
    lost = _store.write_batch(connection, batch)
    names = [row[0] for row in connection.execute("SELECT name FROM tasks ORDER BY id")]
    connection.close()
    if name is None:  # NOT NULL: the one record SQLite cannot take
        assert lost == 1
        assert names == ["good", "ok"]
    else:  # text of it is stored instead
        assert lost == 0
        assert names[0] == "good" and names[2] == "ok" and isinstance(names[1], str)


def test_a_value_no_encoder_takes_costs_only_its_record(tmp_path: Path) -> None:
    """A reference cycle in metadata handed straight to the store: only that record is lost."""
    path = tmp_path / "store.db"
    connection = _store.connect(path, create=True)
    cycle: dict[str, Any] = {}
    cycle["self"] = cycle
    bad = _task("t2", "r1", "bad")
    bad.metadata = cycle
    lost = _store.write_batch(connection, [_run("r1"), _task("t1", "r1", "good"), bad])
    names = [row[0] for row in connection.execute("SELECT name FROM tasks")]
    connection.close()
    assert (lost, names) == (1, ["good"])


def test_the_ui_answers_for_every_odd_value_the_store_holds(tmp_path: Path) -> None:
    """Runs holding each odd value above are listed and shown by the API and the pages."""
    pytest.importorskip("starlette")
    from taskscope.server.app import create_app
    from tests.ui_support import get, serve

    path = tmp_path / "store.db"
    client = taskscope.Client([LocalStore(path)])
    for where in WHERE:
        _record_with(client, where)
    assert client.shutdown()
    connection = _store.connect(path, create=True)
    _store.write_batch(connection, [_run("r-bytes"), _task("t-bytes", "r-bytes", b"\xffname")])
    connection.close()
    with serve(create_app(path, ingest_key="k")) as base:
        status, _, body = get(f"{base}/api/runs?limit=50")
        assert status == 200
        run_ids = [run["id"] for run in json.loads(body)["data"]["runs"]]
        assert len(run_ids) == len(WHERE) + 1
        for run_id in run_ids:
            assert get(f"{base}/api/runs/{run_id}")[0] == 200
            assert get(f"{base}/runs/{run_id}")[0] == 200
