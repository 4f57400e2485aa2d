"""Captured values are JSON-safe, bounded, marked where cut, and taken at call time."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import uuid
from collections import namedtuple
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import taskscope
from taskscope._capture import Capturer
from taskscope.testing import Capture


@taskscope.task("take")
def take(value: Any) -> Any:
    return value


def captured(value: Any) -> Any:
    """What a task records as its input for ``value``."""
    with taskscope.testing.capture() as cap:
        take(value)
    recorded = cap.task("take").input["value"]
    json.dumps(recorded, allow_nan=False)  # JSON-safe, strictly
    return recorded


def test_two_megabyte_string_is_cut_with_a_marker() -> None:
    """A 2 MB string keeps max_string_length chars and says how many were cut."""
    value = captured("x" * 2_000_000)
    assert value == "x" * 10_000 + "…[truncated 1990000 chars]"


def test_bytes_are_shown_by_length_and_preview() -> None:
    """100 kB of bytes become their type, length and a short preview."""
    value = captured(bytes(range(256)) * 400)
    assert value["type"] == "bytes"
    assert value["length"] == 102_400
    assert len(value["preview"]) < 200


def test_long_list_keeps_max_items() -> None:
    """A 10,000-item list keeps the first 100 items and counts the rest."""
    value = captured(list(range(10_000)))
    assert value[:100] == list(range(100))
    assert value[100] == "…[truncated 9900 items]"
    assert len(value) == 101


def test_deep_nesting_stops_at_max_depth() -> None:
    """50 levels of nesting stop at max_depth with a marker."""
    nested: Any = "bottom"
    for _ in range(50):
        nested = {"down": nested}
    value = captured(nested)
    depth = 0
    while isinstance(value, dict):
        value = value["down"]
        depth += 1
    assert depth == 10  # each argument is walked from depth 0
    assert value == "…[dict beyond max depth 10]"


def test_cycles_are_marked_not_followed() -> None:
    """A list that contains itself is recorded once, with a cycle marker."""
    looped: list[Any] = [1]
    looped.append(looped)
    assert captured(looped) == [1, "…[cycle: list]"]


def test_shared_references_are_not_cycles() -> None:
    """The same object twice in a value is shown twice."""
    shared = {"k": 1}
    assert captured([shared, shared]) == [{"k": 1}, {"k": 1}]


class Hostile:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


def test_raising_repr_becomes_a_marker(caplog: pytest.LogCaptureFixture) -> None:
    """An object whose __repr__ raises is recorded as a marker, with one warning."""
    assert captured(Hostile()) == "<unrepresentable Hostile: repr raised RuntimeError>"
    assert captured(Hostile()) == "<unrepresentable Hostile: repr raised RuntimeError>"
    assert len([r for r in caplog.records if "repr() of a Hostile" in r.getMessage()]) == 1


@dataclasses.dataclass
class Invoice:
    number: str
    amount: Decimal
    api_key: str = "sk-live-123"


class Colour(enum.Enum):
    RED = "red"


Point = namedtuple("Point", "x y")


def test_dataclasses_named_tuples_enums_and_scalars() -> None:
    """Dataclasses and named tuples become field dicts; enums, dates, UUIDs, paths become text."""
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    value = captured(
        {
            "invoice": Invoice("INV-1", Decimal("12.50")),
            "point": Point(1, 2),
            "colour": Colour.RED,
            "when": dt.datetime(2026, 11, 25, 9, 30, tzinfo=dt.timezone.utc),
            "day": dt.date(2026, 11, 25),
            "id": ident,
            "path": Path("/tmp/report.pdf"),
            "tags": {"a"},
            "nan": float("nan"),
            "error": ValueError("bad"),
        }
    )
    assert value == {
        "invoice": {"number": "INV-1", "amount": "12.50", "api_key": "[REDACTED]"},
        "point": {"x": 1, "y": 2},
        "colour": "red",
        "when": "2026-11-25T09:30:00+00:00",
        "day": "2026-11-25",
        "id": str(ident),
        "path": "/tmp/report.pdf",
        "tags": ["a"],
        "nan": "nan",
        "error": {"type": "ValueError", "message": "bad"},
    }


def test_pydantic_models_become_field_dicts() -> None:
    """A Pydantic model is recorded as its fields, secrets redacted."""
    pydantic = pytest.importorskip("pydantic")

    class Order(pydantic.BaseModel):  # type: ignore[name-defined,misc]
        order_id: int
        password: str
        lines: list[str]

    value = captured(Order(order_id=7, password="hunter2", lines=["a"] * 500))
    assert value["order_id"] == 7
    assert value["password"] == "[REDACTED]"
    assert value["lines"][-1] == "…[truncated 400 items]"


def test_attrs_classes_become_field_dicts() -> None:
    """An attrs class is recorded as its fields."""
    attr = pytest.importorskip("attr")

    @attr.define
    class Page:
        number: int
        text: str

    assert captured(Page(1, "hi")) == {"number": 1, "text": "hi"}


def test_numpy_arrays_become_shape_dtype_and_preview() -> None:
    """A numpy array is its shape, dtype and a short preview, not its data."""
    numpy = pytest.importorskip("numpy")
    value = captured(numpy.zeros((1000, 1000)))
    assert value == {
        "type": "ndarray",
        "dtype": "float64",
        "shape": [1000, 1000],
        "preview": [0.0] * 10,
    }


def test_input_is_the_value_at_call_time(taskscope_capture: Capture) -> None:
    """A list the function mutates is recorded as it was when the call began."""

    @taskscope.task("mutate")
    def mutate(items: list[int]) -> list[int]:
        items.append(99)
        return items

    data = [1, 2]
    mutate(data)
    recorded = taskscope_capture.task("mutate")
    assert recorded.input == {"items": [1, 2]}
    assert recorded.output == [1, 2, 99]


def test_total_size_is_bounded_by_max_bytes() -> None:
    """Many medium strings stop at the max_bytes budget with a marker."""
    capturer = Capturer(taskscope.CaptureLimits(max_bytes=1_000))
    value = capturer.value(["y" * 300 for _ in range(10)])
    assert len(json.dumps(value)) < 1_500
    assert value[-1].startswith("…[truncated")


def test_limits_are_configurable() -> None:
    """configure(capture_limits=...) changes what is kept."""
    taskscope.configure(capture_limits=taskscope.CaptureLimits(max_string_length=5))
    assert captured("abcdefgh") == "abcde…[truncated 3 chars]"


def test_invalid_limits_are_a_clear_error() -> None:
    """A limit below 1 is refused with the field's name."""
    with pytest.raises(ValueError, match="max_items must be a positive whole number"):
        taskscope.CaptureLimits(max_items=0)


