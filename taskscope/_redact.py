"""Redaction: which keys hold secrets, and scrubbing secrets out of free text.

Keys are matched anywhere in the name, case-insensitively. ``token`` is matched only where it
names a credential: counts and settings such as ``input_tokens``, ``max_tokens``,
``token_count`` or ``tokenizer`` are data an agent's timeline needs, not secrets.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

REDACTED = "[REDACTED]"
REDACTION_FAILED = "[REDACTED: the redaction callback raised]"

DEFAULT_KEY_PATTERNS: tuple[str, ...] = (
    r"passw(?:or)?d",
    r"secret(?!ary)",
    r"token(?!s|iz|[-_ ]?(?:count|usage|limit|budget|type|ids?\b))",
    r"api[-_ ]?key",
    r"authorization",
    r"cookie",
    r"credential",
    r"private[-_ ]?key",
)

_CACHE_LIMIT = 4096

RedactCallback = Callable[[Any], Any]


class Redactor:
    """Decides which keys are secret and scrubs secrets that appear inside text."""

    def __init__(
        self,
        patterns: Iterable[str] = (),
        callback: RedactCallback | None = None,
        *,
        defaults: bool = True,
    ) -> None:
        self.patterns = tuple(patterns)
        self.defaults = defaults
        self.callback = callback
        all_patterns = (*(DEFAULT_KEY_PATTERNS if defaults else ()), *self.patterns)
        self._key_re: re.Pattern[str] | None = (
            re.compile("|".join(f"(?:{p})" for p in all_patterns), re.IGNORECASE)
            if all_patterns
            else None
        )
        self._text_re = (
            re.compile(
                r"(?P<key>[\"']?[\w.-]*(?:"
                + "|".join(f"(?:{p})" for p in all_patterns)
                + r")[\w.-]*[\"']?)(?P<sep>\s*[:=]\s*)(?P<value>\"[^\"]*\"|'[^']*'|"
                r"(?:Bearer|Basic|Token)\s+\S+|[^\s,;&)}\]]+)",
                re.IGNORECASE,
            )
            if all_patterns
            else None
        )
        self._cache: dict[str, bool] = {}

    def is_secret_key(self, key: str) -> bool:
        """Whether values under ``key`` are replaced by ``[REDACTED]``."""
        known = self._cache.get(key)
        if known is not None:
            return known
        secret = self._key_re is not None and self._key_re.search(key) is not None
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = secret
        return secret

    def scrub_text(self, text: str) -> str:
        """Replace ``api_key=…``, ``"password": "…"`` and bearer credentials inside text."""
        if self._text_re is not None and ("=" in text or ":" in text):
            text = self._text_re.sub(_keep_key, text)
        return _BEARER_RE.sub(r"\1 [REDACTED]", text)

    def apply_callback(self, value: Any) -> Any:
        """Run the user's callback; if it raises, drop the value rather than send it raw."""
        if self.callback is None:
            return value
        try:
            return self.callback(value)
        except Exception:
            from ._internal import warn_once

            warn_once(
                "redact-callback",
                "taskscope: the redaction callback raised; the value was dropped, not sent.",
            )
            return REDACTION_FAILED


_BEARER_RE = re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE)


def _keep_key(match: re.Match[str]) -> str:
    return f"{match.group('key')}{match.group('sep')}{REDACTED}"
