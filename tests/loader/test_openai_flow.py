"""A flow calling ``/builtin/openai`` (after ``/builtin/create_messages``), end to end.

The flow (``tests/cli_data/openai_chat.yaml``) runs against a stub
OpenAI-compatible server started on 127.0.0.1 for each test. The stub answers
deterministically from the request (the last user message, reversed) and records
every request, so a test can check what was sent and count the attempts.

The base URL reaches the builtin three ways: the run variable ``openai_base_url``
(``load_flow(variables=...)``, ``run(variables=...)``, ``--var``), or the
environment variable ``OPENAI_BASE_URL``.

Nothing leaves the machine: every ``OPENAI_*`` and proxy variable is removed, and
``HTTPS_PROXY`` points at a closed local port, so a request that fell through to
the default ``https://api.openai.com/v1`` would fail at 127.0.0.1 instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from _support import free_port as closed_port
from _support import run_cli, serving

from pocketbatch import load_flow
from pocketbatch.core import Event, EventKind

FLOW = Path(__file__).parent.parent / "cli_data" / "openai_chat.yaml"

QUESTION = "hello world"
SENT_MESSAGES = [
    {"role": "system", "content": "Answer backwards."},
    {"role": "user", "content": QUESTION},
]

# --------------------------------------------------------------------------- the stub server


@dataclass(frozen=True)
class Request:
    """One request the stub received."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON, or the raw text when it is not JSON


def completion(request: Request) -> dict[str, Any]:
    """The stub's deterministic chat completion: the last user message, reversed."""
    messages = request.body["messages"]
    last = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    answer = last[::-1]
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "model": f"{request.body['model']}@stub",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": len(messages),
            "completion_tokens": len(answer),
            "total_tokens": len(messages) + len(answer),
        },
    }


@dataclass
class Stub:
    """What a test sees of the server: its base URL, the requests, the scripted failures."""

    base_url: str = ""
    requests: list[Request] = field(default_factory=list)
    failures: list[tuple[int, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, status: int, body: str, *, times: int) -> None:
        """Answer the next ``times`` requests with ``status`` and ``body``."""
        with self.lock:
            self.failures.extend([(status, body)] * times)

    def record(self, request: Request) -> tuple[int, bytes]:
        with self.lock:
            self.requests.append(request)
            failure = self.failures.pop(0) if self.failures else None
        if failure is not None:
            return failure[0], failure[1].encode()
        if request.method != "POST" or request.path != "/v1/chat/completions":
            return 404, json.dumps({"error": f"no route {request.method} {request.path}"}).encode()
        return 200, json.dumps(completion(request)).encode()


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8")
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw
        request = Request(
            self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
        )
        status, payload = self.server.stub.record(request)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST

    def log_message(self, format: str, *args: Any) -> None:  # keep stderr quiet
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True  # server_close() joins every handler thread
    request_queue_size = 64  # the default backlog of 5 drops connects when many runs at once

    def __init__(self, stub: Stub) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)  # port 0: a free port
        self.stub = stub


@pytest.fixture
def stub() -> Iterator[Stub]:
    state = Stub()
    server = _Server(state)
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    with serving(server):
        yield state


@pytest.fixture(autouse=True)
def _local_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """No OPENAI_* settings and no proxies from the environment; https goes nowhere."""
    for name in list(os.environ):
        if name.upper().startswith("OPENAI_") or name.upper() in (
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "NO_PROXY",
        ):
            monkeypatch.delenv(name)
    # The builtin's last resort is https://api.openai.com/v1: such a request would go to this
    # dead local proxy and fail UNREACHABLE. The stub is plain http, so it is not proxied.
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{closed_port()}")


# --------------------------------------------------------------------------- helpers


def run_observed(flow: Any, input: Any, **kwargs: Any) -> tuple[Any, list[Event]]:
    seen: list[Event] = []
    result = asyncio.run(flow.run_async(input, observer=seen.append, **kwargs))
    return result, seen


