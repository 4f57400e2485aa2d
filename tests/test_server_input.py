"""What clients can send to the ingest API: every value answers 200 or 4xx, never 500.

A real ``taskscope ui`` app under uvicorn on 127.0.0.1 and a real SQLite file; what was stored
is read back through the read API, as the UI would show it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest

from taskscope import _agentos_api as api
from taskscope import _store
from taskscope.server.app import create_app, serve_in_thread

KEY = "ingest-key-for-tests"
WHEN = "2025-06-01T12:00:00Z"
AUTH = {"authorization": f"Bearer {KEY}"}


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "ingest.db"


@pytest.fixture
def base(db: Path) -> Iterator[str]:
    with serve_in_thread(create_app(db, ingest_key=KEY)) as url:
        yield url


def post(base: str, path: str, body: Any) -> httpx.Response:
    """POST ``body`` (JSON text as given when bytes or str, else dumped with escapes)."""
    if isinstance(body, str):
        content = body.encode()
    elif isinstance(body, bytes):
        content = body
    else:
        content = json.dumps(body).encode()  # ensure_ascii: "\ud800" goes as an escape
    return httpx.post(base + path, content=content, headers=AUTH)


def start(base: str, **fields: Any) -> str:
    answer = post(base, api.RUN_START, {"agent_id": "agent", **fields})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["data"]["run_id"])


def shown(base: str, run_id: str) -> dict[str, Any]:
    answer = httpx.get(f"{base}/api/runs/{run_id}")
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()["data"]
    return data


def assert_refused(answer: httpx.Response, words: str = "") -> None:
    assert answer.status_code == 400, answer.text
    document = answer.json()
    assert document["data"] is None
    assert document["error"]["code"] == "VALIDATION_ERROR"
    assert words in document["error"]["message"]


def event(**fields: Any) -> dict[str, Any]:
    return {"type": "step", "level": "info", "payload": {}, "occurred_at": WHEN, **fields}


def span(span_id: str, parent: str | None = None) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "span_id": span_id,
        "started_at": WHEN,
        "ended_at": WHEN,
        "duration_ms": 0,
    }
    if parent is not None:
        fields["parent_span_id"] = parent
    return event(type=f"span-{span_id}", **fields)


# -- lone surrogates: stored escaped, as LocalStore stores them, and shown -------------------------


def test_a_lone_surrogate_in_a_run_name_is_stored_as_its_escape(base: str, db: Path) -> None:
    """agent_id "a\\ud800b" (a JSON escape) names the run with the six characters \\ud800."""
    run_id = start(base, agent_id="a\ud800b")
    assert shown(base, run_id)["run"]["name"] == "a\\ud800b"
    listed = httpx.get(f"{base}/api/runs").json()["data"]["runs"]
    assert [(run["id"], run["name"]) for run in listed] == [(run_id, "a\\ud800b")]
    with closing(sqlite3.connect(db)) as connection:
        (name,) = connection.execute("SELECT name FROM runs").fetchone()
    assert name == "a\\ud800b"


def test_lone_surrogates_in_a_task_are_kept_escaped_and_sent_back_as_sent(
    base: str, db: Path
) -> None:
    """Name and id: the escape as text. Input and output: JSON escapes, read back exactly."""
    run_id = start(base)
    task = {
        "id": "t\udfff",
        "name": "n\udc80",
        "status": "completed",
        "input": {"k\ud801": "v\ud802"},
        "output": ["\udbff"],
    }
    answer = post(base, api.TASKS, {"run_id": run_id, "task": task})
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"] == {"task_id": "t\\udfff", "status": "completed"}
    (stored,) = shown(base, run_id)["tasks"]
    assert (stored["id"], stored["name"], stored["status"]) == (
        "t\\udfff",
        "n\\udc80",
        "completed",
    )
    assert stored["input"] == {"k\ud801": "v\ud802"} and stored["output"] == ["\udbff"]
    with closing(sqlite3.connect(db)) as connection:
        (text,) = connection.execute("SELECT input FROM tasks").fetchone()
    assert text == '{"k\\ud801":"v\\ud802"}'  # the JSON escapes, as LocalStore writes them


def test_a_lone_surrogate_in_an_event_type_and_payload_key_is_kept_escaped(base: str) -> None:
    """Events keep their place in the stream; the payload reads back as sent."""
    run_id = start(base)
    batch = [event(type="e\ud800", payload={"\udc00": "x"})]
    answer = post(base, api.EVENTS, {"run_id": run_id, "events": batch})
    assert answer.status_code == 200 and answer.json()["data"] == {"accepted": 1}
    (stored,) = shown(base, run_id)["events"]
    assert (stored["type"], stored["payload"], stored["seq"]) == ("e\\ud800", {"\udc00": "x"}, 1)


def test_a_lone_surrogate_in_a_failure_message_is_kept(base: str) -> None:
    """run/fail's error_message is part of the error JSON: it reads back as sent."""
    run_id = start(base)
    answer = post(base, api.RUN_FAIL, {"run_id": run_id, "error_message": "bad \udcff"})
    assert answer.status_code == 200, answer.text
    assert shown(base, run_id)["run"]["error"] == {"message": "bad \udcff"}


