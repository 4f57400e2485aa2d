"""``configure()``, ``flush()`` and the default client: the process-wide entry points.

The settings themselves live in taskscope._settings, low enough for every layer to read; this
module sits above the client it makes. ``settings`` is re-exported for code that imports it here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ._capture import CaptureLimits, Capturer
from ._client import Client
from ._pipeline import all_pipelines, late_records_since_last_check
from ._redact import RedactCallback, Redactor
from ._settings import Settings, settings

if TYPE_CHECKING:
    from .exporters._base import Exporter

__all__ = ["Settings", "configure", "default_client", "flush", "reset_for_tests", "settings"]

_default_client: Client | None = None
_default_lock = threading.Lock()
_UNSET: Any = object()


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
        with _default_lock:
            previous, _default_client = _default_client, Client(exporters)
        if previous is not None:
            previous.shutdown(timeout=1.0)


def flush(timeout: float = 5.0) -> bool:
    """Flush every client in the process (the default one included); True if all delivered."""
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
    late_records_since_last_check()  # a test's late records are that test's
