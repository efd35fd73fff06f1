"""The network builtins (/builtin/openai, /http/request), against a real stub HTTP
server on 127.0.0.1.

Nothing here leaves the machine: every request goes to a server started on
127.0.0.1 for the test (or to a port just closed there), and the OPENAI_* and
proxy environment variables are cleared so that no default can point elsewhere.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from _builtin_support import MESSAGES, fails, make_ctx
from _support import free_port, serving

from pocketbatch.loader._builtin_http import HttpRequest, OpenAIChat

# --------------------------------------------------------------------------- the stub server


@dataclass
class Recorded:
    """One request the stub server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.path).query)


Reply = tuple[int, dict[str, str], bytes]


def default_reply(req: Recorded) -> Reply:
    """A chat completion for ``.../chat/completions``, else a JSON echo of the request."""
    if urlsplit(req.path).path.endswith("/chat/completions"):
        asked = req.json
        last = asked["messages"][-1]["content"]
        reply = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": f"{asked['model']}-served",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": f"echo: {last}"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        }
    else:
        reply = {
            "method": req.method,
            "path": urlsplit(req.path).path,
            "query": req.query,
            "body": req.body.decode(),
        }
    return 200, {"Content-Type": "application/json"}, json.dumps(reply).encode()


@dataclass
class StubServer:
    """What a test sees of the server: its URL, what it received, how it answers."""

    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    reply: Callable[[Recorded], Reply] = default_reply
    stall: bool = False
    release: threading.Event = field(default_factory=threading.Event)

    def answer(
        self, status: int, body: str | bytes, content_type: str = "application/json"
    ) -> None:
        """Answer every following request with ``status`` and ``body``."""
        data = body.encode() if isinstance(body, str) else body
        self.reply = lambda _req: (status, {"Content-Type": content_type}, data)


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer

    def _serve(self) -> None:
        stub = self.server.stub
        length = int(self.headers.get("Content-Length") or 0)
        req = Recorded(
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=self.rfile.read(length),
        )
        stub.requests.append(req)
        if stub.stall:
            stub.release.wait(10)  # set at teardown; the client has long given up by then
        status, headers, body = stub.reply(req)
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the client went away (the timeout tests)
            pass

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = False  # server_close() waits for every handler thread
    block_on_close = True

    def __init__(self, stub: StubServer) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.stub = stub

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[StubServer]:
    stub = StubServer()
    httpd = _HTTPServer(stub)
    stub.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    with serving(httpd):
        try:
            yield stub
        finally:
            stub.release.set()


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then closed)."""
    return free_port()


@pytest.fixture(autouse=True)
def _local_only(monkeypatch: pytest.MonkeyPatch, closed_port: int) -> None:
    """No proxy, no OpenAI settings from the environment; the default base URL is local."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name in ("OPENAI_API_KEY", "OPENAI_MODEL"):
        monkeypatch.delenv(name, raising=False)
    # A test that forgets base_url fails with UNREACHABLE instead of calling api.openai.com.
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{closed_port}/v1")


# --------------------------------------------------------------------------- openai


@pytest.mark.asyncio
async def test_openai_posts_model_messages_and_options(server: StubServer) -> None:
    out = await OpenAIChat()(
        {
            "messages": MESSAGES,
            "model": "tiny",
            "max_tokens": 7,
            "temperature": 0.25,
            "base_url": f"{server.url}/v1",
        },
        make_ctx(),
    )
    assert out == {
        "response": "echo: hi",
        "model": "tiny-served",
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }
    [req] = server.requests
    assert (req.method, req.path) == ("POST", "/v1/chat/completions")
    assert req.headers["content-type"] == "application/json"
    assert req.json == {"model": "tiny", "messages": MESSAGES, "max_tokens": 7, "temperature": 0.25}


@pytest.mark.asyncio
async def test_openai_sends_only_given_options_and_the_default_model(server: StubServer) -> None:
    await OpenAIChat()({"messages": MESSAGES, "base_url": f"{server.url}/v1/"}, make_ctx())
    [req] = server.requests
    assert req.path == "/v1/chat/completions"  # the trailing slash is not doubled
    assert req.json == {"model": "gpt-4o-mini", "messages": MESSAGES}


