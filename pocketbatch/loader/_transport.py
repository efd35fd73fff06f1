"""An httpx transport that enforces a :class:`~pocketbatch.loader.NetworkPolicy`.

:class:`GuardedTransport` sits in front of an ordinary
:class:`httpx.AsyncHTTPTransport`. For every request (so for every hop of a
redirect a client follows) it resolves the URL's host once, checks every address
with the policy, and hands the inner transport a copy of the request whose URL
names the checked address instead of the host. The ``Host`` header keeps the
name, and for HTTPS the TLS server name (SNI and the certificate check) stays the
name too, so a DNS answer that changes between the check and the connection
cannot redirect it anywhere.

This module imports httpx; the HTTP builtins import it only when they run.
"""

from __future__ import annotations

import asyncio
import math
import socket
import ssl

import httpx

from pocketbatch.loader._network import NetworkPolicy, Resolver, _address, system_resolver

__all__ = ("GuardedTransport", "ShardedTransport")

_DEFAULT_PORTS = {"http": 80, "https": 443}


class GuardedTransport(httpx.AsyncBaseTransport):
    """Connect only to addresses ``policy`` allows, pinned after the check.

    Args:
        policy: what may be reached.
        inner: the transport that really connects (default: a new
            :class:`httpx.AsyncHTTPTransport`).
        resolver: ``async (host, port) -> [address, ...]`` (default: the system
            resolver); tests inject one to try private addresses without a network.

    A refused request raises :class:`~pocketbatch.ComponentError`
    ``PERMISSION_DENIED`` (nothing is connected to); a name that does not resolve
    raises :class:`httpx.ConnectError`, and a resolution slower than the request's
    connect timeout :class:`httpx.ConnectTimeout`.

    Example:
        >>> import asyncio, httpx
        >>> from pocketbatch.loader import NetworkPolicy
        >>> async def fetch(url: str) -> None:
        ...     transport = GuardedTransport(NetworkPolicy())
        ...     async with httpx.AsyncClient(transport=transport) as client:
        ...         await client.get(url)
        >>> asyncio.run(fetch("http://127.1:7837/api/v1/health"))
        Traceback (most recent call last):
        ...
        pocketbatch._errors.ComponentError: [PERMISSION_DENIED] 127.1:7837 resolves to 127.0.0.1...
    """

    def __init__(
        self,
        policy: NetworkPolicy,
        *,
        inner: httpx.AsyncBaseTransport | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        self.policy = policy
        self._inner = inner if inner is not None else httpx.AsyncHTTPTransport()
        self._resolve = resolver or system_resolver

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.scheme
        if scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(
                f"Request URL has an unsupported protocol '{scheme}://'.", request=request
            )
        host = url.raw_host.decode("ascii")
        if not host:
            raise httpx.UnsupportedProtocol("Request URL has no host.", request=request)
        port = url.port or _DEFAULT_PORTS[scheme]
        addresses = await self._addresses(request, host, port)
        pinned_to = self.policy.check(host, port, addresses)
        extensions = dict(request.extensions)
        if scheme == "https" and _address(host) is None:
            extensions["sni_hostname"] = host  # TLS still verifies the name, not the address
        failure: httpx.ConnectError | None = None
        for address in pinned_to:  # in the resolver's order; the next one if one refuses
            pinned = httpx.Request(
                request.method,
                url.copy_with(host=address),
                headers=request.headers,  # the Host header keeps the name
                stream=request.stream,
                extensions=extensions,
            )
            try:
                return await self._inner.handle_async_request(pinned)
            except httpx.ConnectError as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def _addresses(self, request: httpx.Request, host: str, port: int) -> list[str]:
        timeout = request.extensions.get("timeout", {}).get("connect")
        try:
            found = await asyncio.wait_for(self._resolve(host, port), timeout)
        except TimeoutError:
            raise httpx.ConnectTimeout(
                f"resolving {host} took longer than {timeout:g} s", request=request
            ) from None
        except socket.gaierror as exc:
            raise httpx.ConnectError(
                f"cannot resolve {host}: {exc.strerror or exc}", request=request
            ) from None
        if not found:
            raise httpx.ConnectError(f"{host} resolves to no address", request=request)
        return list(found)

    async def aclose(self) -> None:
        await self._inner.aclose()


class ShardedTransport(httpx.AsyncBaseTransport):
    """Several connection pools behind one transport, made as requests need them.

    httpcore's pool looks over all its connections, for each idle one, on every
    request and response (quadratic in the pool's size): at 64 requests in flight
    that cost more CPU than the requests themselves. Pools of ``per_pool``
    connections keep that small; each request goes to the least busy pool, and each
    pool may open (and keep) twice its share, so a request never waits inside a pool
    for a connection still being released. Connections stay near the peak in flight.
    Pools are made lazily (a new one only when every pool has its share in flight,
    up to ``size / per_pool`` of them): ``--max-concurrent 1000000`` makes as many
    pools as requests actually run at once need, not 250 000 up front. They share one
    TLS context (``verify``, default httpx's: certifi's roots, or ``SSL_CERT_FILE`` /
    ``SSL_CERT_DIR``): making one costs 30-40 ms of CPU, so a context per pool cost
    half a second at the start of every run.

    Example:
        >>> import asyncio
        >>> transport = ShardedTransport(64)
        >>> transport.max_pools, len(transport.pools)
        (16, 0)
        >>> asyncio.run(transport.aclose())
    """

    def __init__(
        self, size: int, *, per_pool: int = 4, verify: ssl.SSLContext | None = None
    ) -> None:
        self.max_pools = max(1, math.ceil(size / per_pool))
        self._share = math.ceil(size / self.max_pools)  # requests a pool takes before a new one
        self._limits = httpx.Limits(
            max_connections=2 * self._share, max_keepalive_connections=2 * self._share
        )
        self._ssl: ssl.SSLContext | None = verify  # made on first use if not given
        self.pools: list[httpx.AsyncHTTPTransport] = []
        self._busy: list[int] = []  # requests each pool is sending

    def _pick(self) -> int:
        """The least busy pool, or a new one when every pool has its share in flight."""
        if self.pools:
            index = min(range(len(self.pools)), key=self._busy.__getitem__)
            if self._busy[index] < self._share or len(self.pools) >= self.max_pools:
                return index
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context()
        self.pools.append(httpx.AsyncHTTPTransport(verify=self._ssl, limits=self._limits))
        self._busy.append(0)
        return len(self.pools) - 1

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        index = self._pick()
        self._busy[index] += 1
        try:
            return await self.pools[index].handle_async_request(request)
        finally:
            self._busy[index] -= 1

    async def aclose(self) -> None:
        for pool in self.pools:
            await pool.aclose()
