"""``taskscope outbox``: what waits in the outboxes of network exporters, and sending it.

``taskscope outbox`` lists, per target, what waits (oldest first); ``taskscope outbox send``
sends it with the key from ``AGENTOS_API_KEY``, which the files never hold: a file names its
key by a fingerprint, and only the matching key sends its records.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any, TextIO

from .exporters import _outbox
from .exporters.agentos import AgentOSExporter


def _directory(args: argparse.Namespace) -> Path:
    return Path(args.dir) if args.dir else _outbox.default_dir()


def _age(created: float | None) -> str:
    if created is None:
        return "-"
    seconds = max(0.0, time.time() - created)
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _size(count: int) -> str:
    for unit, scale in (("MB", 1_000_000), ("kB", 1_000)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


def _list(args: argparse.Namespace, out: TextIO, problem: type[Exception]) -> None:
    directory = _directory(args)
    found = [w for w in _outbox.survey(directory) if w.requests] if directory.is_dir() else []
    if not found:
        out.write(f"Nothing waits in {directory}.\n")
        return
    out.write(f"{'OLDEST':>7}  {'RUNS':>5}  {'REQUESTS':>8}  {'RECORDS':>8}  {'SIZE':>9}  TARGET\n")
    for waiting in found:
        out.write(
            f"{_age(waiting.oldest):>7}  {waiting.runs:>5}  {waiting.requests:>8}  "
            f"{waiting.records:>8}  {_size(waiting.bytes):>9}  {waiting.kind} {waiting.target} "
            f"(key {waiting.key_id})\n"
        )
    out.write("Send it with: taskscope outbox send (the key from AGENTOS_API_KEY)\n")


def _send(args: argparse.Namespace, out: TextIO, problem: type[Exception]) -> None:
    directory = _directory(args)
    found = [w for w in _outbox.survey(directory) if w.requests] if directory.is_dir() else []
    if not found:
        out.write(f"Nothing waits in {directory}.\n")
        return
    key = os.environ.get("AGENTOS_API_KEY", "").strip()
    left: list[str] = []
    for waiting in found:
        if waiting.kind != "agentos":
            left.append(f"{waiting.target}: taskscope cannot send {waiting.kind!r} outboxes yet")
            continue
        if not key or _outbox.key_id(key) != waiting.key_id:
            left.append(
                f"{waiting.target}: its records need the key with fingerprint {waiting.key_id}; "
                "set AGENTOS_API_KEY to it"
            )
            continue
        exporter = AgentOSExporter(
            key,
            os.environ.get("AGENTOS_AGENT_ID") or "taskscope-outbox",
            waiting.target,
            outbox_dir=directory,
        )
        try:
            done = exporter.send_waiting(args.timeout)
            stats = exporter.stats()
        finally:
            exporter.shutdown()
        line = f"{waiting.target}: sent {stats['sent']} records in {stats['requests']} requests"
        if not done:
            line += f"; {stats['waiting']} records still wait"
        if stats["dropped"]:
            line += f"; {stats['dropped']} records refused by the server (see the log)"
        out.write(line + "\n")
        if not done:
            left.append(f"{waiting.target}: not all sent within {args.timeout:g} s")
    if left:
        raise problem("; ".join(left) + ".")


def add_outbox_command(commands: Any, problem: type[Exception]) -> None:
    """Add ``outbox`` (and ``outbox send``) to the ``taskscope`` command's subcommands."""
    what = "the outbox directory (default: $TASKSCOPE_OUTBOX_DIR, else .taskscope/outbox)"
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", metavar="DIR", help=what)
    # After ``send`` too, without undoing a --dir given before it.
    inner = argparse.ArgumentParser(add_help=False)
    inner.add_argument("--dir", metavar="DIR", default=argparse.SUPPRESS, help=what)
    outbox = commands.add_parser(
        "outbox",
        parents=[common],
        help="list what waits in the outboxes of network exporters",
        description="List what waits to be sent, per target, the oldest first.",
    )
    outbox.set_defaults(handler=lambda args, out: _list(args, out, problem))
    actions = outbox.add_subparsers(dest="action", metavar="ACTION")
    send = actions.add_parser(
        "send",
        parents=[inner],
        help="send what waits, now",
        description="Send what waits (the key from AGENTOS_API_KEY); exit code 1 if some "
        "records could not be sent.",
    )
    send.add_argument(
        "--timeout", type=float, default=60.0, metavar="S", help="wait at most S seconds (60)"
    )
    send.set_defaults(handler=lambda args, out: _send(args, out, problem))
