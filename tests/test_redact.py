"""Secrets never leave the process: keys at any depth, error messages, user callbacks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import taskscope
from taskscope._redact import Redactor
from taskscope.exporters import InMemoryExporter, JSONLExporter

SECRETS = ("sk-live-abc123", "hunter2-db", "Bearer-ey-token-9", "cookie-val-77")


@pytest.mark.parametrize(
    "key",
    [
        "api_key",
        "apiKey",
        "X-API-Key",
        "Authorization",
        "db_password",
        "passwd",
        "client_secret",
        "access_token",
        "refreshToken",
        "token",
        "session_cookie",
        "credentials",
        "private_key",
    ],
)
def test_secret_keys_are_recognised(key: str) -> None:
    """Common credential names are secret keys, in any case and anywhere in the key."""
    assert Redactor().is_secret_key(key)


@pytest.mark.parametrize(
    "key",
    [
        "input_tokens",
        "output_tokens",
        "max_tokens",
        "token_count",
        "tokenizer",
        "authors",
        "author",
        "secretary",
        "tokens",
        "total_tokens",
        "cache_read_tokens",
        "token_type",
    ],
)
def test_data_keys_are_not_secret(key: str) -> None:
    """Token counts, authors and the like are data the timeline needs."""
    assert not Redactor().is_secret_key(key)


def test_secrets_at_any_depth_never_reach_any_exporter(tmp_path: Path) -> None:
    """api_key, Authorization and db_password in inputs, outputs, events and errors are redacted."""
    memory = InMemoryExporter()
    jsonl = tmp_path / "out.jsonl"
    client = taskscope.Client([memory, JSONLExporter(jsonl)])

    @taskscope.task("call-api")
    def call_api(config: dict[str, Any], api_key: str) -> dict[str, Any]:
        return {"headers": {"Authorization": "Bearer-ey-token-9"}, "rows": 3}

    @taskscope.task("connect")
    def connect(settings: list[Any]) -> None:
        raise ConnectionError(
            "login failed for db_password=hunter2-db with api_key: sk-live-abc123"
        )

    with client.start_run(input={"nested": [{"deeper": {"db_password": "hunter2-db"}}]}) as run:
        call_api({"service": {"auth": {"api_key": "sk-live-abc123"}}}, api_key="sk-live-abc123")
        run.emit(
            "http.sent",
            {
                "request": {
                    "headers": {"Cookie": "cookie-val-77", "Authorization": "Bearer-ey-token-9"}
                }
            },
        )
        run.emit_llm_response("model", "ok", usage={"input_tokens": 5, "output_tokens": 2})
        with pytest.raises(ConnectionError):
            connect([{"db_password": "hunter2-db"}])
        run.start_task("manual", input={"api_key": "sk-live-abc123"}).fail(
            "Authorization: Bearer-ey-token-9 was rejected"
        )
    assert client.flush()
    client.shutdown()

    dumped = json.dumps([repr(r) for r in memory.records]) + jsonl.read_text()
    for secret in SECRETS:
        assert secret not in dumped, secret
    assert "[REDACTED]" in dumped
    tokens_event = next(e for e in memory.events if e.type == "llm.response")
    assert tokens_event.payload["input_tokens"] == 5
    failed = next(t for t in memory.tasks if t.name == "connect")
    assert failed.error is not None
    assert "login failed" in failed.error.message
    assert failed.error.traceback is not None and "hunter2" not in failed.error.traceback


def test_user_patterns_are_added_to_the_defaults(
    taskscope_capture: taskscope.testing.Capture,
) -> None:
    """configure(redact_patterns=...) adds keys; the defaults still apply."""
    taskscope.configure(redact_patterns=[r"ssn"])

    @taskscope.task("person")
    def person(ssn: str, password: str, name: str) -> None:
        return None

    person("123-45-6789", "pw", "Ada")
    assert taskscope_capture.task("person").input == {
        "ssn": "[REDACTED]",
        "password": "[REDACTED]",
        "name": "Ada",
    }


def test_callback_sees_every_captured_value(taskscope_capture: taskscope.testing.Capture) -> None:
    """A redaction callback can rewrite what is recorded."""

    def mask_emails(value: Any) -> Any:
        return json.loads(json.dumps(value).replace("ada@example.com", "<email>"))

    taskscope.configure(redact_callback=mask_emails)
    take = taskscope.task("take")(lambda who: who)
    take({"email": "ada@example.com"})
    assert taskscope_capture.task("take").input == {"who": {"email": "<email>"}}
    assert taskscope_capture.task("take").output == {"email": "<email>"}


def test_failing_callback_drops_the_value(
    taskscope_capture: taskscope.testing.Capture, caplog: pytest.LogCaptureFixture
) -> None:
    """If the callback raises, the value is replaced, never sent raw, and the call goes on."""

    def broken(value: Any) -> Any:
        raise RuntimeError("oops")

    taskscope.configure(redact_callback=broken)
    take = taskscope.task("take")(lambda who: who)
    assert take("sk-live-abc123") == "sk-live-abc123"
    recorded = taskscope_capture.task("take")
    assert recorded.input == "[REDACTED: the redaction callback raised]"
    assert recorded.output == "[REDACTED: the redaction callback raised]"
    assert len([r for r in caplog.records if "redaction callback raised" in r.getMessage()]) == 1


def test_scrub_text_keeps_the_message_readable() -> None:
    """Free text keeps its words; only the secret values go."""
    text = Redactor().scrub_text(
        'failed: {"password": "pw1", "user": "ada"} token=abc Bearer abcdefghijkl'
    )
    assert "pw1" not in text and "abc " not in text and "abcdefghijkl" not in text
    assert '"user": "ada"' in text and text.startswith("failed:")


def test_tool_error_text_is_scrubbed(client: taskscope.Client, memory: InMemoryExporter) -> None:
    """emit_tool_error scrubs credentials written into its error text."""
    run = client.start_run()
    run.emit_tool_error("search", "auth failed with api_key=sk-live-abc123")
    run.complete()
    assert client.flush()
    (event,) = memory.events
    assert "sk-live-abc123" not in event.payload["error"]
    assert event.payload["error"].startswith("auth failed with api_key=")
