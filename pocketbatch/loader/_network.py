"""Where a flow's outbound HTTP may go, and where the server's credentials may go.

:class:`NetworkPolicy` is the server's answer to server-side request forgery: a
submitted flow must not make the server fetch its own loopback services, the
cloud metadata endpoint (``169.254.169.254``) or anything else on a private
network, and must not receive the server's API keys by pointing
``/builtin/openai`` at a URL of its choosing.

It is carried by :class:`~pocketbatch.loader.LoaderOptions` (``network``). ``None``,
the default, means no restriction at all: ``pocketbatch run`` and ``run-batch``
behave as before. ``pocketbatch serve`` always sets a policy that denies loopback,
link-local, private, unspecified, multicast, reserved and other not globally
routable addresses, opened by ``--allow-host HOST[:PORT]`` and
``--allow-network CIDR``.

The check is on *addresses*, after DNS resolution, so every spelling of an address
(``127.1``, ``2130706433``, ``0x7f000001``, ``[::ffff:127.0.0.1]``, a name that
resolves to it) meets the same rule. The HTTP builtins resolve the host once, check
every address, and connect to the checked address only (see
:mod:`pocketbatch.loader._transport`), so a DNS answer that changes between the
check and the connection cannot slip past it; each request is checked, so every
hop of a redirect is too.

This module needs only the standard library.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from pocketbatch._errors import ComponentError

__all__ = (
    "DEFAULT_OPENAI_BASE_URL",
    "HostRule",
    "NetworkPolicy",
    "Resolver",
    "denied_reason",
    "parse_network",
    "system_resolver",
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""``async (host, port) -> addresses``: how a host name becomes IP addresses."""

DEFAULT_OPENAI_BASE_URL: Final = "https://api.openai.com/v1"