def test_a_surrogate_pair_is_one_character_not_two_escapes(base: str) -> None:
    """A valid escaped pair (an emoji) is kept as the character it encodes."""
    run_id = start(base, agent_id="\ud83d\ude00")
    assert shown(base, run_id)["run"]["name"] == "\U0001f600"


# -- times ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "moment", ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "9999-12-31T23:59:59-14:00",
               "1969-12-31T23:59:59Z"],
)  # fmt: skip
def test_a_time_outside_what_the_store_holds_is_a_400(base: str, moment: str) -> None:
    """Years 0001 and 9999 (and any time before 1970) are refused, naming the field."""
    run_id = start(base)
    answer = post(base, api.EVENTS, {"run_id": run_id, "events": [event(occurred_at=moment)]})
    assert_refused(answer, "events[0].occurred_at")
    assert "outside the times taskscope stores" in answer.json()["error"]["message"]
    assert shown(base, run_id)["events"] == []


def test_a_span_with_year_9999_is_a_400_too(base: str) -> None:
    """started_at and ended_at of a span are checked like occurred_at."""
    run_id = start(base)
    late = {**span("s"), "ended_at": "9999-01-01T00:00:00Z"}
    assert_refused(post(base, api.EVENTS, {"run_id": run_id, "events": [late]}), "ended_at")


# -- deep, non-finite and huge JSON ----------------------------------------------------------------


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [101, 1_000, 100_000])
def test_deeply_nested_input_is_a_400(base: str, depth: int) -> None:
    """Input nested 101, 1,000 or 100,000 levels: VALIDATION_ERROR, not a crash."""
    body = '{"agent_id": "a", "input": {"x": ' + nested(depth) + "}}"
    assert_refused(post(base, api.RUN_START, body), "nests deeper")


def test_a_body_nested_1000_levels_is_a_400(base: str) -> None:
    """The body itself 1,000 arrays deep (RecursionError in the parser) is a 400."""
    assert_refused(post(base, api.RUN_START, nested(1_000)))


def test_input_nested_100_levels_is_stored_and_shown(base: str) -> None:
    """Up to the limit, nesting is kept as sent."""
    value: Any = "leaf"
    for _ in range(98):
        value = [value]
    run_id = start(base, input={"deep": value})
    assert shown(base, run_id)["run"]["input"] == {"deep": value}


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400", "-1e999"])
def test_non_finite_numbers_are_a_400(base: str, number: str) -> None:
    """NaN, Infinity and floats that overflow have no JSON form for the answer: refused."""
    body = '{"agent_id": "a", "input": {"x": ' + number + "}}"
    assert_refused(post(base, api.RUN_START, body), "not valid JSON")


def test_a_huge_integer_is_stored_or_refused_never_a_500(base: str) -> None:
    """A 5,000-digit integer is over Python's int-from-text limit: refused (3.11+)."""
    body = '{"agent_id": "a", "input": {"x": ' + "9" * 5_000 + "}}"
    answer = post(base, api.RUN_START, body)
    assert answer.status_code in (200, 400), answer.text


def test_a_big_integer_within_limits_is_kept_exactly(base: str) -> None:
    """2**80 in a payload and in token usage comes back exactly."""
    run_id = start(base, input={"x": 2**80})
    answer = post(base, api.RUN_COMPLETE, {"run_id": run_id, "input_tokens": 2**70})
    assert answer.status_code == 200, answer.text
    run = shown(base, run_id)["run"]
    assert run["input"] == {"x": 2**80} and run["usage"] == {"input_tokens": 2**70}


def test_invalid_utf8_in_the_body_is_a_400(base: str) -> None:
    """Raw bytes that are not UTF-8 are not JSON."""
    assert_refused(post(base, api.RUN_START, b'{"agent_id": "\xff\xfe"}'), "not valid JSON")


# -- wrong types anywhere -------------------------------------------------------------------------

WRONG: list[Any] = [5, 1.5, True, [], {}, ["x"], {"a": 1}, "", "text"]


