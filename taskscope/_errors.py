"""Exceptions taskscope raises on purpose: misuse of the manual API and bad configuration."""

from __future__ import annotations


class TaskscopeError(Exception):
    """Base class of the errors taskscope raises on purpose."""


class StateError(TaskscopeError):
    """A task or run was ended twice, or used after it ended."""


class ConfigurationError(TaskscopeError, ValueError):
    """A setting or environment variable has a value taskscope cannot use."""
