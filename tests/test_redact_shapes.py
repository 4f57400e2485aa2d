"""Secrets recognised by their shape never reach any exporter; innocent text is left as it is.

Issue 13 found 21 of 42 secret shapes leaking into the store, JSONL, the console and
OpenTelemetry. Every shape below is recorded through a real client with all five exporters
(a real SQLite file, a JSONL file, the console into a StringIO, the OpenTelemetry SDK with an
in-memory span exporter, the in-memory exporter), and every byte they wrote is searched for
the secret. Each shape has a secret of its own, so a leak names the shape.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import random
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import taskscope
from taskscope import _accel
from taskscope._redact import (
    MIN_SHAPE_LENGTH,
    Redactor,
    _could_hold_secret_py,
    could_hold_secret,
    is_default_secret_key,
)
from taskscope.exporters import (
    ConsoleExporter,
    InMemoryExporter,
    JSONLExporter,
    LocalStore,
    OTelExporter,
)


def secret(number: int) -> str:
    """A distinct secret per shape: mixed case and digits, as real tokens are."""
    return f"Zq{number:02d}Vw9kLm3Xp"


@taskscope.task("take")
def take(value: Any) -> None:
    """Records ``value`` as the input."""


@taskscope.task("give")
def give(value: Any) -> Any:
    """Records ``value`` as the input and the output."""
    return value


@taskscope.task("skip-managed")
def skip_managed(reason: str) -> None:
    taskscope.current_task().skip(reason)


@taskscope.task("with-metadata")
def with_metadata(value: str) -> None:
    taskscope.current_task().metadata["connection"] = value


@taskscope.task("raises")
def raises(message: str) -> None:
    raise ConnectionError(message)


@taskscope.task("raises-chained")
def raises_chained(url: str) -> None:
    try:
        raise OSError(f"refused: {url}")
    except OSError as exc:
        raise RuntimeError("could not reach the database") from exc


class Holder:
    """An object whose repr shows a secret, as many configuration objects' do."""

    def __init__(self, password: str) -> None:
        self.password = password

    def __repr__(self) -> str:
        return f"Holder(host='db', password={self.password!r})"


Action = Callable[[taskscope.Run, str], None]


def _emit(run: taskscope.Run, value: Any) -> None:
    run.emit("shape.seen", {"value": value})


def _fail_manual(run: taskscope.Run, text: str) -> None:
    run.start_task("fail-manual").fail(text)


def _skip_manual(run: taskscope.Run, text: str) -> None:
    run.start_task("skip-manual").skip(text)


def _raise(call: Callable[[str], None], text: str) -> None:
    with pytest.raises((ConnectionError, RuntimeError)):
        call(text)


BASIC = base64.b64encode(b"ada:" + secret(14).encode()).decode()

