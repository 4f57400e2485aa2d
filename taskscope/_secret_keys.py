"""Which keys name a secret: ``api_key``, ``Authorization`` and ``GITHUB_PAT`` do; ``author``,
``keyboard``, ``monkey`` and ``token_count`` do not.

A key is split into words (``X-Api-Key`` → x, api, key; ``refreshToken`` → refresh, token) and
judged by its words. Used by taskscope._redact, which also finds secrets by their shape in text.
"""

from __future__ import annotations

import re

# Found anywhere in the key once its separators are gone (``PGPASSWORD``, ``X-Api-Key``,
# ``JSESSIONID``, ``client_secret``); ``secretary`` and ``secretariat`` are not secrets.
_SECRET_PARTS = re.compile(
    r"passw|passphrase|credential|apikey|privatekey|secretkey|accesskey|authorization|cookie"
    r"|sess(?:ion)?id|(?:access|refresh|auth|api|bearer|session|csrf|xsrf)tokens?"
    r"|secret(?!ar)"
)
# Whole words that are credentials on their own.
_SECRET_WORDS = frozenset({"pwd", "pw", "auth", "bearer", "jwt"})
# A last word that makes the key describe a secret rather than hold one: ``token_count``,
# ``auth_type``, ``secret_name``, ``password_length``, ``session_id``, ``token_url``.
_DESCRIPTORS = frozenset(
    {
        "at", "budget", "count", "counts", "enabled", "endpoint", "expires", "expiry", "field",
        "file", "format", "id", "ids", "in", "index", "kind", "len", "length", "limit", "limits",
        "method", "methods", "name", "names", "path", "policy", "provider", "required",
        "scheme", "size", "ttl", "type", "types", "uri", "url", "urls", "usage", "version",
    }
)  # fmt: skip
# ``token`` after one of these is a model's token, not a credential: ``max_token``,
# ``eos_token``, ``next_token``.
_MODEL_TOKEN_WORDS = frozenset(
    {
        "bos", "cache", "cached", "cls", "completion", "end", "eos", "first", "input", "last",
        "mask", "max", "min", "n", "new", "next", "num", "output", "pad", "per", "prompt",
        "reasoning", "sep", "special", "start", "stop", "total", "unk",
    }
)  # fmt: skip
# ``tokens`` is a count (``input_tokens``) unless one of these says whose tokens they are.
_CREDENTIAL_OWNERS = frozenset(
    {
        "access", "api", "app", "auth", "bearer", "bot", "client", "csrf", "github", "gitlab",
        "hf", "id", "npm", "oauth", "personal", "pypi", "refresh", "secret", "service",
        "session", "slack", "user", "xsrf",
    }
)  # fmt: skip
# ``key`` after one of these is a credential (``private_key``, ``AccountKey``); ``cache_key``,
# ``sort_key`` and ``primary_key`` are not.
_KEY_OWNERS = frozenset(
    {
        "access", "account", "api", "app", "auth", "client", "consumer", "crypto", "deploy",
        "encryption", "gpg", "hmac", "license", "master", "pgp", "private", "rsa", "secret",
        "service", "session", "shared", "signing", "ssh", "storage", "subscription", "webhook",
    }
)  # fmt: skip


def may_hold_secret_key(lowered: str) -> bool:
    """Whether lower-cased text holds letters every default secret key has.

    Text without any of them holds no such key, and the key-based shapes are not looked for (a
    key would need a separator inside one of these, ``to_ken``, to slip through). Written out:
    a regular expression with these alternatives costs half as much again.
    """
    return (
        "pass" in lowered
        or "secret" in lowered
        or "token" in lowered
        or "key" in lowered
        or "auth" in lowered
        or "cookie" in lowered
        or "credential" in lowered
        or "pw" in lowered
        or "sess" in lowered
        or "pat" in lowered
        or "bearer" in lowered
        or "jwt" in lowered
    )


_WORDS = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")


def key_words(key: str) -> list[str]:
    """``OPENAI_API_KEY`` → openai, api, key; ``refreshToken`` → refresh, token."""
    return [word.lower() for word in _WORDS.findall(key)]


def is_default_secret_key(key: str) -> bool:
    """Whether the default rules call ``key`` a secret (see the module docstring)."""
    words = key_words(key)
    if not words:
        return False
    last = len(words) - 1
    if last and words[last] in _DESCRIPTORS:
        return False
    if _SECRET_PARTS.search("".join(words)):
        return True
    for index, word in enumerate(words):
        before = words[index - 1] if index else ""
        if word in _SECRET_WORDS:
            return True
        if word == "token":
            after = words[index + 1] if index < last else ""
            if after not in _DESCRIPTORS and before not in _MODEL_TOKEN_WORDS:
                return True
        elif word == "tokens":
            if before in _CREDENTIAL_OWNERS:
                return True
        elif word == "key":
            # An environment variable's name in capitals ending in _KEY (STRIPE_KEY) is a key.
            if before in _KEY_OWNERS or (index == last and last and key.isupper()):
                return True
        elif word in ("pat", "session") and index == last and (last or word == "session"):
            # GITHUB_PAT (a personal access token); a session last (flask_session).
            return True
    return False
