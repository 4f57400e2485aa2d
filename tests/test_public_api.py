"""The facade: a sorted __all__ of names that exist; implementation stays private."""

from __future__ import annotations

import inspect

import taskscope


def test_all_is_sorted_and_complete() -> None:
    """__all__ is sorted, and every name in it exists."""
    assert taskscope.__all__ == sorted(taskscope.__all__)
    for name in taskscope.__all__:
        assert hasattr(taskscope, name), name


def test_facade_only_reexports() -> None:
    """Public objects are defined in private modules, not in taskscope/__init__.py."""
    for name in taskscope.__all__:
        value = getattr(taskscope, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            private = ("taskscope._", "taskscope.integrations._")
            assert value.__module__.startswith(private), (name, value.__module__)


def test_subpackages_load_on_attribute_access() -> None:
    """taskscope.testing and taskscope.exporters work after a plain `import taskscope`."""
    assert taskscope.testing.capture is not None
    assert taskscope.exporters.InMemoryExporter is not None
