"""End to end against a real backend: examples/otel_phoenix.py into Arize Phoenix, read back.

Run by ``nox -s otel_e2e`` (which installs arize-phoenix and taskscope[otel] in its own
virtualenv). Starts ``phoenix serve`` on 127.0.0.1 on free ports with a temporary working
directory, waits for ``GET /healthz``, runs the example against ``/v1/traces``, then polls
Phoenix's REST API (``GET /v1/projects/{project}/spans?trace_id=…``; storage is asynchronous)
and checks names, parent links, statuses and ``input.value``; then the example's model call
(the openai SDK against the tests' fake API, recorded by ``instrument_openai``): an LLM span
with its model and token counts. The server is stopped by its pid whatever happens. Prints
Phoenix's start time and the total time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "otel_phoenix.py"
START_TIMEOUT = 180.0
SPANS_TIMEOUT = 60.0

# The example's spans: name -> parent name (None: the root), and how many of each.
PARENTS = {
    "pdf-agent": None,
    "parse-pdf": "pdf-agent",
    "classify-document": "pdf-agent",
    "gather-facts": "pdf-agent",
    "lookup-ticker": "gather-facts",
    "fetch-exchange-rate": "gather-facts",
    "summarise": "pdf-agent",
    "summarise-page": "summarise",
    "publish": "pdf-agent",
    "upload-summary": "publish",
}
COUNTS = Counter(dict.fromkeys(PARENTS, 1) | {"summarise-page": 3, "upload-summary": 2})
# The model call's trace: the run and its one llm task (the fake API's answer and usage).
LLM_SPANS = {"ask-model": None, "chat gpt-4o-mini": "ask-model"}
LLM_TOKENS = {"llm.token_count.prompt": 12, "llm.token_count.completion": 7}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def wait_healthy(base: str, server: subprocess.Popen[bytes], log: Path) -> float:
    """Seconds until GET /healthz answers 200; fails early if the server exits."""
    started = time.monotonic()
    while time.monotonic() - started < START_TIMEOUT:
        if server.poll() is not None:
            raise SystemExit(f"phoenix serve exited with {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"phoenix serve not healthy after {START_TIMEOUT:.0f} s:\n{log.read_text()}")


def run_example(endpoint: str, project: str) -> tuple[str, str]:
    """Run the example against ``endpoint``; the agent's and the model call's trace ids."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TASKSCOPE_", "OTEL_", "OPENAI_"))  # the fake model API answers
    }
    env |= {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "PHOENIX_PROJECT_NAME": project}
    with tempfile.TemporaryDirectory() as cwd:
        result = subprocess.run(
            [sys.executable, str(EXAMPLE)],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    print(result.stdout, end="")
    if result.returncode != 0:
        raise SystemExit(f"the example failed:\n{result.stderr}")
    if f"sent 15 spans to {endpoint}" not in result.stdout:
        raise SystemExit(f"the example did not send its spans to {endpoint}:\n{result.stderr}")
    ids = []
    for label in ("trace_id", "llm_trace_id"):
        match = re.search(rf"^{label}: ([0-9a-f]{{32}})$", result.stdout, re.MULTILINE)
        assert match is not None, f"the example printed no {label}"
        ids.append(match.group(1))
    return ids[0], ids[1]


def read_spans(base: str, project: str, trace_id: str, expected: int) -> list[dict[str, Any]]:
    """The trace's spans once Phoenix has stored all ``expected`` of them."""
    url = f"{base}/v1/projects/{project}/spans?trace_id={trace_id}&limit=1000"
    deadline = time.monotonic() + SPANS_TIMEOUT
    spans: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        try:
            spans = get_json(url)["data"]
        except urllib.error.HTTPError as problem:
            if problem.code != 404:  # 404: the project is made with its first span
                raise
        if len(spans) >= expected:
            return spans
        time.sleep(0.25)
    raise SystemExit(f"Phoenix stored {len(spans)} of {expected} spans in time")


def check(spans: list[dict[str, Any]], trace_id: str) -> None:
    """Names, parent links, statuses and input.value as the example recorded them."""
    assert Counter(span["name"] for span in spans) == COUNTS, Counter(s["name"] for s in spans)
    by_id = {span["context"]["span_id"]: span for span in spans}
    for span in spans:
        assert span["context"]["trace_id"] == trace_id
        parent = by_id[span["parent_id"]]["name"] if span["parent_id"] else None
        assert parent == PARENTS[span["name"]], (span["name"], parent)
    (root,) = (span for span in spans if span["parent_id"] is None)
    assert root["span_kind"] == "AGENT", root["span_kind"]
    statuses = Counter((span["name"], span["status_code"]) for span in spans)
    assert statuses[("upload-summary", "ERROR")] == 1, statuses
    assert statuses[("upload-summary", "OK")] == 1, statuses
    assert statuses[("classify-document", "UNSET")] == 1, statuses
    others = [s for s in spans if s["name"] not in ("upload-summary", "classify-document")]
    assert all(span["status_code"] == "OK" for span in others), statuses
    (failed,) = (s for s in spans if s["status_code"] == "ERROR")
    assert failed["status_message"].startswith("ConnectionError: storage unavailable")
    assert any(event["name"] == "exception" for event in failed["events"]), failed["events"]
    (parse,) = (s for s in spans if s["name"] == "parse-pdf")
    assert json.loads(parse["attributes"]["input.value"])["path"].endswith("report.txt")
    assert json.loads(root["attributes"]["input.value"])["path"].endswith("report.txt")
    pages = sorted(
        json.loads(s["attributes"]["input.value"])["number"]
        for s in spans
        if s["name"] == "summarise-page"
    )
    assert pages == [1, 2, 3], pages


def check_llm(spans: list[dict[str, Any]], trace_id: str) -> None:
    """The model call: an LLM span under its run, with the model and the token counts."""
    by_id = {span["context"]["span_id"]: span for span in spans}
    assert sorted(span["name"] for span in spans) == sorted(LLM_SPANS), [s["name"] for s in spans]
    for span in spans:
        assert span["context"]["trace_id"] == trace_id
        parent = by_id[span["parent_id"]]["name"] if span["parent_id"] else None
        assert parent == LLM_SPANS[span["name"]], (span["name"], parent)
    (call,) = (span for span in spans if span["name"] == "chat gpt-4o-mini")
    attributes = call["attributes"]
    assert call["span_kind"] == "LLM", call["span_kind"]  # from openinference.span.kind
    assert {key: attributes.get(key) for key in LLM_TOKENS} == LLM_TOKENS, attributes
    assert attributes["llm.model_name"] == "gpt-4o-mini-2026-01-01", attributes
    assert attributes["gen_ai.usage.input_tokens"] == 12, attributes
    assert attributes["gen_ai.request.model"] == "gpt-4o-mini", attributes
    assert call["status_code"] == "OK", call["status_code"]


def stop(server: subprocess.Popen[bytes]) -> None:
    """Stop the server by its pid: SIGTERM, then SIGKILL if it lingers."""
    if server.poll() is not None:
        return
    os.kill(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.kill(server.pid, signal.SIGKILL)
        server.wait(timeout=10)


def main() -> None:
    began = time.monotonic()
    phoenix = shutil.which("phoenix", path=str(Path(sys.executable).parent)) or "phoenix"
    port, grpc_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    project = f"taskscope-e2e-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="phoenix-") as workdir:
        env = os.environ | {
            "PHOENIX_HOST": "127.0.0.1",
            "PHOENIX_PORT": str(port),
            "PHOENIX_GRPC_PORT": str(grpc_port),
            "PHOENIX_WORKING_DIR": workdir,
            "PHOENIX_TELEMETRY_ENABLED": "false",
            "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
        }
        log = Path(workdir) / "phoenix.log"
        with log.open("wb") as output:
            server = subprocess.Popen(
                [phoenix, "serve"], env=env, stdout=output, stderr=subprocess.STDOUT
            )
        try:
            start_time = wait_healthy(base, server, log)
            print(f"phoenix serve (pid {server.pid}) healthy after {start_time:.1f} s at {base}")
            trace_id, llm_trace_id = run_example(f"{base}/v1/traces", project)
            spans = read_spans(base, project, trace_id, sum(COUNTS.values()))
            check(spans, trace_id)
            llm_spans = read_spans(base, project, llm_trace_id, len(LLM_SPANS))
            check_llm(llm_spans, llm_trace_id)
        finally:
            stop(server)
    print(f"ok: {len(spans)} spans of trace {trace_id} read back from Phoenix and checked")
    print(f"ok: the LLM span of trace {llm_trace_id} has its kind, model and token counts")
    print(f"phoenix start: {start_time:.1f} s; e2e total: {time.monotonic() - began:.1f} s")


if __name__ == "__main__":
    main()
