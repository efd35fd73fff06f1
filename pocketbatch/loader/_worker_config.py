"""A Stepflow ``grpc`` plugin as ``stepflow-config.yml`` declares it: what worker to launch.

Read when the config is read (no gRPC import here): the plugin's ``command``,
``args``, ``env``, ``queueName``, ``queueTimeoutSecs`` (default 30) and
``executionTimeoutSecs`` (default none), and the config's top-level
``retry: {transportMaxRetries, backoff}`` (default 3 retries, Fibonacci backoff from
1 s up to 10 s), all as Stepflow 0.13 reads them. ``${VAR}`` and ``${VAR:-default}``
in ``args`` and ``env`` are replaced from the environment when the worker starts
(Stepflow's documentation promises this; its 0.13 ``grpc`` plugin passes them as
written).

Running the worker is :mod:`pocketbatch.loader._worker_hub`'s job.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pocketbatch.loader._config_reader import ConfigReader, kind_of
from pocketbatch.loader._source import DocPath

__all__ = ("Backoff", "WorkerPlugin", "missing_extra", "read_grpc_plugin", "substitute")

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def substitute(text: str, env: Mapping[str, str]) -> str:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in ``text`` from ``env``.

    Raises:
        KeyError: a variable without a default is not set (its name).

    Example:
        >>> substitute("${HOME_DIR}/x ${MODE:-fast}", {"HOME_DIR": "/h"})
        '/h/x fast'
    """

    def one(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = env.get(name)
        if value is not None and (value or default is None):
            return value
        if default is not None:
            return default
        raise KeyError(name)

    return _VAR.sub(one, text)


@dataclass(frozen=True)
class Backoff:
    """Stepflow's retry delays: ``constant``, ``exponential`` or ``fibonacci`` (default).

    Example:
        >>> [Backoff().delay(n) for n in (1, 2, 3, 4, 7)]
        [1.0, 1.0, 2.0, 3.0, 10.0]
        >>> Backoff("constant", min_ms=500).delay(5)
        0.5
    """

    kind: str = "fibonacci"
    min_ms: int = 1000
    max_ms: int = 10000
    factor: float = 2.0

    def delay(self, retry: int) -> float:
        """Seconds to wait before the ``retry``-th retry (counting from 1)."""
        if self.kind == "constant":
            return self.min_ms / 1000
        if self.kind == "exponential":
            return min(self.min_ms * self.factor ** max(retry - 1, 0), self.max_ms) / 1000
        a, b = 1, 1
        for _ in range(max(retry - 1, 0)):
            a, b = b, a + b
        return min(self.min_ms * a, self.max_ms) / 1000


@dataclass(frozen=True)
class WorkerPlugin:
    """One ``type: grpc`` plugin of a ``stepflow-config.yml``.

    Attributes:
        name: the plugin's name (``plugins.<name>``).
        queue_name: ``queueName``: the queue its worker pulls from.
        command, args, env: how to launch the worker (``command`` ``None``: a remote
            worker, which pocketbatch cannot use).
        cwd: the config file's directory, where the worker starts.
        queue_timeout: seconds a task may wait for a worker to claim it.
        execution_timeout: seconds from the claim to the result (``None``: no cap).
        transport_max_retries: retries after a worker crash or timeout.
        backoff: the delays between those retries.
        where: ``file:line:column`` of the plugin, for messages.

    Example:
        >>> WorkerPlugin("python", "python", "stepflow_worker").queue_timeout
        30.0
    """

    name: str
    queue_name: str
    command: str | None
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    queue_timeout: float = 30.0
    execution_timeout: float | None = None
    transport_max_retries: int = 3
    backoff: Backoff = Backoff()
    where: str = ""

    def launch_env(self, tasks_url: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The worker's environment: ours, what Stepflow sets for its workers, then the
        plugin's ``env`` (substituted).

        Example:
            >>> plugin = WorkerPlugin("p", "q", "w", env={"A": "${B:-x}"})
            >>> env = plugin.launch_env("127.0.0.1:1", {})
            >>> env["STEPFLOW_QUEUE_NAME"], env["STEPFLOW_BLOB_URL"], env["A"]
            ('q', '127.0.0.1:1', 'x')
        """
        source = dict(os.environ if base is None else base)
        env = dict(source)
        env.update(
            STEPFLOW_TRANSPORT="grpc",
            STEPFLOW_TASKS_URL=tasks_url,
            STEPFLOW_QUEUE_NAME=self.queue_name,
            STEPFLOW_BLOB_URL=tasks_url,
        )
        for key, value in self.env.items():
            env[key] = substitute(value, source)
        return env

    def argv(self, base: Mapping[str, str] | None = None) -> list[str]:
        """The command line, ``args`` substituted."""
        source = os.environ if base is None else base
        assert self.command is not None
        return [self.command, *(substitute(a, source) for a in self.args)]


def missing_extra() -> bool:
    """Whether the ``stepflow`` extra (stepflow-py and grpcio) is missing."""
    for name in ("grpc", "stepflow_py"):
        try:
            if importlib.util.find_spec(name) is None:
                return True
        except (ImportError, ValueError):
            return True
    return False


def _seconds(r: ConfigReader, value: Any, where: DocPath, what: str, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise r.error(f"{what} must be a number of seconds, got {kind_of(value)}", where)
    if positive and value == 0:
        raise r.error(f"{what} must be greater than 0", where)
    return float(value)


def _retry(r: ConfigReader, retry: Any) -> tuple[int, Backoff]:
    if retry is None:
        return 3, Backoff()
    retry = r.mapping(retry, ("retry",), "'retry'")
    limit = retry.get("transportMaxRetries")
    if limit is None:
        limit = 3
    elif isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        where = ("retry", "transportMaxRetries")
        raise r.error(f"'transportMaxRetries' must be a whole number >= 0, got {limit!r}", where)
    spec = retry.get("backoff")
    if spec is None:
        return limit, Backoff()
    spec = r.mapping(spec, ("retry", "backoff"), "'retry.backoff'")
    kind = spec.get("type", "fibonacci")
    if kind not in ("constant", "exponential", "fibonacci"):
        raise r.error(
            f"'retry.backoff.type' must be constant, exponential or fibonacci, not {kind!r}",
            ("retry", "backoff", "type"),
        )
    low = spec.get("delayMs" if kind == "constant" else "minDelayMs", 1000)
    return limit, Backoff(
        kind, int(low), int(spec.get("maxDelayMs", 10000)), float(spec.get("factor", 2.0))
    )


def read_grpc_plugin(
    r: ConfigReader, name: str, spec: Mapping[Any, Any], at: DocPath, file: Path, retry: Any
) -> WorkerPlugin:
    """A ``type: grpc`` plugin from its config mapping, checked like Stepflow checks it."""
    queue = spec.get("queueName")
    if queue is None:
        raise r.error(
            f"plugin {name!r}: 'queueName' is required for gRPC plugins (it names the queue "
            "its worker pulls tasks from)",
            at,
        )
    queue = r.string(queue, (*at, "queueName"), "'queueName'")
    command = spec.get("command")
    if command is not None:
        command = r.string(command, (*at, "command"), "'command'")
    args = spec.get("args") or []
    if not isinstance(args, list) or not all(isinstance(a, str | int | float) for a in args):
        raise r.error(f"plugin {name!r}: 'args' must be a list of strings", (*at, "args"))
    env = r.mapping(spec.get("env") or {}, (*at, "env"), f"the env of plugin {name!r}")
    queue_timeout = _seconds(
        r, spec.get("queueTimeoutSecs", 30), (*at, "queueTimeoutSecs"), "'queueTimeoutSecs'",
        positive=True,
    )  # fmt: skip
    execution = spec.get("executionTimeoutSecs")
    execution_timeout = (
        None
        if execution is None
        else _seconds(
            r, execution, (*at, "executionTimeoutSecs"), "'executionTimeoutSecs'", positive=True
        )
    )
    limit, backoff = _retry(r, retry)
    return WorkerPlugin(
        name=name,
        queue_name=queue,
        command=command,
        args=tuple(str(a) for a in args),
        env={str(k): str(v) for k, v in env.items()},
        cwd=file.resolve().parent,
        queue_timeout=queue_timeout,
        execution_timeout=execution_timeout,
        transport_max_retries=limit,
        backoff=backoff,
        where=r.where(at),
    )
