"""The HTTP API fuzzed with schemathesis against a real server: no request gives a 5xx.

A real ``pocketbatch serve`` runs in a subprocess on 127.0.0.1 (a free port, a
temporary ``--db``); its OpenAPI schema comes from ``/openapi.json``. The two POST
operations read their JSON body by hand, so the served schema declares no request
body for them; the test adds one (an object with ``flow``, ``inputs``,
``inputs_jsonl``, ``max_concurrent`` / ``input`` of any JSON type, plus a valid
flow as an example) so that the fuzzer sends bodies too. Every operation gets a
bounded, derandomized number of examples, checked with ``not_a_server_error``.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 25

# A flow that loads with the server's builtins: the fuzzer's explicit example.
ECHO_FLOW = """\
schema: https://stepflow.org/schemas/v1/flow.json
name: echo
steps:
  - id: echo
    component: /builtin/noop
    input: {$input: "$"}
output: {$step: echo}
"""

_ANY: dict[str, Any] = {}  # any JSON value
_TEXT_OR_ANY = {"anyOf": [{"type": "string"}, _ANY]}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``pocketbatch serve`` on a free loopback port; yields its base URL."""
    tmp = tmp_path_factory.mktemp("fuzz-server")
    port = _free_port()
    log = open(tmp / "server.log", "wb")  # noqa: SIM115 -- closed below
    env = {k: v for k, v in os.environ.items() if k != "POCKETBATCH_TOKEN"}
    command = [sys.executable, "-m", "pocketbatch", "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--db", str(tmp / "fuzz.db"), "--data-dir", str(tmp)]
    proc = subprocess.Popen(
        command, cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the server exited {proc.returncode}: {_tail(tmp / 'server.log')}")
            try:
                if httpx.get(f"{base}/api/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not come up: {_tail(tmp / 'server.log')}")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        errors = _tail(tmp / "server.log")
        if "Traceback" in errors:
            print(f"server log:\n{errors}")


def _tail(path: Path, size: int = 4000) -> str:
    return path.read_bytes()[-size:].decode(errors="replace")


def _with_bodies(raw: dict[str, Any]) -> dict[str, Any]:
    """The served schema plus request bodies for the POST operations that read one."""
    raw = copy.deepcopy(raw)
    bodies = {
        "/api/v1/batches": {
            "properties": {
                "flow": _TEXT_OR_ANY,
                "inputs": _ANY,
                "inputs_jsonl": _TEXT_OR_ANY,
                "max_concurrent": _ANY,
            },
            "example": {
                "flow": ECHO_FLOW,
                "inputs_jsonl": '{"a": 1}\n{"a": 2}\n',
                "max_concurrent": 2,
            },
        },
        "/api/v1/runs": {
            "properties": {"flow": _TEXT_OR_ANY, "input": _ANY},
            "example": {"flow": ECHO_FLOW, "input": {"a": 1}},
        },
    }
    for path, body in bodies.items():
        operation = raw["paths"][path]["post"]
        # The server declares its body; widen it here so the fuzzer also sends
        # wrong types (a non-string flow, any JSON as inputs).
        assert "requestBody" in operation, f"the server should declare the body of {path}"
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object", **body}}},
        }
    return raw


# Every operation the server serves (checked against /openapi.json below).
OPERATIONS = [
    ("GET", "/api/v1/health"),
    ("POST", "/api/v1/batches"),
    ("GET", "/api/v1/batches"),
    ("GET", "/api/v1/batches/{batch_id}"),
    ("GET", "/api/v1/batches/{batch_id}/outputs"),
    ("POST", "/api/v1/batches/{batch_id}/cancel"),
    ("POST", "/api/v1/runs"),
]


@pytest.fixture(scope="module")
def raw_schema(server: str) -> dict[str, Any]:
    return dict(httpx.get(f"{server}/openapi.json", timeout=10).json())


@pytest.fixture(scope="module")
def api_schema(raw_schema: dict[str, Any]) -> Any:
    return schemathesis.openapi.from_dict(_with_bodies(raw_schema))


def test_every_operation_is_fuzzed(raw_schema: dict[str, Any]) -> None:
    served = {
        (method.upper(), path)
        for path, item in raw_schema["paths"].items()
        for method in item
        if method in {"get", "put", "post", "delete", "patch", "head", "options"}
    }
    assert served == set(OPERATIONS)


