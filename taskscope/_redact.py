"""Redaction: which keys hold secrets, and secrets recognised by their shape inside text.

By key: a value under a key that names a credential (``api_key``, ``Authorization``,
``GITHUB_PAT``) is replaced by ``[REDACTED]``; taskscope._secret_keys judges a key by its words,
so that ``author``, ``keyboard``, ``monkey`` and ``token_count`` are data, not secrets.

By shape: text that carries a secret in a form one can recognise (``postgres://ada:pw@db``,
``?api_key=…``, ``Authorization: Bearer …``, ``--password=…``, ``{"password": "…"}``) keeps its
words and loses the secret part, wherever the text is recorded: a captured value, a tag, an
event type, an error message, a traceback.

Every captured string passes here on the caller's thread, so the shape check starts with
``could_hold_secret``, one pass over the characters: only text with ``=``, ``:``, ``@``, ``--``,
a quote followed by a comma, or the letters ``bearer``/``basic`` goes on to the regular
expressions. The C hot path (``_speedups.c``) has the same test; tests hold the two together.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from . import _accel
from ._internal import warn_once
from ._secret_keys import is_default_secret_key, key_words, may_hold_secret_key

REDACTED = "[REDACTED]"
REDACTION_FAILED = "[REDACTED: the redaction callback raised]"

# The shortest text a shape can hide a secret in: ``pw=x``.
MIN_SHAPE_LENGTH = 4

_CACHE_LIMIT = 4096

RedactCallback = Callable[[Any], Any]

__all__ = [  # key_words and is_default_secret_key live in _secret_keys; imported from here too
    "MIN_SHAPE_LENGTH",
    "REDACTED",
    "REDACTION_FAILED",
    "RedactCallback",
    "Redactor",
    "could_hold_secret",
    "is_default_secret_key",
    "key_words",
]

# -- secrets by shape ---------------------------------------------------------------------


def _could_hold_secret_py(text: str) -> bool:
    # Plain substring tests: several times faster than one regular expression with these
    # alternatives. ``lower()`` turns no other character into these ASCII words (the one
    # non-ASCII letter it turns into an ASCII one, İ, also adds a combining dot after it), so
    # this is the C twin's ASCII-only folding.
    if len(text) < MIN_SHAPE_LENGTH:
        return False
    if "=" in text or ":" in text or "@" in text or "--" in text or "'," in text or '",' in text:
        return True
    if "b" in text or "B" in text:
        lowered = text.lower()
        return "bearer" in lowered or "basic" in lowered
    return False


# The C twin is the same test, three to four times faster.
could_hold_secret: Callable[[str], bool] = getattr(
    _accel.compiled, "could_hold_secret", _could_hold_secret_py
)

# What follows a URL's ``://``: user:password@ (or a long token@, GitHub's way of putting a token
# in a URL). Matched at each ``://`` found with str.find: searching the whole text for a scheme
# first cost several times more. Every repeat is bounded, here and below: hostile text must
# cost linear time.
_USERINFO = re.compile(
    r"[^\s:/?#@'\"<>]{0,256}:(?P<secret>[^\s/?#'\"<>]{1,512})@"
    r"|(?P<token>[A-Za-z0-9_~.-]{20,512})@"
)
# ("Authorization", "Bearer …") written out: a header pair in a repr or a JSON list, in its
# own brackets (so that a JSON object's value and next key are not taken for a pair).
_QUOTED_PAIR = re.compile(
    r"""[(\[][ \t]*b?(?P<q>["'])(?P<key>[\w.-]{2,80})(?P=q),[ \t]*b?(?P<vq>["'])"""
    r"""(?P<secret>(?:\\.|(?!(?P=vq))[^\\\n])*)(?P=vq)[ \t]*[)\]]"""
)
# The expressions below are matched only where str.find found their start (``-u``, ``--``, a
# separator, ``bearer``): a search that tries every position of the text costs far more in
# Python's engine (600 µs for 10,000 characters of prose with code in it, against 60).
# curl's -u user:password (and --user user:password)
_CURL_AT = re.compile(r"-(?:-user|u)[ \t]*[\"']?[^\s:'\"]+:(?P<secret>[^\s'\"]+)")
# --password hunter2 (the --password=hunter2 form is a key=value pair)
_FLAG_AT = re.compile(
    r"""--(?P<key>[A-Za-z][\w-]{0,127})[ \t]+"""
    r"""(?P<secret>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|[^\s'"-][^\s'"]*)"""
)
# key=value, key: value, "key": "value", key = 'value', key := value, --key=value. A key starts
# after a character that cannot be part of one, so a long a.b.c… run is tried once, not per dot.
# Found from the separator: the key is matched backwards from each ``=`` and ``:``, in the
# reversed text.
_KEY_BEFORE = re.compile(r"[ \t]*(?:[\"']\\?)?(?P<key>[\w.-]{0,127}[A-Za-z_])-{0,2}(?![\w.-])")
_SCHEME = re.compile(r"(?ai:bearer|basic|token|digest|negotiate|ntlm)[ \t]+")
_PLAIN_VALUE = re.compile(r"[^\s,;&'\"<>()\[\]{}]+")
_HEADER_VALUE = re.compile(r"[^\r\n'\"]*")
_SCHEME_VALUE = re.compile(r"[^\s,;'\"]+")
# A credential after Bearer (any token of 8 or more) or Basic (base64, which has a capital or a
# digit after its first character: "Basic dXNlcjpwYXNz", not "Basic Authentication").
_BEARER_AT = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr][ \t]+(?P<secret>[A-Za-z0-9._~+/-]{8,}=*)")
_BASIC_AT = re.compile(r"Basic[ \t]+(?P<secret>[A-Za-z0-9+/][a-z]*[A-Z0-9+/][A-Za-z0-9+/]{2,}=*)")
_CLOSERS = {"{": "}", "[": "]", "(": ")"}


class Redactor:
    """Decides which keys are secret and scrubs secrets out of text.

    ``patterns`` are regular expressions for more secret keys, searched in the key as written;
    ``value_patterns`` are regular expressions for secrets in any text (the whole match, or its
    ``secret`` group, is replaced). ``defaults=False`` drops the default key rules;
    ``shapes=False`` stops scanning captured values (free text taskscope writes itself, error
    messages and tracebacks, is still scrubbed).
    """

    def __init__(
        self,
        patterns: Iterable[str] = (),
        callback: RedactCallback | None = None,
        *,
        defaults: bool = True,
        shapes: bool = True,
        value_patterns: Iterable[str] = (),
    ) -> None:
        self.patterns = tuple(patterns)
        self.defaults = defaults
        self.callback = callback
        self.shapes = shapes
        self.value_patterns = tuple(value_patterns)
        self._user_key_re = (
            re.compile("|".join(f"(?:{p})" for p in self.patterns), re.IGNORECASE)
            if self.patterns
            else None
        )
        self._value_res = tuple(re.compile(p) for p in self.value_patterns)
        # Whether captured strings are looked at at all; with value patterns every string is,
        # since a user's pattern (``sk-[A-Za-z0-9]{20,}``) needs none of the hint characters.
        self.scans_values = shapes or bool(self._value_res)
        self.scans_every_value = bool(self._value_res)
        self._cache: dict[str, bool] = {}

    def is_secret_key(self, key: str) -> bool:
        """Whether values under ``key`` are replaced by ``[REDACTED]``."""
        known = self._cache.get(key)
        if known is not None:
            return known
        secret = (self.defaults and is_default_secret_key(key)) or (
            self._user_key_re is not None and self._user_key_re.search(key) is not None
        )
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = secret
        return secret

    def scrub_value(self, text: str) -> str:
        """A captured string with the secrets in it replaced (cheap when it holds none)."""
        if self._value_res:
            text = self._user_values(text)
        if self.shapes and could_hold_secret(text):
            return self._shapes(text)
        return text

    def scrub_text(self, text: str) -> str:
        """Free text (an error message, a traceback, a reason) with its secrets replaced."""
        if self._value_res:
            text = self._user_values(text)
        return self._shapes(text) if could_hold_secret(text) else text

    def apply_callback(self, value: Any) -> Any:
        """Run the user's callback; if it raises, drop the value rather than send it raw."""
        if self.callback is None:
            return value
        try:
            return self.callback(value)
        except Exception:
            warn_once(
                "redact-callback",
                "taskscope: the redaction callback raised; the value was dropped, not sent.",
            )
            return REDACTION_FAILED

    # -- the shapes -----------------------------------------------------------------------

    def _user_values(self, text: str) -> str:
        for pattern in self._value_res:
            text = pattern.sub(_replace_secret_group, text)
        return text

    def _shapes(self, text: str) -> str:
        # Each shape is looked for only in text holding the characters it starts with.
        if "://" in text and "@" in text:
            text = _url_userinfo(text)
        if "-u" in text:
            text = _replace_at(text, _curl_starts(text), _CURL_AT, None)
        lowered = text.lower()
        # The shapes that need a secret key, only where one could be (a URL's scheme, host
        # and query names usually hold none of these letters).
        if self._user_key_re is not None or (self.defaults and may_hold_secret_key(lowered)):
            if ("'," in text or '",' in text) and (
                "('" in text or "['" in text or '("' in text or '["' in text or "(b'" in text
            ):
                text = _QUOTED_PAIR.sub(self._quoted_pair, text)
            if "--" in text:
                starts = [p for p in _positions(text, "--") if _starts_word(text, p)]
                text = _replace_at(text, starts, _FLAG_AT, self.is_secret_key)
            if "=" in text or ":" in text:
                text = self._pairs(text)
        if "bearer" in lowered:
            lowered = text.lower()
            if len(lowered) == len(text):  # every position kept (no İ, which lower() doubles)
                starts = [p for p in _positions(lowered, "bearer") if _word_starts(text, p)]
                text = _replace_at(text, starts, _BEARER_AT, None)
            else:
                starts = [m.start() for m in re.finditer(r"\b(?i:bearer)", text)]
                text = _replace_at(text, starts, _BEARER_AT, None)
        if "Basic" in text:
            starts = [p for p in _positions(text, "Basic") if _word_starts(text, p)]
            text = _replace_at(text, starts, _BASIC_AT, None)
        return text

    def _quoted_pair(self, match: re.Match[str]) -> str:
        if not self.is_secret_key(match.group("key")):
            return match.group(0)
        return _replace_group(match, "secret", REDACTED)

    def _pairs(self, text: str) -> str:
        """Every ``key<sep>value`` whose key is secret, value replaced; other pairs untouched.

        A pair whose key is not secret is skipped only up to its separator, so a pair inside
        its value (``config={"password": "x"}``) is still found.
        """
        parts: list[str] = []
        copied = 0
        is_secret = self.is_secret_key
        length = len(text)
        reversed_text = text[::-1]
        key_before = _KEY_BEFORE.match
        separators = [*_positions(text, "="), *_positions(text, ":")]
        separators.sort()
        after = 0  # where the previous separator ended: "==" and ":=" are one separator
        for position in separators:
            # A separator inside a value already replaced is part of that value.
            if position < copied or position < after:
                continue
            after = position + (2 if text[position + 1 : position + 2] == "=" else 1)
            found = key_before(reversed_text, length - position)
            if found is None:
                continue
            key = found["key"][::-1]
            if not is_secret(key):
                continue
            start = after
            while start < length and text[start] in " \t":
                start += 1
            if start >= length:
                continue
            lowered = key.lower()
            header = "authorization" in lowered or "cookie" in lowered
            end, replacement = _value_span(text, start, header)
            if end == start:
                continue
            parts.append(text[copied:start])
            parts.append(replacement)
            copied = end
        if not parts:
            return text
        parts.append(text[copied:])
        return "".join(parts)


def _value_span(text: str, start: int, header: bool) -> tuple[int, str]:
    """Where the value that starts at ``start`` ends, and what replaces it."""
    first = text[start]
    if first in "\"'":
        end = _closing_quote(text, start + 1, first)
        return (end + 1, f"{first}{REDACTED}{first}") if end >= 0 else _to_line_end(text, start)
    if first == "\\" and text[start + 1 : start + 2] in ('"', "'"):
        quote = text[start : start + 2]
        end = text.find(quote, start + 2)
        return (end + 2, f"{quote}{REDACTED}{quote}") if end >= 0 else _to_line_end(text, start)
    if first in _CLOSERS:
        return _bracketed_end(text, start), REDACTED
    scheme = _SCHEME.match(text, start)
    if scheme is not None:
        value = (_HEADER_VALUE if header else _SCHEME_VALUE).match(text, scheme.end())
        if value is not None and value.end() > scheme.end():
            return value.end(), f"{scheme.group(0)}{REDACTED}"
    value = (_HEADER_VALUE if header else _PLAIN_VALUE).match(text, start)
    if value is None:
        return start, ""
    end = value.end()
    while header and end > start and text[end - 1] in " \t":
        end -= 1
    return end, REDACTED


def _closing_quote(text: str, position: int, quote: str) -> int:
    while position < len(text):
        char = text[position]
        if char == "\\":
            position += 2
            continue
        if char == quote:
            return position
        if char == "\n":
            return -1
        position += 1
    return -1


def _to_line_end(text: str, start: int) -> tuple[int, str]:
    end = text.find("\n", start)
    return (len(text) if end < 0 else end), REDACTED


def _bracketed_end(text: str, start: int) -> int:
    """The end of ``{…}``, ``[…]`` or ``(…)`` at ``start``, quotes respected; else the line's."""
    stack: list[str] = []
    position = start
    while position < len(text):
        char = text[position]
        if char in _CLOSERS:
            stack.append(_CLOSERS[char])
        elif stack and char == stack[-1]:
            stack.pop()
            if not stack:
                return position + 1
        elif char in "\"'":
            closing = _closing_quote(text, position + 1, char)
            if closing >= 0:
                position = closing
        elif char == "\n":
            break
        position += 1
    return position


def _replace_group(match: re.Match[str], group: str, replacement: str) -> str:
    whole = match.group(0)
    offset = match.start(0)
    return whole[: match.start(group) - offset] + replacement + whole[match.end(group) - offset :]


def _replace_secret_group(match: re.Match[str]) -> str:
    if "secret" in match.re.groupindex and match.group("secret") is not None:
        return _replace_group(match, "secret", REDACTED)
    return REDACTED


def _url_userinfo(text: str) -> str:
    """``scheme://user:[REDACTED]@host`` for every URL in ``text`` with a password (or token)."""
    parts: list[str] = []
    copied = 0
    found = text.find("://")
    while found >= 0:
        match = _USERINFO.match(text, found + 3)
        if match is not None:
            group = "secret" if match.group("secret") is not None else "token"
            parts.append(text[copied : match.start(group)])
            parts.append(REDACTED)
            copied = match.end(group)
        found = text.find("://", found + 3)
    if not parts:
        return text
    parts.append(text[copied:])
    return "".join(parts)


def _positions(text: str, needle: str) -> Iterator[int]:
    """Where ``needle`` starts in ``text``, left to right (str.find: fast)."""
    found = text.find(needle)
    while found >= 0:
        yield found
        found = text.find(needle, found + 1)


def _word_starts(text: str, position: int) -> bool:
    """``\\b`` before ``position``, as the regular expression engine means it."""
    return position == 0 or not (text[position - 1].isalnum() or text[position - 1] == "_")


def _starts_word(text: str, position: int) -> bool:
    """Nothing of a word or an option (a letter, digit, ``_`` or ``-``) before ``position``."""
    return position == 0 or not (text[position - 1].isalnum() or text[position - 1] in "_-")


def _curl_starts(text: str) -> list[int]:
    """Where ``-u`` or ``--user`` starts an option (not inside a word such as ``re-use``)."""
    starts = []
    for position in _positions(text, "-u"):
        if position and text[position - 1] == "-":
            position -= 1  # --user
        if _starts_word(text, position):
            starts.append(position)
    return starts


def _replace_at(
    text: str,
    starts: Iterable[int],
    pattern: re.Pattern[str],
    is_secret_key: Callable[[str], bool] | None,
) -> str:
    """``text`` with the ``secret`` group of ``pattern`` replaced where it matches at a start.

    With ``is_secret_key``, only where the match's ``key`` group is a secret key. A quoted
    secret keeps its quotes.
    """
    parts: list[str] = []
    copied = 0
    for start in starts:
        if start < copied:
            continue
        match = pattern.match(text, start)
        if match is None or (is_secret_key is not None and not is_secret_key(match["key"])):
            continue
        secret = match["secret"]
        quote = secret[0] if secret[:1] in ('"', "'") and len(secret) > 1 else ""
        parts.append(text[copied : match.start("secret")])
        parts.append(f"{quote}{REDACTED}{quote}")
        copied = match.end("secret")
    if not parts:
        return text
    parts.append(text[copied:])
    return "".join(parts)
