"""The ``taskscope`` command: list the local store's runs, draw one, export one.

Problems a user can fix (no store yet, an unknown run id, a foreign file) are one line on
stderr and exit code 1; usage mistakes are argparse's, exit code 2. Never a traceback, whatever
the output's encoding (issue 17): text that the encoding cannot hold is printed as ``?``, and
JSON is kept lossless with ``\\uXXXX`` escapes.
"""

from __future__ import annotations

import argparse
import codecs
import json
import os
import re
import sqlite3
import sys
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any, TextIO

from . import _store
from ._cli_outbox import add_outbox_command  # the outbox commands live in their own module
from ._errors import ConfigurationError
from ._model import record_to_dict
from ._timeline import MAX_DEPTH, MAX_SIBLINGS, ReplacingWriter, Timeline, format_duration
from ._version import __version__

EXIT_PROBLEM = 1
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


class _Problem(Exception):
    """A one-line message for the user; the command exits with code 1."""


def _db_path(args: argparse.Namespace) -> Path:
    return Path(args.db) if args.db else _store.default_path()


def _open(args: argparse.Namespace) -> tuple[Path, sqlite3.Connection]:
    path = _db_path(args)
    try:
        return path, _store.connect(path, create=False)
    except ConfigurationError as problem:
        raise _Problem(str(problem)) from None


def _no_runs(path: Path) -> _Problem:
    return _Problem(f"The store at {path} has no runs yet. Run an instrumented program first.")


def _resolve(connection: sqlite3.Connection, path: Path, wanted: str) -> _store.StoredRun:
    if _store.count_runs(connection) == 0:
        raise _no_runs(path)
    found = _store.find_run_ids(connection, wanted)
    if len(found) > 1:
        raise _Problem(
            f"{wanted!r} is the start of several run ids in {path}; give more of the id "
            "(see them with: taskscope runs)."
        )
    stored = _store.load_run(connection, found[0]) if found else None
    if stored is None:
        raise _Problem(
            f"No run {wanted!r} in {path} (an id, a unique start of one, or 'latest'). "
            "List the runs with: taskscope runs"
        )
    return stored


def _json_text(value: Any, out: TextIO, **options: Any) -> str:
    """``value`` as JSON that ``out`` can always hold, losing nothing.

    Readable text on a UTF-8 output; ``\\uXXXX`` escapes for every non-ASCII character on any
    other (JSON read by other programs should be UTF-8, and ASCII is) and wherever a lone
    surrogate, which no encoding holds, is in the text.
    """
    encoding = getattr(out, "encoding", None) or "utf-8"
    try:
        utf8 = codecs.lookup(encoding).name == "utf-8"
    except LookupError:
        utf8 = False
    if utf8:
        text = json.dumps(value, ensure_ascii=False, default=str, **options)
        if text.isascii() or _LONE_SURROGATE.search(text) is None:
            return text
    return json.dumps(value, ensure_ascii=True, default=str, **options)


def _cmd_runs(args: argparse.Namespace, out: TextIO) -> None:
    path, connection = _open(args)
    with closing(connection):
        rows = _store.list_runs(connection, limit=args.limit, status=args.status)
        if not rows:
            what = f" with status {args.status!r}" if args.status else ""
            if _store.count_runs(connection) == 0:
                raise _no_runs(path)
            out.write(f"No runs{what} in {path}.\n")
            return
    header = f"{'RUN ID':<36}  {'STARTED (UTC)':<19}  {'STATUS':<9}  {'DURATION':>8}  "
    out.write(f"{header}{'TASKS':>6}  {'FAILED':>6}  NAME\n")
    for row in rows:
        run = row.run
        duration = format_duration(run.end_ns - run.start_ns) if run.end_ns else "-"
        started = run.started_at.strftime("%Y-%m-%d %H:%M:%S")
        out.write(
            f"{run.id:<36}  {started:<19}  {run.status:<9}  {duration:>8}  "
            f"{row.tasks:>6}  {row.failed:>6}  {run.name}\n"
        )


def _cmd_show(args: argparse.Namespace, out: TextIO) -> None:
    path, connection = _open(args)
    with closing(connection):
        stored = _resolve(connection, path, args.run)
    if args.json:
        document = {
            "run": record_to_dict(stored.run),
            "tasks": [record_to_dict(task) for task in stored.tasks],
            "events": [record_to_dict(event) for event in stored.events],
        }
        out.write(_json_text(document, out, indent=2) + "\n")
        return
    timeline = Timeline(
        stored.run,
        stored.tasks,
        stored.events,
        max_siblings=args.max_siblings,
        max_depth=args.max_depth,
    )
    timeline.write(out, colour=False if args.no_color else None)


def _cmd_export(args: argparse.Namespace, out: TextIO) -> None:
    path, connection = _open(args)
    with closing(connection):
        stored = _resolve(connection, path, args.run)
    for record in stored.records():
        out.write(_json_text(record_to_dict(record), out) + "\n")