def test_non_string_keys_and_capture_cost_is_bounded() -> None:
    """Keys become text; a huge dict costs only max_items entries."""
    huge = {i: i for i in range(1_000_000)}
    value = captured(huge)
    assert len(value) == 101
    assert value["0"] == 0
    assert value["…"] == "[truncated 999900 keys]"


def test_small_flat_payloads_are_copied_and_still_redacted() -> None:
    """A flat dict is recorded as a copy; secret keys, long strings and NaN still get handled."""
    capturer = Capturer(taskscope.CaptureLimits(max_string_length=5))
    payload = {"amount": 12.5, "status": "ok"}
    for _ in range(2):  # the second time its keys are known: the quick path
        copied = capturer.value(payload)
        assert copied == payload and copied is not payload
    assert capturer.value({"amount": 1, "api_key": "sk-1"}) == {
        "amount": 1,
        "api_key": "[REDACTED]",
    }
    assert capturer.value({"amount": 1, "status": "toolong"}) == {
        "amount": 1,
        "status": "toolo…[truncated 2 chars]",
    }
    assert capturer.value({"amount": float("nan")}) == {"amount": "nan"}


def test_a_repeated_event_type_is_scrubbed_every_time() -> None:
    """Event types and tags are scrubbed once and remembered: the second answer is the first."""
    from taskscope._config import settings

    secret = "deploy token=ghp_abcdefghijklmnopqrstuvwx"
    first = settings.capturer.label(secret)
    assert "ghp_abcdefghijklmnopqrstuvwx" not in first
    assert settings.capturer.label(secret) == first
    assert settings.capturer.label("page.parsed") == "page.parsed"


def test_a_value_cut_once_is_the_same_when_captured_again() -> None:
    """A task's metadata is captured at its start and again at its end: a text cut the first
    time keeps its first count, not one of the marker's characters."""
    capturer = Capturer(taskscope.CaptureLimits(max_string_length=20))
    once = capturer.value({"note": "token=abc " + "y" * 40, "plain": "z" * 30})
    assert once == {
        "note": "token=[REDACTED] yyy…[truncated 30 chars]",
        "plain": "z" * 20 + "…[truncated 10 chars]",
    }
    assert capturer.value(once) == once
    assert capturer.value(capturer.value(once)) == once


def test_text_that_only_looks_cut_is_still_scrubbed() -> None:
    """A user's text shaped like a cut keeps its marker but its head is still scrubbed."""
    capturer = Capturer(taskscope.CaptureLimits(max_string_length=20))
    looks_cut = "password=hunter2 abc…[truncated 99 chars]"
    assert capturer.value({"x": looks_cut}) == {"x": "password=[REDACTED] …[truncated 99 chars]"}


def test_a_task_with_long_metadata_records_one_cut(taskscope_capture: Capture) -> None:
    """@task metadata cut at the start is not cut again at the end."""
    taskscope.configure(capture_limits=taskscope.CaptureLimits(max_string_length=10))

    @taskscope.task("noted", metadata={"note": "n" * 25})
    def noted() -> int:
        return 1

    with taskscope.run("r"):
        noted()
    assert taskscope_capture.task("noted").metadata == {"note": "n" * 10 + "…[truncated 15 chars]"}
