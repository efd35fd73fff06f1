"""The network policy of the HTTP builtins (server-side request forgery, credential leaks).

Three layers: the policy itself (:func:`denied_reason`, :class:`HostRule`,
:class:`NetworkPolicy`) on every spelling of a local address; the
:class:`GuardedTransport` with an injected resolver and an inner transport that
records instead of connecting (private and link-local addresses are tried there,
never connected to); and the builtins under a policy against real stub HTTP
servers on 127.0.0.1.

Nothing leaves the machine: the only names resolved by the system resolver are
numeric spellings and ``localhost``; other names go to an injected resolver.
"""

from __future__ import annotations

import asyncio
import pickle
import shutil
import socket
import ssl
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from _stub_http import Stub, running_stubs

from pocketbatch import load_flow
from pocketbatch._errors import ComponentError
from pocketbatch.loader import LoaderOptions, NetworkPolicy
from pocketbatch.loader._builtin_http import HttpRequest, OpenAIChat
from pocketbatch.loader._component import CallContext
from pocketbatch.loader._network import HostRule, denied_reason, parse_network, system_resolver
from pocketbatch.loader._transport import GuardedTransport


@pytest.fixture
def stubs() -> Iterator[Callable[[], Stub]]:
    """Start any number of recording stubs on 127.0.0.1; all stop at teardown."""
    with running_stubs() as start:
        yield start


@pytest.fixture(autouse=True)
def _local_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxies, no OpenAI settings but the ones a test sets."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name in ("OPENAI_API_KEY", "OPENAI_MODEL", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def ctx(network: NetworkPolicy | None, variables: dict[str, Any] | None = None) -> CallContext:
    return CallContext(
        step_id="s",
        flow_dir=None,
        variables=variables or {},
        options=LoaderOptions(network=network),
    )


async def refused(component: Any, input: Any, context: CallContext) -> ComponentError:
    with pytest.raises(ComponentError) as info:
        await component(input, context)
    assert info.value.code == "PERMISSION_DENIED", info.value
    return info.value


# --------------------------------------------------------------------------- the policy

LOCAL_SPELLINGS = [
    "127.0.0.1",
    "localhost",
    "127.1",
    "2130706433",
    "0x7f000001",
    "017700000001",
    "127.255.255.254",
    "::1",
    "::ffff:127.0.0.1",
    "::",
    "0.0.0.0",
    "0",
    "169.254.169.254",
]


@pytest.mark.asyncio
@pytest.mark.parametrize("host", LOCAL_SPELLINGS)
async def test_every_spelling_of_a_local_address_is_denied(host: str) -> None:
    """Resolved by the system resolver (no network: numeric forms and localhost),
    every address of every spelling is refused by the server's policy."""
    addresses = await system_resolver(host, 80)
    assert addresses
    for address in addresses:
        assert denied_reason(address) is not None, (host, address)
    with pytest.raises(ComponentError) as info:
        NetworkPolicy.for_server(credential_base_urls=()).check(host, 80, addresses)
    assert info.value.code == "PERMISSION_DENIED"
    assert "--allow-host" in info.value.message
    assert "--allow-network" in info.value.message


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "a loopback address"),
        ("::1", "a loopback address"),
        ("::ffff:127.0.0.1", "a loopback address"),
        ("::ffff:7f00:1", "a loopback address"),
        ("0.0.0.0", "the unspecified address"),
        ("::", "the unspecified address"),
        ("169.254.169.254", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("::ffff:169.254.169.254", "a link-local address"),
        ("10.0.0.1", "a private address"),
        ("172.16.5.4", "a private address"),
        ("192.168.1.1", "a private address"),
        ("fc00::1", "a private address"),
        ("fd12:3456::1", "a private address"),
        ("224.0.0.1", "a multicast address"),
        ("ff02::1", "a multicast address"),
        ("100.64.0.1", "not a globally routable address"),
        ("2002:7f00:1::", "a 6to4 address leading to 127.0.0.1, a loopback address"),
        ("2002:a9fe:a9fe::", "a 6to4 address leading to 169.254.169.254, a link-local address"),
    ],
)
def test_denied_reason_names_the_kind_of_address(address: str, reason: str) -> None:
    assert denied_reason(address) == reason