@pytest.mark.asyncio
async def test_openai_sends_authorization_only_with_a_key(server: StubServer) -> None:
    base = {"messages": MESSAGES, "base_url": server.url}
    await OpenAIChat()({**base, "api_key": "sk-input"}, make_ctx())
    await OpenAIChat()(base, make_ctx())
    await OpenAIChat()({**base, "api_key": ""}, make_ctx())
    with_key, without, empty = server.requests
    assert with_key.headers["authorization"] == "Bearer sk-input"
    assert "authorization" not in without.headers
    assert "authorization" not in empty.headers


@pytest.mark.asyncio
async def test_openai_settings_from_variables(server: StubServer) -> None:
    variables = {
        "openai_base_url": f"{server.url}/vars",
        "openai_api_key": "sk-var",
        "openai_model": "var-model",
    }
    out = await OpenAIChat()({"messages": MESSAGES}, make_ctx(variables=variables))
    [req] = server.requests
    assert req.path == "/vars/chat/completions"
    assert req.headers["authorization"] == "Bearer sk-var"
    assert req.json["model"] == "var-model"
    assert out["model"] == "var-model-served"


@pytest.mark.asyncio
async def test_openai_settings_from_environment(
    server: StubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", f"{server.url}/env")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    monkeypatch.setenv("OPENAI_MODEL", "env-model")
    await OpenAIChat()({"messages": MESSAGES}, make_ctx())
    [req] = server.requests
    assert req.path == "/env/chat/completions"
    assert req.headers["authorization"] == "Bearer sk-env"
    assert req.json["model"] == "env-model"


@pytest.mark.asyncio
async def test_openai_input_beats_variables_beats_environment(
    server: StubServer, monkeypatch: pytest.MonkeyPatch, closed_port: int
) -> None:
    dead = f"http://127.0.0.1:{closed_port}"
    monkeypatch.setenv("OPENAI_BASE_URL", dead)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    monkeypatch.setenv("OPENAI_MODEL", "env-model")
    variables = {"openai_base_url": server.url, "openai_api_key": "sk-var", "openai_model": "v"}
    await OpenAIChat()({"messages": MESSAGES}, make_ctx(variables=variables))
    variables["openai_base_url"] = dead
    await OpenAIChat()(
        {"messages": MESSAGES, "base_url": server.url, "api_key": "sk-in", "model": "in"},
        make_ctx(variables=variables),
    )
    from_vars, from_input = server.requests
    assert (from_vars.headers["authorization"], from_vars.json["model"]) == ("Bearer sk-var", "v")
    assert (from_input.headers["authorization"], from_input.json["model"]) == ("Bearer sk-in", "in")


@pytest.mark.asyncio
async def test_openai_reply_without_model_or_usage(server: StubServer) -> None:
    server.answer(200, json.dumps({"choices": [{"message": {"content": "ok"}}]}))
    out = await OpenAIChat()({"messages": MESSAGES, "base_url": server.url}, make_ctx())
    assert out == {"response": "ok", "model": "gpt-4o-mini", "usage": None}


@pytest.mark.asyncio
@pytest.mark.parametrize("status", [429, 500, 503])
async def test_openai_rate_limit_and_server_errors_are_resource_unavailable(
    server: StubServer, status: int
) -> None:
    server.answer(status, '{"error": {"message": "busy"}}')
    err = await fails(OpenAIChat(), {"messages": MESSAGES, "base_url": server.url})
    assert err.code == "RESOURCE_UNAVAILABLE"
    assert err.message.startswith(f"/builtin/openai: HTTP {status}: ")
    assert "busy" in err.message
    assert err.data == {"status_code": status, "body": '{"error": {"message": "busy"}}'}


@pytest.mark.asyncio
async def test_openai_client_error_names_the_status_and_hides_the_key(server: StubServer) -> None:
    def echo_key(req: Recorded) -> Reply:  # a server that quotes the key back, as some do
        body = {"error": f"invalid model; you sent {req.headers.get('authorization')}"}
        return 400, {"Content-Type": "application/json"}, json.dumps(body).encode()

    server.reply = echo_key
    key = "sk-secret-123456"
    err = await fails(OpenAIChat(), {"messages": MESSAGES, "base_url": server.url, "api_key": key})
    assert err.code == "INVALID_INPUT"
    assert "openai: HTTP 400: " in err.message
    assert "invalid model" in err.message
    assert key not in str(err)
    assert key not in repr(err.data)
    assert server.requests[0].headers["authorization"] == f"Bearer {key}"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "INVALID_INPUT"),
        (404, "INVALID_INPUT"),
        (401, "PERMISSION_DENIED"),
        (403, "PERMISSION_DENIED"),
        (408, "TIMEOUT"),
        (429, "RESOURCE_UNAVAILABLE"),
        (503, "RESOURCE_UNAVAILABLE"),
    ],
)
async def test_openai_status_codes_map_to_retryable_or_not(
    server: StubServer, status: int, code: str
) -> None:
    """Statuses worth retrying (408, 429, 5xx) get retryable codes; a bad request does not."""
    server.answer(status, "no", "text/plain")
    err = await fails(OpenAIChat(), {"messages": MESSAGES, "base_url": server.url})
    assert err.code == code