def _cases(run_id: str) -> list[tuple[str, dict[str, Any], str]]:
    """(path, body, field) for every field of every endpoint, given a wrong-typed value."""
    task = {"id": "t", "name": "n", "status": "running"}
    cases: list[tuple[str, dict[str, Any], str]] = []
    for value in WRONG:
        cases += [
            (api.RUN_START, {"agent_id": value}, "agent_id"),
            (api.RUN_START, {"agent_id": "a", "trigger_type": value}, "trigger_type"),
            (api.RUN_START, {"agent_id": "a", "external_run_id": value}, "external_run_id"),
            (api.RUN_START, {"agent_id": "a", "parent_run_id": value}, "parent_run_id"),
            (api.RUN_START, {"agent_id": "a", "input": value}, "input"),
            (api.EVENTS, {"run_id": value, "events": [event()]}, "run_id"),
            (api.EVENTS, {"run_id": run_id, "events": value}, "events"),
            (api.EVENTS, {"run_id": run_id, "events": [value]}, "events[0]"),
            (api.EVENTS, {"run_id": run_id, "events": [event(type=value)]}, "type"),
            (api.EVENTS, {"run_id": run_id, "events": [event(level=value)]}, "level"),
            (api.EVENTS, {"run_id": run_id, "events": [event(payload=value)]}, "payload"),
            (api.EVENTS, {"run_id": run_id, "events": [event(occurred_at=value)]}, "occurred_at"),
            (api.EVENTS, {"run_id": run_id, "events": [{**span("s"), "span_id": value}]}, "span"),
            (api.EVENTS, {"run_id": run_id, "events": [span("s", value)]}, "parent_span_id"),
            (api.EVENTS, {"run_id": run_id, "events": [{**span("s"), "duration_ms": value}]},
             "duration_ms"),
            (api.EVENTS, {"run_id": run_id, "events": [{**span("s"), "kind": value}]}, "kind"),
            (api.EVENTS, {"run_id": run_id, "events": [{**span("s"), "started_at": value}]},
             "started_at"),
            (api.TASKS, {"run_id": run_id, "task": value}, "task"),
            (api.TASKS, {"run_id": run_id, "task": {**task, "id": value}}, "task.id"),
            (api.TASKS, {"run_id": run_id, "task": {**task, "name": value}}, "task.name"),
            (api.TASKS, {"run_id": run_id, "task": {**task, "status": value}}, "task.status"),
            (api.TASKS, {"run_id": run_id, "task": {**task, "error_message": value}},
             "task.error_message"),
            (api.RUN_COMPLETE, {"run_id": run_id, "input_tokens": value}, "input_tokens"),
            (api.RUN_FAIL, {"run_id": run_id, "error_message": value}, "error_message"),
            (api.RUN_FAIL, {"run_id": run_id, "error_message": "x", "error_detail": value},
             "error_detail"),
            (api.RUN_CANCEL, {"run_id": run_id, "reason": value}, "reason"),
        ]  # fmt: skip
    return cases


def test_every_field_with_a_wrong_type_answers_200_or_400_in_the_envelope(base: str) -> None:
    """Numbers, booleans, lists, objects and strings in every field: never a 500."""
    statuses: dict[int, int] = {}
    for path, body, field in _cases(start(base)):
        answer = post(base, path, body)
        assert answer.status_code in (200, 400, 404), (path, body, answer.text)
        document = answer.json()
        assert set(document) == {"data", "error"}, (path, field)
        if answer.status_code != 200:
            assert document["data"] is None and document["error"]["code"] in (
                "VALIDATION_ERROR",
                "NOT_FOUND",
            )
        statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
    assert statuses.get(500) is None and statuses[400] > 150


@pytest.mark.parametrize("name", [5, None, ["x"], {"n": 1}, True, 1.5])
def test_a_task_name_that_is_not_a_string_is_a_400_naming_the_field(base: str, name: Any) -> None:
    """Non-str names are refused at the door, so nothing odd is stored."""
    run_id = start(base)
    task = {"id": "t", "name": name, "status": "running"}
    assert_refused(post(base, api.TASKS, {"run_id": run_id, "task": task}), "task.name")
    assert shown(base, run_id)["tasks"] == []


# -- parent cycles --------------------------------------------------------------------------------


def _reachable(tasks: list[dict[str, Any]]) -> set[str]:
    """The tasks the UI's tree shows: those whose parent chain ends at the run."""
    parents = {task["id"]: task["parent_id"] for task in tasks}
    shown_ids: set[str] = set()
    for task_id in parents:
        seen: set[str] = set()
        cursor: str | None = task_id
        while cursor is not None and cursor in parents and cursor not in seen:
            seen.add(cursor)
            cursor = parents[cursor]
        if cursor is None or cursor not in parents:
            shown_ids.add(task_id)
    return shown_ids


