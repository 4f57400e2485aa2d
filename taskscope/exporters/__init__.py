"""Exporters turn records into something outside the process: a file, memory, a backend."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .._errors import ConfigurationError
from .._settings import settings
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


_KNOWN = "local, local:PATH, console, jsonl:PATH, otel, agentos, none"


def from_env() -> list[Exporter]:
    """The exporters ``TASKSCOPE_EXPORTERS`` names; unset or empty: the local store.

    A comma list of ``local`` (or ``local:PATH``), ``console``, ``jsonl:PATH``, ``otel`` (spans
    through the global OpenTelemetry tracer provider), ``agentos`` (``AgentOSExporter()`` from
    the ``AGENTOS_*`` variables) and ``none``.
    """
    if settings.env_problem is not None:
        raise settings.env_problem
    raw = os.environ.get("TASKSCOPE_EXPORTERS", "").strip()
    if not raw:
        return [LocalStore()]
    exporters: list[Exporter] = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        kind, _, argument = item.partition(":")
        kind = kind.strip().lower()
        argument = argument.strip()
        if kind == "none" and not argument:
            continue
        if kind == "local":
            exporters.append(LocalStore(argument or None))
            continue
        if kind == "console" and not argument:
            exporters.append(ConsoleExporter())
            continue
        if kind == "jsonl" and argument:
            exporters.append(JSONLExporter(argument))
            continue
        if kind == "otel" and not argument:
            try:
                exporters.append(load_otel_exporter()())
            except ImportError as problem:
                raise ConfigurationError(f"TASKSCOPE_EXPORTERS names 'otel': {problem}") from None
            continue
        if kind == "agentos" and not argument:
            exporters.append(AgentOSExporter())
            continue
        raise ConfigurationError(
            f"TASKSCOPE_EXPORTERS names {item!r}, which taskscope does not know. Use a comma "
            f"list of: {_KNOWN}."
        )
    return exporters


__all__ = [
    "AgentOSExporter",
    "BaseExporter",
    "ConsoleExporter",
    "Exporter",
    "InMemoryExporter",
    "JSONLExporter",
    "LocalStore",
    "OTelExporter",
    "from_env",
]