# (what the shape is, its secret, how it is recorded). The first 42 are the issue's shapes.
SHAPES: list[tuple[str, str, Action]] = [
    # passwords in DSNs and URLs
    ("postgres DSN argument", secret(1), lambda r, s: take(f"postgres://ada:{s}@db:5432/app")),
    ("mysql DSN output", secret(2), lambda r, s: give(f"mysql://root:{s}@localhost/shop")),
    ("https URL with userinfo", secret(3), lambda r, s: take(f"https://ada:{s}@example.com/x")),
    ("redis URL, empty user", secret(4), lambda r, s: give(f"redis://:{s}@cache:6379/0")),
    ("mongodb+srv URL", secret(5), lambda r, s: take(f"mongodb+srv://u:{s}@c0.example.net/db")),
    ("amqp URL in an event", secret(6), lambda r, s: _emit(r, f"amqp://guest:{s}@mq//")),
    # secret-named query parameters
    ("?api_key=", secret(7), lambda r, s: take(f"https://api.example.com/v1?api_key={s}&q=1")),
    ("&token=", secret(8), lambda r, s: give(f"https://example.com/cb?state=ok&token={s}")),
    ("?access_token=", secret(9), lambda r, s: _emit(r, f"GET /me?access_token={s}")),
    ("&client_secret=", secret(10), lambda r, s: take(f"/oauth?client_id=app&client_secret={s}")),
    # ... also inside exception messages
    ("DSN in an exception", secret(11), lambda r, s: _raise(raises, f"no route to pg://a:{s}@db")),
    ("query in an exception", secret(12), lambda r, s: _raise(raises, f"403 for /x?apikey={s}")),
    # header lists of tuples
    ("Authorization tuple", secret(13), lambda r, s: take([("Authorization", f"Bearer {s}")])),
    ("Basic Authorization pair", secret(14), lambda r, s: give([("authorization", f"Basic {s}")])),
    ("X-Api-Key tuple", secret(15), lambda r, s: give(("X-Api-Key", s))),
    ("Cookie tuple", secret(16), lambda r, s: _emit(r, [("Cookie", f"sid={s}; theme=dark")])),
    ("bytes header pair", secret(17), lambda r, s: take([(b"authorization", f"Bearer {s}")])),
    ("header pair as a list", secret(18), lambda r, s: take([["Proxy-Authorization", s]])),
    # keys
    ("access_tokens", secret(19), lambda r, s: take({"access_tokens": [s, s]})),
    ("pwd", secret(20), lambda r, s: give({"user": "ada", "pwd": s})),
    ("passphrase", secret(21), lambda r, s: _emit(r, {"ssh": {"passphrase": s}})),
    ("auth", secret(22), lambda r, s: take({"auth": ("ada", s)})),
    ("GITHUB_PAT", secret(23), lambda r, s: take({"GITHUB_PAT": s})),
    ("*_TOKEN", secret(24), lambda r, s: give({"SLACK_BOT_TOKEN": s})),
    ("*_SECRET*", secret(25), lambda r, s: take({"AWS_SECRET_ACCESS_KEY": s})),
    ("*_KEY (an API key)", secret(26), lambda r, s: _emit(r, {"env": {"OPENAI_API_KEY": s}})),
    # a JSON string body
    ("JSON body with password", secret(27), lambda r, s: take(json.dumps({"password": s}))),
    (
        "JSON inside JSON",
        secret(28),
        lambda r, s: give(json.dumps({"body": json.dumps({"api_key": s})})),
    ),
    # bytes previews
    ("bytes preview", secret(29), lambda r, s: take(f"password={s}".encode())),
    ("bytearray preview", secret(30), lambda r, s: give(bytearray(f"token={s}".encode()))),
    # tags, skip and fail reasons, event types
    ("tag token=", secret(31), lambda r, s: r.client.start_run(tags=[f"token={s}"]).complete()),
    (
        "tag with a bearer header",
        secret(32),
        lambda r, s: r.client.start_run(tags=["prod", f"Authorization: Bearer {s}"]).complete(),
    ),
    ("skip reason (in a task)", secret(33), lambda r, s: skip_managed(f"api_key={s}")),
    ("skip reason (manual)", secret(34), lambda r, s: _skip_manual(r, f"cached; token: {s}")),
    ("fail reason", secret(35), lambda r, s: _fail_manual(r, f"password={s}")),
    ("event type", secret(36), lambda r, s: r.emit(f"webhook.sent?token={s}")),
    # curl-style command lines
    (
        "curl -H Authorization",
        secret(37),
        lambda r, s: take(f"curl -H 'Authorization: Bearer {s}'"),
    ),
    ("--password=", secret(38), lambda r, s: give(f"mysqldump --user=ada --password={s} shop")),
    ("--password value", secret(39), lambda r, s: take(f"psql --password {s} --host db")),
    ("curl -u user:password", secret(40), lambda r, s: take(f"curl -u ada:{s} https://x.example")),
    # Bearer tokens in any string; tracebacks
    ("Bearer in prose", secret(41), lambda r, s: _emit(r, f"retrying with Bearer {s} now")),
    ("chained traceback", secret(42), lambda r, s: _raise(raises_chained, f"https://a:{s}@db/")),
    # our own additions
    ("Basic in prose", BASIC, lambda r, s: take(f"sent Basic {s} to the proxy")),
    ("metadata set by the body", secret(43), lambda r, s: with_metadata(f"pg://a:{s}@db/app")),
    ("an object's repr", secret(44), lambda r, s: give(Holder(s))),
    ("an exception as a value", secret(45), lambda r, s: give(ValueError(f"bad token={s}"))),
    (
        "secret at the string limit",
        secret(46),
        lambda r, s: take("x" * 9_990 + f" password={s} and more"),
    ),
    ("tool error text", secret(47), lambda r, s: r.emit_tool_error("db", f"login pwd: {s}")),
    ("cancel reason", secret(48), lambda r, s: r.client.start_run().cancel(f"auth={s}")),
    ("YAML-like text", secret(49), lambda r, s: take(f"db:\n  user: ada\n  password: {s}\n")),
    ("Cookie header line", secret(50), lambda r, s: give(f"Cookie: theme=dark; sid={s}")),
    ("Set-Cookie header line", secret(51), lambda r, s: _emit(r, f"Set-Cookie: sid={s}; Path=/")),
    ("token in URL userinfo", "ghp" + secret(52) * 2, lambda r, s: take(f"https://{s}@github.com")),
    ("export line", secret(53), lambda r, s: give(f"export OPENAI_API_KEY={s}")),
    ("header pairs in a repr", secret(54), lambda r, s: _emit(r, str([("X-Api-Key", s)]))),
    ("JSON list of pairs", secret(55), lambda r, s: take(json.dumps([["Authorization", s]]))),
    ("python dict repr", secret(56), lambda r, s: give(str({"client_secret": s, "id": 1}))),
    ("run failed by exception", secret(57), lambda r, s: _fail_run(r, s)),
    ("run output", secret(58), lambda r, s: _complete_run(r, s)),
    ("run metadata set later", secret(59), lambda r, s: _run_changed_later(r, "db", s)),
    ("run tag added later", secret(60), lambda r, s: _run_changed_later(r, "tag", s)),
]


