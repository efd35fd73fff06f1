"""What a server runs with: :class:`ServerSettings` and its request :class:`Limits`.

Plain dataclasses (no FastAPI), so the CLI can build them without the ``server``
extra.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pocketbatch.loader import ComponentRegistry
    from pocketbatch.loader._services import ServiceSettings

__all__ = ("Limits", "ServerSettings")


@dataclass(frozen=True)
class Limits:
    """Sizes a request may not exceed, and how long and how many clients may take.

    Attributes:
        max_request_bytes: the whole request body (413 beyond).
        max_flow_bytes: the flow text (413 beyond).
        max_batch_items: inputs in one batch (422 beyond).
        max_concurrent: a batch's ``max_concurrent`` (422 beyond); the server's own
            ``--max-concurrent`` still caps what runs at once.
        header_timeout: seconds a client has to send a request's line and headers
            (the connection is closed after; ``pocketbatch serve`` only).
        body_timeout: seconds a request body may go without a byte (closed after).
        max_connections: connections open at once; one more gets 503 and is closed.

    Example:
        >>> Limits(max_request_bytes=1024).max_connections
        1000
    """

    max_request_bytes: int = 256 * 1024 * 1024
    max_flow_bytes: int = 1024 * 1024
    max_batch_items: int = 1_000_000
    max_concurrent: int = 10_000
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    max_connections: int = 1000


@dataclass(frozen=True)
class ServerSettings:
    """What ``pocketbatch serve`` was started with."""

    db: Path
    token: str | None = None
    config: Path | None = None
    allow_modules: frozenset[str] = frozenset()
    data_dir: Path = field(default_factory=Path.cwd)
    max_concurrent: int = 64
    limits: Limits = Limits()
    registry: ComponentRegistry | None = None
    executor: str = "async"
    max_workers: int | None = None
    # Outbound HTTP of submitted flows: denied to loopback, link-local, private, ...
    # addresses but for these (HOST[:PORT] and CIDR strings; ``--allow-host``,
    # ``--allow-network``). See pocketbatch.loader.NetworkPolicy.for_server.
    allow_hosts: frozenset[str] = frozenset()
    allow_networks: frozenset[str] = frozenset()
    # Where submitted flows' `cache: true` steps keep their answers (a SQLite file,
    # shared by all of them); None: those steps call every time.
    cache: Path | None = None
    # Limits set by hand for every provider the submitted flows call (serve's
    # --requests-per-minute / --tokens-per-minute), and the retry policy; one
    # limiter per provider (base URL + key) serves all batches and /runs calls.
    services: ServiceSettings | None = None