@pytest.mark.asyncio
async def test_openai_error_body_is_cut_to_300_characters(server: StubServer) -> None:
    server.answer(400, "x" * 1000, "text/plain")
    err = await fails(OpenAIChat(), {"messages": MESSAGES, "base_url": server.url})
    assert err.message == "/builtin/openai: HTTP 400: " + "x" * 300


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "body",
    [
        "not json at all",
        "[]",
        '{"choices": []}',
        '{"choices": [{"message": {}}]}',
        '{"choices": [{"message": {"content": null}}]}',
    ],
)
async def test_openai_malformed_reply_fails(server: StubServer, body: str) -> None:
    server.answer(200, body)
    err = await fails(OpenAIChat(), {"messages": MESSAGES, "base_url": server.url})
    assert err.code == "COMPONENT_FAILED"
    assert err.message.startswith("/builtin/openai: malformed response")


@pytest.mark.asyncio
async def test_openai_connection_refused_is_unreachable(closed_port: int) -> None:
    err = await fails(
        OpenAIChat(),
        {"messages": MESSAGES, "base_url": f"http://127.0.0.1:{closed_port}", "api_key": "sk-k"},
    )
    assert err.code == "UNREACHABLE"
    assert f"127.0.0.1:{closed_port}" in err.message
    assert "sk-k" not in err.message


@pytest.mark.asyncio
async def test_openai_default_base_url_comes_from_the_environment_fixture(
    closed_port: int,
) -> None:
    # Guards the guard: with no base_url anywhere, the request goes to the local dead port.
    err = await fails(OpenAIChat(), {"messages": MESSAGES})
    assert err.code == "UNREACHABLE"
    assert f"127.0.0.1:{closed_port}/v1/chat/completions" in err.message


@pytest.mark.asyncio
async def test_openai_timeout(server: StubServer) -> None:
    server.stall = True
    err = await fails(OpenAIChat(), {"messages": MESSAGES, "base_url": server.url, "timeout": 0.2})
    assert err.code == "TIMEOUT"
    assert len(server.requests) == 1


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("input", "message"),
    [
        ({}, "'messages' is required"),
        ({"messages": "hi"}, "'messages' must be a list, got str"),
        ({"messages": ["hi"]}, "'messages[0]' must be an object, got str"),
        ({"messages": MESSAGES, "model": 4}, "'model' must be a string, got int"),
        ({"messages": MESSAGES, "max_tokens": "5"}, "'max_tokens' must be an integer, got str"),
        ({"messages": MESSAGES, "max_tokens": 5.0}, "'max_tokens' must be an integer, got float"),
        ({"messages": MESSAGES, "temperature": True}, "'temperature' must be a number, got bool"),
        ({"messages": MESSAGES, "api_key": 1}, "'api_key' must be a string, got int"),
        ({"messages": MESSAGES, "timeout": 0}, "'timeout' must be a number of seconds > 0, got 0"),
        ([], "input must be an object, got list"),
    ],
)
async def test_openai_rejects_bad_input(server: StubServer, input: Any, message: str) -> None:
    if isinstance(input, dict):
        input = {"base_url": server.url, **input}
    err = await fails(OpenAIChat(), input)
    assert (err.code, err.message) == ("INVALID_INPUT", f"/builtin/openai: {message}")
    assert server.requests == []


