"""Stand-ins for the SDKs' streams: the task of a streaming call lasts as long as its stream.

The SDK's stream is wrapped, not replaced: iterating, ``close()``, ``with``/``async with`` and
every attribute (``response``…) behave as before. The task ends exactly once: when the stream
is exhausted, closed or garbage-collected, or fails with the error the stream raised.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from .._internal import internal_error

if TYPE_CHECKING:
    from ._answer import Accumulator
    from ._llm import Call


class _StreamBase:
    """The state both stream stand-ins share; everything else is the SDK stream's own."""

    _done = True  # until __init__ ran: a half-made object has nothing to end

    def __init__(self, stream: Any, call: Call, accumulator: Accumulator) -> None:
        self._stream = stream
        self._call = call
        self._accumulator = accumulator
        self._done = False

    def __getattr__(self, name: str) -> Any:
        # ``response``, ``_iterator`` and whatever else the SDK's stream has, unchanged.
        return getattr(object.__getattribute__(self, "_stream"), name)

    def _take(self, chunk: Any) -> bool:
        try:
            return self._accumulator.add(chunk)
        except Exception:
            internal_error("llm-chunk")
            return True

    def _end(self, closed_early: bool) -> None:
        """End the task once, with what arrived; early only if the API's last chunk did not."""
        if self._done:
            return
        self._done = True
        try:
            accumulator = self._accumulator
            self._call.complete(
                accumulator.answer(),
                closed_early=closed_early and not accumulator.finished,
                first_token_ns=accumulator.first_token_ns,
            )
        except Exception:
            self._call.end_unread("llm-stream-end")

    def _fail(self, exc: BaseException) -> None:
        if not self._done:
            self._done = True
            self._call.fail(exc)

    def __del__(self) -> None:
        # Abandoned without being exhausted or closed: the task ends with what arrived.
        if not self._done:
            self._end(closed_early=True)


class RecordedStream(_StreamBase):
    """The SDK's stream, recorded: iterate it, close it or use it in ``with`` as before."""

    def __iter__(self) -> RecordedStream:
        return self

    def __next__(self) -> Any:
        stream = self._stream
        try:
            while True:
                chunk = stream.__next__()
                if self._take(chunk):
                    return chunk
        except StopIteration:
            self._end(closed_early=False)
            raise
        except BaseException as exc:
            self._fail(exc)
            raise

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            self._end(closed_early=True)

    def __del__(self) -> None:
        # Abandoned: end the task, and give the connection back as the SDK's close would.
        if not self._done:
            self._end(closed_early=True)
            # If the connection was already gone, nothing of the caller's depends on it.
            with contextlib.suppress(Exception):
                self._stream.close()

    def __enter__(self) -> RecordedStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncRecordedStream(_StreamBase):
    """The SDK's async stream, recorded."""

    def __aiter__(self) -> AsyncRecordedStream:
        return self

    async def __anext__(self) -> Any:
        stream = self._stream
        try:
            while True:
                chunk = await stream.__anext__()
                if self._take(chunk):
                    return chunk
        except StopAsyncIteration:
            self._end(closed_early=False)
            raise
        except BaseException as exc:
            self._fail(exc)
            raise

    async def close(self) -> None:
        try:
            await self._stream.close()
        finally:
            self._end(closed_early=True)

    async def aclose(self) -> None:
        await self.close()

    async def __aenter__(self) -> AsyncRecordedStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
