"""Process-wide settings: read once from the environment at import, changed by ``configure()``.

The hot path reads them as plain attributes of one object. ``configure()`` itself, the
exporters named in the environment and the default client sit higher up (taskscope._config,
taskscope.exporters), so this module depends on capture and redaction only.
"""

from __future__ import annotations

import os

from ._capture import Capturer
from ._errors import ConfigurationError

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