@pytest.mark.parametrize("address", ["::127.0.0.1", "64:ff9b::7f00:1", "240.0.0.1"])
def test_odd_and_reserved_addresses_are_denied(address: str) -> None:
    assert denied_reason(address) is not None


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert denied_reason(address) is None
    assert NetworkPolicy().check("example.org", 443, [address]) == [address]


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("127.0.0.1:8080", HostRule("127.0.0.1", 8080)),
        ("127.0.0.1", HostRule("127.0.0.1", None)),
        ("LLM.Internal.:8000", HostRule("llm.internal", 8000)),
        ("[::1]:9000", HostRule("::1", 9000)),
        ("[::1]", HostRule("::1", None)),
        ("::1", HostRule("::1", None)),
        ("[::ffff:127.0.0.1]:80", HostRule("127.0.0.1", 80)),
        ("bücher.example", HostRule("xn--bcher-kva.example", None)),
    ],
)
def test_host_rules_parse(text: str, rule: HostRule) -> None:
    assert HostRule.parse(text) == rule


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("host:http", "the port must be a number from 1 to 65535"),
        ("host:0", "the port must be a number from 1 to 65535"),
        ("host:70000", "the port must be a number from 1 to 65535"),
        ("[::1", "missing ']'"),
        ("[::1]8080", "expected ':PORT' after ']'"),
        ("*.example.com", "no wildcards"),
        ("", "give one host name or IP address"),
        ("user@host", "give one host name or IP address"),
    ],
)
def test_bad_host_rules_say_why(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HostRule.parse(text)


def test_networks_parse_strictly() -> None:
    assert str(parse_network("10.0.0.0/8")) == "10.0.0.0/8"
    assert str(parse_network("127.0.0.1")) == "127.0.0.1/32"
    with pytest.raises(ValueError, match="host bits set"):
        parse_network("10.0.0.5/8")
    with pytest.raises(ValueError, match="not a network"):
        parse_network("ten")


def test_allowances_open_exactly_what_they_name() -> None:
    policy = NetworkPolicy.for_server(
        allow_hosts=["127.0.0.1:8080", "llm.internal", "[::1]:9000"],
        allow_networks=["10.1.0.0/16"],
        credential_base_urls=(),
    )
    allowed = [
        ("127.0.0.1", 8080, "127.0.0.1"),
        ("127.1", 8080, "127.0.0.1"),  # any spelling of the address
        ("localhost", 8080, "127.0.0.1"),
        ("::ffff:127.0.0.1", 8080, "::ffff:127.0.0.1"),
        ("LLM.internal.", 1234, "192.168.7.7"),  # a name: any port, any address it has
        ("::1", 9000, "::1"),
        ("x.example", 80, "10.1.200.3"),
    ]
    for host, port, address in allowed:
        assert policy.refusal(host, port, address) is None, (host, port, address)
    refused = [
        ("127.0.0.1", 8081, "127.0.0.1"),  # another port
        ("127.0.0.2", 8080, "127.0.0.2"),
        ("::1", 9001, "::1"),
        ("llm.internal.evil.example", 80, "192.168.7.7"),
        ("x.example", 80, "10.2.0.1"),
        ("x.example", 80, "169.254.169.254"),
    ]
    for host, port, address in refused:
        assert policy.refusal(host, port, address) is not None, (host, port, address)


def test_a_name_with_one_denied_address_is_refused_whole() -> None:
    """A public and a private answer: refused, so a connection can't land on the private one."""
    with pytest.raises(ComponentError, match=r"169\.254\.169\.254, a link-local address"):
        NetworkPolicy().check("mixed.example", 80, ["93.184.216.34", "169.254.169.254"])


def test_the_refusal_says_what_and_how_to_open_it() -> None:
    message = NetworkPolicy().refusal("metadata.example", 80, "169.254.169.254")
    assert message == (
        "metadata.example:80 resolves to 169.254.169.254, a link-local address; flows on this "
        "server may not connect to loopback, link-local, private or other non-public "
        "addresses. To allow it, start the server with --allow-host metadata.example:80 or "
        "--allow-network 169.254.169.254/32"
    )


def test_no_policy_and_a_permissive_one_refuse_nothing() -> None:
    assert NetworkPolicy(deny_private=False).check("localhost", 80, ["127.0.0.1"]) == ["127.0.0.1"]
    assert LoaderOptions().network is None  # local runs: unrestricted, as before


def test_credentials_go_only_to_configured_base_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = NetworkPolicy.for_server()  # no OPENAI_BASE_URL: the default
    assert policy.may_send_credentials("https://api.openai.com/v1")
    assert policy.may_send_credentials("HTTPS://API.openai.com:443/v1/")
    for url in (
        "http://api.openai.com/v1",
        "https://api.openai.com.evil.example/v1",
        "https://api.openai.com@evil.example/v1",
        "https://api.openai.com/v1/../../evil",
        "https://evil.example/v1",
    ):
        assert not policy.may_send_credentials(url), url
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1")
    configured = NetworkPolicy.for_server()
    assert configured.may_send_credentials("http://127.0.0.1:8000/v1")
    assert not configured.may_send_credentials("https://api.openai.com/v1")
    assert NetworkPolicy().may_send_credentials("https://anything.example")  # None: any


def test_the_policy_survives_pickling_into_a_worker() -> None:
    """Process and Ray workers get the loader options pickled; the policy must survive."""
    policy = NetworkPolicy.for_server(["127.0.0.1:8080"], ["10.0.0.0/8"], ["https://x/v1"])
    assert pickle.loads(pickle.dumps(LoaderOptions(network=policy))).network == policy


# --------------------------------------------------------------------------- the transport


class Recorder(httpx.AsyncBaseTransport):
    """An inner transport that records what it was asked to connect to; no socket."""

    def __init__(self, refuse: Sequence[str] = ()) -> None:
        self.requests: list[httpx.Request] = []
        self.refuse = set(refuse)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.host in self.refuse:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, text="inner")


