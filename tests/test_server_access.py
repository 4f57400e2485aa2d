"""Who may reach ``taskscope ui``: the Host check (DNS rebinding) and the read and ingest keys.

A real app under uvicorn on 127.0.0.1; a foreign Host is sent the way a rebound browser would
send it, as the ``Host`` header of a request to 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from taskscope import _agentos_api as api
from taskscope._errors import ConfigurationError
from taskscope.server import app as server_app
from taskscope.server._hosts import HostRule, host_name
from taskscope.server.app import create_app, serve_in_thread

INGEST = "ingest-key-0123"
READ = "read-key-4567"
START = {"agent_id": "agent"}


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "access.db"


def get(url: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.get(url, headers=headers or {})


def ingest(base: str, key: str, headers: dict[str, str] | None = None) -> httpx.Response:
    sent = {"authorization": f"Bearer {key}", **(headers or {})}
    return httpx.post(base + api.RUN_START, json=START, headers=sent)


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


# -- the Host check ----------------------------------------------------------------------------


@pytest.fixture
def loopback(db: Path) -> Iterator[str]:
    with serve_in_thread(create_app(db, ingest_key=INGEST)) as url:
        yield url


FOREIGN = [
    "evil.example",
    "evil.example:8765",
    "127.0.0.1.evil.example",
    "localhost.evil.example",
    "192.168.1.5",
    "[::2]:80",
    "x",
]


@pytest.mark.parametrize("host", FOREIGN)
def test_a_foreign_host_gets_421_on_a_page_a_read_api_and_an_ingest_api(
    loopback: str, host: str
) -> None:
    """A rebound name (or any name not allowed) is refused before any data is read or written."""
    page = get(loopback + "/", {"host": host})
    assert page.status_code == 421
    assert page.headers["content-type"] == "text/plain; charset=utf-8"
    assert "DNS rebinding" in page.text and "--allowed-host" in page.text
    assert page.headers["content-security-policy"] == "default-src 'self'"
    for answer in (
        get(loopback + "/api/runs", {"host": host}),
        ingest(loopback, INGEST, {"host": host}),
    ):
        assert answer.status_code == 421
        document = answer.json()
        assert document["data"] is None
        assert document["error"]["code"] == "MISDIRECTED_REQUEST"
        assert "--allowed-host" in document["error"]["message"]
    assert get(loopback + "/api/runs").json()["data"]["total"] == 0  # nothing was ingested


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:8765", "localhost", "LOCALHOST:1",
                                  "localhost.", "app.localhost:9", "[::1]", "[::1]:8765",
                                  "127.1.2.3:80"])  # fmt: skip
def test_loopback_names_with_any_port_are_answered(loopback: str, host: str) -> None:
    """The names a browser on this machine uses for it: pages, reads and ingest all work."""
    assert get(loopback + "/", {"host": host}).status_code == 200
    assert get(loopback + "/api/runs", {"host": host}).status_code == 200
    assert ingest(loopback, INGEST, {"host": host}).status_code == 200


def test_allowed_host_names_are_answered_and_others_still_refused(db: Path) -> None:
    """--allowed-host adds names; case and port do not matter."""
    made = create_app(db, ingest_key=INGEST, allowed_hosts=["Box.Lan", "ci-runner"])
    with serve_in_thread(made) as base:
        assert get(base + "/api/runs", {"host": "box.lan:8765"}).status_code == 200
        assert get(base + "/", {"host": "CI-RUNNER"}).status_code == 200
        assert get(base + "/api/runs", {"host": "evil.example"}).status_code == 421


def test_a_star_allows_any_host(db: Path) -> None:
    """--allowed-host '*' turns the check off, for a server behind a proxy that checks it."""
    with serve_in_thread(create_app(db, ingest_key=INGEST, allowed_hosts=["*"])) as base:
        assert get(base + "/api/runs", {"host": "anything.example"}).status_code == 200


def test_the_host_the_server_listens_on_is_answered(db: Path) -> None:
    """A server given --host NAME answers to NAME (here a name that maps to 127.0.0.1)."""
    made = create_app(db, ingest_key=INGEST, read_key=READ, host="ui.internal")
    with serve_in_thread(made) as base:
        assert (
            get(base + "/api/runs", {"host": "ui.internal:8765", **bearer(READ)}).status_code == 200
        )
        assert (
            get(base + "/api/runs", {"host": "other.internal", **bearer(READ)}).status_code == 421
        )


def test_listening_on_every_interface_allows_addresses_and_this_machines_name() -> None:
    """0.0.0.0: IP addresses (they cannot be rebound) and the host name pass; other names do not."""
    rule = HostRule("0.0.0.0")
    assert rule.allows("192.168.1.5:8765") and rule.allows("[fe80::1]:8765")
    assert rule.allows(socket.gethostname()) and rule.allows("localhost")
    assert not rule.allows("evil.example") and not rule.allows("evil.example:8765")
    assert HostRule("::").allows("10.0.0.7")
    assert not HostRule("127.0.0.1").allows("10.0.0.7")


def test_the_environment_adds_allowed_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    """TASKSCOPE_ALLOWED_HOSTS is comma-separated; blanks are ignored."""
    monkeypatch.setenv("TASKSCOPE_ALLOWED_HOSTS", " a.lan, ,b.lan:80 ")
    assert server_app.allowed_hosts_from_env() == ["a.lan", "b.lan:80"]
    rule = HostRule("127.0.0.1", server_app.allowed_hosts_from_env())
    assert rule.allows("a.lan:1") and rule.allows("b.lan") and not rule.allows("c.lan")


@pytest.mark.parametrize(
    ("header", "name"),
    [("Example.COM:80", "example.com"), ("[::1]:8765", "::1"), ("[::1]", "::1"), ("::1", "::1"),
     ("host.", "host"), ("host:notaport", "host:notaport"), ("", "")],
)  # fmt: skip
def test_host_names_are_read_without_port_brackets_case_or_final_dot(
    header: str, name: str
) -> None:
    """What the check compares: the bare, lower-case name."""
    assert host_name(header) == name


def test_the_cli_passes_allowed_hosts_on() -> None:
    """`taskscope ui --allowed-host A --allowed-host B` is accepted and listed in --help."""
    from taskscope import _cli

    args = _cli.build_parser().parse_args(["ui", "--allowed-host", "a.lan", "--allowed-host", "*"])
    assert args.allowed_host == ["a.lan", "*"]
    shown = subprocess.run(
        [sys.executable, "-m", "taskscope", "ui", "--help"], capture_output=True, text=True
    )
    assert "--allowed-host NAME" in shown.stdout


# -- the read and ingest keys ------------------------------------------------------------------


@pytest.fixture
def keyed(db: Path) -> Iterator[str]:
    """Loopback, with both keys set."""
    with serve_in_thread(create_app(db, ingest_key=INGEST, read_key=READ)) as url:
        yield url


def test_the_read_key_cannot_ingest(keyed: str) -> None:
    """A read key sent to an ingest endpoint is 401 UNAUTHENTICATED; nothing is stored."""
    answer = ingest(keyed, READ)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "UNAUTHENTICATED"
    assert get(keyed + "/api/runs", bearer(READ)).json()["data"]["total"] == 0


def test_the_ingest_key_cannot_read_when_a_read_key_is_set(keyed: str) -> None:
    """Pages and read APIs refuse the ingest key (and no key) once a read key exists."""
    assert ingest(keyed, INGEST).status_code == 200
    for headers in ({}, bearer(INGEST)):
        answer = get(keyed + "/api/runs", headers)
        assert answer.status_code == 401 and answer.json()["error"]["code"] == "UNAUTHENTICATED"
        assert get(keyed + "/", headers).status_code == 401
    assert get(keyed + f"/?key={INGEST}").status_code == 401
    assert get(keyed + "/", {"cookie": f"taskscope_key={INGEST}"}).status_code == 401


def test_the_read_key_reads_pages_and_apis(keyed: str) -> None:
    """Bearer header, or ?key= once and then the cookie."""
    run_id = ingest(keyed, INGEST).json()["data"]["run_id"]
    listed = get(keyed + "/api/runs", bearer(READ))
    assert listed.status_code == 200 and listed.json()["data"]["runs"][0]["id"] == run_id
    assert get(keyed + f"/api/runs/{run_id}", bearer(READ)).status_code == 200
    assert get(keyed + f"/?key={READ}").status_code == 303
    assert get(keyed + f"/runs/{run_id}", {"cookie": f"taskscope_key={READ}"}).status_code == 200


def test_loopback_reads_need_no_key_by_default(loopback: str) -> None:
    """No read key set, loopback: reading is open, ingest still wants its key."""
    assert get(loopback + "/api/runs").status_code == 200
    assert get(loopback + "/").status_code == 200
    assert ingest(loopback, "wrong").status_code == 401


def test_one_key_beyond_loopback_still_reads_and_ingests(db: Path) -> None:
    """Only TASKSCOPE_INGEST_KEY, --host 0.0.0.0: that key reads too, as before."""
    made = create_app(db, ingest_key=INGEST, host="0.0.0.0")
    with serve_in_thread(made) as base:
        assert get(base + "/api/runs").status_code == 401
        assert get(base + "/api/runs", bearer(INGEST)).status_code == 200
        assert ingest(base, INGEST).status_code == 200


def test_two_keys_beyond_loopback_keep_their_jobs(db: Path) -> None:
    """--host 0.0.0.0 with both keys: each key does its own job only."""
    made = create_app(db, ingest_key=INGEST, read_key=READ, host="0.0.0.0")
    with serve_in_thread(made) as base:
        assert get(base + "/api/runs", bearer(INGEST)).status_code == 401
        assert get(base + "/api/runs", bearer(READ)).status_code == 200
        assert ingest(base, READ).status_code == 401


def test_the_same_key_for_both_jobs_is_refused_with_the_fix(db: Path) -> None:
    """Equal keys would let readers ingest: a ConfigurationError that says what to do."""
    with pytest.raises(ConfigurationError, match="set only TASKSCOPE_INGEST_KEY"):
        create_app(db, ingest_key=INGEST, read_key=INGEST)


def test_keys_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """TASKSCOPE_UI_KEY is the read key; unset or blank means none."""
    monkeypatch.setenv("TASKSCOPE_UI_KEY", "  r-key ")
    assert server_app.read_key_from_env() == "r-key"
    monkeypatch.setenv("TASKSCOPE_UI_KEY", " ")
    assert server_app.read_key_from_env() is None
    monkeypatch.setenv("TASKSCOPE_INGEST_KEY", "i-key")
    assert server_app.ingest_key_from_env() == ("i-key", False)


@pytest.mark.parametrize(
    ("host", "read_key", "expected"),
    [("127.0.0.1", None, None), ("127.0.0.1", READ, READ), ("0.0.0.0", None, INGEST),
     ("0.0.0.0", READ, READ), ("::1", None, None)],
)  # fmt: skip
def test_which_key_reading_needs(host: str, read_key: Any, expected: Any) -> None:
    """The read key if set, anywhere; else the ingest key beyond loopback; else none."""
    assert server_app.effective_read_key(host, INGEST, read_key) == expected


def test_the_command_takes_keys_and_hosts_from_flags_and_environment(tmp_path: Path) -> None:
    """`taskscope ui` itself: TASKSCOPE_UI_KEY, TASKSCOPE_ALLOWED_HOSTS and --allowed-host."""
    env = {
        **os.environ,
        "TASKSCOPE_INGEST_KEY": INGEST,
        "TASKSCOPE_UI_KEY": READ,
        "TASKSCOPE_ALLOWED_HOSTS": "env.lan",
    }
    command = [sys.executable, "-m", "taskscope", "ui", "--db", str(tmp_path / "cli.db"),
               "--port", "0", "--allowed-host", "flag.lan"]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        assert process.stdout is not None
        serving = process.stdout.readline()
        assert serving.startswith("taskscope ui: serving http://127.0.0.1:")
        assert (
            process.stdout.readline()
            == "taskscope ui: reading needs the read key ($TASKSCOPE_UI_KEY)\n"
        )
        base = serving.split()[3]
        # The line comes once the port is bound; the transport retries until it also listens.
        with httpx.Client(transport=httpx.HTTPTransport(retries=8)) as client:
            for host, status in (("flag.lan", 200), ("env.lan:80", 200), ("evil.example", 421)):
                answer = client.get(base + "/api/runs", headers={"host": host, **bearer(READ)})
                assert answer.status_code == status, host
            assert client.get(base + "/api/runs", headers=bearer(INGEST)).status_code == 401
            sent = client.post(base + api.RUN_START, json=START, headers=bearer(READ))
            assert sent.status_code == 401
            sent = client.post(base + api.RUN_START, json=START, headers=bearer(INGEST))
            assert sent.status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