def _cmd_ui(args: argparse.Namespace, out: TextIO) -> None:
    try:
        from .server.app import serve
        from .server.pages import is_loopback
    except ModuleNotFoundError as missing:
        raise _Problem(
            f"taskscope ui needs {missing.name}, which is not installed: "
            "pip install 'taskscope[ui]'."
        ) from None
    if not is_loopback(args.host):
        print(
            f"taskscope: warning: listening on {args.host}, not only on this machine: anyone "
            "who can reach the port can try the key. Use --host 127.0.0.1 unless you mean it.",
            file=sys.stderr,
        )
    try:
        serve(
            _db_path(args),
            host=args.host,
            port=args.port,
            allowed_hosts=args.allowed_host or (),
            out=out,
        )
    except ConfigurationError as problem:
        raise _Problem(str(problem)) from None
    except OSError as problem:
        raise _Problem(
            f"cannot listen on {args.host}:{args.port} ({problem.strerror or problem}); "
            "pick another --port or --host."
        ) from None


def build_parser() -> argparse.ArgumentParser:
    """The command line: ``runs``, ``show``, ``export`` and ``ui``, each with ``--db``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--db",
        metavar="PATH",
        help="the store to read (default: $TASKSCOPE_DB, else .taskscope/taskscope.db)",
    )
    parser = argparse.ArgumentParser(
        prog="taskscope",
        description="Look at the runs your instrumented agents recorded in the local store.",
        epilog="Run 'taskscope COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"taskscope {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    runs = commands.add_parser(
        "runs",
        parents=[common],
        help="list recent runs",
        description="List recent runs, newest first.",
    )
    runs.add_argument("--limit", type=int, default=20, metavar="N", help="at most N runs (20)")
    runs.add_argument(
        "--status",
        choices=("running", "completed", "failed", "cancelled"),
        help="only runs with this status",
    )
    runs.set_defaults(handler=_cmd_runs)

    show = commands.add_parser(
        "show",
        parents=[common],
        help="draw a run's timeline",
        description="Draw a run's timeline: the task tree, durations, errors and events.",
    )
    show.add_argument("run", metavar="RUN_ID|latest", help="a run id (or its start), or 'latest'")
    show.add_argument("--json", action="store_true", help="print the run, tasks and events as JSON")
    show.add_argument(
        "--max-siblings",
        type=int,
        default=MAX_SIBLINGS,
        metavar="N",
        help=f"show at most N children per task before collapsing ({MAX_SIBLINGS}; 0: all)",
    )
    show.add_argument(
        "--max-depth",
        type=int,
        default=MAX_DEPTH,
        metavar="N",
        help=f"draw tasks at most N levels deep, then one line for the rest ({MAX_DEPTH}; 0: all)",
    )
    show.add_argument("--no-color", action="store_true", help="plain text even on a terminal")
    show.set_defaults(handler=_cmd_show)

    export = commands.add_parser(
        "export",
        parents=[common],
        help="print a run's records",
        description="Print a run's records (the run, then its tasks and events in order).",
    )
    export.add_argument("run", metavar="RUN_ID|latest", help="a run id (or its start), or 'latest'")
    export.add_argument(
        "--format", choices=("jsonl",), default="jsonl", help="one JSON object per line"
    )
    export.set_defaults(handler=_cmd_export)

    ui = commands.add_parser(
        "ui",
        parents=[common],
        help="serve the web UI and the AgentOS ingest API",
        description="Serve the web UI and the AgentOS ingest API (key: $TASKSCOPE_INGEST_KEY, "
        "else one is made and printed), writing into and reading from the store.",
    )
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    ui.add_argument("--port", type=int, default=8765, help="port to listen on (8765; 0: any free)")
    ui.add_argument(
        "--allowed-host",
        action="append",
        metavar="NAME",
        help="a host name the server also answers to (repeatable; '*' for any; also "
        "$TASKSCOPE_ALLOWED_HOSTS, comma-separated); others get 421",
    )
    ui.set_defaults(handler=_cmd_ui)

    add_outbox_command(commands, _Problem)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit code (0 ok, 1 a problem to fix, 2 bad usage)."""
    args = build_parser().parse_args(argv)
    if getattr(args, "limit", 1) < 1:
        build_parser().error("--limit must be at least 1")
    out: Any = ReplacingWriter(sys.stdout)
    try:
        args.handler(args, out)
        sys.stdout.flush()
    except _Problem as problem:
        print(f"taskscope: {problem}", file=sys.stderr)
        return EXIT_PROBLEM
    except sqlite3.Error as problem:
        path = _db_path(args)
        print(f"taskscope: could not read {path} ({problem}).", file=sys.stderr)
        return EXIT_PROBLEM
    except BrokenPipeError:
        # The reader went away (``| head``); point stdout at nothing so exit does not complain.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return 0
