"""``pocketbatch serve``: run the HTTP API under uvicorn."""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import time
from pathlib import Path

from pocketbatch._errors import MissingExtraError
from pocketbatch.server._app import create_app
from pocketbatch.server._settings import ServerSettings

__all__ = ("QuietRepeats", "connection_budget", "is_loopback", "serve")


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
    _log_to_stderr()
    # uvicorn logs some problems once per request ("Invalid HTTP request received."):
    # a client repeating one must not flood the log.
    logging.getLogger("uvicorn.error").addFilter(QuietRepeats())
    limits = settings.limits
    connections, backlog = connection_budget(limits.max_connections)
    protocol = guarded_protocol(
        header_timeout=limits.header_timeout,
        body_timeout=limits.body_timeout,
        max_connections=connections,
    )
    sock = _bind(host, port)
    _announce(settings, host, sock.getsockname()[1])
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,  # one line per request is a flood under load
        http=protocol,
        backlog=backlog,
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # pragma: no cover - uvicorn handles SIGINT itself
        pass
    finally:
        sock.close()


def _bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (uvicorn listens on it).

    Raises:
        ValueError: the address is in use, or cannot be bound here (one line).
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except OSError as exc:
        raise ValueError(f"cannot listen on {host}: {exc}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ValueError(
                f"cannot listen on {host}:{port}: the port is in use (another server?); "
                "choose another --port"
            ) from None
        raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def _announce(settings: ServerSettings, host: str, port: int) -> None:
    """Say on stderr where the server listens and how it is set up."""
    import sys

    shown = f"[{host}]" if ":" in host else host
    token = "required (Authorization: Bearer ...)" if settings.token else "not required"
    workers = f", {settings.max_workers} workers" if settings.max_workers else ""
    lines = [
        f"pocketbatch serve: listening on http://{shown}:{port} (API: /api/v1)",
        f"  store:    {Path(settings.db).resolve()}",
        f"  token:    {token}",
        f"  executor: {settings.executor}{workers}, {settings.max_concurrent} items in flight",
        f"  config:   {settings.config if settings.config is not None else 'none (builtins)'}",
    ]
    print("\n".join(lines), file=sys.stderr, flush=True)


_FD_RESERVE = 192  # descriptors for the store, logs, worker pipes, refused connections...
_BURSTS = 4  # accept bursts (of up to `backlog` sockets) that may be open before refusals close


def connection_budget(wanted: int) -> tuple[int, int]:
    """(connections to serve, listen backlog) that the open-file limit can hold.

    Beside the connections it serves, a server holds the sockets it has just
    accepted (a few bursts of up to ``backlog`` each) until it has refused them.
    Raises the soft ``RLIMIT_NOFILE`` towards the hard limit when that makes room;
    otherwise serves fewer connections (saying so on stderr), so the server never
    runs out of descriptors (and never stops accepting).

    Example:
        >>> connections, backlog = connection_budget(10)
        >>> 1 <= connections <= 10 and 8 <= backlog <= 128
        True
    """
    backlog = min(128, max(8, wanted))
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return wanted, backlog
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = wanted + _BURSTS * backlog + _FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return wanted, backlog
    room = max(0, soft - _FD_RESERVE)
    backlog = min(backlog, max(8, room // (2 * _BURSTS)))
    cap = max(1, min(wanted, room - _BURSTS * backlog))
    import sys

    print(
        f"pocketbatch serve: the open-file limit is {soft}: serving at most {cap} "
        f"connections instead of {wanted} (raise it with ulimit -n)",
        file=sys.stderr,
    )
    return cap, backlog


class QuietRepeats(logging.Filter):
    """A log filter that lets a message through once per ``window`` seconds; the next
    one to pass says how many like it were held back meanwhile.

    Example:
        >>> quiet = QuietRepeats(window=60)
        >>> records = [logging.makeLogRecord({"msg": "Invalid HTTP request received."})
        ...            for _ in range(3)]
        >>> [quiet.filter(r) for r in records]
        [True, False, False]
    """

    def __init__(self, window: float = 60.0) -> None:
        super().__init__()
        self.window = window
        self._seen: dict[str, tuple[float, int]] = {}  # message -> (when passed, held back)

    def filter(self, record: logging.LogRecord) -> bool:
        key = str(record.msg)
        now = time.monotonic()
        passed, held = self._seen.get(key, (-self.window, 0))
        if now - passed < self.window:
            self._seen[key] = (passed, held + 1)
            return False
        if len(self._seen) > 1000:  # distinct messages: keep the memory bounded
            self._seen.clear()
        self._seen[key] = (now, 0)
        if held:
            record.msg = f"{record.msg} ({held} more like it in the last {self.window:g} s)"
        return True


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