def retries(events: list[Event]) -> list[int | None]:
    """The attempt numbers of the chat step's RETRIED events."""
    return [e.attempt for e in events if e.kind is EventKind.RETRIED and e.node == "chat"]


def cli(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=env)


EXPECTED = {
    "answer": "dlrow olleh",
    "model": "stub-model@stub",
    "usage": {"prompt_tokens": 2, "completion_tokens": 11, "total_tokens": 13},
}


def assert_one_good_request(stub: Stub) -> None:
    [request] = stub.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.body == {
        "model": "stub-model",
        "messages": SENT_MESSAGES,
        "max_tokens": 32,
        "temperature": 0,
    }
    assert request.headers["content-type"] == "application/json"
    assert "authorization" not in request.headers  # no key anywhere, so none is sent


# --------------------------------------------------------------------------- the base URL


def test_base_url_from_load_flow_variables(stub: Stub) -> None:
    flow = load_flow(FLOW, variables={"openai_base_url": stub.base_url})
    result = flow.run({"question": QUESTION})
    assert result.to_dict() == {"outcome": "success", "result": EXPECTED}
    assert dict(result.steps) == {"messages": "completed", "chat": "completed"}
    assert_one_good_request(stub)


def test_base_url_with_a_trailing_slash(stub: Stub) -> None:
    flow = load_flow(FLOW, variables={"openai_base_url": stub.base_url + "/"})
    assert flow.run({"question": QUESTION}).ok
    assert stub.requests[0].path == "/v1/chat/completions"


def test_base_url_from_run_variables(stub: Stub) -> None:
    flow = load_flow(FLOW)
    result = flow.run({"question": QUESTION}, variables={"openai_base_url": stub.base_url})
    assert result.to_dict() == {"outcome": "success", "result": EXPECTED}
    assert_one_good_request(stub)


def test_run_variables_override_load_flow_variables(stub: Stub) -> None:
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    flow = load_flow(FLOW, variables={"openai_base_url": dead})
    result = flow.run({"question": QUESTION}, variables={"openai_base_url": stub.base_url})
    assert result.ok, result.error
    assert len(stub.requests) == 1


