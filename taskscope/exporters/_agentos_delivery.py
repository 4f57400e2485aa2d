"""AgentOSExporter's delivery: which requests may go now, the sender threads, the answers.

All of it runs under the exporter's one lock but the HTTP call itself. The order rules are
those of agentos.py's docstring; an answer settles a request (sent, retried after a backoff,
or dropped and counted) and frees what waited for it.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import OrderedDict, deque
from typing import TYPE_CHECKING

from .. import _agentos_api as api
from .. import _context, _signals
from .._internal import internal_error, logger, warn_once
from . import _outbox
from ._agentos_requests import QUEUED, SENDING, WAITING, Op, Stream

if TYPE_CHECKING:
    from ._http import Outcome, Transport

# Runs that ended are remembered (their server ids) for records that arrive after the end,
# such as a task left open when its run completed; the oldest are forgotten first.
_REMEMBERED_RUNS = 10_000
# After this many transient failures in a row (no success between, any run), the backend is
# taken to be down: one request at a time probes it, instead of every run's retries at once.
_DOWN_AFTER = 3


class Delivery:
    """The sending half of AgentOSExporter (a base class of it: one object, one lock)."""

    # Set by AgentOSExporter.__init__ and _start_runtime.
    agent_id: str
    max_in_flight: int
    max_retry_time: float
    max_retries: int | None
    backoff: float
    max_backoff: float
    max_retry_after: float
    _counts: dict[str, int]
    _finished: OrderedDict[str, str | None]
    _transport: Transport
    _lock: threading.Lock
    _work: threading.Condition
    _idle: threading.Condition
    _streams: dict[str, Stream]
    _by_run: dict[str, Stream]
    _dirty: set[Stream]
    _sleeping: set[Stream]
    _next_wake: float
    _ready: deque[Op]
    _pending: int
    _sending: int
    _failing: int
    _flushing: int
    _closed: bool
    _charged: int
    _full: bool
    _workers: list[threading.Thread]
    _claim_more: threading.Event
    _adopted: int
    _outbox: _outbox.Outbox | None

    # -- choosing what goes out (under the lock) ---------------------------------------------

    def _wake_locked(self) -> None:
        if not self._workers:
            for index in range(self.max_in_flight):
                worker = threading.Thread(
                    target=self._send_loop, name=f"taskscope-agentos-{index}", daemon=True
                )
                worker.start()
                self._workers.append(worker)
        self._work.notify()

    def _refill_locked(self) -> float | None:
        """Queue what became ready; returns when the next backoff ends (monotonic), if any."""
        now = time.monotonic()
        if self._sleeping and now >= self._next_wake:
            # Only when a backoff ended: in an outage thousands of runs may be sleeping.
            self._next_wake = float("inf")
            for stream in list(self._sleeping):
                if stream.not_before <= now:
                    self._sleeping.discard(stream)
                    self._dirty.add(stream)
                else:
                    self._next_wake = min(self._next_wake, stream.not_before)
        wake = self._next_wake if self._sleeping else None
        if self._dirty:
            dirty, self._dirty = self._dirty, set()
            before = len(self._ready)
            for stream in dirty:
                self._collect(stream, now)
            if len(self._ready) > before + 1:
                self._work.notify(len(self._ready) - before - 1)
        return wake

    def _sleep(self, stream: Stream) -> None:
        self._sleeping.add(stream)
        self._next_wake = min(self._next_wake, stream.not_before)

    def _collect(self, stream: Stream, now: float) -> None:
        """Queue every request of ``stream`` that the API's order lets go now."""
        if stream.dead or not stream.ops:
            return
        if stream.not_before > now:
            self._sleep(stream)
            return
        if stream.server_id is None:
            first = stream.ops[0]
            if (
                first.kind == "start"
                and first.state == WAITING
                and not self._waits_for_parent(stream)
            ):
                self._queue(stream, first)
            return
        before = False  # an earlier request (but span batches) is not yet taken
        seen: set[str] = set()
        for index, op in enumerate(stream.ops):
            if stream.busy >= 2 * self.max_in_flight:
                return
            kind = op.kind
            if kind == "spans":
                if op.state == WAITING and self._spans_ready(stream, op):
                    self._queue(stream, op)
                continue
            if op.state == WAITING:
                if kind == "task":
                    # A task after an earlier call about itself or its parent waits for it,
                    # so states never regress and a child never precedes its parent.
                    if op.task_id not in seen and op.after not in seen:
                        self._queue(stream, op)
                elif (kind == "events" and not before) or (kind == "end" and index == 0):
                    self._queue(stream, op)
            if kind != "task":
                return  # an events call or the end: nothing of the run goes past it
            seen.add(op.task_id or "")
            before = True

    def _spans_ready(self, stream: Stream, op: Op) -> bool:
        if any(task in stream.unacked for task in op.span_tasks):
            return False  # a span names its task, which must exist on the server first
        full = len(op.events) >= api.MAX_EVENTS_PER_BATCH or op is not stream.spans
        return full or not stream.unacked or stream.ended or self._flushing > 0

    def _queue(self, stream: Stream, op: Op) -> None:
        op.state = QUEUED
        stream.busy += 1
        self._ready.append(op)

    def _take_locked(self) -> Op | None:
        if self._failing >= _DOWN_AFTER and self._sending:
            return None  # the backend looks down: one request at a time finds out
        now = time.monotonic()
        while self._ready:
            op = self._ready.popleft()
            stream = op.stream
            if op.state != QUEUED:
                continue
            if stream.not_before > now:  # its run began a backoff after it was queued
                op.state = WAITING
                stream.busy -= 1
                self._sleep(stream)
                continue
            return op
        return None

    def _waits_for_parent(self, stream: Stream) -> bool:
        # A child run's start names its parent by the server's id, so it waits for the
        # parent's start when that is still on its way.
        if stream.parent is None:
            return False
        parent = self._by_run.get(stream.parent)
        return parent is not None and parent.server_id is None and not parent.dead

    def _server_parent(self, parent: str) -> str:
        known = self._by_run.get(parent)
        if known is not None and known.server_id is not None:
            return known.server_id
        found = self._finished.get(parent)
        if found is None and self._outbox is not None:
            try:
                found = self._outbox.server_id(parent)
            except sqlite3.Error:
                found = None
        return found or parent

    # -- sending (the sender threads) ---------------------------------------------------------

    def _send_loop(self) -> None:
        _context.silence()  # nothing these threads do may be recorded
        _signals.keep_off_this_thread()  # SIGTERM is for the main thread
        while True:
            try:
                if not self._send_one():
                    return
            except BaseException:
                internal_error("agentos-sender")

    def _send_one(self) -> bool:
        with self._lock:
            while True:
                if self._closed:
                    return False
                wake = self._refill_locked()
                op = self._take_locked()
                if op is not None:
                    break
                self._work.wait(None if wake is None else max(0.001, wake - time.monotonic()))
            stream = op.stream
            op.state = SENDING
            self._sending += 1
            self._counts["requests"] += 1
            if stream.spans is op:
                stream.spans = None
            if op.kind == "start":
                if "parent_run_id" in op.fields:
                    op.fields["parent_run_id"] = self._server_parent(op.fields["parent_run_id"])
                body = op.body(None)
            else:
                body = op.body(stream.server_id)
        try:
            outcome = self._transport.post(op.path, body)
        except Exception as problem:  # a closed pool at shutdown, or httpx's own trouble
            from ._http import Outcome

            outcome = Outcome(False, transient=True, code="NETWORK_ERROR", message=str(problem))
        with self._lock:
            self._sending -= 1
            stream.busy -= 1
            self._settle(stream, op, outcome)
            self._dirty.add(stream)
            self._work.notify()
            self._idle.notify_all()
        return True

    def _settle(self, stream: Stream, op: Op, outcome: Outcome) -> None:
        if outcome.ok:
            server_id = None
            if op.kind == "start":
                data = outcome.data if isinstance(outcome.data, dict) else {}
                server_id = data.get("run_id")
                if not isinstance(server_id, str) or not server_id:
                    self._reject(stream, op, outcome, "the answer had no data.run_id")
                    return
            if self._failing >= _DOWN_AFTER:
                # The backend is back: every run waiting out a backoff may go now.
                for waiting in self._sleeping:
                    waiting.not_before = 0.0
                self._next_wake = 0.0
            self._failing = 0
            stream.failures = 0
            self._counts["sent"] += op.records
            self._remove(stream, op)
            if self._outbox is not None and op.row:
                try:
                    # What the server took is deleted at once; a crash before this commit is
                    # the one window in which a request is sent again (docs/outbox.md).
                    self._outbox.acknowledged(op.row, stream.key, server_id)
                except sqlite3.Error:
                    logger.debug("taskscope: outbox delete failed", exc_info=True)
            if server_id is not None:
                stream.server_id = server_id
                # Child runs waiting for this start can go now.
                self._dirty.update(s for s in self._streams.values() if s.server_id is None)
            self._retire(stream)
            return
        if outcome.transient and not self._closed and self._may_retry(op):
            self._counts["retries"] += 1
            self._failing += 1
            stream.failures += 1
            op.attempts += 1
            op.state = WAITING
            if outcome.retry_after is not None:
                delay = min(outcome.retry_after, self.max_retry_after)
            else:
                from ._http import backoff

                delay = backoff(stream.failures - 1, self.backoff, self.max_backoff)
            stream.not_before = max(stream.not_before, time.monotonic() + delay)
            self._sleep(stream)
            return
        if outcome.transient and self._closed:
            op.state = WAITING  # stays in the outbox for the next process
            return
        if op.kind == "start" and "parent_run_id" in op.fields and not outcome.transient:
            # The parent may be a run AgentOS does not know (a taskscope id from another
            # process): keep the run, without the link.
            warn_once(
                "agentos-parent",
                "taskscope: AgentOS refused parent_run_id %r (%s %s); sending the run "
                "without its parent link.",
                op.fields.pop("parent_run_id"),
                outcome.status,
                outcome.code,
            )
            op.state = WAITING
            if self._outbox is not None and op.row:
                op.resize()
                try:
                    with self._outbox.transaction() as db:
                        self._outbox.update_row(db, op.row, op.text(), op.records, op.size)
                except sqlite3.Error:
                    logger.debug("taskscope: outbox update failed", exc_info=True)
            return
        self._reject(stream, op, outcome, None)

    def _may_retry(self, op: Op) -> bool:
        if self.max_retries is not None and op.attempts >= self.max_retries:
            return False
        return time.time() - op.created < self.max_retry_time

    def _remove(self, stream: Stream, op: Op) -> None:
        stream.ops.remove(op)
        self._pending -= 1
        self._charged -= op.size
        self._full = False  # room was made: new records may come in again
        task = op.task_id
        if op.kind == "task" and task is not None:
            left = stream.unacked.get(task, 1) - 1
            if left > 0:
                stream.unacked[task] = left
            else:
                stream.unacked.pop(task, None)
            if stream.tasks.get(task) is op:
                del stream.tasks[task]
        if stream.spans is op:
            stream.spans = None

    def _retire(self, stream: Stream) -> None:
        if stream.ops or not (stream.ended or stream.dead):
            return
        del self._streams[stream.key]
        if stream.adopted:
            self._adopted -= 1
            self._claim_more.set()  # room for more of what other processes left
        if self._by_run.get(stream.run_id) is stream:
            del self._by_run[stream.run_id]
        self._sleeping.discard(stream)
        self._finished[stream.run_id] = None if stream.dead else stream.server_id
        while len(self._finished) > _REMEMBERED_RUNS:
            self._finished.popitem(last=False)
        if self._outbox is not None and stream.stored:
            try:
                self._outbox.forget_stream(stream.key)
            except sqlite3.Error:
                logger.debug("taskscope: outbox cleanup failed", exc_info=True)
        if not self._pending:
            self._idle.notify_all()

    def _reject(self, stream: Stream, op: Op, outcome: Outcome, why: str | None) -> None:
        """Drop ``op`` (all of the run's requests when it is the start), count, log once."""
        lost = [op]
        if op.kind == "start":
            stream.dead = True
            lost = list(stream.ops)
        rows = [gone.row for gone in lost if gone.row]
        for gone in lost:
            self._remove(stream, gone)
            self._counts["dropped"] += gone.records
            gone.state = WAITING
        if self._outbox is not None and rows:
            try:
                self._outbox.forget_rows(rows)
            except sqlite3.Error:
                logger.debug("taskscope: outbox delete failed", exc_info=True)
        self._retire(stream)
        status = outcome.status if outcome.status is not None else "no answer"
        what = why or (f"{outcome.code}: {outcome.message}" if outcome.message else outcome.code)
        if outcome.transient:
            hint = f"gave up after {op.attempts} retries"
        elif outcome.status == 401:
            hint = "check the API key (api_key= or AGENTOS_API_KEY)"
        elif outcome.status == 403:
            hint = "check that the key may write runs of agent " + repr(self.agent_id)
        else:
            hint = "the request does not fit the API; please report it to taskscope"
        warn_once(
            f"agentos-rejected:{status}:{outcome.code}:{outcome.transient}",
            "taskscope: AgentOS answered %s (%s) to POST %s; %s. The records are dropped: "
            "%d so far, counted in AgentOSExporter.stats(); later rejections like this one "
            "are not logged.",
            status,
            what,
            op.path,
            hint,
            self._counts["dropped"],
        )
        logger.debug("taskscope: AgentOS dropped %s for run %s", op.kind, stream.run_id)

    # -- waiting ------------------------------------------------------------------------------

    def _wait(self, timeout: float, *, hopeless_ends: bool) -> bool:
        """Wait until nothing is held, or ``timeout``; with ``hopeless_ends``, also stop when
        every run that waits is in a backoff past the deadline (nothing can happen in time)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._flushing += 1
            # Partial span batches may go now: nobody waits for them to fill up.
            self._dirty.update(s for s in self._streams.values() if s.spans is not None)
            self._work.notify()
            try:
                while self._pending and not self._closed:
                    now = time.monotonic()
                    if hopeless_ends and not self._sending and self._all_waiting_out(deadline):
                        break
                    left = deadline - now
                    if left <= 0:
                        break
                    # A backoff ending may make the early return wrong: look again then.
                    # (One that already ended means requests go out, and their answers wake us.)
                    wake = self._next_wake if self._sleeping else now + left
                    self._idle.wait(left if wake <= now else min(left, wake - now + 0.001))
            finally:
                self._flushing -= 1
            return not self._pending

    def _all_waiting_out(self, deadline: float) -> bool:
        """Every stream that holds requests waits out a backoff past ``deadline``."""
        return all(s.not_before > deadline for s in self._streams.values() if s.ops)
