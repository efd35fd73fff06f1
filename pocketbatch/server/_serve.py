"""``pocketbatch serve``: run the HTTP API under uvicorn."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

from pocketbatch._errors import MissingExtraError
from pocketbatch.server._app import ServerSettings, create_app

__all__ = ("is_loopback", "serve")


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
    app = create_app(settings)
    Path(settings.db).parent.mkdir(parents=True, exist_ok=True)
    _log_to_stderr()
    uvicorn.run(app, host=host, port=port, log_level="warning")


def _log_to_stderr() -> None:
    """The server's own log lines (a full disk, its recovery) go to stderr, timestamped."""
    import logging

    log = logging.getLogger("pocketbatch")
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
