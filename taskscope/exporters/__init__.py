"""Exporters turn records into something outside the process: a file, memory, a backend."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._base import BaseExporter, Exporter
from .agentos import AgentOSExporter
from .console import ConsoleExporter
from .jsonl import JSONLExporter
from .local import LocalStore
from .memory import InMemoryExporter

if TYPE_CHECKING:
    from .otel import OTelExporter as OTelExporter


def __getattr__(name: str) -> object:
    # OTelExporter is imported on first use, so a process that does not use it never imports
    # OpenTelemetry (and one without it installed can still use every other exporter).
    if name == "OTelExporter":
        return load_otel_exporter()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_otel_exporter() -> type[OTelExporter]:
    """The OTelExporter class, or an ImportError that says what to install."""
    try:
        from .otel import OTelExporter
    except ModuleNotFoundError as problem:
        if not (problem.name or "").startswith("opentelemetry"):
            raise
        raise ImportError(
            "OTelExporter needs the OpenTelemetry API, which is not installed: "
            "pip install 'taskscope[otel]' (or opentelemetry-api)."
        ) from problem
    return OTelExporter


__all__ = [
    "AgentOSExporter",
    "BaseExporter",
    "ConsoleExporter",
    "Exporter",
    "InMemoryExporter",
    "JSONLExporter",
    "LocalStore",
    "OTelExporter",
]
