"""AgentOSExporter's concurrency and durable outbox against a real HTTP stand-in (issue 12).

The stand-in (tests/agentos_standin.py) speaks the ingest API on 127.0.0.1, checks the order
the API needs, counts what arrives twice, and fails requests on demand (503, dropped
connections, 429 with Retry-After). The "120 s outage" of the issue runs here with a short
outage of the same shapes; benchmarks/agentos_latency.py runs the full one.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import taskscope
from taskscope import _cli
from taskscope.exporters import AgentOSExporter, _outbox
from tests.agentos_standin import KEY, StandIn, problems, record_runs

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    """The AgentOS stand-in on a free loopback port, stopped after the test."""
    made = StandIn()
    yield made
    made.close()


@pytest.fixture
def outbox_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the outboxes go, for this process and the ones the test starts."""
    directory = tmp_path / "outbox"
    monkeypatch.setenv("TASKSCOPE_OUTBOX_DIR", str(directory))
    return directory


def exporter(url: str, **options: Any) -> AgentOSExporter:
    """An exporter with short backoffs, so a test's outage is seconds, not minutes."""
    settings: dict[str, Any] = {"backoff": 0.05, "max_backoff": 0.5, "timeout": 5.0}
    settings.update(options)
    return AgentOSExporter(KEY, "agent-1", url, **settings)


def waiting(directory: Path) -> list[_outbox.Waiting]:
    return [w for w in _outbox.survey(directory) if w.requests]


# -- acceptance 1: an outage, then recovery --------------------------------------------------------


