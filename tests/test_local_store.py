"""LocalStore: runs land in a SQLite file, once each, from several processes, never clobbering."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from pathlib import Path

import pytest

import taskscope
from taskscope import _store
from taskscope.exporters import InMemoryExporter, LocalStore


def _rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(path)) as connection:
        return connection.execute(sql).fetchall()


def _record_sample_run(client: taskscope.Client) -> str:
    with client.start_run(name="agent", input={"file": "report.pdf"}) as run:
        with run.task("parse", input={"file": "report.pdf"}) as parse:
            run.emit("pages.found", {"pages": 3})
            parse.output = {"pages": 3}
        cached = run.start_task("classify")
        cached.skip("cache hit")
        broken = run.start_task("upload")
        broken.fail("storage unavailable")
    return run.id


def test_a_run_lands_in_the_store_with_its_tasks_and_events(tmp_path: Path) -> None:
    """A flushed run is in the file: run, tasks and events with their ids, states and order."""
    path = tmp_path / "store.db"
    with taskscope.Client([LocalStore(path)]) as client:
        run_id = _record_sample_run(client)
        assert client.flush()
    with closing(_store.connect(path, create=False)) as connection:
        stored = _store.load_run(connection, run_id)
    assert stored is not None
    assert (stored.run.name, stored.run.status, stored.run.input) == (
        "agent",
        "completed",
        {"file": "report.pdf"},
    )
    assert [(t.name, t.status) for t in stored.tasks] == [
        ("parse", "completed"),
        ("classify", "skipped"),
        ("upload", "failed"),
    ]
    assert stored.tasks[0].output == {"pages": 3}
    assert stored.tasks[1].metadata == {"skip_reason": "cache hit"}
    assert stored.tasks[2].error is not None
    assert stored.tasks[2].error.message == "storage unavailable"
    assert [(e.type, e.payload, e.task_id) for e in stored.events] == [
        ("pages.found", {"pages": 3}, stored.tasks[0].id)
    ]
    assert stored.tasks[0].seq < stored.events[0].seq < stored.tasks[1].seq
    assert stored.run.ended_at is not None and stored.run.duration_ms is not None


def test_the_file_uses_the_spec_column_names_wal_and_a_schema_version(tmp_path: Path) -> None:
    """The tables have the columns of SPEC §1; the file is in WAL mode and versioned."""
    path = tmp_path / "store.db"
    LocalStore(path)
    with closing(sqlite3.connect(path)) as connection:
        columns = {
            table: [row[1] for row in connection.execute(f"PRAGMA table_info({table})")]
            for table in ("runs", "tasks", "events")
        }
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert connection.execute("PRAGMA user_version").fetchone() == (_store.SCHEMA_VERSION,)
        indexes = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    assert {"id", "name", "status", "input", "output", "error", "started_at", "ended_at"} <= set(
        columns["runs"]
    )
    assert {"metadata", "tags", "usage", "external_run_id", "parent_run_id"} <= set(columns["runs"])
    assert {"id", "run_id", "parent_id", "name", "status", "seq", "end_seq", "kind"} <= set(
        columns["tasks"]
    )
    assert {"run_id", "task_id", "type", "level", "payload", "occurred_at", "seq"} <= set(
        columns["events"]
    )
    assert {"runs_recent", "tasks_by_run", "events_by_run"} <= indexes


def test_every_schema_version_has_a_migration() -> None:
    """Each older version (0 is an empty file) has a step to the next one."""
    assert set(_store.MIGRATIONS) == set(range(_store.SCHEMA_VERSION))


def test_client_without_exporters_writes_to_taskscope_db(tmp_path: Path) -> None:
    """With TASKSCOPE_EXPORTERS unset, Client() stores its runs at $TASKSCOPE_DB."""
    with taskscope.Client() as client:
        assert [type(e).__name__ for e in client.exporters] == ["LocalStore"]
        client.start_run(name="from-env").complete()
    assert _rows(Path(os.environ["TASKSCOPE_DB"]), "SELECT name, status FROM runs") == [
        ("from-env", "completed")
    ]


def test_without_taskscope_db_the_store_is_dot_taskscope_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default path is .taskscope/taskscope.db, relative to the current directory."""
    monkeypatch.delenv("TASKSCOPE_DB")
    monkeypatch.chdir(tmp_path)
    store = LocalStore()
    assert store.path == Path(".taskscope/taskscope.db")
    assert (tmp_path / ".taskscope" / "taskscope.db").is_file()