def _fail_run(run: taskscope.Run, text: str) -> None:
    run.client.start_run().fail(PermissionError(f"denied for mysql://a:{text}@db"))


def _complete_run(run: taskscope.Run, text: str) -> None:
    run.client.start_run().complete({"dsn": f"postgres://a:{text}@db"})


def _run_changed_later(run: taskscope.Run, what: str, text: str) -> None:
    other = run.client.start_run(metadata={"team": "search"}, tags=["prod"])
    if what == "db":
        other.metadata["database"] = f"mysql://root:{text}@db/shop"
    else:
        other.tags.append(f"api_key={text}")
    other.complete()


# Text that looks a little like a secret and is not one: kept exactly as it is.
INNOCENT = [
    "author",
    "keyboard",
    "token_count",
    "monkey=banana",
    "https://example.com/search?q=cats&page=2",
    "ssh://git@github.com/org/repo.git",
    "ada@example.com",
    "authority: the city council",
    "secretary_name=Ada",
    "keyboard: qwerty",
    "token_count=512",
    "max_tokens: 256",
    "basic usage",
    "Basic Authentication is described in RFC 7617",
    "the bearer of good news",
    "meet at 12:30, room host:8080",
    "x=1, y=2",
    "--verbose --output report.txt",
    "cache_key=user:42",
    "ratio 3:2 -- roughly",
]
INNOCENT_KEYS = {
    "author": "Ada",
    "authority": "council",
    "keyboard": "qwerty",
    "monkey": "banana",
    "secretary_name": "Grace",
    "token_count": 5,
    "input_tokens": 7,
    "max_tokens": 256,
    "tokenizer": "bpe",
    "cache_key": "user:42",
    "primary_key": "id",
    "session_id": "conversation-1",
}


class Outputs:
    """A client with all five exporters and everything each of them wrote."""

    def __init__(self, folder: Path) -> None:
        self.store = folder / "store.db"
        self.jsonl = folder / "records.jsonl"
        self.console = io.StringIO()
        self.spans = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.memory = InMemoryExporter()
        self.client = taskscope.Client(
            [
                LocalStore(self.store),
                JSONLExporter(self.jsonl),
                ConsoleExporter(self.console),
                OTelExporter(provider),
                self.memory,
            ]
        )

    def finish(self) -> dict[str, str]:
        """Every output as text, after the client delivered everything and shut down."""
        assert self.client.flush()
        self.client.shutdown()
        with contextlib.closing(sqlite3.connect(self.store)) as connection:
            dumped = "\n".join(connection.iterdump())
        raw = b"".join(path.read_bytes() for path in self.store.parent.glob("store.db*"))
        spans = [
            {
                "name": span.name,
                "status": span.status.description,
                "attributes": dict(span.attributes or {}),
                "events": [(e.name, dict(e.attributes or {})) for e in span.events],
            }
            for span in self.spans.get_finished_spans()
        ]
        return {
            "LocalStore": dumped + raw.decode("latin-1"),
            "JSONLExporter": self.jsonl.read_text(encoding="utf-8"),
            "ConsoleExporter": self.console.getvalue(),
            "OTelExporter": json.dumps(spans, ensure_ascii=False, default=str),
            "InMemoryExporter": repr(self.memory.records),
        }


