"""Decorated callables pickle by reference, as the undecorated ones do (issue 15)."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Iterator

import pytest

import taskscope
from taskscope.testing import Capture


@taskscope.task("double")
def double(x: int) -> int:
    return 2 * x


@taskscope.task("adouble")
async def adouble(x: int) -> int:
    return 2 * x


@taskscope.task("count")
def count(n: int) -> Iterator[int]:
    yield from range(n)


@taskscope.run("entry")
def entry(x: int) -> int:
    return double(x)


class Worker:
    """A class whose methods of each kind are decorated."""

    def __init__(self, factor: int) -> None:
        self.factor = factor

    @taskscope.task("scale")
    def scale(self, x: int) -> int:
        return self.factor * x

    @classmethod
    @taskscope.task("build")
    def build(cls, factor: int) -> Worker:
        return cls(factor)

    @staticmethod
    @taskscope.task("add")
    def add(x: int, y: int) -> int:
        return x + y


def round_trip(obj: object) -> object:
    """``obj`` through pickle at every protocol, checking each load is the same object."""
    loaded = [pickle.loads(pickle.dumps(obj, protocol)) for protocol in range(2, 6)]
    return loaded[-1]


def test_functions_pickle_by_reference_and_still_record(taskscope_capture: Capture) -> None:
    """A module-level function (sync, async, generator, @run) loads as the same object."""
    for fn in (double, adouble, count, entry):
        assert round_trip(fn) is fn
    assert b"test_pickle" in pickle.dumps(double) and len(pickle.dumps(double)) < 200
    with taskscope.run("agent"):
        assert round_trip(double)(2) == 4  # type: ignore[operator]
        assert asyncio.run(round_trip(adouble)(3)) == 6  # type: ignore[operator]
        assert list(round_trip(count)(2)) == [0, 1]  # type: ignore[operator]
    assert [(t.name, t.output) for t in taskscope_capture.tasks] == [
        ("double", 4),
        ("adouble", 6),
        ("count", [0, 1]),
    ]


def test_methods_classmethods_and_staticmethods_pickle(taskscope_capture: Capture) -> None:
    """Bound methods pickle with their instance; class-level access by reference."""
    worker = Worker(3)
    bound = round_trip(worker.scale)
    with taskscope.run("agent"):
        assert bound(2) == 6  # type: ignore[operator]
        assert round_trip(Worker.scale)(Worker(5), 1) == 5  # type: ignore[operator]
        built = round_trip(Worker.build)(4)  # type: ignore[operator]
        assert isinstance(built, Worker) and built.factor == 4
        assert round_trip(Worker.add)(1, 2) == 3  # type: ignore[operator]
    inputs = [(t.name, t.input) for t in taskscope_capture.tasks]
    assert inputs == [
        ("scale", {"x": 2}),
        ("scale", {"x": 1}),
        ("build", {"factor": 4}),
        ("add", {"x": 1, "y": 2}),
    ]


def test_a_decorated_lambda_or_closure_gives_pickles_own_error() -> None:
    """What cannot be found by name fails as pickle fails for the undecorated function."""
    anonymous = taskscope.task("anonymous")(lambda x: x)

    def make() -> object:
        @taskscope.task("inner")
        def inner() -> int:
            return 1

        return inner

    for decorated in (anonymous, make()):
        with pytest.raises((pickle.PicklingError, AttributeError)) as caught:
            pickle.dumps(decorated)
        assert not isinstance(caught.value, NotImplementedError)
        assert "Can't pickle" in str(caught.value) or "Can't get local" in str(caught.value)
