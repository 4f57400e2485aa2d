"""Nothing lost at process boundaries: multiprocessing children, signals, shut-down clients."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx
import pytest

import taskscope
from taskscope.exporters import InMemoryExporter, JSONLExporter, LocalStore


def _rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as connection:
        return connection.execute(sql).fetchall()


CHILDREN = textwrap.dedent(
    """
    import multiprocessing, sys
    from concurrent.futures import ProcessPoolExecutor
    import taskscope

    @taskscope.task("child-step")
    def step(index):
        return index

    def work(name, count):
        with taskscope.run(name):
            for index in range(count):
                step(index)
        return name

    if __name__ == "__main__":
        context = multiprocessing.get_context(sys.argv[1])
        processes = [context.Process(target=work, args=(f"process-{n}", 10)) for n in range(4)]
        for process in processes:
            process.start()
        for process in processes:
            process.join()
            assert process.exitcode == 0, process.exitcode
        with context.Pool(3) as pool:  # terminated at the end of the block
            assert len(pool.starmap(work, [(f"pool-{n}", 15) for n in range(3)])) == 3
        with ProcessPoolExecutor(2, mp_context=context) as executor:
            assert len(list(executor.map(work, ["executor-0", "executor-1"], [8, 8]))) == 2
        print("done")
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_multiprocessing_children_deliver_what_they_record(tmp_path: Path, method: str) -> None:
    """4 Processes + a Pool of 3 + a ProcessPoolExecutor of 2: 9 runs, 101 tasks, all kept."""
    script = tmp_path / "children.py"
    script.write_text(CHILDREN)
    path = tmp_path / "children.db"
    out = subprocess.run(
        [sys.executable, str(script), method],
        env={**os.environ, "TASKSCOPE_DB": str(path)},
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "done"
    runs = _rows(path, "SELECT name, status FROM runs ORDER BY name")
    assert [status for _, status in runs] == ["completed"] * 9
    names = sorted(name for name, _ in runs)  # type: ignore[type-var]
    assert names == sorted(
        [f"process-{n}" for n in range(4)]
        + [f"pool-{n}" for n in range(3)]
        + ["executor-0", "executor-1"]
    )
    assert _rows(path, "SELECT count(*), count(DISTINCT id) FROM tasks") == [(101, 101)]
    assert _rows(path, "SELECT count(*) FROM tasks WHERE status != 'completed'") == [(0,)]


SCRIPT = textwrap.dedent(
    """
    import sys
    import taskscope
    from taskscope.exporters import LocalStore

    client = taskscope.Client([LocalStore(sys.argv[1])], shutdown_timeout=2.0)
    run = client.start_run(name="stopped")
    for index in range(100):
        run.start_task("done-before", input={"index": index}).complete()
    task = run.start_task("interrupted")
    with taskscope.ThreadPoolExecutor(1):
        pass
    print("ready", flush=True)
    sys.stdin.readline()  # blocked here when the signal comes
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("which", ["SIGTERM", "SIGHUP"])
def test_a_script_stopped_by_a_signal_ends_its_run_and_loses_nothing(
    tmp_path: Path, which: str
) -> None:
    path = tmp_path / "signal.db"
    number = getattr(signal, which)
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    started = time.monotonic()
    process.send_signal(number)
    _, err = process.communicate(timeout=30)
    elapsed = time.monotonic() - started
    assert process.returncode == -number, err  # ended by the signal, as without taskscope
    assert elapsed < 2.0 + 1.0
    ((status, error),) = _rows(path, "SELECT status, error FROM runs")
    assert status == "cancelled"
    assert which in str(error)
    assert _rows(
        path, "SELECT count(*) FROM tasks WHERE name = 'done-before' AND status = 'completed'"
    ) == [(100,)]
    ((task_status, task_error),) = _rows(
        path, "SELECT status, error FROM tasks WHERE name = 'interrupted'"
    )
    assert task_status == "failed" and which in str(task_error)


FORKED_THEN_SIGNALLED = textwrap.dedent(
    """
    import os, signal, sys, time
    import taskscope
    from taskscope.exporters import LocalStore

    client = taskscope.Client([LocalStore(sys.argv[1])])
    run = client.start_run(name="parent")
    run.start_task("before").complete()
    # One CPU: after fork() the parent runs on and signals the child before it has run at all,
    # as a Pool does when it is terminated right after forking its workers.
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    ended = []
    for attempt in range(5):
        pid = os.fork()
        if pid == 0:
            time.sleep(5)  # a child the signal did not end gives up here
            os._exit(3)
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
        ended.append(os.WTERMSIG(status) if os.WIFSIGNALED(status) else -os.WEXITSTATUS(status))
    run.complete()
    print(ended)
    """
)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity")
def test_a_child_signalled_as_it_starts_still_ends_by_the_signal(tmp_path: Path) -> None:
    """SIGTERM reaching a forked child before its set-up ends it (CPython used to drop it)."""
    path = tmp_path / "forked.db"
    out = subprocess.run(
        [sys.executable, "-c", FORKED_THEN_SIGNALLED, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str([int(signal.SIGTERM)] * 5)  # none left running
    assert _rows(path, "SELECT name, status FROM runs") == [("parent", "completed")]
    assert _rows(path, "SELECT name, status FROM tasks") == [("before", "completed")]


SIGNAL_ON_ANOTHER_THREAD = textwrap.dedent(
    """
    import multiprocessing, signal, sys, threading, time
    import taskscope
    from taskscope.exporters import LocalStore

    client = taskscope.Client([LocalStore(sys.argv[1])], shutdown_timeout=2.0)
    run = client.start_run(name="blocked")
    run.start_task("before").complete()
    lock = multiprocessing.Lock()
    lock.acquire()
    asleep = f"/proc/self/task/{threading.get_native_id()}/wchan"

    def another_thread():
        # Once the main thread sleeps in the lock below (seen three times in a row, with this
        # thread off the interpreter lock in between, so not a wait for that lock), the signal
        # lands on this thread of the user's, as the kernel may choose: the main thread is
        # not woken by it.
        seen = 0
        while seen < 3:
            time.sleep(0.01)
            with open(asleep) as wchan:
                seen = seen + 1 if "futex" in wchan.read() else 0
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)

    threading.Thread(target=another_thread, daemon=True).start()
    lock.acquire()  # for ever, unless something wakes this thread
    """
)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/wchan").exists(), reason="needs Linux's /proc wchan")
def test_a_signal_landing_on_another_thread_still_ends_a_blocked_process(tmp_path: Path) -> None:
    """The main thread blocked in a multiprocessing lock still runs the handler and ends."""
    path = tmp_path / "blocked.db"
    out = subprocess.run(
        [sys.executable, "-c", SIGNAL_ON_ANOTHER_THREAD, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == -signal.SIGTERM, out.stderr
    assert _rows(path, "SELECT name, status FROM runs") == [("blocked", "cancelled")]
    assert _rows(path, "SELECT name, status FROM tasks") == [("before", "completed")]


APP = textwrap.dedent(
    """
    import asyncio, sys
    import taskscope
    from fastapi import FastAPI

    app = FastAPI()

    @taskscope.task("slow-part")
    async def slow_part():
        print("in request", flush=True)
        await asyncio.sleep(0.5)  # the request is in flight while SIGTERM arrives
        return "ok"

    @app.get("/work")
    @taskscope.run("request")
    async def work():
        return {"result": await slow_part()}
    """
)


@pytest.mark.slow
def test_uvicorn_stopped_with_sigterm_during_a_request_stores_it_completed(
    tmp_path: Path,
) -> None:
    """The in-flight request finishes and answers 200; its run and task are stored ended."""
    pytest.importorskip("fastapi")
    (tmp_path / "app.py").write_text(APP)
    path = tmp_path / "uvicorn.db"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "app:app",
            "--port",
            str(port),
            "--log-level",
            "info",
            "--no-access-log",
        ],
        cwd=tmp_path,
        env={**os.environ, "TASKSCOPE_DB": str(path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stderr is not None
        for line in server.stderr:  # uvicorn says when it accepts connections
            if "Uvicorn running on" in line:
                break
        else:
            raise AssertionError("uvicorn ended before serving: " + server.communicate()[1])
        answers: list[httpx.Response] = []
        request = threading.Thread(
            target=lambda: answers.append(httpx.get(f"http://127.0.0.1:{port}/work", timeout=30))
        )
        request.start()
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "in request"
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        request.join(30)
        server.wait(timeout=30)
        elapsed = time.monotonic() - started
    finally:
        if server.poll() is None:
            server.kill()
        server.communicate()
    assert answers and answers[0].status_code == 200
    assert answers[0].json() == {"result": "ok"}
    assert elapsed < 5.0 + 1.0 + 0.5  # shutdown timeout + 1 s, past the request's own 0.5 s
    assert _rows(path, "SELECT name, status FROM runs") == [("request", "completed")]
    assert _rows(path, "SELECT name, status FROM tasks") == [("slow-part", "completed")]


LATE_ATEXIT = textwrap.dedent(
    """
    import atexit, logging, sys

    def record_at_exit():
        with taskscope.Client([LocalStore(sys.argv[1])]) as late:
            pass
        run = client.start_run(name="from-atexit")
        run.complete()
        print("flush says", taskscope.flush(), client.flush(), flush=True)

    atexit.register(record_at_exit)  # registered before taskscope is imported

    import taskscope
    from taskscope.exporters import LocalStore

    client = taskscope.Client([LocalStore(sys.argv[1])])
    client.start_run(name="in-main").complete()
    """
)


def test_flush_says_false_for_a_run_recorded_after_the_exit_flush(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", LATE_ATEXIT, str(tmp_path / "late.db")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "flush says False False" in out.stdout
    assert out.stderr.count("client that is shut down") == 1


def test_a_run_left_open_across_configure_is_counted_lost_and_flush_says_false(
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = InMemoryExporter()
    taskscope.configure(exporters=[first])
    with taskscope.run("outlives"):
        run = taskscope.current_run()
        taskscope.configure(exporters=[InMemoryExporter()])
        with caplog.at_level(logging.WARNING, logger="taskscope"):
            for index in range(3):
                run.emit("late.event", {"index": index})
    assert taskscope.flush() is False
    assert taskscope.flush() is True  # nothing lost since
    assert [r.message for r in caplog.records].count(
        next(r.message for r in caplog.records if "shut down" in r.message)
    ) == 1
    assert "late.event" not in [getattr(r, "type", None) for r in first.records]


def test_records_on_a_client_after_its_with_block_are_counted_and_flush_says_false() -> None:
    with taskscope.Client([InMemoryExporter()]) as client:
        run = client.start_run(name="outlives-client")
    run.emit("after.close")
    run.complete()
    assert client.flush() is False
    assert client.stats()["dropped"] == 2
    assert client.flush() is True


def _taskscope_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("taskscope-")]


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts fds through /proc")
def test_clients_dropped_without_shutdown_release_threads_and_files(tmp_path: Path) -> None:
    """300 clients made and dropped without shutdown(): threads and fds back to the baseline."""
    gc.collect()
    baseline_threads = len(threading.enumerate())
    baseline_fds = _fds()
    before = set(_taskscope_threads())
    for index in range(300):
        client = taskscope.Client(
            [LocalStore(tmp_path / "store.db"), JSONLExporter(tmp_path / f"{index % 3}.jsonl")]
        )
        with client.start_run(name=f"request-{index}") as run, run.task("handle"):
            pass
        del client, run
    gc.collect()
    for thread in set(_taskscope_threads()) - before:
        thread.join(30)  # each ends by itself once its client is gone
    assert abs(len(threading.enumerate()) - baseline_threads) <= 4
    assert abs(_fds() - baseline_fds) <= 4
    assert _rows(tmp_path / "store.db", "SELECT count(*) FROM runs") == [(300,)]
    records = [
        json.loads(line)
        for n in range(3)
        for line in (tmp_path / f"{n}.jsonl").read_text().splitlines()
    ]
    ended = [(r["record"], r["id"]) for r in records if r.get("ended_at")]
    assert len(set(ended)) == len(ended) == 300 * 2  # every run and task, delivered once