def test_the_issue_lists_42_shapes_and_we_add_more() -> None:
    """The table holds the issue's 42 shapes and our own, each with a secret of its own."""
    assert len(SHAPES) >= 42 + 15
    assert len({s for _, s, _ in SHAPES}) == len(SHAPES)


def test_no_secret_shape_reaches_any_exporter(tmp_path: Path) -> None:
    """Each shape's secret is absent from the SQLite file, JSONL, console, spans and memory."""
    outputs = Outputs(tmp_path)
    with outputs.client.start_run(name="shapes") as run:
        for _, value, action in SHAPES:
            action(run, value)
    written = outputs.finish()
    leaks = [
        f"{shape} -> {exporter}"
        for shape, value, _ in SHAPES
        for exporter, text in written.items()
        if value in text
    ]
    assert leaks == []
    for exporter, text in written.items():
        assert "[REDACTED]" in text, exporter
    # What was around the secrets is still there to read.
    memory = outputs.memory
    first = next(t for t in memory.tasks if t.name == "take")
    assert first.input == {"value": "postgres://ada:[REDACTED]@db:5432/app"}
    skipped = memory.task("skip-managed")
    assert skipped.status == "skipped"
    assert skipped.metadata == {"skip_reason": "api_key=[REDACTED]"}
    assert memory.task("fail-manual").error is not None
    assert memory.task("fail-manual").error.message == "password=[REDACTED]"
    assert "webhook.sent?token=[REDACTED]" in [e.type for e in memory.events]
    tags = [r.tags for r in memory.runs if "prod" in r.tags]
    assert ["prod", "Authorization: Bearer [REDACTED]"] in tags
    assert ["prod", "api_key=[REDACTED]"] in tags  # a tag added after the start
    metadata = [r.metadata for r in memory.runs if r.metadata.get("team") == "search"]
    assert {"team": "search", "database": "mysql://root:[REDACTED]@db/shop"} in metadata
    chained = memory.task("raises-chained").error
    assert chained is not None and chained.traceback is not None
    assert "OSError: refused: https://a:[REDACTED]@db/" in chained.traceback


def test_innocent_text_and_keys_are_left_intact(tmp_path: Path) -> None:
    """author, keyboard, token_count, URLs without userinfo and the like come out unchanged."""
    outputs = Outputs(tmp_path)
    with outputs.client.start_run(name="innocent", tags=INNOCENT) as run:
        for text in INNOCENT:
            give(text)
            run.emit("innocent.seen", {"text": text})
        give(INNOCENT_KEYS)
        run.emit(INNOCENT[3])
    written = outputs.finish()
    memory = outputs.memory
    gives = [t for t in memory.tasks if t.name == "give" and t.end_ns is not None]
    assert [t.input for t in gives] == [{"value": v} for v in [*INNOCENT, INNOCENT_KEYS]]
    assert [t.output for t in gives] == [*INNOCENT, INNOCENT_KEYS]
    payloads = [e.payload for e in memory.events if e.type == "innocent.seen"]
    assert payloads == [{"text": text} for text in INNOCENT]
    assert memory.runs[-1].tags == INNOCENT
    assert "monkey=banana" in [e.type for e in memory.events]
    for exporter, text in written.items():
        assert "[REDACTED]" not in text, exporter
    with contextlib.closing(sqlite3.connect(tmp_path / "store.db")) as connection:
        stored = json.loads(
            connection.execute(
                "SELECT output FROM tasks WHERE name = 'give' ORDER BY seq DESC LIMIT 1"
            ).fetchone()[0]
        )
    assert stored == INNOCENT_KEYS