def test_a_parent_cycle_sent_as_spans_is_broken_and_noted(base: str, db: Path) -> None:
    """A under B, B under A, C under A, D under C: all four shown, B's loop link noted."""
    run_id = start(base)
    batch = [span("A", "B"), span("B", "A"), span("C", "A"), span("D", "C")]
    answer = post(base, api.EVENTS, {"run_id": run_id, "events": batch})
    assert answer.status_code == 200 and answer.json()["data"] == {"accepted": 4}
    tasks = shown(base, run_id)["tasks"]
    assert [(t["id"], t["parent_id"], t["metadata"]) for t in tasks] == [
        ("A", "B", {}),
        ("B", None, {"parent_cycle": "A"}),
        ("C", "A", {}),
        ("D", "C", {}),
    ]
    assert _reachable(tasks) == {"A", "B", "C", "D"}
    # The rows themselves hold no loop, so the CLI (which reads them) shows every task too.
    with closing(sqlite3.connect(db)) as connection:
        rows = dict(connection.execute("SELECT id, parent_id FROM tasks").fetchall())
    assert rows == {"A": "B", "B": None, "C": "A", "D": "C"}


def test_a_task_that_is_its_own_parent_is_shown_under_the_run(base: str) -> None:
    """span_id == parent_span_id: stored without the parent, noted."""
    run_id = start(base)
    assert post(base, api.EVENTS, {"run_id": run_id, "events": [span("S", "S")]}).status_code == 200
    (task,) = shown(base, run_id)["tasks"]
    assert (task["parent_id"], task["metadata"]) == (None, {"parent_cycle": "S"})


def test_a_span_merged_into_an_upserted_task_cannot_close_a_loop(base: str) -> None:
    """Task X upserted, Y's span under X, then X's span under Y: X keeps no parent, noted."""
    run_id = start(base)
    task = {"id": "X", "name": "x", "status": "running"}
    assert post(base, api.TASKS, {"run_id": run_id, "task": task}).status_code == 200
    for item in (span("Y", "X"), span("X", "Y")):
        assert post(base, api.EVENTS, {"run_id": run_id, "events": [item]}).status_code == 200
    tasks = {t["id"]: t for t in shown(base, run_id)["tasks"]}
    assert (tasks["X"]["parent_id"], tasks["X"]["metadata"]) == (None, {"parent_cycle": "Y"})
    assert tasks["Y"]["parent_id"] == "X"
    assert _reachable(list(tasks.values())) == {"X", "Y"}


# -- sequence numbers -----------------------------------------------------------------------------


def test_sequence_numbers_follow_arrival_across_endpoints(base: str, db: Path) -> None:
    """Run start 0, then each event, new task, task end and the run end take the next number."""
    run_id = start(base)
    post(base, api.EVENTS, {"run_id": run_id, "events": [event(type="a"), event(type="b")]})
    post(base, api.TASKS, {"run_id": run_id, "task": {"id": "t", "name": "t", "status": "running"}})
    post(base, api.TASKS, {"run_id": run_id, "task": {"id": "t", "name": "t", "status": "running"}})
    post(base, api.EVENTS, {"run_id": run_id, "events": [span("s"), event(type="c")]})
    post(base, api.TASKS, {"run_id": run_id, "task": {"id": "t", "name": "t", "status": "failed"}})
    assert post(base, api.RUN_COMPLETE, {"run_id": run_id}).status_code == 200
    data = shown(base, run_id)
    assert [(e["type"], e["seq"]) for e in data["events"]] == [("a", 1), ("b", 2), ("c", 5)]
    assert [(t["id"], t["seq"], t["end_seq"]) for t in data["tasks"]] == [
        ("t", 3, 6),
        ("s", 4, 4),
    ]
    assert (data["run"]["seq"], data["run"]["end_seq"]) == (0, 7)


def test_a_run_started_before_the_counter_existed_continues_its_stream(base: str, db: Path) -> None:
    """Without its counter row (an older taskscope ui started it), the run goes on after its
    last stored number."""
    run_id = start(base)
    post(base, api.EVENTS, {"run_id": run_id, "events": [event(type="a"), event(type="b")]})
    with closing(_store.connect(db, create=True)) as connection:
        connection.execute("DELETE FROM ingest_seq")
    post(base, api.EVENTS, {"run_id": run_id, "events": [event(type="c")]})
    assert [(e["type"], e["seq"]) for e in shown(base, run_id)["events"]] == [
        ("a", 1),
        ("b", 2),
        ("c", 3),
    ]