def test_base_url_from_the_environment(stub: Stub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
    result = load_flow(FLOW).run({"question": QUESTION})
    assert result.to_dict() == {"outcome": "success", "result": EXPECTED}
    assert_one_good_request(stub)


def test_the_variable_beats_the_environment(stub: Stub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{closed_port()}/v1")
    flow = load_flow(FLOW, variables={"openai_base_url": stub.base_url})
    assert flow.run({"question": QUESTION}).ok
    assert len(stub.requests) == 1


def test_api_key_and_model_variables(stub: Stub) -> None:
    flow = load_flow(
        FLOW,
        variables={
            "openai_base_url": stub.base_url,
            "openai_api_key": "sk-test-key",
            "openai_model": "ignored-model",  # the step's input names its model, and wins
        },
    )
    result = flow.run({"question": QUESTION})
    assert result.ok
    [request] = stub.requests
    assert request.headers["authorization"] == "Bearer sk-test-key"
    assert request.body["model"] == "stub-model"
    assert "sk-test-key" not in json.dumps(result.to_dict())


def test_many_inputs_at_once_each_get_their_own_answer(stub: Stub) -> None:
    flow = load_flow(FLOW, variables={"openai_base_url": stub.base_url})
    questions = [f"question number {i}" for i in range(8)]

    async def all_of_them() -> list[Any]:
        return await asyncio.gather(*(flow.run_async({"question": q}) for q in questions))

    results = asyncio.run(all_of_them())
    assert [r.result["answer"] for r in results] == [q[::-1] for q in questions]
    asked = sorted(r.body["messages"][-1]["content"] for r in stub.requests)
    assert asked == sorted(questions)


def test_invalid_input_never_reaches_the_server(stub: Stub) -> None:
    flow = load_flow(FLOW, variables={"openai_base_url": stub.base_url})
    result = flow.run({"question": 42})
    assert result.outcome == "failed"
    assert result.error is not None
    assert result.error.code == "INVALID_INPUT"
    assert stub.requests == []


def test_without_any_base_url_it_would_call_the_default_and_stays_local() -> None:
    # The default URL goes through the autouse dead proxy: UNREACHABLE, retried, no stub.
    result, events = run_observed(load_flow(FLOW), {"question": QUESTION})
    assert result.outcome == "failed"
    assert result.error is not None
    assert result.error.code == "UNREACHABLE"
    assert result.error.message.startswith(
        "/builtin/openai: cannot reach https://api.openai.com/v1/chat/completions"
    )
    assert retries(events) == [1, 2]


# --------------------------------------------------------------------------- the CLI


def test_cli_var_openai_base_url(stub: Stub) -> None:
    proc = cli(
        "run",
        "--flow",
        FLOW,
        "--input",
        json.dumps({"question": QUESTION}),
        "--var",
        f"openai_base_url={stub.base_url}",
    )
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout.count("\n") == 1
    assert json.loads(proc.stdout) == {"outcome": "success", "result": EXPECTED}
    assert_one_good_request(stub)


def test_cli_environment_openai_base_url(stub: Stub) -> None:
    proc = cli(
        "run",
        "--flow",
        FLOW,
        "--input",
        json.dumps({"question": QUESTION}),
        env={"OPENAI_BASE_URL": stub.base_url},
    )
    assert (proc.returncode, proc.stderr) == (0, "")
    assert json.loads(proc.stdout) == {"outcome": "success", "result": EXPECTED}
    assert_one_good_request(stub)


def test_cli_api_key_var_reaches_the_header_and_not_the_output(stub: Stub) -> None:
    proc = cli(
        "run",
        "--flow",
        FLOW,
        "--input",
        json.dumps({"question": QUESTION}),
        "--var",
        f"openai_base_url={stub.base_url}",
        "--var",
        "openai_api_key=sk-cli-secret",
    )
    assert proc.returncode == 0
    assert stub.requests[0].headers["authorization"] == "Bearer sk-cli-secret"
    assert "sk-cli-secret" not in proc.stdout + proc.stderr


def test_cli_retries_a_500_then_succeeds(stub: Stub) -> None:
    stub.fail(500, '{"error": "overloaded"}', times=2)
    proc = cli(
        "run",
        "--flow",
        FLOW,
        "--input",
        json.dumps({"question": QUESTION}),
        "--var",
        f"openai_base_url={stub.base_url}",
    )
    assert (proc.returncode, proc.stderr) == (0, "")
    assert json.loads(proc.stdout) == {"outcome": "success", "result": EXPECTED}
    assert len(stub.requests) == 3


def test_cli_server_error_every_time_fails_with_exit_1(stub: Stub) -> None:
    stub.fail(503, '{"error": "down"}', times=3)
    proc = cli(
        "run",
        "--flow",
        FLOW,
        "--input",
        json.dumps({"question": QUESTION}),
        "--var",
        f"openai_base_url={stub.base_url}",
    )
    assert proc.returncode == 1
    assert json.loads(proc.stdout) == {
        "outcome": "failed",
        "error": {
            "code": "RESOURCE_UNAVAILABLE",
            "message": '/builtin/openai: HTTP 503: {"error": "down"}',
            "data": {"status_code": 503, "body": '{"error": "down"}'},
        },
    }
    assert (
        proc.stderr
        == 'pocketbatch: the flow failed: /builtin/openai: HTTP 503: {"error": "down"}\n'
    )
    assert len(stub.requests) == 3


# --------------------------------------------------------------------------- retries


@pytest.fixture
def flow(stub: Stub) -> Any:
    return load_flow(FLOW, variables={"openai_base_url": stub.base_url})


def test_a_500_is_retried_then_succeeds(stub: Stub, flow: Any) -> None:
    stub.fail(500, '{"error": "overloaded"}', times=2)
    result, events = run_observed(flow, {"question": QUESTION})
    assert result.to_dict() == {"outcome": "success", "result": EXPECTED}
    assert len(stub.requests) == 3
    assert retries(events) == [1, 2]
    assert all(r.body == stub.requests[0].body for r in stub.requests)  # the same request again


def test_a_429_is_retried(stub: Stub, flow: Any) -> None:
    stub.fail(429, '{"error": "rate limited"}', times=1)
    result, events = run_observed(flow, {"question": QUESTION})
    assert result.ok
    assert len(stub.requests) == 2
    assert retries(events) == [1]


def test_a_500_every_time_stops_after_max_retries(stub: Stub, flow: Any) -> None:
    stub.fail(500, "boom", times=10)
    result, events = run_observed(flow, {"question": QUESTION})
    assert result.outcome == "failed"
    assert result.error is not None
    assert (result.error.code, result.error.message) == (
        "RESOURCE_UNAVAILABLE",
        "/builtin/openai: HTTP 500: boom",
    )
    assert dict(result.steps) == {"messages": "completed", "chat": "failed"}
    assert len(stub.requests) == 3  # 1 attempt + max_retries: 2
    assert retries(events) == [1, 2]


def test_a_400_is_invalid_input_and_is_not_retried(stub: Stub, flow: Any) -> None:
    """A 4xx other than 408/429 means the request itself is wrong: INVALID_INPUT, sent once."""
    stub.fail(400, '{"error": "bad request"}', times=10)
    result, events = run_observed(flow, {"question": QUESTION})
    assert result.error is not None
    assert (result.error.code, result.error.message) == (
        "INVALID_INPUT",
        '/builtin/openai: HTTP 400: {"error": "bad request"}',
    )
    assert result.error.data == {"status_code": 400, "body": '{"error": "bad request"}'}
    assert len(stub.requests) == 1
    assert retries(events) == []


def test_invalid_input_from_the_builtin_is_not_retried(stub: Stub) -> None:
    # INVALID_INPUT is not a retryable code: one attempt, no RETRIED event, no request.
    flow = load_flow(FLOW, variables={"openai_base_url": stub.base_url, "openai_api_key": 123})
    result, events = run_observed(flow, {"question": QUESTION})
    assert result.error is not None
    assert (result.error.code, result.error.message) == (
        "INVALID_INPUT",
        "/builtin/openai: variable 'openai_api_key' must be a string, got int",
    )
    assert retries(events) == []
    assert stub.requests == []


def test_an_unusable_base_url_is_invalid_input_and_not_retried(stub: Stub) -> None:
    flow = load_flow(FLOW, variables={"openai_base_url": "ftp://127.0.0.1/v1"})
    result, events = run_observed(flow, {"question": QUESTION})
    assert result.error is not None
    assert result.error.code == "INVALID_INPUT"
    assert "ftp://127.0.0.1/v1/chat/completions" in result.error.message
    assert retries(events) == []


def test_connection_refused_is_unreachable_and_retried() -> None:
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    result, events = run_observed(
        load_flow(FLOW, variables={"openai_base_url": dead}), {"question": QUESTION}
    )
    assert result.error is not None
    assert result.error.code == "UNREACHABLE"
    assert f"cannot reach {dead}/chat/completions" in result.error.message
    assert retries(events) == [1, 2]


def test_a_malformed_reply_is_component_failed(stub: Stub, flow: Any) -> None:
    stub.fail(200, '{"choices": []}', times=3)
    result = flow.run({"question": QUESTION})
    assert result.error is not None
    assert result.error.code == "COMPONENT_FAILED"
    assert result.error.message.startswith("/builtin/openai: malformed response (HTTP 200)")
    assert len(stub.requests) == 3