@pytest.mark.parametrize(
    "text",
    [
        *INNOCENT,
        "",
        "abc",
        "pw=",
        "abcd",
        "a-b-c",
        "--",
        "x--y",
        "'a',",
        '"",',
        "BeArEr",
        "BASIC",
        "bearish",
        "basil",
        "b",
        "xbasic",
        "Bearer",
        "naïve=1",
        "日本語:テキスト",
        "emoji 🎉 @ home",
        "ſecret baſic",
        "Kelvin \u212a",
        "\udcff lone surrogate: x",
        "\u0130stanbul basıc",
        "tab\there",
        "é" * 3 + "=",
        "ab\u0000=",
    ],
)
def test_the_c_and_python_tests_for_a_possible_secret_agree(text: str) -> None:
    """The C hot path keeps a string without a call exactly when Python would keep it."""
    expected = len(text) >= MIN_SHAPE_LENGTH and any(
        part in text.lower().encode("ascii", "replace").decode()
        for part in ("=", ":", "@", "--", "',", '",', "bearer", "basic")
    )
    assert _could_hold_secret_py(text) is expected
    assert could_hold_secret(text) is expected
    if _accel.compiled is not None:
        assert _accel.compiled.could_hold_secret(text) is expected


def test_the_c_and_python_tests_agree_on_random_text() -> None:
    """Random text from the characters that matter, in every string width, gets one answer."""
    if _accel.compiled is None:
        pytest.skip("the C module is not in use here")
    pieces = ["=", ":", "@", "-", "'", '"', ",", "b", "B", "e", "A", "r", "s", "I", "c"]
    pieces += ["bear", "EARER", "asic", " ", "é", "Ω", "\U0001f389", "\udcff", "ſ", "\u212a"]
    chooser = random.Random(13)
    for _ in range(5_000):
        text = "".join(chooser.choice(pieces) for _ in range(chooser.randint(0, 9)))
        assert _accel.compiled.could_hold_secret(text) is _could_hold_secret_py(text), text


@pytest.mark.parametrize(
    ("key", "secret_"),
    [
        ("access_tokens", True),
        ("pwd", True),
        ("passphrase", True),
        ("auth", True),
        ("GITHUB_PAT", True),
        ("SLACK_BOT_TOKEN", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("DJANGO_SECRET_KEY", True),
        ("OPENAI_API_KEY", True),
        ("STRIPE_KEY", True),
        ("x-api-key", True),
        ("Set-Cookie", True),
        ("session", True),
        ("JSESSIONID", True),
        ("PGPASSWORD", True),
        ("id_token", True),
        ("x-auth-token", True),
        ("AccountKey", True),
        ("author", False),
        ("authority", False),
        ("keyboard", False),
        ("monkey", False),
        ("token_count", False),
        ("secretary_name", False),
        ("cache_key", False),
        ("primary_key", False),
        ("session_id", False),
        ("next_token", False),
        ("eos_token", False),
        ("auth_type", False),
        ("password_length", False),
        ("secret_name", False),
        ("key", False),
    ],
)
def test_keys_are_judged_by_their_words(key: str, secret_: bool) -> None:
    """Word matching: api keys and *_TOKEN are secret; author, keyboard, token_count are not."""
    assert is_default_secret_key(key) is secret_
    assert Redactor().is_secret_key(key) is secret_


def test_shape_redaction_can_be_turned_off(
    taskscope_capture: taskscope.testing.Capture,
) -> None:
    """redact_shapes=False keeps captured text as given; keys and error messages still redact."""
    taskscope.configure(redact_shapes=False)
    with taskscope.run("off") as run:
        give({"dsn": "postgres://ada:pw1@db/app", "api_key": "k1"})
        run.start_task("manual").fail("password=pw2")
    assert taskscope_capture.task("give").output == {
        "dsn": "postgres://ada:pw1@db/app",
        "api_key": "[REDACTED]",
    }
    failed = taskscope_capture.task("manual").error
    assert failed is not None and failed.message == "password=[REDACTED]"


def test_value_patterns_add_shapes_of_your_own(
    taskscope_capture: taskscope.testing.Capture,
) -> None:
    """redact_value_patterns replaces a whole match, or its group named secret, anywhere."""
    taskscope.configure(
        redact_value_patterns=[r"sk-[A-Za-z0-9]{16,}", r"employee (?P<secret>\d{6})"]
    )
    with taskscope.run("custom"):
        give("key sk-abcdefghijklmnop1234 for employee 123456")
        give({"note": "sk-abcdefghijklmnop1234"})
        give("short")
    outputs = [t.output for t in taskscope_capture.tasks if t.name == "give"]
    assert outputs == [
        "key [REDACTED] for employee [REDACTED]",
        {"note": "[REDACTED]"},
        "short",
    ]