def test_a_record_delivered_twice_is_stored_once(tmp_path: Path) -> None:
    """Re-exporting every snapshot (an exporter retry), old ones last, changes nothing."""
    memory = InMemoryExporter()
    with taskscope.Client([memory]) as client, client.start_run(name="retried") as run:
        step = run.start_task("step")
        client.flush()  # the running snapshot goes out before the end
        run.emit("tick", {"n": 1})
        step.complete({"ok": True})
    snapshots = list(memory.records)
    assert any(r.record_type == "task" and r.status == "running" for r in snapshots)
    store = LocalStore(tmp_path / "store.db")
    store.export(snapshots)
    store.export(snapshots)
    store.export(list(reversed(snapshots)))  # a stale running snapshot arrives after the end
    store.shutdown()
    path = tmp_path / "store.db"
    assert _rows(path, "SELECT name, status FROM runs") == [("retried", "completed")]
    assert _rows(path, "SELECT name, status, output FROM tasks") == [
        ("step", "completed", '{"ok":true}')
    ]
    assert _rows(path, "SELECT type FROM events") == [("tick",)]


def test_a_running_task_is_visible_then_replaced_by_its_end(tmp_path: Path) -> None:
    """Mid-run the store shows the task running; after it ends, only its final state."""
    path = tmp_path / "store.db"
    with taskscope.Client([LocalStore(path)]) as client:
        run = client.start_run(name="live")
        step = run.start_task("slow-step")
        assert client.flush()
        assert _rows(path, "SELECT status FROM tasks") == [("running",)]
        assert _rows(path, "SELECT status, ended_at FROM runs") == [("running", None)]
        step.complete()
        run.complete()
        assert client.flush()
    assert _rows(path, "SELECT status FROM tasks") == [("completed",)]
    assert _rows(path, "SELECT status FROM runs") == [("completed",)]


WRITER = textwrap.dedent(
    """
    import sys
    import taskscope
    from taskscope.exporters import LocalStore

    client = taskscope.Client([LocalStore(sys.argv[1])], max_batch_size=50)
    print("ready", flush=True)
    sys.stdin.readline()  # start together
    with client.start_run(name=f"writer-{sys.argv[2]}") as run:
        for index in range(2000):
            run.start_task("step", input={"index": index}).complete(index)
    delivered = client.shutdown(timeout=60)
    print("delivered" if delivered else "LOST", client.stats()["exporters"], flush=True)
    """
)


@pytest.mark.slow
def test_four_processes_writing_one_store_at_once_lose_nothing(tmp_path: Path) -> None:
    """4 processes x 2,000 tasks into one file at the same moment: 8,000 tasks, once each."""
    path = tmp_path / "shared.db"
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(number)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for number in range(4)
    ]
    try:
        for writer in writers:
            assert writer.stdout is not None
            assert writer.stdout.readline().strip() == "ready"
        for writer in writers:
            assert writer.stdin is not None
            writer.stdin.write("go\n")
            writer.stdin.flush()
        results = [writer.communicate(timeout=110) for writer in writers]
    finally:
        for writer in writers:
            if writer.poll() is None:
                writer.kill()
                writer.communicate()
    for writer, (out, err) in zip(writers, results, strict=True):
        assert writer.returncode == 0, err
        assert out.startswith("delivered"), out + err
    assert _rows(path, "SELECT count(*), count(DISTINCT id) FROM tasks") == [(8000, 8000)]
    assert _rows(path, "SELECT count(*) FROM tasks WHERE status = 'completed'") == [(8000,)]
    per_run = _rows(
        path,
        "SELECT runs.name, count(DISTINCT json_extract(tasks.input, '$.index')) FROM runs "
        "JOIN tasks ON tasks.run_id = runs.id GROUP BY runs.name ORDER BY runs.name",
    )
    assert per_run == [(f"writer-{n}", 2000) for n in range(4)]