def test_an_outage_loses_nothing_and_recovery_delivers_each_run_once_in_order(
    stand_in: StandIn, outbox_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """3 s of 503s, drops and 429s while 10 runs are recorded: all 10 arrive once, in order."""
    stand_in.retry_after = 0.5
    stand_in.go_down(3.0)
    recovered_at = stand_in.down_until
    sender = exporter(stand_in.url)
    client = taskscope.Client([sender])
    ids, worst = record_runs(client, runs=10, tasks=20, events=5)
    assert client.flush(10.0)  # delivered, or durable in the outbox
    assert sender.wait_delivered(60.0)
    client.shutdown()

    assert problems(stand_in, ids) == []
    assert set(stand_in.faulted) == {"503", "drop", "429"}
    stats = sender.stats()
    assert stats["dropped"] == 0 and stats["waiting"] == 0 and stats["retries"] > 0
    assert waiting(outbox_dir) == []
    with capsys.disabled():
        print(
            f"\n[outbox outage] faults={dict(stand_in.faulted)} retries={stats['retries']} "
            f"requests={stats['requests']} delivered "
            f"{max(0.0, stand_in.last_accepted - recovered_at):.2f} s after recovery; "
            f"max caller time per record call {worst * 1000:.3f} ms"
        )


def test_retries_go_on_by_time_not_by_count(stand_in: StandIn, outbox_dir: Path) -> None:
    """40 failures in a row are waited out (the old 8 retries would have dropped the run)."""
    stand_in.fail_next = 40
    sender = exporter(stand_in.url, backoff=0.001, max_backoff=0.01)
    stand_in.retry_after = 0.01
    client = taskscope.Client([sender])
    ids, _ = record_runs(client, runs=1, tasks=4, events=1)
    assert client.flush(10.0)
    assert sender.wait_delivered(60.0)
    client.shutdown()
    assert problems(stand_in, ids, tasks=4, events=1) == []
    assert sender.stats()["retries"] == 40 and sender.stats()["dropped"] == 0


def test_a_transient_failure_past_max_retry_time_is_final(
    stand_in: StandIn, outbox_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With max_retry_time=0 a 503 is not retried: the run is dropped, counted and logged."""
    stand_in.fail_next = 1  # the cycle starts with 503
    sender = exporter(stand_in.url, max_retry_time=0.0)
    client = taskscope.Client([sender])
    with caplog.at_level(logging.WARNING, logger="taskscope"):
        with client.start_run(name="short-lived") as run:
            run.emit("a.b", {})
        assert not client.flush(10.0)
    client.shutdown()
    assert sender.stats()["dropped"] == 3 and sender.stats()["sent"] == 0  # start, event, end
    assert stand_in.runs == {}
    assert any("503" in r.getMessage() for r in caplog.records)
    assert waiting(outbox_dir) == []


def test_requests_go_out_concurrently_within_the_bound(outbox_dir: Path) -> None:
    """Against a 20 ms backend, tasks of several runs overlap, never more than max_in_flight."""
    slow = StandIn(delay=0.02)
    try:
        sender = exporter(slow.url, max_in_flight=6)
        client = taskscope.Client([sender])
        ids, _ = record_runs(client, runs=4, tasks=30, events=1)
        assert client.flush(10.0)
        assert sender.wait_delivered(60.0)
        client.shutdown()
        assert problems(slow, ids, tasks=30, events=1) == []
        assert 1 < slow.most_in_flight <= 6
        # One call per task (sent once, in its final state), spans in batches, 2 per run.
        assert sender.stats()["requests"] <= 4 * (30 + 1 + 2 + 2)
    finally:
        slow.close()


# -- acceptance 2: the process goes away, the next one sends ------------------------------------

CHILD = textwrap.dedent(
    """
    import sys, taskscope
    from taskscope.exporters import AgentOSExporter
    from tests.agentos_standin import KEY, record_runs

    # backoff=10: after one failure a run waits longer than flush() does, so flush returns
    # as soon as everything is in the outbox.
    sender = AgentOSExporter(KEY, "agent-1", sys.argv[1], backoff=10.0)
    client = taskscope.Client([sender])
    ids, worst = record_runs(client, runs=10, tasks=20, events=5)
    print(" ".join(ids), flush=True)
    print("flushed" if client.flush(30.0) else "not flushed", flush=True)
    if sys.argv[2] == "wait":
        sys.stdin.read()  # until killed
    """
)


def run_child(url: str, ending: str) -> list[str]:
    """Record 10 runs in another process while the backend is down; it exits or is killed."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, url, "wait" if ending == "sigkill" else "exit"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    ) as child:
        assert child.stdout is not None
        ids = child.stdout.readline().split()
        assert child.stdout.readline().strip() == "flushed"
        if ending == "sigkill":
            child.send_signal(signal.SIGKILL)
        else:
            assert child.stdin is not None
            child.stdin.close()
        child.wait(timeout=60)
    assert child.returncode == (-signal.SIGKILL if ending == "sigkill" else 0)
    return ids


def send_with_cli(directory: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AGENTOS_API_KEY": KEY}
    return subprocess.Popen(
        [sys.executable, "-m", "taskscope", "outbox", "send", "--dir", str(directory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.mark.parametrize(
    ("ending", "recovery"),
    [("exit", "exporter"), ("exit", "cli"), ("sigkill", "exporter"), ("sigkill", "cli")],
)
def test_runs_left_by_a_process_that_exited_or_was_killed_are_sent_by_the_next(
    stand_in: StandIn, outbox_dir: Path, ending: str, recovery: str
) -> None:
    """Exit (or SIGKILL after flush) while the backend is down; the next sender delivers 10/10."""
    stand_in.go_down(3600.0)
    ids = run_child(stand_in.url, ending)
    assert stand_in.runs == {}
    [left] = waiting(outbox_dir)
    assert left.runs == 10 and left.target == stand_in.url and left.key_id == _outbox.key_id(KEY)
    assert left.records >= 10 * (1 + 20 + 5 + 1)

    stand_in.recover()
    if recovery == "exporter":
        sender = exporter(stand_in.url)
        assert sender.send_waiting(60.0)
        sender.shutdown()
    else:
        with send_with_cli(outbox_dir) as command:
            out, err = command.communicate(timeout=120)
        assert command.returncode == 0, err
        assert f"{stand_in.url}: sent {left.records} records" in out
    assert problems(stand_in, ids) == []
    assert waiting(outbox_dir) == []


# -- acceptance 3: two processes recover one outbox ----------------------------------------------


def test_two_processes_sending_one_outbox_never_send_a_record_twice(
    stand_in: StandIn, outbox_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two `taskscope outbox send` at once against a 100 ms backend: they share the runs,
    and each record arrives once."""
    stand_in.go_down(3600.0)
    ids = run_child(stand_in.url, "exit")
    stand_in.recover()
    stand_in.delay = 0.1
    first = send_with_cli(outbox_dir)
    # The first has taken over 8 of the 10 runs (max_in_flight / 4) and is sending them.
    assert stand_in.answered.wait(60.0)
    second = send_with_cli(outbox_dir)
    outputs = []
    for command in (first, second):
        with command:
            out, err = command.communicate(timeout=120)
        assert command.returncode == 0, err
        outputs.append(out.strip())
    assert problems(stand_in, ids) == []
    assert waiting(outbox_dir) == []
    assert all(" sent 0 records" not in out for out in outputs), outputs
    with capsys.disabled():
        print(f"\n[outbox two senders] {outputs}")


# -- the bound ---------------------------------------------------------------------------------


def test_the_bound_refuses_new_records_counts_each_and_warns_once(
    stand_in: StandIn, outbox_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A 64 kB bound in a long outage: the outbox stays within it; refusals are exact."""
    stand_in.go_down(3600.0)
    sender = exporter(stand_in.url, outbox_max_bytes=64_000, backoff=30.0, max_backoff=60.0)
    client = taskscope.Client([sender])
    with caplog.at_level(logging.WARNING, logger="taskscope"):
        run = client.start_run(name="chatty")
        for index in range(2_000):
            run.emit("tick.counted", {"i": index, "text": "x" * 40})
        assert not client.flush(10.0)  # some records were refused
    stats = sender.stats()
    assert stats["refused"] > 0 and stats["dropped"] == stats["refused"]
    assert stats["waiting"] + stats["refused"] == 1 + 2_000  # the run's start and the events
    assert stats["bytes"] <= 64_000
    db = sqlite3.connect(sender.outbox_path or "")
    (held,) = db.execute("SELECT SUM(size) FROM ops").fetchone()
    db.close()
    assert held == stats["bytes"]
    full = [r for r in caplog.records if "outbox is full" in r.getMessage()]
    assert len(full) == 1

    stand_in.recover()
    waiting_before = stats["waiting"]
    assert sender.send_waiting(60.0)  # now, not after the run's 30 s backoff
    client.shutdown()
    assert sender.stats()["sent"] == waiting_before
    [served] = stand_in.runs.values()
    numbers = [event["payload"]["i"] for kind, event in served.timeline if kind == "event"]
    assert numbers == list(range(waiting_before - 1))  # the oldest kept, the newest refused


def test_once_full_the_outbox_refuses_even_what_would_fit_until_room_is_made(
    stand_in: StandIn, outbox_dir: Path
) -> None:
    """A refused record is followed by refusals, not by a smaller record that happens to
    fit: the loss is one stretch of the newest records. Delivery makes room again."""
    stand_in.go_down(3600.0)
    sender = exporter(stand_in.url, outbox_max_bytes=2_000, backoff=30.0, max_backoff=60.0)
    client = taskscope.Client([sender])
    run = client.start_run(name="cut")
    run.emit("small.kept", {"i": 0})
    run.emit("big.refused", {"text": "x" * 3_000})
    run.emit("small.after", {"i": 1})  # would fit on its own
    assert not client.flush(10.0)
    assert (sender.stats()["refused"], sender.stats()["waiting"]) == (2, 2)  # start + small.kept

    stand_in.recover()
    assert sender.send_waiting(60.0)
    run.emit("small.later", {"i": 2})  # room was made: admitted again
    run.complete()
    assert client.flush(10.0)  # nothing dropped since the last flush, which reported the two
    assert sender.wait_delivered(30.0)
    client.shutdown()
    stats = sender.stats()
    assert (stats["refused"], stats["dropped"], stats["waiting"]) == (2, 2, 0)
    [served] = stand_in.runs.values()
    kinds = [event["type"] for kind, event in served.timeline if kind == "event"]
    assert kinds == ["small.kept", "small.later"]


def test_without_the_outbox_nothing_is_written_and_unsent_records_count_as_dropped(
    stand_in: StandIn, outbox_dir: Path
) -> None:
    """outbox=False: no file; what is still unsent at shutdown is counted as dropped."""
    stand_in.go_down(3600.0)
    sender = exporter(stand_in.url, outbox=False, backoff=30.0, max_backoff=60.0)
    client = taskscope.Client([sender])
    with client.start_run(name="memory-only") as run:
        run.emit("a.b", {})
    assert not client.flush(0.5)
    client.shutdown()
    assert sender.outbox_path is None and not outbox_dir.exists()
    assert sender.stats()["dropped"] == 3


# -- the command -----------------------------------------------------------------------------


def test_outbox_command_lists_targets_oldest_first_and_send_needs_the_key(
    outbox_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`taskscope outbox` shows each target's runs and records; `send` names a missing key."""
    downs = [StandIn(), StandIn()]
    try:
        for down in downs:
            down.go_down(3600.0)
            sender = exporter(down.url, backoff=30.0, max_backoff=60.0)
            client = taskscope.Client([sender])
            with client.start_run(name="waits") as run:
                run.emit("a.b", {})
            client.flush(10.0)
            client.shutdown()
        assert _cli.main(["outbox"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].split() == ["OLDEST", "RUNS", "REQUESTS", "RECORDS", "SIZE", "TARGET"]
        assert [line.split()[1:4] for line in lines[1:3]] == [["1", "3", "3"], ["1", "3", "3"]]
        assert [line.split()[7] for line in lines[1:3]] == [downs[0].url, downs[1].url]
        monkeypatch.setenv("AGENTOS_API_KEY", "another-key")
        assert _cli.main(["outbox", "send", "--timeout", "1"]) == 1
        err = capsys.readouterr().err
        assert f"need the key with fingerprint {_outbox.key_id(KEY)}" in err
    finally:
        for down in downs:
            down.close()
    assert _cli.main(["outbox", "--dir", str(outbox_dir / "none")]) == 0
    assert "Nothing waits" in capsys.readouterr().out


def test_an_unusable_outbox_directory_warns_once_and_delivery_goes_on(
    stand_in: StandIn, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """outbox_dir is a file: one warning naming it, and the records still arrive."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with caplog.at_level(logging.WARNING, logger="taskscope"):
        sender = exporter(stand_in.url, outbox_dir=blocker)
        client = taskscope.Client([sender])
        ids, _ = record_runs(client, runs=2, tasks=3, events=1)
        assert client.flush(10.0)
        client.shutdown()
    assert problems(stand_in, ids, tasks=3, events=1) == []
    [warning] = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "cannot open the outbox" in warning and str(blocker) in warning


FORKER = textwrap.dedent(
    """
    import os, sys
    import taskscope
    from taskscope.exporters import AgentOSExporter
    from tests.agentos_standin import KEY, record_runs

    sender = AgentOSExporter(KEY, "agent-1", sys.argv[1])
    client = taskscope.Client([sender])
    ids, _ = record_runs(client, runs=1, tasks=3, events=1)
    assert client.flush(10.0)
    pid = os.fork()
    more, _ = record_runs(client, runs=1, tasks=3, events=1)
    ok = client.flush(10.0) and sender.wait_delivered(30.0)
    print(" ".join(more), flush=True)
    if pid == 0:
        os._exit(0 if ok else 3)
    print(" ".join(ids), flush=True)
    _, status = os.waitpid(pid, 0)
    assert ok and os.waitstatus_to_exitcode(status) == 0
    client.shutdown()
    """
)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_sends_its_own_runs_and_not_the_parents(
    stand_in: StandIn, outbox_dir: Path
) -> None:
    """Parent and child each deliver their runs after fork(); nothing arrives twice."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", FORKER, stand_in.url],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    ids = done.stdout.split()
    assert len(ids) == 3
    assert problems(stand_in, ids, tasks=3, events=1) == []
    assert len(stand_in.runs) == 3
    assert waiting(outbox_dir) == []