_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def _unmapped(ip: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address (``::ffff:a.b.c.d``) as the IPv4 address it is."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _address(text: str) -> IPAddress | None:
    """``text`` as an IP address (IPv4-mapped IPv6 unmapped), or ``None``."""
    try:
        return _unmapped(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        return None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address a 6to4, Teredo or NAT64 address leads to, with its kind."""
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour
    if ip.teredo is not None:
        return "Teredo", ip.teredo[1]
    if ip in _NAT64:
        return "NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def denied_reason(address: str | IPAddress) -> str | None:
    """Why a deny-private policy refuses ``address``, or ``None`` when it is public.

    Refused: unspecified, loopback, link-local, multicast, private, reserved and
    any other not globally routable address; IPv4-mapped IPv6 is judged as its
    IPv4 address, and 6to4, Teredo and NAT64 addresses by the IPv4 address they
    lead to as well.

    Example:
        >>> denied_reason("169.254.169.254")
        'a link-local address'
        >>> denied_reason("::ffff:127.0.0.1")
        'a loopback address'
        >>> denied_reason("93.184.216.34") is None
        True
    """
    ip = _address(address) if isinstance(address, str) else _unmapped(address)
    if ip is None:
        return "not an IP address"
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_private:
        return "a private address"
    if ip.is_reserved:
        return "a reserved address"
    if not ip.is_global:
        return "not a globally routable address"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            kind, inner = embedded
            reason = denied_reason(inner)
            if reason is not None:
                return f"a {kind} address leading to {inner}, {reason}"
    return None


@dataclass(frozen=True, order=True)
class HostRule:
    """One ``--allow-host HOST[:PORT]``: a host name or an IP address, any port or one.

    A name matches the host as written in the URL (case-insensitive, a trailing dot
    ignored), and then every address it resolves to is allowed: the operator trusts
    that name. An IP address matches the address a request connects to, however the
    URL spells it. Without a port, every port matches.

    Example:
        >>> HostRule.parse("LocalHost.:8080")
        HostRule(host='localhost', port=8080)
        >>> HostRule.parse("[::ffff:127.0.0.1]").host
        '127.0.0.1'
        >>> str(HostRule.parse("::1"))
        '[::1]'
    """

    host: str
    port: int | None = None

    @property
    def is_address(self) -> bool:
        """Whether :attr:`host` is an IP address (else a host name)."""
        return _address(self.host) is not None

    @classmethod
    def parse(cls, text: str) -> HostRule:
        """``HOST``, ``HOST:PORT``, ``[IPv6]``, ``[IPv6]:PORT`` or a bare IPv6 address.

        Raises:
            ValueError: the text is none of those (the message says why).
        """
        given = text.strip()
        host, port_text = given, None
        if given.startswith("["):
            end = given.find("]")
            if end < 0:
                raise ValueError(f"{text!r}: missing ']' after the IPv6 address")
            host, rest = given[1:end], given[end + 1 :]
            if rest:
                if not rest.startswith(":"):
                    raise ValueError(f"{text!r}: expected ':PORT' after ']'")
                port_text = rest[1:]
        elif given.count(":") == 1:
            host, port_text = given.split(":")
        port = None
        if port_text is not None:
            if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
                raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
            port = int(port_text)
        ip = _address(host)
        if ip is not None:
            return cls(str(ip), port)
        if ":" in host:
            raise ValueError(f"{text!r}: not an IPv6 address; write [ADDRESS]:PORT")
        name = host.lower().rstrip(".")
        if not name or "*" in name or "/" in name or "@" in name:
            raise ValueError(
                f"{text!r}: give one host name or IP address (no wildcards, paths or "
                "user names); for a range of addresses use --allow-network CIDR"
            )
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise ValueError(f"{text!r}: not a valid host name ({exc})") from None
        return cls(name, port)

    def matches_port(self, port: int) -> bool:
        """Whether ``port`` is this rule's port (any port when it has none)."""
        return self.port is None or self.port == port

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"


def parse_network(text: str) -> IPNetwork:
    """One ``--allow-network CIDR`` (a bare address is a network of one).

    Raises:
        ValueError: not a network, or host bits set (``10.0.0.5/8``).

    Example:
        >>> parse_network("10.0.0.0/8")
        IPv4Network('10.0.0.0/8')
        >>> parse_network("::1")
        IPv6Network('::1/128')
    """
    try:
        return ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a network in CIDR notation: {exc}") from None


def _url_key(url: str) -> tuple[str, ...]:
    """A base URL reduced to what decides where a request goes (for comparison)."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    host = (parts.hostname or "").rstrip(".")
    return (
        scheme,
        parts.username or "",
        parts.password or "",
        host,
        str(port or _DEFAULT_PORTS.get(scheme) or ""),
        parts.path.rstrip("/"),
        parts.query,
        parts.fragment,
    )


@dataclass(frozen=True)
class NetworkPolicy:
    """What a flow's HTTP builtins may connect to, and where server credentials go.

    Attributes:
        deny_private: refuse every address :func:`denied_reason` objects to
            (loopback, link-local, private, ...), unless allowed below.
        allow_hosts: exceptions by host (``--allow-host``), see :class:`HostRule`.
        allow_networks: exceptions by address range (``--allow-network``).
        credential_base_urls: the base URLs ``/builtin/openai`` may send the
            environment's ``OPENAI_API_KEY`` to when the flow chose the base URL
            itself; ``None``: any. A base URL taken from the environment
            (``OPENAI_BASE_URL``) or the default is the operator's and always may.

    Example:
        >>> policy = NetworkPolicy.for_server(allow_hosts=["127.0.0.1:8080"])
        >>> policy.refusal("127.0.0.1", 8080, "127.0.0.1") is None
        True
        >>> print(policy.refusal("127.1", 9000, "127.0.0.1"))
        127.1:9000 resolves to 127.0.0.1, a loopback address; ...
        >>> policy.may_send_credentials("https://evil.example/v1")
        False
    """

    deny_private: bool = True
    allow_hosts: frozenset[HostRule] = frozenset()
    allow_networks: frozenset[IPNetwork] = frozenset()
    credential_base_urls: frozenset[str] | None = None

    @classmethod
    def for_server(
        cls,
        allow_hosts: Iterable[str] = (),
        allow_networks: Iterable[str] = (),
        credential_base_urls: Iterable[str] | None = None,
    ) -> NetworkPolicy:
        """The server's policy: deny private addresses, but for the operator's exceptions.

        ``credential_base_urls`` defaults to the one base URL the operator set up:
        ``OPENAI_BASE_URL`` from the environment, else ``https://api.openai.com/v1``.

        Raises:
            ValueError: a host or network that does not parse (the message says which).
        """
        if credential_base_urls is None:
            import os

            credential_base_urls = [os.environ.get("OPENAI_BASE_URL") or DEFAULT_OPENAI_BASE_URL]
        return cls(
            deny_private=True,
            allow_hosts=frozenset(HostRule.parse(h) for h in allow_hosts),
            allow_networks=frozenset(parse_network(n) for n in allow_networks),
            credential_base_urls=frozenset(credential_base_urls),
        )

    def _host_allowed(self, host: str, port: int) -> bool:
        name = host.lower().rstrip(".")
        return any(
            not rule.is_address and rule.host == name and rule.matches_port(port)
            for rule in self.allow_hosts
        )

    def _address_allowed(self, ip: IPAddress, port: int) -> bool:
        if any(ip in network for network in self.allow_networks):
            return True
        text = str(ip)
        return any(rule.host == text and rule.matches_port(port) for rule in self.allow_hosts)

    def refusal(self, host: str, port: int, address: str) -> str | None:
        """Why connecting to ``address`` (resolved from ``host``) on ``port`` is refused.

        ``None`` when allowed. The message names the host, the address, why, and
        the ``pocketbatch serve`` flags that would open it.
        """
        if not self.deny_private or self._host_allowed(host, port):
            return None
        ip = _address(address)
        if ip is None:
            return f"{host}:{port} resolves to {address!r}, which is not an IP address"
        if self._address_allowed(ip, port):
            return None
        reason = denied_reason(ip)
        if reason is None:
            return None
        literal = _address(host)
        shown = f"[{host}]" if ":" in host else host
        if literal is not None and literal == ip:
            where = f"{shown}:{port} is {reason}"
        else:
            where = f"{shown}:{port} resolves to {ip}, {reason}"
        rule = HostRule(str(literal) if literal is not None else host.lower().rstrip("."), port)
        return (
            f"{where}; flows on this server may not connect to loopback, link-local, "
            "private or other non-public addresses. To allow it, start the server with "
            f"--allow-host {rule} or --allow-network {ipaddress.ip_network(ip)}"
        )

    def check(self, host: str, port: int, addresses: Sequence[str]) -> list[str]:
        """The addresses to connect to (IPv4-mapped ones unmapped), all checked.

        Raises:
            ComponentError: ``PERMISSION_DENIED`` when *any* of them is refused, so
                a name that resolves to a public and a private address is refused
                too, and nothing is connected to.
        """
        allowed: list[str] = []
        for address in addresses:
            why = self.refusal(host, port, address)
            if why is not None:
                raise ComponentError("PERMISSION_DENIED", why)
            ip = _address(address)
            text = address if ip is None else str(ip)
            if text not in allowed:
                allowed.append(text)
        return allowed

    def may_send_credentials(self, base_url: str) -> bool:
        """Whether the server's own API key may go to ``base_url``, chosen by a flow.

        Example:
            >>> policy = NetworkPolicy(credential_base_urls=frozenset({"https://llm.internal/v1"}))
            >>> policy.may_send_credentials("HTTPS://llm.internal:443/v1/")
            True
            >>> policy.may_send_credentials("https://llm.internal.evil.example/v1")
            False
        """
        if self.credential_base_urls is None:
            return True
        key = _url_key(base_url)
        return any(_url_key(url) == key for url in self.credential_base_urls)


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to (the system resolver, off the event loop).

    Numeric spellings are resolved as the C library reads them (``127.1`` and
    ``2130706433`` are ``127.0.0.1``).

    Raises:
        OSError: ``socket.gaierror`` when the name does not resolve.

    Example:
        >>> import asyncio
        >>> asyncio.run(system_resolver("0x7f000001", 80))
        ['127.0.0.1']
    """
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in found:
            found.append(address)
    return found
