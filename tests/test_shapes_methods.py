"""Decorated methods bind as ordinary bound methods on the C path, and record what wrapt's did.

With the C module, a decorated function defined in a class binds (for an instance, or a class
through a classmethod) as a plain bound method of a second wrapper whose C wrapper takes its
first argument as the instance (``_binding._method_types``); on the pure-Python path wrapt's
bound wrapper does it. The suite runs on both (``TASKSCOPE_PURE_PYTHON=1``), so every test
here holds both to the same records and the same introspection.
"""

from __future__ import annotations

import inspect
import pickle
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import taskscope
from taskscope import _binding
from taskscope._model import TaskRecord
from taskscope.exporters import InMemoryExporter, OTelExporter
from taskscope.testing import Capture
from tests.conftest import task_fields

speedups = taskscope._accel.speedups


def done(name: str, input: Any, output: Any, kind: str = "task") -> dict[str, Any]:
    return {
        "name": name,
        "status": "completed",
        "input": input,
        "output": output,
        "error": None,
        "metadata": {},
        "kind": kind,
    }


class Shop:
    """Methods of every binding, decorated."""

    rate = 2

    def __init__(self, name: str) -> None:
        self.name = name

    @taskscope.task("shop.price")
    def price(self, amount: int, tax: int = 1) -> int:
        """Price with tax."""
        return amount * self.rate + tax

    @taskscope.task("shop.fails", kind="tool")
    def fails(self, amount: int) -> int:
        raise ValueError(f"no stock for {amount}")

    @taskscope.task("shop.spread")
    def spread(self, *amounts: int, **extra: int) -> int:
        return sum(amounts) + len(extra)

    @taskscope.task("shop.nested")
    def nested(self, amount: int) -> int:
        return self.price(amount) + 1

    @classmethod
    @taskscope.task("shop.make")
    def make(cls, name: str) -> str:
        return f"{cls.__name__}:{name}"

    @staticmethod
    @taskscope.task("shop.static")
    def static(amount: int) -> int:
        return amount + 1

    def __reduce__(self) -> tuple[Any, ...]:
        return (Shop, (self.name,))


class Outlet(Shop):
    @taskscope.task("outlet.price")
    def price(self, amount: int, tax: int = 0) -> int:
        return super().price(amount, tax) - 1


def test_bound_methods_read_as_the_function_and_pickle(taskscope_capture: Capture) -> None:
    shop = Shop("corner")
    bound: Any = shop.price
    assert bound.__self__ is shop
    assert bound.__name__ == "price"
    assert bound.__doc__ == "Price with tax."
    assert bound.__qualname__ == "Shop.price"
    assert str(inspect.signature(bound)) == "(amount: 'int', tax: 'int' = 1) -> 'int'"
    assert inspect.unwrap(Shop.__dict__["price"]) is Shop.__dict__["price"].__wrapped__
    assert bound == shop.price
    loaded = pickle.loads(pickle.dumps(bound))
    assert loaded.__self__.name == "corner" and loaded(3) == 7
    assert Shop.price(shop, 1) == 3  # through the class: wrapt binds it, as before
    if speedups is not None and _binding._METHOD_TYPES:
        assert type(bound) is type(shop.__init__)  # an ordinary bound method
        assert bound.__func__ is Shop.__dict__["price"]._self_method


def test_methods_record_their_arguments_without_self(taskscope_capture: Capture) -> None:
    shop = Shop("corner")
    with taskscope.run("methods"):
        assert shop.price(3) == 7
        assert shop.price(3, tax=5) == 11
        assert shop.price(amount=4, tax=0) == 8
        assert Shop.price(shop, 1, 2) == 4
        assert shop.spread(1, 2, x=3) == 4
        assert Shop.make("x") == "Shop:x"
        assert shop.make("y") == "Shop:y"
        assert Shop.static(1) == 2 and shop.static(2) == 3
        assert shop.nested(1) == 4
        assert Outlet("o").price(2) == 3
        with pytest.raises(ValueError, match="no stock for 9"):
            shop.fails(9)
    tasks = taskscope_capture.tasks
    by_name: dict[str, list[TaskRecord]] = {}
    for record in tasks:
        by_name.setdefault(record.name, []).append(record)
    prices = [task_fields(t) for t in by_name["shop.price"]]
    assert prices[:4] == [
        done("shop.price", {"amount": 3, "tax": 1}, 7),
        done("shop.price", {"amount": 3, "tax": 5}, 11),
        done("shop.price", {"amount": 4, "tax": 0}, 8),
        done("shop.price", {"amount": 1, "tax": 2}, 4),
    ]
    assert task_fields(by_name["shop.spread"][0]) == done(
        "shop.spread", {"amounts": [1, 2], "extra": {"x": 3}}, 4
    )
    assert [task_fields(t) for t in by_name["shop.make"]] == [
        done("shop.make", {"name": "x"}, "Shop:x"),
        done("shop.make", {"name": "y"}, "Shop:y"),
    ]
    assert [task_fields(t) for t in by_name["shop.static"]] == [
        done("shop.static", {"amount": 1}, 2),
        done("shop.static", {"amount": 2}, 3),
    ]
    nested = by_name["shop.nested"][0]
    inner = by_name["shop.price"][4]
    assert task_fields(nested) == done("shop.nested", {"amount": 1}, 4)
    assert task_fields(inner) == done("shop.price", {"amount": 1, "tax": 1}, 3)
    assert inner.parent_id == nested.id
    outlet = by_name["outlet.price"][0]
    via_super = by_name["shop.price"][5]
    assert task_fields(outlet) == done("outlet.price", {"amount": 2, "tax": 0}, 3)
    assert task_fields(via_super) == done("shop.price", {"amount": 2, "tax": 0}, 4)
    assert via_super.parent_id == outlet.id
    assert task_fields(by_name["shop.fails"][0]) == {
        "name": "shop.fails",
        "status": "failed",
        "input": {"amount": 9},
        "output": None,
        "error": ("ValueError", "no stock for 9"),
        "metadata": {},
        "kind": "tool",
    }