FORKER = textwrap.dedent(
    """
    import os, sys
    import taskscope
    from taskscope.exporters import LocalStore

    client = taskscope.Client([LocalStore(sys.argv[1])])
    client.start_run(name="parent-before-fork").complete()
    assert client.flush()
    pid = os.fork()
    name = "child" if pid == 0 else "parent"
    client.start_run(name=name).complete()
    ok = client.flush()
    if pid == 0:
        os._exit(0 if ok else 3)
    _, status = os.waitpid(pid, 0)
    assert ok and os.waitstatus_to_exitcode(status) == 0
    """
)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_writes_through_a_connection_of_its_own(tmp_path: Path) -> None:
    """After fork(), parent and child both store their runs; nothing is stored twice."""
    path = tmp_path / "forked.db"
    subprocess.run([sys.executable, "-c", FORKER, str(path)], check=True, timeout=60)
    names = sorted(name for (name,) in _rows(path, "SELECT name FROM runs"))
    assert names == ["child", "parent", "parent-before-fork"]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assert_refused(path: Path, *words: str) -> None:
    before = _digest(path)
    with pytest.raises(taskscope.ConfigurationError) as caught:
        LocalStore(path)
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message
    assert "TASKSCOPE_DB" in message
    for word in words:
        assert word in message
    assert _digest(path) == before, "the file was changed"
    assert not Path(f"{path}-wal").exists()


def test_a_file_that_is_not_a_database_is_refused_and_left_untouched(tmp_path: Path) -> None:
    """A text file at the store's path: a one-line error naming it, and the file unchanged."""
    path = tmp_path / "notes.db"
    path.write_text("my notes, not a database\n" * 100)
    _assert_refused(path, "not a taskscope store")


def test_a_damaged_database_is_refused_and_left_untouched(tmp_path: Path) -> None:
    """An SQLite header followed by garbage: a one-line error, not a sqlite traceback."""
    path = tmp_path / "damaged.db"
    path.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 40)
    _assert_refused(path, "not a taskscope store")


def test_another_applications_sqlite_file_is_refused(tmp_path: Path) -> None:
    """An SQLite file with someone else's tables is not taken over."""
    path = tmp_path / "app.db"
    with closing(sqlite3.connect(path)) as connection:
        connection.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)")
        connection.commit()
    _assert_refused(path, "another application")


def test_a_store_from_a_newer_taskscope_is_refused(tmp_path: Path) -> None:
    """A newer schema version: the error says to upgrade taskscope, and nothing is written."""
    path = tmp_path / "newer.db"
    LocalStore(path).shutdown()
    with closing(sqlite3.connect(path)) as connection:
        connection.execute("PRAGMA journal_mode = DELETE")
        connection.execute(f"PRAGMA user_version = {_store.SCHEMA_VERSION + 1}")
    _assert_refused(path, "newer taskscope", "Upgrade taskscope")


def test_an_empty_file_becomes_a_store(tmp_path: Path) -> None:
    """A zero-byte file (touch) is initialised rather than refused."""
    path = tmp_path / "empty.db"
    path.touch()
    with taskscope.Client([LocalStore(path)]) as client:
        client.start_run(name="first").complete()
    assert _rows(path, "SELECT name FROM runs") == [("first",)]


def test_a_bad_store_from_the_environment_does_not_break_decorated_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """@task with a foreign $TASKSCOPE_DB still runs; the warning names the file."""
    path = tmp_path / "foreign.db"
    path.write_text("not a database")
    monkeypatch.setenv("TASKSCOPE_DB", str(path))

    @taskscope.task
    def add(a: int, b: int) -> int:
        return a + b

    assert add(1, 2) == 3
    assert str(path) in caplog.text
    assert path.read_text() == "not a database"