def resolver(table: dict[str, list[list[str]]]) -> tuple[Any, list[str]]:
    """A resolver answering from ``table`` (successive answers per name), and its log."""
    asked: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        answers = table[host]
        return answers.pop(0) if len(answers) > 1 else answers[0]

    return resolve, asked


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "address", ["169.254.169.254", "10.0.0.8", "192.168.0.1", "fd00::1", "fe80::1", "0.0.0.0"]
)
async def test_a_name_resolving_to_a_private_address_is_not_connected(address: str) -> None:
    resolve, _ = resolver({"innocent.example": [[address]]})
    inner = Recorder()
    transport = GuardedTransport(NetworkPolicy(), inner=inner, resolver=resolve)
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(ComponentError, match=f"resolves to {address}"):
            await client.get("http://innocent.example/latest/meta-data/")
    assert inner.requests == []


@pytest.mark.asyncio
async def test_the_connection_is_pinned_to_the_checked_address() -> None:
    """DNS rebinding: the name resolves once; the inner transport gets the checked
    address in the URL (the Host header and TLS name stay the name), so a second,
    private answer is never asked for."""
    resolve, asked = resolver({"rebind.example": [["93.184.216.34"], ["127.0.0.1"]]})
    inner = Recorder()
    transport = GuardedTransport(NetworkPolicy(), inner=inner, resolver=resolve)
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get("https://rebind.example:8443/x?y=1")
    assert response.text == "inner"
    assert asked == ["rebind.example"]
    (sent,) = inner.requests
    assert str(sent.url) == "https://93.184.216.34:8443/x?y=1"
    assert sent.headers["host"] == "rebind.example:8443"
    assert sent.extensions["sni_hostname"] == "rebind.example"


@pytest.mark.asyncio
async def test_every_request_is_checked_again_so_redirects_are() -> None:
    """Each request through the transport is resolved and checked: a redirect that a
    client follows to a private address is refused at that hop."""
    resolve, asked = resolver({"public.example": [["93.184.216.34"]], "evil.example": [["::1"]]})

    class Redirecting(Recorder):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            self.requests.append(request)
            return httpx.Response(302, headers={"Location": "http://evil.example/admin"})

    inner = Redirecting()
    transport = GuardedTransport(NetworkPolicy(), inner=inner, resolver=resolve)
    async with httpx.AsyncClient(transport=transport, follow_redirects=True) as client:
        with pytest.raises(ComponentError, match=r"evil.example:80 resolves to ::1, a loopback"):
            await client.get("http://public.example/")
    assert asked == ["public.example", "evil.example"]
    assert len(inner.requests) == 1


