"""The taskscope command: runs, show, export, help, and one-line messages for what went wrong."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import taskscope
from taskscope._cli import main
from taskscope.exporters import LocalStore


def _record(path: Path, name: str, *, fail: bool = False) -> str:
    with taskscope.Client([LocalStore(path)]) as client:
        run = client.start_run(name=name, input={"n": 1})
        with run.task("outer"), run.task("inner") as inner:
            run.emit("inner.note", {"k": "v"})
            inner.output = "done"
        if fail:
            run.start_task("boom").fail("it broke")
            run.fail("gave up")
        else:
            run.complete(output={"ok": True})
    return run.id


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A store with three runs: ok-1, broken (failed), ok-2, recorded in that order."""
    path = tmp_path / "cli.db"
    _record(path, "ok-1")
    _record(path, "broken", fail=True)
    _record(path, "ok-2")
    return path


def _main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_runs_lists_recent_runs_newest_first(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`taskscope runs` prints a header and one line per run, newest first, with counts."""
    code, out, _ = _main(capsys, "runs", "--db", str(store))
    lines = out.splitlines()
    assert code == 0
    assert lines[0].split()[:3] == ["RUN", "ID", "STARTED"]
    assert [line.split()[-1] for line in lines[1:]] == ["ok-2", "broken", "ok-1"]
    broken = lines[2].split()
    assert broken[3] == "failed"
    assert broken[-3:] == ["3", "1", "broken"]  # tasks, failed tasks, name


def test_runs_limit_and_status_filter(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--limit keeps the newest N; --status failed keeps only failed runs."""
    _, out, _ = _main(capsys, "runs", "--db", str(store), "--limit", "1")
    assert [line.split()[-1] for line in out.splitlines()[1:]] == ["ok-2"]
    _, out, _ = _main(capsys, "runs", "--db", str(store), "--status", "failed")
    assert [line.split()[-1] for line in out.splitlines()[1:]] == ["broken"]


def test_runs_reads_taskscope_db_by_default(
    store: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --db the command reads $TASKSCOPE_DB, like the exporter writes it."""
    monkeypatch.setenv("TASKSCOPE_DB", str(store))
    code, out, _ = _main(capsys, "runs")
    assert code == 0 and "broken" in out


def test_show_latest_draws_the_newest_runs_timeline(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`show latest` draws the task tree with nesting, events and the run's output."""
    code, out, _ = _main(capsys, "show", "latest", "--db", str(store))
    lines = out.splitlines()
    assert code == 0
    assert lines[0].startswith("✓ run ok-2 ")
    assert lines[1].startswith("  ✓ outer ")
    assert lines[2].startswith("    ✓ inner ")
    assert lines[3] == "      · inner.note: {'k': 'v'}"
    assert "output: {'ok': True}" in lines


def test_show_by_id_draws_the_failed_task_and_errors(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failed run shown by its id has its failed task and both error messages."""
    _, out, _ = _main(capsys, "runs", "--db", str(store), "--status", "failed")
    run_id = out.splitlines()[1].split()[0]
    code, out, _ = _main(capsys, "show", run_id, "--db", str(store))
    assert code == 0
    assert out.startswith("✗ run broken ")
    assert "  ✗ boom " in out
    assert "      error: it broke" in out
    assert "  error: gave up" in out


def test_show_accepts_a_unique_start_of_an_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Like git, the start of an id is enough when only one run has it; else it says so."""
    path = tmp_path / "ids.db"
    store = LocalStore(path)
    store.export(
        [
            taskscope.RunRecord(id=ident, name=ident[:4], status="completed", start_ns=1, seq=0)
            for ident in ("abcd1111", "abcd2222", "ffff3333")
        ]
    )
    store.shutdown()
    code, out, _ = _main(capsys, "show", "ffff", "--db", str(path))
    assert code == 0 and out.startswith("✓ run ffff ")
    code, _, err = _main(capsys, "show", "abcd", "--db", str(path))
    assert code == 1 and "several run ids" in err


def test_show_json_gives_the_run_tasks_and_events(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json prints one document with the run, its tasks and events in sequence order."""
    code, out, _ = _main(capsys, "show", "latest", "--json", "--db", str(store))
    document = json.loads(out)
    assert code == 0
    assert document["run"]["name"] == "ok-2"
    assert [task["name"] for task in document["tasks"]] == ["outer", "inner"]
    assert document["tasks"][1]["parent_id"] == document["tasks"][0]["id"]
    assert [event["type"] for event in document["events"]] == ["inner.note"]


def test_export_jsonl_prints_the_run_then_its_stream(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`export --format jsonl` prints the run, then tasks and events in sequence order."""
    code, out, _ = _main(capsys, "export", "latest", "--format", "jsonl", "--db", str(store))
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 0
    assert [(r["record"], r.get("name", r.get("type"))) for r in records] == [
        ("run", "ok-2"),
        ("task", "outer"),
        ("task", "inner"),
        ("event", "inner.note"),
    ]
    assert [r["seq"] for r in records[1:]] == sorted(r["seq"] for r in records[1:])


def test_an_unknown_run_id_is_one_line_and_exit_1(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`show nosuchrun` names the id and says how to list runs."""
    code, out, err = _main(capsys, "show", "nosuchrun", "--db", str(store))
    assert (code, out) == (1, "")
    assert err.count("\n") == 1
    assert "'nosuchrun'" in err and "taskscope runs" in err


def test_an_empty_store_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A store with no runs yet: `runs` and `show latest` say so in one line, exit 1."""
    path = tmp_path / "empty.db"
    LocalStore(path).shutdown()
    for args in (["runs"], ["show", "latest"], ["export", "latest"]):
        code, _, err = _main(capsys, *args, "--db", str(path))
        assert code == 1
        assert err == f"taskscope: The store at {path} has no runs yet. " + err.split(". ", 1)[1]
        assert err.count("\n") == 1


def test_a_missing_file_is_named_and_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--db pointing nowhere: one line naming the path; reading never creates a store."""
    path = tmp_path / "nowhere" / "missing.db"
    code, _, err = _main(capsys, "show", "latest", "--db", str(path))
    assert code == 1
    assert f"There is no taskscope store at {path}" in err
    assert err.count("\n") == 1
    assert not path.exists()


def test_a_foreign_file_is_one_line_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file that is not a store: one line naming it and what to do, exit 1, file intact."""
    path = tmp_path / "notes.txt"
    path.write_text("shopping list")
    code, _, err = _main(capsys, "runs", "--db", str(path))
    assert code == 1
    assert err.count("\n") == 1
    assert str(path) in err and "not a taskscope store" in err and "--db" in err
    assert path.read_text() == "shopping list"


@pytest.mark.parametrize("args", [[], ["runs"], ["show"], ["export"]])
def test_every_command_has_help(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """--help works for the command and each subcommand, and mentions --db where it applies."""
    with pytest.raises(SystemExit) as exited:
        main([*args, "--help"])
    out = capsys.readouterr().out
    assert exited.value.code == 0
    assert out.startswith("usage: taskscope")
    if args:
        assert "--db PATH" in out


def test_bad_usage_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown command or a missing run id is a usage error (exit code 2)."""
    for args in (["frobnicate"], ["show"], ["runs", "--limit", "0"]):
        with pytest.raises(SystemExit) as exited:
            main(args)
        assert exited.value.code == 2
    capsys.readouterr()


def test_python_m_taskscope_runs_the_command(store: Path) -> None:
    """`python -m taskscope` is the same command, in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-m", "taskscope", "show", "latest", "--db", str(store)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("✓ run ok-2 ")