@pytest.mark.asyncio
async def test_openai_rejects_a_variable_of_the_wrong_type(server: StubServer) -> None:
    ctx = make_ctx(variables={"openai_api_key": 123})
    err = await fails(OpenAIChat(), {"messages": MESSAGES, "base_url": server.url}, ctx)
    assert (err.code, err.message) == (
        "INVALID_INPUT",
        "/builtin/openai: variable 'openai_api_key' must be a string, got int",
    )


# --------------------------------------------------------------------------- /http/request


@pytest.mark.asyncio
async def test_http_get_with_params_and_headers(server: StubServer) -> None:
    out = await HttpRequest()(
        {
            "url": f"{server.url}/items",
            "params": {"q": "a b", "n": 2, "tag": ["x", "y"], "on": True},
            "headers": {"X-Trace": "t1"},
        },
        make_ctx(),
    )
    [req] = server.requests
    assert req.method == "GET"
    assert req.query == {"q": ["a b"], "n": ["2"], "tag": ["x", "y"], "on": ["true"]}
    assert req.headers["x-trace"] == "t1"
    assert out["status_code"] == 200
    assert out["headers"]["content-type"] == "application/json"
    assert out["json"] == {"method": "GET", "path": "/items", "query": req.query, "body": ""}
    assert json.loads(out["body"]) == out["json"]


@pytest.mark.asyncio
async def test_http_post_json(server: StubServer) -> None:
    out = await HttpRequest()(
        {"url": f"{server.url}/make", "method": "post", "json": {"a": [1, None]}}, make_ctx()
    )
    [req] = server.requests
    assert req.method == "POST"
    assert req.headers["content-type"] == "application/json"
    assert req.json == {"a": [1, None]}
    assert out["json"]["method"] == "POST"


@pytest.mark.asyncio
async def test_http_put_text_body(server: StubServer) -> None:
    await HttpRequest()(
        {
            "url": f"{server.url}/doc",
            "method": "PUT",
            "body": "héllo",
            "headers": {"Content-Type": "text/plain; charset=utf-8"},
        },
        make_ctx(),
    )
    [req] = server.requests
    assert (req.method, req.body.decode("utf-8")) == ("PUT", "héllo")
    assert req.headers["content-type"] == "text/plain; charset=utf-8"


@pytest.mark.asyncio
async def test_http_error_status_is_returned_not_raised(server: StubServer) -> None:
    server.answer(404, "no such thing", "text/plain")
    out = await HttpRequest()({"url": f"{server.url}/missing"}, make_ctx())
    assert out["status_code"] == 404
    assert out["body"] == "no such thing"
    assert out["json"] is None
    assert out["headers"]["content-type"] == "text/plain"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("content_type", "body", "parsed"),
    [
        ("application/problem+json", '{"title": "bad"}', {"title": "bad"}),
        ("application/json; charset=utf-8", "[1, 2]", [1, 2]),
        ("application/json", "{not json", None),
        ("text/plain", '{"a": 1}', None),
    ],
)
async def test_http_json_is_parsed_only_for_json_content(
    server: StubServer, content_type: str, body: str, parsed: Any
) -> None:
    server.answer(500, body, content_type)
    out = await HttpRequest()({"url": server.url}, make_ctx())
    assert (out["status_code"], out["body"], out["json"]) == (500, body, parsed)


def _redirecting(hops: int) -> Callable[[Recorded], Reply]:
    """``/hop/N`` answers 302 to ``/hop/N+1`` until ``hops``, then the JSON echo."""

    def reply(req: Recorded) -> Reply:
        path = urlsplit(req.path).path
        if path.startswith("/hop/") and int(path.rsplit("/", 1)[1]) < hops:
            following = f"/hop/{int(path.rsplit('/', 1)[1]) + 1}"
            return 302, {"Location": following, "Content-Type": "text/plain"}, b"moved"
        return default_reply(req)

    return reply


