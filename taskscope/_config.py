"""Process-wide settings, ``configure()``, the environment, and the default client.

Settings are read once from the environment at import, then changed only by ``configure()``.
The hot path reads them as plain attributes of one object.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ._capture import CaptureLimits, Capturer
from ._errors import ConfigurationError
from ._redact import RedactCallback, Redactor

if TYPE_CHECKING:
    from ._client import Client
    from .exporters._base import Exporter

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def _env_flag(name: str) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigurationError(f"{name}={raw!r} is not a yes/no value; use 1 or 0.")


def _env_rate(name: str) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return 1.0
    try:
        rate = float(raw)
    except ValueError:
        rate = -1.0
    if not 0.0 <= rate <= 1.0:
        raise ConfigurationError(f"{name}={raw!r} must be a number from 0 to 1, such as 0.25.")
    return rate


class Settings:
    """What every client and decorator consults; change it with ``configure()``."""

    def __init__(self) -> None:
        self.disabled = False
        self.disabled_at_import = False
        self.auto_run = True
        self.sample_rate = 1.0
        self.capturer = Capturer()
        self.env_problem: ConfigurationError | None = None
        self.load_environment()

    def load_environment(self) -> None:
        try:
            self.disabled = _env_flag("TASKSCOPE_DISABLED")
            self.sample_rate = _env_rate("TASKSCOPE_SAMPLE_RATE")
        except ConfigurationError as problem:
            # Raised later, from Client() or configure(), not at import time.
            self.env_problem = problem
        self.disabled_at_import = self.disabled


settings = Settings()

_default_client: Client | None = None
_default_lock = threading.Lock()
_UNSET: Any = object()


_KNOWN = "local, local:PATH, console, jsonl:PATH, otel, agentos, none"


def exporters_from_env() -> list[Exporter]:
    """The exporters ``TASKSCOPE_EXPORTERS`` names; unset or empty: the local store.

    A comma list of ``local`` (or ``local:PATH``), ``console``, ``jsonl:PATH``, ``otel`` (spans
    through the global OpenTelemetry tracer provider), ``agentos`` (``AgentOSExporter()`` from
    the ``AGENTOS_*`` variables) and ``none``.
    """
    if settings.env_problem is not None:
        raise settings.env_problem
    from . import exporters as available

    raw = os.environ.get("TASKSCOPE_EXPORTERS", "").strip()
    if not raw:
        return [available.LocalStore()]
    exporters: list[Exporter] = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        kind, _, argument = item.partition(":")
        kind = kind.strip().lower()
        argument = argument.strip()
        if kind == "none" and not argument:
            continue
        if kind == "local":
            exporters.append(available.LocalStore(argument or None))
            continue
        if kind == "console" and not argument:
            exporters.append(available.ConsoleExporter())
            continue
        if kind == "jsonl" and argument:
            exporters.append(available.JSONLExporter(argument))
            continue
        if kind == "otel" and not argument:
            try:
                exporters.append(available.load_otel_exporter()())
            except ImportError as problem:
                raise ConfigurationError(f"TASKSCOPE_EXPORTERS names 'otel': {problem}") from None
            continue
        if kind == "agentos" and not argument:
            exporters.append(available.AgentOSExporter())
            continue
        raise ConfigurationError(
            f"TASKSCOPE_EXPORTERS names {item!r}, which taskscope does not know. Use a comma "
            f"list of: {_KNOWN}."
        )
    return exporters


def configure(
    *,
    exporters: Sequence[Exporter] | None = _UNSET,
    disabled: bool | None = None,
    auto_run: bool | None = None,
    sample_rate: float | None = None,
    capture_limits: CaptureLimits | None = None,
    redact_patterns: Iterable[str] | None = None,
    redact_callback: RedactCallback | None = _UNSET,
    default_redaction: bool | None = None,
    redact_shapes: bool | None = None,
    redact_value_patterns: Iterable[str] | None = None,
) -> None:
    """Change process-wide settings; only the arguments given change.

    ``exporters`` replaces the default client (used by ``@task`` outside a run and by
    ``@taskscope.run``); ``None`` means "from the environment". ``redact_patterns`` are
    regular expressions for secret keys, added to the defaults unless
    ``default_redaction=False``; ``redact_callback`` gets every captured value and returns
    what to record. ``redact_shapes=False`` stops looking for secrets by their shape in captured
    text; ``redact_value_patterns`` are regular expressions for secrets in any text (see
    docs/capture-and-redaction.md).
    """
    global _default_client
    if settings.env_problem is not None:
        raise settings.env_problem
    if sample_rate is not None:
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be between 0 and 1, not {sample_rate!r}.")
        settings.sample_rate = sample_rate
    if disabled is not None:
        settings.disabled = disabled
    if auto_run is not None:
        settings.auto_run = auto_run
    if (
        capture_limits is not None
        or redact_patterns is not None
        or redact_callback is not _UNSET
        or default_redaction is not None
        or redact_shapes is not None
        or redact_value_patterns is not None
    ):
        old = settings.capturer
        redactor = old.redactor
        settings.capturer = Capturer(
            capture_limits or old.limits,
            Redactor(
                redactor.patterns if redact_patterns is None else tuple(redact_patterns),
                redactor.callback if redact_callback is _UNSET else redact_callback,
                defaults=redactor.defaults if default_redaction is None else default_redaction,
                shapes=redactor.shapes if redact_shapes is None else redact_shapes,
                value_patterns=(
                    redactor.value_patterns
                    if redact_value_patterns is None
                    else tuple(redact_value_patterns)
                ),
            ),
        )
    if exporters is not _UNSET:
        from ._client import Client

        with _default_lock:
            previous, _default_client = _default_client, Client(exporters)
        if previous is not None:
            previous.shutdown(timeout=1.0)


def flush(timeout: float = 5.0) -> bool:
    """Flush every client in the process (the default one included); True if all delivered."""
    from ._pipeline import all_pipelines, late_records_since_last_check

    deadline = time.monotonic() + timeout
    delivered = True
    for pipeline in all_pipelines():
        delivered = pipeline.flush(max(0.0, deadline - time.monotonic())) and delivered
    # Records made through a client already shut down (a replaced default client, say) were
    # dropped: that is a loss too, though no live client saw it.
    return late_records_since_last_check() == 0 and delivered


def default_client() -> Client:
    """The client behind ``@task`` outside a run and ``@taskscope.run``; made on first use."""
    global _default_client
    client = _default_client
    if client is None:
        from ._client import Client

        with _default_lock:
            if _default_client is None:
                _default_client = Client()
            client = _default_client
    return client


def reset_for_tests() -> None:
    """Back to the settings a fresh import would have (the test suite's autouse fixture)."""
    global _default_client
    with _default_lock:
        previous, _default_client = _default_client, None
    if previous is not None:
        previous.shutdown(timeout=1.0)
    settings.__init__()  # type: ignore[misc]
    from ._pipeline import late_records_since_last_check

    late_records_since_last_check()  # a test's late records are that test's