@pytest.mark.asyncio
async def test_the_next_checked_address_is_tried_when_one_refuses() -> None:
    resolve, _ = resolver({"two.example": [["2606:4700::1", "93.184.216.34"]]})
    inner = Recorder(refuse=["2606:4700::1"])
    transport = GuardedTransport(NetworkPolicy(), inner=inner, resolver=resolve)
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.get("http://two.example/")).text == "inner"
    assert [r.url.host for r in inner.requests] == ["2606:4700::1", "93.184.216.34"]


@pytest.mark.asyncio
async def test_resolution_failures_are_connect_errors() -> None:
    async def unknown(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async def stuck(host: str, port: int) -> list[str]:
        await asyncio.Event().wait()
        return []

    async def empty(host: str, port: int) -> list[str]:
        return []

    for resolve, error, message in (
        (unknown, httpx.ConnectError, "cannot resolve nowhere.example"),
        (stuck, httpx.ConnectTimeout, "resolving nowhere.example took longer than 0.01 s"),
        (empty, httpx.ConnectError, "resolves to no address"),
    ):
        transport = GuardedTransport(NetworkPolicy(), inner=Recorder(), resolver=resolve)
        async with httpx.AsyncClient(transport=transport, timeout=0.01) as client:
            with pytest.raises(error, match=message):
                await client.get("http://nowhere.example/")


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for ``pinned.test`` and its key (made by openssl)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    command = [
        *("openssl", "req", "-x509", "-nodes", "-days", "1", "-subj", "/CN=pinned.test"),
        *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
        *("-addext", "subjectAltName=DNS:pinned.test", "-keyout", str(key), "-out", str(cert)),
    ]
    subprocess.run(command, check=True, capture_output=True)
    return cert, key


@pytest.mark.asyncio
async def test_https_to_a_pinned_address_still_verifies_the_name(
    certificate: tuple[Path, Path],
) -> None:
    """A real TLS stub on 127.0.0.1 whose certificate names ``pinned.test``: reached
    through the checked address, the handshake still verifies the URL's name, so the
    pinning neither breaks HTTPS nor weakens it (another name is refused)."""
    cert, key = certificate
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    client_tls = ssl.create_default_context(cafile=str(cert))
    with running_stubs(server_tls) as start:
        stub = start()
        resolve, _ = resolver({"pinned.test": [["127.0.0.1"]], "other.test": [["127.0.0.1"]]})
        policy = NetworkPolicy.for_server(allow_hosts=["127.0.0.1"], credential_base_urls=())
        inner = httpx.AsyncHTTPTransport(verify=client_tls)
        transport = GuardedTransport(policy, inner=inner, resolver=resolve)
        async with httpx.AsyncClient(transport=transport) as client:
            response = await client.get(f"https://pinned.test:{stub.port}/tls")
            assert response.status_code == 200
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await client.get(f"https://other.test:{stub.port}/tls")
    assert [(s.path, s.headers["host"]) for s in stub.seen] == [
        ("/tls", f"pinned.test:{stub.port}")
    ]


# --------------------------------------------------------------------------- the builtins


@pytest.mark.asyncio
async def test_http_request_to_loopback_is_refused_under_the_policy(
    stubs: Callable[[], Stub],
) -> None:
    stub = stubs()
    error = await refused(HttpRequest(), {"url": f"{stub.url}/x"}, ctx(NetworkPolicy()))
    assert error.message == (
        f"/http/request: GET {stub.url}/x: 127.0.0.1:{stub.port} is a loopback address; flows "
        "on this server may not connect to loopback, link-local, private or other non-public "
        f"addresses. To allow it, start the server with --allow-host 127.0.0.1:{stub.port} or "
        "--allow-network 127.0.0.1/32"
    )
    for spelling in ("localhost", "127.1", "2130706433", "0x7f000001", "[::ffff:127.0.0.1]"):
        url = f"http://{spelling}:{stub.port}/x"
        await refused(HttpRequest(), {"url": url}, ctx(NetworkPolicy()))
    assert stub.seen == []


@pytest.mark.asyncio
async def test_http_request_without_a_policy_is_unchanged(stubs: Callable[[], Stub]) -> None:
    stub = stubs()
    out = await HttpRequest()({"url": f"{stub.url}/x"}, ctx(None))
    assert out["status_code"] == 200
    assert len(stub.seen) == 1


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "allowance",
    [
        {"allow_hosts": ["127.0.0.1:{port}"]},
        {"allow_hosts": ["127.0.0.1"]},
        {"allow_networks": ["127.0.0.0/8"]},
    ],
)
async def test_http_request_is_allowed_where_the_operator_opened_it(
    stubs: Callable[[], Stub], allowance: dict[str, list[str]]
) -> None:
    stub = stubs()
    opened = {k: [v.format(port=stub.port) for v in vs] for k, vs in allowance.items()}
    policy = NetworkPolicy.for_server(**opened)
    for spelling in ("127.0.0.1", "127.1", "[::ffff:127.0.0.1]"):
        out = await HttpRequest()({"url": f"http://{spelling}:{stub.port}/p"}, ctx(policy))
        assert out["status_code"] == 200
    assert [s.path for s in stub.seen] == ["/p"] * 3
    assert stub.seen[1].headers["host"] == f"127.1:{stub.port}"  # the name, not the address