# schemathesis' own pytest integration (``schemathesis.pytest.from_fixture`` and
# ``parametrize``) fails under pytest 9 ("'Function' object has no attribute
# '_nodeid'"), so each operation is a plain parametrized test that draws cases from
# the operation's schemathesis strategy (positive and negative) with @given.
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_server_errors(api_schema: Any, server: str, method: str, path: str) -> None:
    from schemathesis import GenerationMode

    operation = api_schema.find_operation_by_path(method, path)
    assert operation is not None, (method, path)
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @given(case=cases)
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: Any) -> None:
        case.call_and_validate(base_url=server, checks=[not_a_server_error], timeout=30)

    fuzz()


# -- bodies shaped like the real ones --------------------------------------------------
#
# Schemathesis draws arbitrary objects for the added bodies, which seldom hold the
# real keys and never a flow that loads. These strategies build bodies from the real
# keys, with values from valid to garbage, so the deeper paths (flow loading, input
# parsing, submission, running) are fuzzed too; after each accepted batch its status,
# outputs (``?wait=true``) and cancel are requested as well.

_scalars = st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False) | st.text()


def _nested(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=10,
    )


_json = _nested(_scalars | st.integers())
# No integers here: a 'max_concurrent' that big would be accepted and exhaust the
# server's memory (see test_huge_max_concurrent_keeps_the_server_responsive).
_no_ints = _nested(_scalars)
_flows = st.one_of(
    st.just(ECHO_FLOW),
    st.sampled_from(ECHO_FLOW.splitlines(keepends=True)).map(lambda line: ECHO_FLOW + line),
    st.builds(lambda cut: ECHO_FLOW[:cut], st.integers(0, len(ECHO_FLOW))),
    st.builds(
        lambda name: ECHO_FLOW.replace("/builtin/noop", name),
        st.sampled_from(["/python/os.system", "/builtin/load_file", "/nope/x", "", "/"]),
    ),
    st.text(max_size=200),
    _json,
)
_jsonl = st.lists(
    st.one_of(_json.map(json.dumps), st.text(max_size=20)),
    max_size=6,
).map("\n".join)
_bodies = st.fixed_dictionaries(
    {},
    optional={
        "flow": _flows,
        "inputs": st.one_of(st.lists(_json, max_size=6), _json),
        "inputs_jsonl": st.one_of(_jsonl, _json),
        "max_concurrent": st.one_of(
            # [2**63, 2**64) is left out: a known 500, pinned by an xfail test below.
            st.integers(-2, 64),
            st.sampled_from([0, 2**64, 2**70, -(2**63) - 1]),
            _no_ints,
        ),
        "input": _json,
    },
)


@pytest.mark.parametrize("path", ["/api/v1/batches", "/api/v1/runs"])
def test_no_server_errors_on_shaped_bodies(server: str, path: str) -> None:
    with httpx.Client(base_url=server, timeout=60) as client:

        def check(response: httpx.Response) -> None:
            request = response.request
            assert response.status_code < 500, (
                f"{request.method} {request.url} body={request.content[:2000]!r} -> "
                f"{response.status_code} {response.text[:2000]}"
            )

        @given(body=_bodies)
        @settings(
            max_examples=2 * MAX_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(body: dict[str, Any]) -> None:
            response = client.post(path, json=body)
            check(response)
            if path.endswith("batches") and response.status_code == 201:
                batch = f"{path}/{response.json()['batch_id']}"
                check(client.get(batch))
                check(client.get(f"{batch}/outputs", params={"wait": "true"}))
                check(client.post(f"{batch}/cancel"))

        fuzz()


# -- 5xx and crashes found by the fuzzing, pinned down -----------------------------------


def test_max_concurrent_beyond_sqlite_integer_is_a_422(server: str) -> None:
    body = {"flow": ECHO_FLOW, "inputs": [{"a": 1}], "max_concurrent": 2**63}
    response = httpx.post(f"{server}/api/v1/batches", json=body, timeout=30)
    assert response.status_code == 422, (response.status_code, response.text)


def test_huge_max_concurrent_keeps_the_server_responsive(server: str) -> None:
    # 10**6 (not 2**63 - 1) so that the failure is slow but harmless.
    body = {"flow": ECHO_FLOW, "inputs": [{"a": 1}], "max_concurrent": 10**6}
    with httpx.Client(base_url=server, timeout=60) as client:
        submitted = client.post("/api/v1/batches", json=body)
        assert submitted.status_code in (201, 422), submitted.text
        start = time.monotonic()
        client.get("/api/v1/health")
        late = time.monotonic() - start
        # Wait for the batch (or the blocked loop) so that later tests get a free server.
        if submitted.status_code == 201:
            batch = submitted.json()["batch_id"]
            client.get(f"/api/v1/batches/{batch}/outputs", params={"wait": "true"})
    assert late < 2.0, f"health answered after {late:.1f} s"
