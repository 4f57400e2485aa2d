"""The local store keeps what it was given: shared files, a live server, full or read-only disks."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

import taskscope
from taskscope import _store
from taskscope.exporters import LocalStore

pytest.importorskip("uvicorn")


def _rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as connection:
        return connection.execute(sql).fetchall()


def _integrity(path: Path) -> str:
    return str(_rows(path, "PRAGMA integrity_check")[0][0])


def test_two_local_stores_in_one_process_and_a_reader_elsewhere_lose_nothing(
    tmp_path: Path,
) -> None:
    """A second LocalStore on the same file, then another process that opens and closes it:
    the first store's WAL stays in place and every run lands."""
    path = tmp_path / "shared.db"
    first = taskscope.Client([LocalStore(path)])
    first.start_run(name="before").complete()
    assert first.flush()
    second = taskscope.Client([LocalStore(path)])  # opened while the first is connected
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
            "c.execute('SELECT count(*) FROM runs').fetchone(); c.close()",
            str(path),
        ],
        check=True,
    )
    first.start_run(name="first-after").complete()
    second.start_run(name="second-after").complete()
    assert first.flush()
    assert second.flush()
    assert first.shutdown()
    assert second.shutdown()
    names = sorted(name for (name,) in _rows(path, "SELECT name FROM runs"))
    assert names == ["before", "first-after", "second-after"]
    assert _integrity(path) == "ok"


def test_opening_a_store_never_opens_the_file_outside_sqlite(tmp_path: Path) -> None:
    """Any descriptor closed on a live database drops the process's locks on it (POSIX)."""
    path = tmp_path / "store.db"
    LocalStore(path)
    opened: list[str] = []
    real_open = os.open

    def watching_open(file: object, *args: object, **kwargs: object) -> int:
        opened.append(os.fspath(file))  # type: ignore[arg-type]
        return real_open(file, *args, **kwargs)  # type: ignore[arg-type]

    os.open = watching_open  # type: ignore[assignment]
    try:
        _store.connect(path, create=True).close()
        _store.connect(path, create=False).close()
    finally:
        os.open = real_open
    assert [name for name in opened if name.startswith(str(path))] == []


