"""The taskscope command: runs, show, export, help, and one-line messages for what went wrong."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
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


# -- any terminal, any data, any depth (issue 17) ---------------------------------------------


def _cli(*args: str, encoding: str = "utf-8") -> subprocess.CompletedProcess[str]:
    """`python -m taskscope ARGS` with stdout in ``encoding`` (PYTHONIOENCODING)."""
    env = {**os.environ, "PYTHONIOENCODING": encoding}
    return subprocess.run(
        [sys.executable, "-m", "taskscope", *args],
        capture_output=True,
        text=True,
        encoding=encoding,
        errors="strict",
        env=env,
        timeout=120,
    )


@pytest.fixture
def foreign_text_store(tmp_path: Path) -> tuple[Path, str]:
    """A run with Chinese, emoji and (stored escaped, as JSON keeps it) a lone surrogate."""
    path = tmp_path / "unicode.db"
    with taskscope.Client([LocalStore(path)]) as client:
        run = client.start_run(name="报告 😀", input={"q": "naïve 中文"})
        fetch = run.start_task("抓取 🚀")
        run.emit("note", {"text": "emoji 😀"})
        fetch.complete({"out": "结果"})
        run.start_task("fail").fail("错误 😀")
        run.complete(output="完成 😀")
    # Half an emoji, as a JSON escape: what a writer with ensure_ascii leaves in the store.
    with closing(sqlite3.connect(path)) as connection, connection:
        connection.execute(
            "UPDATE tasks SET output = ? WHERE name = ?", ('{"out":"\\ud83d half"}', "抓取 🚀")
        )
        connection.execute(
            "UPDATE tasks SET error = ? WHERE name = 'fail'", ('{"message":"错误 \\udc80 😀"}',)
        )
    return path, run.id


def test_show_runs_and_export_on_a_cp1252_terminal(foreign_text_store: tuple[Path, str]) -> None:
    """With stdout in cp1252, every command exits 0: text gets '?', JSON stays lossless."""
    path, run_id = foreign_text_store
    shown = _cli("show", "latest", "--db", str(path), encoding="cp1252")
    assert (shown.returncode, shown.stderr) == (0, "")
    lines = shown.stdout.splitlines()
    assert lines[0].startswith("? run ?? ? ")
    assert lines[1].startswith("  ? ?? ? ")
    assert lines[2] == "  · note: {'text': 'emoji ?'}"  # "·" is in cp1252
    assert lines[3].startswith("  ? fail ")
    assert lines[4] == "      error: ?? ? ?"
    assert lines[5] == "output: ?? ?"

    listed = _cli("runs", "--db", str(path), encoding="cp1252")
    assert (listed.returncode, listed.stderr) == (0, "")
    assert listed.stdout.splitlines()[1].split()[-2:] == ["??", "?"]

    exported = _cli("export", "latest", "--db", str(path), encoding="cp1252")
    assert (exported.returncode, exported.stderr) == (0, "")
    assert exported.stdout.isascii()
    records = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [r.get("name", r.get("type")) for r in records] == ["报告 😀", "抓取 🚀", "note", "fail"]
    assert records[0]["id"] == run_id
    assert records[0]["input"] == {"q": "naïve 中文"}
    assert records[1]["output"] == {"out": "\ud83d half"}
    assert records[3]["error"]["message"] == "错误 \udc80 😀"

    document = _cli("show", "latest", "--json", "--db", str(path), encoding="cp1252")
    assert (document.returncode, document.stderr) == (0, "")
    assert json.loads(document.stdout)["run"]["output"] == "完成 😀"


def test_a_lone_surrogate_on_a_utf8_terminal(foreign_text_store: tuple[Path, str]) -> None:
    """UTF-8 stdout: text as is, a lone surrogate as '?', and JSON escapes only where needed."""
    path, _ = foreign_text_store
    shown = _cli("show", "latest", "--db", str(path))
    assert (shown.returncode, shown.stderr) == (0, "")
    assert shown.stdout.startswith("✓ run 报告 😀 ")
    assert "      error: 错误 ? 😀\n" in shown.stdout

    exported = _cli("export", "latest", "--db", str(path))
    assert (exported.returncode, exported.stderr) == (0, "")
    lines = exported.stdout.splitlines()
    assert '"name": "报告 😀"' in lines[0]  # readable where UTF-8 can hold it
    assert '"output": {"out": "\\ud83d half"}' in lines[1]  # escaped where it cannot
    assert json.loads(lines[3])["error"]["message"] == "错误 \udc80 😀"


def _deep_store(path: Path, depth: int) -> None:
    """A run whose tasks form one chain ``depth`` deep; the deepest one failed."""
    store = LocalStore(path)
    tasks = [
        taskscope.TaskRecord(
            id=f"task-{level}",
            run_id="deep-run",
            parent_id=f"task-{level - 1}" if level > 1 else None,
            name=f"level-{level}",
            status="failed" if level == depth else "completed",
            start_ns=level * 1_000,
            end_ns=10_000_000_000 - level,
            seq=level,
            error=taskscope.ErrorInfo("bottom fell out", "ValueError") if level == depth else None,
        )
        for level in range(1, depth + 1)
    ]
    run = taskscope.RunRecord(
        id="deep-run", name="deep", status="failed", start_ns=0, end_ns=10_000_000_000, seq=0
    )
    store.export([run, *tasks])
    store.shutdown()


def test_show_draws_a_10000_deep_tree_in_a_bounded_number_of_lines(tmp_path: Path) -> None:
    """50 levels, then one line for the 9,950 deeper tasks and the deepest failure; exit 0."""
    path = tmp_path / "deep.db"
    _deep_store(path, 10_000)
    shown = _cli("show", "latest", "--db", str(path))
    assert (shown.returncode, shown.stderr) == (0, "")
    lines = shown.stdout.splitlines()
    assert len(lines) == 1 + 50 + 3 + 1
    assert lines[1].startswith("  ✓ level-1 ")
    assert lines[10].startswith("                    ✓ level-10 ")  # ten levels of indent
    assert lines[11].startswith("                 11 ✓ level-11 ")  # then the level's number
    assert lines[50].startswith("                 50 ✓ level-50 ")
    assert lines[51] == (
        "                 51 … 9,950 deeper tasks hidden (9,949 completed, 1 failed), "
        "the deepest failure:"
    )
    assert lines[52].startswith("              10000 ✗ level-10000 ")
    assert lines[53] == "              10000     error: ValueError: bottom fell out"
    assert lines[54].endswith("· 10,000 tasks (9,999 completed, 1 failed) · 0 events")


def test_max_depth_sets_the_cut_and_zero_draws_every_level(tmp_path: Path) -> None:
    """--max-depth 2 cuts below level 2; --max-depth 0 draws all 10,000 levels, exit 0."""
    path = tmp_path / "deep.db"
    _deep_store(path, 10_000)
    cut = _cli("show", "latest", "--max-depth", "2", "--db", str(path)).stdout.splitlines()
    assert [line.split()[1] for line in cut[1:3]] == ["level-1", "level-2"]
    assert cut[3].startswith("      … 9,998 deeper tasks hidden (")
    everything = _cli("show", "latest", "--max-depth", "0", "--db", str(path))
    assert everything.returncode == 0
    lines = everything.stdout.splitlines()
    assert len(lines) == 1 + 10_000 + 1 + 1
    assert lines[10_000].startswith("              10000 ✗ level-10000 ")