@pytest.mark.asyncio
async def test_http_redirects_are_not_followed_by_default_as_in_httpx(server: StubServer) -> None:
    server.reply = _redirecting(3)
    out = await HttpRequest()({"url": f"{server.url}/hop/0"}, make_ctx())
    assert (out["status_code"], out["headers"]["location"]) == (302, "/hop/1")
    assert [urlsplit(r.path).path for r in server.requests] == ["/hop/0"]


@pytest.mark.asyncio
@pytest.mark.parametrize("in_a_run", [False, True])
async def test_http_follow_redirects_follows_every_hop(server: StubServer, in_a_run: bool) -> None:
    """Issue 14: /http/request could not follow redirects at all."""
    from pocketbatch.loader._services import RunServices

    server.reply = _redirecting(3)
    request = {"url": f"{server.url}/hop/0", "follow_redirects": True}
    if in_a_run:  # on the run's pooled client
        async with RunServices() as services:
            context = make_ctx()
            context.services = services
            out = await HttpRequest()(request, context)
    else:
        out = await HttpRequest()(request, make_ctx())
    assert out["status_code"] == 200
    assert out["json"]["path"] == "/hop/3"
    paths = [urlsplit(r.path).path for r in server.requests]
    assert paths == ["/hop/0", "/hop/1", "/hop/2", "/hop/3"]


@pytest.mark.asyncio
async def test_http_a_redirect_loop_fails_with_a_message(server: StubServer) -> None:
    server.reply = _redirecting(1000)
    err = await fails(HttpRequest(), {"url": f"{server.url}/hop/0", "follow_redirects": True})
    assert err.code == "COMPONENT_FAILED"
    assert "redirect" in err.message
    assert len(server.requests) == 21  # the first request and 20 redirects


@pytest.mark.asyncio
async def test_http_follow_redirects_must_be_a_boolean() -> None:
    err = await fails(HttpRequest(), {"url": "http://127.0.0.1/", "follow_redirects": "yes"})
    assert err.message == "/http/request: 'follow_redirects' must be a boolean, got str"


@pytest.mark.asyncio
async def test_http_connection_refused_is_unreachable(closed_port: int) -> None:
    err = await fails(HttpRequest(), {"url": f"http://127.0.0.1:{closed_port}/x"})
    assert err.code == "UNREACHABLE"
    assert err.message.startswith("/http/request: cannot reach http://127.0.0.1:")


@pytest.mark.asyncio
async def test_http_timeout(server: StubServer) -> None:
    server.stall = True
    err = await fails(HttpRequest(), {"url": server.url, "timeout": 0.2})
    assert err.code == "TIMEOUT"
    assert len(server.requests) == 1


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("input", "message"),
    [
        ({}, "'url' is required"),
        ({"url": 1}, "'url' must be a string, got int"),
        ({"url": "http://127.0.0.1/", "method": 1}, "'method' must be a string, got int"),
        ({"url": "http://127.0.0.1/", "headers": []}, "'headers' must be an object, got list"),
        (
            {"url": "http://127.0.0.1/", "headers": {"A": 1}},
            "headers['A'] must be a string, got int",
        ),
        (
            {"url": "http://127.0.0.1/", "params": {"p": {"a": 1}}},
            "params['p'] must be a string, number, boolean or a list of them, got dict",
        ),
        ({"url": "http://127.0.0.1/", "body": {"a": 1}}, "'body' must be a string, got dict"),
        ({"url": "http://127.0.0.1/", "json": {}, "body": ""}, "give 'json' or 'body', not both"),
        (
            {"url": "http://127.0.0.1/", "timeout": -1},
            "'timeout' must be a number of seconds > 0, got -1",
        ),
    ],
)
async def test_http_rejects_bad_input(input: Any, message: str) -> None:
    err = await fails(HttpRequest(), input)
    assert (err.code, err.message) == ("INVALID_INPUT", f"/http/request: {message}")


@pytest.mark.asyncio
async def test_http_rejects_an_unusable_url() -> None:
    err = await fails(HttpRequest(), {"url": "ftp://127.0.0.1/file"})
    assert err.code == "INVALID_INPUT"
    assert err.message.startswith("/http/request: cannot use URL 'ftp://127.0.0.1/file'")