def test_method_outside_a_run_opens_one_or_passes_through(taskscope_capture: Capture) -> None:
    shop = Shop("corner")
    assert shop.price(2) == 5
    (run,) = taskscope_capture.runs
    (task,) = taskscope_capture.tasks
    assert run.name == "shop.price" and run.input == {"amount": 2, "tax": 1}
    assert run.output == 5 and run.status == "completed"
    assert task.run_id == run.id and task_fields(task) == done(
        "shop.price", {"amount": 2, "tax": 1}, 5
    )
    taskscope.configure(auto_run=False)
    assert shop.price(3) == 7
    assert len(taskscope_capture.runs) == 1 and len(taskscope_capture.tasks) == 1


def test_switched_off_method_calls_the_function_with_its_instance() -> None:
    switch = {"on": False}

    class Counter:
        def __init__(self) -> None:
            self.seen: list[int] = []

        @taskscope.task("counter.add", enabled=lambda: switch["on"])
        def add(self, n: int) -> int:
            self.seen.append(n)
            return len(self.seen)

    memory = InMemoryExporter()
    client = taskscope.Client([memory])
    counter = Counter()
    with client.start_run(name="switched"):
        assert counter.add(5) == 1
        switch["on"] = True
        assert counter.add(6) == 2
    client.flush()
    assert counter.seen == [5, 6]
    assert [(t.name, t.input, t.output) for t in memory.tasks] == [("counter.add", {"n": 6}, 2)]
    client.shutdown(timeout=2.0)


@pytest.fixture
def otel_client() -> Iterator[tuple[taskscope.Client, InMemorySpanExporter]]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    client = taskscope.Client([OTelExporter(provider)])
    yield client, spans
    client.shutdown(timeout=2.0)
    provider.shutdown()


def test_method_with_a_live_exporter_records_a_span(
    otel_client: tuple[taskscope.Client, InMemorySpanExporter],
) -> None:
    client, spans = otel_client
    shop = Shop("corner")
    with client.start_run(name="live"):
        assert shop.price(4) == 9
        with pytest.raises(ValueError):
            shop.fails(1)
    client.flush()
    names = sorted(span.name for span in spans.get_finished_spans())
    assert names == ["live", "shop.fails", "shop.price"]
    price = next(s for s in spans.get_finished_spans() if s.name == "shop.price")
    attributes = dict(price.attributes or {})
    assert any("amount" in str(value) for value in attributes.values())
    assert not any("corner" in str(value) for value in attributes.values())


@pytest.mark.skipif(speedups is None, reason="the C module is not in use")
def test_c_method_type_refuses_wrong_calls() -> None:
    assert speedups is not None
    with pytest.raises(TypeError, match="method_type takes"):
        speedups.method_type(object)
    with pytest.raises(TypeError, match="method_type takes"):
        speedups.method_type("not a type", "x.Y")
    made = speedups.method_type(_binding.TracedFunction, "tests.Probe")
    assert made.__name__ == "Probe" and made.__module__ == "tests"
    assert issubclass(made, _binding.TracedFunction)

    def probe(self: Any, x: int) -> int:
        return x

    plain = made(probe, lambda w, i, a, k: ("wrapped", w(*a, **k)))

    class Holder:
        held = plain

    # Without _self_method, wrapt's own binding answers.
    assert Holder().held(3) == ("wrapped", 3)


@pytest.mark.skipif(speedups is None, reason="the C module is not in use")
def test_c_method_twin_reads_as_the_function_and_refuses_wrong_construction(
    taskscope_capture: Capture,
) -> None:
    assert speedups is not None
    twin = Shop.__dict__["price"]._self_method
    assert type(twin) is speedups.MethodTwin
    function = Shop.__dict__["price"].__wrapped__
    assert twin.__wrapped__ is function
    assert twin.__doc__ == "Price with tax." and twin.__module__ == __name__
    assert twin.__name__ == "price" and twin.__qualname__ == "Shop.price"
    assert twin.__defaults__ == (1,)
    assert repr(twin) == f"<taskscope method {function!r}>"
    with pytest.raises(AttributeError):
        twin.no_such_attribute  # noqa: B018
    with pytest.raises(TypeError):
        speedups.MethodTwin(function)
    with pytest.raises(TypeError, match="callable"):
        speedups.MethodTwin(function, 3, None)
    with pytest.raises(TypeError, match="MethodTwin takes"):
        speedups.MethodTwin(function, function, None, extra=1)
    unset = speedups.MethodTwin.__new__(speedups.MethodTwin)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="not initialised"):
        unset(1)
    assert repr(unset) == "<taskscope method (unset)>"
    assert "__wrapped__" in dir(unset) and unset.__wrapped__ is None
    # Called through the twin directly, keyword arguments included: the same record.
    with taskscope.run("twin"):
        assert twin(Shop("x"), amount=2, tax=3) == 7
    (task,) = taskscope_capture.tasks
    assert task_fields(task) == done("shop.price", {"amount": 2, "tax": 3}, 7)