@pytest.mark.asyncio
async def test_an_allowed_port_does_not_open_another(stubs: Callable[[], Stub]) -> None:
    opened, other = stubs(), stubs()
    policy = NetworkPolicy.for_server(allow_hosts=[f"127.0.0.1:{opened.port}"])
    await refused(HttpRequest(), {"url": f"{other.url}/"}, ctx(policy))
    assert other.seen == []


@pytest.mark.asyncio
async def test_a_redirect_from_an_allowed_host_to_a_denied_one_is_refused(
    stubs: Callable[[], Stub],
) -> None:
    """/http/request returns the 302 unfollowed; a client following it through the
    guarded transport is refused at the second hop. The target never sees a request."""
    target, allowed = stubs(), stubs()
    allowed.redirect_to = f"{target.url}/secret"
    policy = NetworkPolicy.for_server(allow_hosts=[f"127.0.0.1:{allowed.port}"])
    out = await HttpRequest()({"url": f"{allowed.url}/go"}, ctx(policy))
    assert (out["status_code"], out["headers"]["location"]) == (302, f"{target.url}/secret")
    async with httpx.AsyncClient(
        transport=GuardedTransport(policy), follow_redirects=True, trust_env=False
    ) as client:
        with pytest.raises(ComponentError, match=f"--allow-host 127.0.0.1:{target.port}"):
            await client.get(f"{allowed.url}/go")
    assert [s.path for s in allowed.seen] == ["/go", "/go"]
    assert target.seen == []


@pytest.mark.asyncio
async def test_http_request_following_redirects_checks_every_hop(
    stubs: Callable[[], Stub],
) -> None:
    """With follow_redirects (issue 14) each hop goes through the guarded transport: an
    allowed hop is followed, a hop to a refused address fails before it connects."""
    final, middle, target, start = stubs(), stubs(), stubs(), stubs()
    middle.redirect_to = f"{final.url}/end"
    start.redirect_to = f"{middle.url}/next"
    policy = NetworkPolicy.for_server(
        allow_hosts=[f"127.0.0.1:{p}" for p in (start.port, middle.port, final.port)]
    )
    out = await HttpRequest()({"url": f"{start.url}/go", "follow_redirects": True}, ctx(policy))
    assert out["status_code"] == 200
    assert [s.path for s in (*start.seen, *middle.seen, *final.seen)] == ["/go", "/next", "/end"]

    start.redirect_to = f"{target.url}/secret"  # not an allowed host
    error = await refused(
        HttpRequest(), {"url": f"{start.url}/go", "follow_redirects": True}, ctx(policy)
    )
    assert f"127.0.0.1:{target.port}" in error.message
    assert target.seen == []


MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture
def llm(stubs: Callable[[], Stub], monkeypatch: pytest.MonkeyPatch) -> Stub:
    """A stub the operator configured: OPENAI_BASE_URL and OPENAI_API_KEY are set."""
    stub = stubs()
    monkeypatch.setenv("OPENAI_BASE_URL", f"{stub.url}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "server-secret")
    return stub


def auth(stub: Stub) -> list[tuple[str, str | None]]:
    return [(s.path, s.headers.get("authorization")) for s in stub.seen]


@pytest.mark.asyncio
async def test_openai_sends_the_server_key_only_to_the_configured_base_url(llm: Stub) -> None:
    policy = NetworkPolicy.for_server(allow_hosts=[f"127.0.0.1:{llm.port}"])
    chat = OpenAIChat()
    await chat({"messages": MESSAGES}, ctx(policy))  # the configured endpoint
    await chat({"messages": MESSAGES, "base_url": f"{llm.url}/v1/"}, ctx(policy))  # the same
    await chat({"messages": MESSAGES, "base_url": f"{llm.url}/evil/v1"}, ctx(policy))
    await chat({"messages": MESSAGES}, ctx(policy, {"openai_base_url": f"{llm.url}/var/v1"}))
    own = {"messages": MESSAGES, "base_url": f"{llm.url}/own/v1", "api_key": "flow-key"}
    await chat(own, ctx(policy))
    assert auth(llm) == [
        ("/v1/chat/completions", "Bearer server-secret"),
        ("/v1/chat/completions", "Bearer server-secret"),
        ("/evil/v1/chat/completions", None),
        ("/var/v1/chat/completions", None),
        ("/own/v1/chat/completions", "Bearer flow-key"),
    ]


@pytest.mark.asyncio
async def test_openai_without_a_policy_still_uses_the_environment_key(llm: Stub) -> None:
    """Locally nothing changes: the environment's key goes to whatever base URL is used."""
    await OpenAIChat()({"messages": MESSAGES, "base_url": f"{llm.url}/other/v1"}, ctx(None))
    assert auth(llm) == [("/other/v1/chat/completions", "Bearer server-secret")]


@pytest.mark.asyncio
async def test_openai_to_an_unopened_loopback_endpoint_is_refused(llm: Stub) -> None:
    error = await refused(OpenAIChat(), {"messages": MESSAGES}, ctx(NetworkPolicy.for_server()))
    assert error.message.startswith(
        f"/builtin/openai: POST {llm.url}/v1/chat/completions: 127.0.0.1:{llm.port} is a "
        "loopback address;"
    )
    assert "server-secret" not in error.message
    assert llm.seen == []


@pytest.mark.asyncio
async def test_a_loaded_flow_and_its_nested_flows_carry_the_policy(
    stubs: Callable[[], Stub],
) -> None:
    """Through load_flow (and /builtin/eval), and after a pickle round trip of the
    recipe as the process and Ray executors do it."""
    stub = stubs()
    flow_text = f"""
steps:
  - id: direct
    component: /http/request
    input: {{url: "{stub.url}/direct"}}
    on_error: {{action: useDefault, defaultValue: refused}}
  - id: nested
    component: /builtin/eval
    input:
      flow:
        steps:
          - id: get
            component: /http/request
            input: {{url: "{stub.url}/nested"}}
        output: {{$step: get}}
      input: {{}}
output:
  direct: {{$step: direct}}
  nested: {{$step: nested, path: result}}
"""
    options = LoaderOptions(network=NetworkPolicy.for_server())
    flow = load_flow(flow_text, options=options)
    recipe = pickle.loads(pickle.dumps(flow.recipe))
    for loaded in (flow, recipe.load()):
        result = (await loaded.run_async({})).to_dict()
        assert result["outcome"] == "success", result
        assert result["result"]["direct"] == "refused"
        nested = result["result"]["nested"]
        assert nested["outcome"] == "failed"
        assert nested["error"]["code"] == "PERMISSION_DENIED"
    assert stub.seen == []
