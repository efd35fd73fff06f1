"""``pocketbatch serve``: run the HTTP API under uvicorn."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

from pocketbatch._errors import MissingExtraError
from pocketbatch.server._app import ServerSettings, create_app

__all__ = ("connection_cap", "is_loopback", "serve")


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (127.0.0.0/8, ::1, localhost).

    Example:
        >>> is_loopback("127.0.0.1"), is_loopback("0.0.0.0")
        (True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(
                ipaddress.ip_address(info[4][0]).is_loopback
                for info in socket.getaddrinfo(host, None)
            )
        except OSError:
            return False


def serve(settings: ServerSettings, *, host: str, port: int) -> None:
    """Serve until interrupted.

    Raises:
        ValueError: ``host`` is not loopback and no token is set.
        MissingExtraError: uvicorn or FastAPI is not installed.
    """
    if settings.token is None and not is_loopback(host):
        raise ValueError(
            f"refusing to listen on {host} without a token: set --token (or "
            "POCKETBATCH_TOKEN), or listen on 127.0.0.1"
        )
    try:
        import uvicorn
    except ImportError:
        raise MissingExtraError("pocketbatch serve", "server") from None
    from pocketbatch.server._guard import guarded_protocol

    app = create_app(settings)
    Path(settings.db).parent.mkdir(parents=True, exist_ok=True)
    limits = settings.limits
    protocol = guarded_protocol(
        header_timeout=limits.header_timeout,
        body_timeout=limits.body_timeout,
        max_connections=connection_cap(limits.max_connections),
    )
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,  # one line per request is a flood under load
        http=protocol,
    )


_FD_RESERVE = 128  # descriptors kept for the store, logs, worker pipes, Ray...


def connection_cap(wanted: int) -> int:
    """``wanted`` connections, or fewer when the open-file limit cannot hold them.

    Raises the soft ``RLIMIT_NOFILE`` towards the hard limit when that makes room;
    otherwise caps the connections below it (saying so on stderr), so that the
    server never runs out of descriptors and stops accepting altogether.

    Example:
        >>> 1 <= connection_cap(10) <= 10
        True
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = wanted + _FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return wanted
    cap = max(1, soft - _FD_RESERVE)
    import sys

    print(
        f"pocketbatch serve: the open-file limit is {soft}: serving at most {cap} "
        f"connections instead of {wanted} (raise it with ulimit -n)",
        file=sys.stderr,
    )
    return cap
