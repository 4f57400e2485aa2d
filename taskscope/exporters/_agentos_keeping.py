"""AgentOSExporter's outbox upkeep: storing requests, and taking over what others left.

Every new or changed request is written to the outbox (docs/outbox.md) before it may go; a
keeper thread renews this process's lease and takes over the streams of processes that died or
exited, a few at a time, so their records are sent by this one.
"""

from __future__ import annotations

import json
import sqlite3
import threading

from .. import _context, _signals
from .._internal import internal_error, logger, warn_once
from . import _outbox
from ._agentos_delivery import Delivery
from ._agentos_requests import Op, Stream, dumps


class Keeping(Delivery):
    """The outbox half of AgentOSExporter (a base class of it: one object, one lock)."""

    # Set by AgentOSExporter._start_runtime.
    _unstored: list[Op]
    _stop: threading.Event
    _claiming: threading.Lock
    _claim_limit: int

    def _store(self) -> None:
        """Write new and changed requests to the outbox, in one transaction."""
        outbox = self._outbox
        touched, self._unstored = self._unstored, []
        if outbox is None:
            for op in touched:
                op.stored = True
            return
        try:
            with outbox.transaction() as db:
                for op in touched:
                    stream = op.stream
                    if not stream.stored:
                        outbox.add_stream(
                            db, stream.key, stream.run_id, stream.server_id, stream.parent
                        )
                        stream.stored = True
                    text = op.text()
                    if op.row:
                        outbox.update_row(db, op.row, text, op.records, op.size)
                    else:
                        op.row = outbox.add_row(
                            db,
                            op.stream.key,
                            op.kind,
                            op.path,
                            text,
                            op.task_id,
                            op.after,
                            op.records,
                            op.size,
                            op.created,
                        )
        except sqlite3.Error as problem:
            warn_once(
                "agentos-outbox-write",
                "taskscope: writing to the outbox %s failed (%s); these records wait in memory "
                "only.",
                outbox.path,
                problem,
            )
        for op in touched:
            op.stored = True

    def _keep(self) -> None:
        """The outbox's keeper: take over abandoned streams, renew the lease, now and then."""
        _context.silence()
        _signals.keep_off_this_thread()
        outbox = self._outbox
        assert outbox is not None
        interval = min(5.0, outbox.lease / 3)
        while not self._stop.is_set():
            self._claim_more.clear()
            try:
                outbox.renew()
                self._claim()
                with self._lock:
                    held = outbox.held_bytes()  # with what other processes hold
                    if held < self._charged:  # another process's requests left the file
                        self._full = False
                    self._charged = held
            except sqlite3.Error:
                logger.debug("taskscope: outbox upkeep failed", exc_info=True)
            except BaseException:
                if self._stop.is_set():
                    return
                internal_error("agentos-outbox")
            self._claim_more.wait(interval)

    def _claim(self) -> int:
        """Take over abandoned streams, a few at a time; returns how many."""
        if self._outbox is None:
            return 0
        with self._claiming:  # the keeper and send_waiting() must not both fill the room
            with self._lock:
                room = self._claim_limit - self._adopted
            if room <= 0:
                return 0
            try:
                claimed = self._outbox.claim_abandoned(room)
            except sqlite3.Error:
                logger.debug("taskscope: outbox claim failed", exc_info=True)
                return 0
            self._adopt(claimed)
            return len(claimed)

    def _adopt(self, claimed: list[_outbox.Stream]) -> None:
        if not claimed:
            return
        with self._lock:
            if self._closed:
                return
            for found in claimed:
                stream = Stream(
                    found.key,
                    found.run_id,
                    server_id=found.server_id,
                    parent=found.parent,
                    has_start=True,
                    ended=True,  # nothing more of it comes through this process
                    stored=True,
                    adopted=True,
                )
                for row in found.rows:
                    op = Op(
                        stream,
                        row.kind,
                        row.path,
                        task_id=row.task_id,
                        after=row.after,
                        size=row.size,
                        records=row.records,
                        created=row.created,
                        row=row.id,
                    )
                    if row.kind in ("events", "spans"):
                        op.events = [dumps(item) for item in json.loads(row.body)]
                        if row.kind == "spans":
                            op.span_tasks = {json.loads(e).get("span_id", "") for e in op.events}
                    else:
                        op.fields = json.loads(row.body)
                    stream.ops.append(op)
                    self._pending += 1
                    if op.kind == "task" and op.task_id is not None:
                        stream.unacked[op.task_id] = stream.unacked.get(op.task_id, 0) + 1
                self._streams[stream.key] = stream
                self._by_run.setdefault(stream.run_id, stream)
                self._dirty.add(stream)
                self._adopted += 1
            logger.debug("taskscope: AgentOS outbox: took over %d runs", len(claimed))
            self._wake_locked()
