"""The one-pass copy of plain JSON trees gives exactly what the full capture walk gives.

Requests, messages and tool arguments are captured through a tight copy when nothing in them
needs the walk (no new or secret key, no long or secret-shaped string, no limit reached, no
other type); everything else falls back to the walk. These tests hold the two together on
random trees and limits, and on the edges where the copy must step aside.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskscope import _accel
from taskscope._capture import CaptureLimits, Capturer
from taskscope._redact import REDACTED, Redactor

KEYS = st.sampled_from(["role", "content", "name", "id", "password", "X-Api-Key", "x" * 30, "ü"])
LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    KEYS,
    st.sampled_from(
        [
            "api_key=Zq01Vw9kLm3XpZq01Vw9kLm3Xp",
            "ghp_Zq02Vw9kLm3XpZq02Vw9kLm3XpZq02Vw",
            "hello",
            "Bearer abc.def.ghi",
        ]
    ),
)
CONTAINERS = st.recursive(
    LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6),
        st.tuples(inner, inner),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(KEYS, inner, max_size=5),
        st.dictionaries(st.integers(), inner, max_size=2),
    ),
    max_leaves=40,
).filter(lambda tree: type(tree) in (dict, list, tuple))  # a lone leaf never takes the copy
LIMITS = st.builds(
    CaptureLimits,
    max_string_length=st.integers(1, 60),
    max_items=st.integers(1, 8),
    max_depth=st.integers(1, 6),
    max_bytes=st.integers(1, 400),
)


def walked(capturer: Capturer, value: Any) -> Any:
    """What the full walk alone makes of value."""
    return capturer._guarded_walk(value)


def same(left: Any, right: Any) -> bool:
    if isinstance(left, float) and isinstance(right, float) and math.isnan(left):
        return math.isnan(right)
    return type(left) is type(right) and left == right


@settings(max_examples=400, deadline=None)
@given(tree=CONTAINERS, limits=LIMITS, twice=st.booleans())
def test_value_equals_the_full_walk(tree: Any, limits: CaptureLimits, twice: bool) -> None:
    capturer = Capturer(limits)
    if twice:  # the second time, every key is already judged: the copy's own path runs
        capturer.value(tree)
    assert same(capturer.value(tree), walked(capturer, tree))


@settings(max_examples=200, deadline=None)
@given(tree=CONTAINERS, twice=st.booleans())
def test_arguments_equal_the_full_walk(tree: Any, twice: bool) -> None:
    capturer = Capturer(CaptureLimits(max_bytes=300, max_items=6))
    if twice:
        capturer.arguments({"value": tree})
    assert capturer.arguments({"value": tree}) == {"value": walked(capturer, tree)}


def request() -> dict[str, Any]:
    return {
        "model": "gpt-5",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say hello."},
        ],
        "temperature": 0.5,
        "tools": ({"name": "search", "args": [1, 2.5, None, True]},),
    }


def test_a_known_request_is_copied_whole_and_fresh() -> None:
    capturer = Capturer()
    capturer.value(request())  # the keys are judged
    original = request()
    copy = capturer._plain_tree(original)
    assert copy == {
        "model": "gpt-5",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say hello."},
        ],
        "temperature": 0.5,
        "tools": [{"name": "search", "args": [1, 2.5, None, True]}],
    }
    original["messages"][1]["content"] = "changed after the call"
    original["messages"].append({"role": "assistant", "content": "hi"})
    assert copy["messages"][1]["content"] == "Say hello."  # the record keeps the value then
    assert len(copy["messages"]) == 2


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ({"fresh key": 1}, "a key not judged yet"),
        ({"password": "hunter2"}, "a secret key"),
        ({"content": "Bearer Zq01Vw9kLm3XpZq01Vw9kLm3Xp"}, "a secret-shaped string"),
        ({"content": "x" * 10_001}, "a string over max_string_length"),
        ({"content": math.inf}, "a float JSON cannot hold"),
        ({1: "a"}, "a key that is not text"),
        ({"content": b"bytes"}, "another type"),
        ([["Authorization", "Bearer token"]], "a header pair"),
        ([("X-Api-Key", "Zq01Vw9kLm3Xp")], "a header pair without a secret's shape"),
        ([0] * 101, "more items than max_items"),
    ],
)
def test_the_copy_steps_aside(value: Any, why: str) -> None:
    capturer = Capturer()
    capturer.value({"role": 1, "content": 2, "password": 3, "Authorization": 4, "X-Api-Key": 5})
    assert capturer._plain_tree(value) is None, why


def test_the_walk_still_redacts_what_the_copy_leaves() -> None:
    capturer = Capturer()
    value = {"role": "user", "content": "Bearer Zq01Vw9kLm3XpZq01Vw9kLm3Xp", "password": "x"}
    capturer.value(value)
    assert capturer.value(value) == {
        "role": "user",
        "content": f"Bearer {REDACTED}",
        "password": REDACTED,
    }


def test_a_deep_tree_is_cut_by_the_walk_not_copied() -> None:
    capturer = Capturer(CaptureLimits(max_depth=3))
    deep: Any = [[[["bottom"]]]]
    assert capturer._plain_tree(deep) is None
    assert capturer.value(deep) == [[["…[list beyond max depth 3]"]]]


def test_a_self_containing_list_ends() -> None:
    capturer = Capturer()
    loop: list[Any] = [1]
    loop.append(loop)
    assert capturer._plain_tree(loop) is None
    assert capturer.value(loop) == [1, "…[cycle: list]"]


def test_with_a_value_pattern_every_string_goes_through_the_walk() -> None:
    capturer = Capturer(redactor=Redactor(value_patterns=[r"hello"]))
    capturer.value({"content": "hello"})
    assert capturer._plain_tree({"content": "hello"}) is not None  # the copy itself…
    assert capturer.value({"content": "hello"}) == {"content": REDACTED}  # …is not used


def test_the_budget_counts_keys_as_the_walk_does() -> None:
    # 4 keys of 10 characters and 4 one-character values: 4 * (10 + 4) + 4 * (1 + 2) = 68
    # bytes. The copy takes the tree only with budget to spare (69); at 68 it steps aside and
    # the walk, which stops only before an item once the budget is spent, still keeps it whole.
    # At 65 the walk cuts the last key.
    value = {f"key{n:07d}": "v" for n in range(4)}
    for budget, copied, whole in ((69, True, True), (68, False, True), (65, False, False)):
        capturer = Capturer(CaptureLimits(max_bytes=budget))
        capturer.value(value)
        assert (capturer._plain_tree(value) == value) is copied
        assert (capturer.value(value) == value) is whole


needs_c = pytest.mark.skipif(_accel.speedups is None, reason="the C module is not in use")


@needs_c
@settings(max_examples=400, deadline=None)
@given(tree=st.one_of(CONTAINERS, LEAVES), limits=LIMITS, scan=st.booleans(), twice=st.booleans())
def test_the_c_copy_is_the_python_copy(
    tree: Any, limits: CaptureLimits, scan: bool, twice: bool
) -> None:
    capturer = Capturer(limits, Redactor(shapes=scan))
    if twice:
        capturer.value(tree)
    assert _accel.speedups is not None
    in_c = _accel.speedups.plain_tree(
        tree,
        capturer.redactor._cache,
        limits.max_items,
        limits.max_depth,
        limits.max_bytes,
        limits.max_string_length,
        capturer._scrub is not None,
    )
    in_python = capturer._plain_tree_py(tree) if type(tree) in (dict, list, tuple) else None
    assert same(in_c, in_python)


@needs_c
def test_the_c_copy_of_a_deep_tree_steps_aside() -> None:
    capturer = Capturer(CaptureLimits(max_depth=1_000_000, max_bytes=10**9))
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    assert capturer._plain_tree(deep) is None  # too deep for C: left to the walk


@needs_c
def test_the_c_copy_refuses_bad_arguments() -> None:
    assert _accel.speedups is not None
    with pytest.raises(TypeError, match="plain_tree"):
        _accel.speedups.plain_tree({}, {})
    with pytest.raises(TypeError):
        _accel.speedups.plain_tree({}, {}, "many", 1, 1, 1, True)