WRITER = textwrap.dedent(
    """
    import sys
    import taskscope
    from taskscope.exporters import LocalStore

    path, number = sys.argv[1], int(sys.argv[2])
    client = taskscope.Client([LocalStore(path)])
    for index in range(50):
        with client.start_run(name=f"writer-{number}-{index}") as run:
            with run.task("step", input={"index": index}):
                pass
    print("delivered" if client.shutdown(60) else "LOST", flush=True)
    """
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _ui(path: Path, key: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "taskscope", "ui", "--db", str(path), "--port", str(port)],
        env={**os.environ, "TASKSCOPE_INGEST_KEY": key},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        assert server.stdout is not None
        # Printed once the socket listens: requests from here on wait in its backlog.
        first = server.stdout.readline()
        assert first.startswith("taskscope ui: serving"), first + server.communicate()[0]
        yield server, base
    finally:
        if server.poll() is None:
            server.kill()
        server.communicate()


def _ingest_runs(base: str, key: str, count: int) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
        for index in range(count):
            answer = http.post(
                "/api/ingest/v1/run/start",
                json={"agent_id": "ingested", "input": {"index": index}},
            )
            assert answer.status_code == 200, answer.text
            run_id = answer.json()["data"]["run_id"]
            task = {"id": f"t-{index}", "name": "remote-step", "status": "completed"}
            answer = http.post("/api/ingest/v1/tasks", json={"run_id": run_id, "task": task})
            assert answer.status_code == 200, answer.text
            answer = http.post("/api/ingest/v1/run/complete", json={"run_id": run_id})
            assert answer.status_code == 200, answer.text


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_a_live_ui_while_four_processes_write_loses_nothing(
    tmp_path: Path, stop: signal.Signals
) -> None:
    """taskscope ui reads and ingests while 4 writers store 50 runs each; stopping it
    (SIGINT or SIGKILL) keeps all 200 runs and all it ingested, and the file is sound."""
    path = tmp_path / "live.db"
    LocalStore(path)
    key = "test-ingest-key"
    with _ui(path, key) as (server, base):
        writers = [
            subprocess.Popen(
                [sys.executable, "-c", WRITER, str(path), str(number)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for number in range(4)
        ]
        try:
            _ingest_runs(base, key, 20)
            for _ in range(3):  # the UI reads while the writers write
                assert httpx.get(f"{base}/api/runs", timeout=10).status_code == 200
            results = [writer.communicate(timeout=110) for writer in writers]
        finally:
            for writer in writers:  # on a failure above: none left running, no pipe left open
                if writer.poll() is None:
                    writer.kill()
                if writer.stdout is not None and not writer.stdout.closed:
                    writer.communicate()
        for writer, (out, err) in zip(writers, results, strict=True):
            assert writer.returncode == 0, err
            assert out.strip() == "delivered", out + err
        _ingest_runs(base, key, 5)
        assert httpx.get(f"{base}/api/runs", timeout=10).status_code == 200
        server.send_signal(stop)
        server.wait(timeout=30)
    assert _integrity(path) == "ok"
    written = _rows(path, "SELECT count(*) FROM runs WHERE name LIKE 'writer-%'")
    assert written == [(200,)]
    assert _rows(path, "SELECT count(*) FROM runs WHERE status != 'completed'") == [(0,)]
    assert _rows(path, "SELECT count(*) FROM tasks WHERE name = 'step'") == [(200,)]
    assert _rows(path, "SELECT count(*) FROM runs WHERE name = 'ingested'") == [(25,)]
    assert _rows(path, "SELECT count(*) FROM tasks WHERE name = 'remote-step'") == [(25,)]


FORK_EXIT = textwrap.dedent(
    """
    import os, sys
    import taskscope
    from taskscope.exporters import LocalStore

    client = taskscope.Client([LocalStore(sys.argv[1])])
    with client.start_run(name="parent") as run:
        with run.task("before"):
            pass
        with run.task("outer"):
            pid = os.fork()
            if pid == 0:
                with run.task("in-child"):
                    run.emit("child.said", {"pid": os.getpid()})
                sys.exit(0)  # through the parent's blocks, which the parent ends
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
            with run.task("after"):
                pass
    print("delivered" if client.shutdown(30) else "LOST")
    """
)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_exiting_with_sys_exit_does_not_end_the_parents_run(
    tmp_path: Path,
) -> None:
    """The parent's run and task end as the parent ends them; the child's task is kept; no
    sequence number repeats."""
    path = tmp_path / "fork.db"
    out = subprocess.run(
        [sys.executable, "-c", FORK_EXIT, str(path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "delivered"
    assert _rows(path, "SELECT name, status, error FROM runs") == [("parent", "completed", None)]
    tasks = _rows(path, "SELECT name, status, parent_id, id, seq, end_seq FROM tasks")
    by_name = {row[0]: row for row in tasks}
    assert sorted(by_name) == ["after", "before", "in-child", "outer"]
    assert {row[1] for row in tasks} == {"completed"}
    assert by_name["in-child"][2] == by_name["outer"][3]
    (event_seq,) = _rows(path, "SELECT seq FROM events WHERE type = 'child.said'")[0]
    numbers = [row[4] for row in tasks] + [row[5] for row in tasks] + [event_seq]
    numbers += [seq for row in _rows(path, "SELECT seq, end_seq FROM runs") for seq in row]
    assert len(numbers) == len(set(numbers)) == 4 * 2 + 1 + 2
    # The parent's own records keep their order; the child's come after them.
    assert by_name["before"][5] < by_name["outer"][4] < by_name["after"][4]
    assert by_name["in-child"][4] > by_name["after"][5]


ATTACHER = textwrap.dedent(
    """
    import json, sys
    import taskscope
    from taskscope.exporters import LocalStore

    taskscope.configure(exporters=[LocalStore(sys.argv[1])])
    carrier = json.loads(sys.argv[2])
    for round in range(2):
        with taskscope.attach(carrier) as run:
            with run.task(f"remote-{round}"):
                run.emit("remote.said")
    print("delivered" if taskscope.flush() else "LOST")
    """
)


def test_processes_that_attach_to_one_run_never_repeat_a_sequence_number(
    tmp_path: Path,
) -> None:
    path = tmp_path / "attach.db"
    taskscope.configure(exporters=[LocalStore(path)])
    with taskscope.run("shared"):
        run = taskscope.current_run()
        with taskscope.task("local-before"):
            pass
        carrier = json.dumps(dict(taskscope.inject()))
        for _ in range(2):
            out = subprocess.run(
                [sys.executable, "-c", ATTACHER, str(path), carrier],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert out.returncode == 0, out.stderr
            assert out.stdout.strip() == "delivered"
        with taskscope.task("local-after"):
            pass
    assert taskscope.flush()
    run_id = run.id
    tasks = _rows(path, f"SELECT seq, end_seq FROM tasks WHERE run_id = '{run_id}'")
    events = _rows(path, f"SELECT seq FROM events WHERE run_id = '{run_id}'")
    assert len(tasks) == 2 + 2 * 2 and len(events) == 2 * 2
    numbers = [n for row in tasks for n in row] + [row[0] for row in events]
    assert len(numbers) == len(set(numbers))


@contextmanager
def _tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """A small real filesystem of its own (root can mount tmpfs; elsewhere the test skips)."""
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); needs root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def _fill(folder: Path) -> Path:
    filler = folder / "filler"
    with filler.open("wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass
    return filler


@pytest.mark.slow
def test_a_full_disk_keeps_the_batches_and_writes_them_once_space_is_freed(
    tmp_path: Path,
) -> None:
    """3,000 tasks recorded while the disk is full are kept, then all stored once it is not."""
    with _tmpfs(tmp_path / "disk", "4m") as disk:
        path = disk / "store.db"
        store = LocalStore(path)
        client = taskscope.Client([store])
        with client.start_run(name="before") as run, run.task("kept"):
            pass
        assert client.flush()
        filler = _fill(disk)
        with client.start_run(name="during") as run:
            for index in range(3000):
                with run.task("step", input={"index": index, "text": "x" * 200}):
                    pass
        assert client.flush() is False  # not stored yet: said so
        assert store.backlog > 0
        filler.unlink()
        assert client.flush()
        assert store.backlog == 0
        assert client.shutdown()
        assert client.stats()["exporters"]["LocalStore"]["failed"] == 0
        assert _rows(path, "SELECT name, status FROM runs ORDER BY started_at") == [
            ("before", "completed"),
            ("during", "completed"),
        ]
        assert _rows(path, "SELECT count(DISTINCT id) FROM tasks WHERE name = 'step'") == [(3000,)]
        assert _integrity(path) == "ok"


def test_a_store_on_a_read_only_filesystem_is_read_by_the_cli(tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "disk", "8m") as disk:
        path = disk / "store.db"
        client = taskscope.Client([LocalStore(path)])
        with client.start_run(name="archived") as run, run.task("step"):
            pass
        assert client.shutdown()
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        for command in (["runs"], ["show", "latest"], ["export", "latest"]):
            out = subprocess.run(
                [sys.executable, "-m", "taskscope", *command, "--db", str(path)],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert out.returncode == 0, out.stderr
            assert "archived" in out.stdout or "step" in out.stdout
