"""Connecting to Ray for the ``ray`` executor: start or join it, stop it quickly,
and check that a flow can be shipped to the workers (see
:mod:`pocketbatch.executors.ray`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pocketbatch._errors import MissingExtraError, PocketbatchError
from pocketbatch.core import BaseNode
from pocketbatch.loader import FlowRecipe

__all__ = ("check_shippable", "connect_ray", "import_ray", "stop_ray")


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MissingExtraError("the ray executor", "ray") from None
    return ray


def stop_ray(ray: Any) -> None:
    """``ray.shutdown()``, without its idle second on a local instance we started.

    ``ray.shutdown()`` stops the processes ``ray.init()`` started one at a time,
    giving each a second to exit on SIGTERM before it sends SIGKILL. The autoscaler
    monitor of a local instance never exits within that second (it checks for
    SIGTERM only between autoscaler rounds), so every run paid a full second
    waiting for the SIGKILL it gets anyway. It holds nothing for a local instance,
    so it gets its SIGKILL first. That uses Ray's process table, which is not a
    public API: if it is not there, this is a plain ``ray.shutdown()``.
    """
    try:
        from ray._private import ray_constants, worker

        node: Any = worker._global_node
        if node is not None and node.is_head():
            for info in node.all_processes.get(ray_constants.PROCESS_TYPE_MONITOR, []):
                if info.process.poll() is None:
                    info.process.kill()
                    info.process.wait(timeout=5)
    except Exception:  # Ray's internals moved: the plain shutdown
        pass
    ray.shutdown()


def connect_ray(
    ray: Any, address: str | None, runtime_env: Mapping[str, Any] | None = None
) -> bool:
    """Start or join Ray unless this process is connected already; whether it connected.

    ``address`` is ``None`` (join the local instance running, or start one) or
    ``"ray://HOST:PORT"``; ``runtime_env`` is the job's (Ray ships a local
    ``working_dir`` only this way). Raises :class:`~pocketbatch.PocketbatchError`
    naming the address when Ray cannot be reached.
    """
    if ray.is_initialized():
        return False
    try:
        ray.init(
            address=address,
            runtime_env=runtime_env,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    except Exception as exc:
        raise PocketbatchError(_init_failed(address, exc)) from exc
    return True


def check_shippable(source: FlowRecipe | BaseNode) -> None:
    """Raise :class:`~pocketbatch.PocketbatchError` naming what cannot travel to a worker.

    Ray pickles the flow (with cloudpickle) to send it to each worker: a registered
    component holding a lock, an open file or a connection cannot go. The flow is
    pickled once; only when that fails are its components tried one by one, to
    name the culprit.
    """
    from ray import cloudpickle

    from pocketbatch.loader import ComponentRegistry, FlowRecipe

    dumps: Any = cloudpickle.dumps
    try:
        dumps(source)
    except Exception as exc:
        error = exc
    else:
        return
    registry = source.registry if isinstance(source, FlowRecipe) else None
    components = (
        [(path, registry.get(path)) for path in registry.paths()]
        if isinstance(registry, ComponentRegistry)
        else []
    )
    for path, component in components:
        try:
            dumps(component)
        except Exception as exc:
            raise PocketbatchError(
                f"component {path} cannot be shipped to the Ray workers: "
                f"{type(exc).__name__}: {exc} (register a function or class the workers "
                "can import, or an object that pickles)"
            ) from exc
    raise PocketbatchError(
        f"the flow cannot be shipped to the Ray workers: {type(error).__name__}: {error}"
    ) from error


def _init_failed(address: str | None, exc: BaseException) -> str:
    """What to say when ``ray.init`` fails."""
    if address is None:
        return f"cannot start or join a local Ray instance: {type(exc).__name__}: {exc}"
    message = f"cannot connect to the Ray cluster at {address}: {type(exc).__name__}: {exc}"
    if address.startswith("ray://") and isinstance(exc, ConnectionError):
        message += (
            " (is its Ray Client server running? If the cluster uses token"
            " authentication, set RAY_AUTH_MODE=token here, with the token in"
            " RAY_AUTH_TOKEN or ~/.ray/auth_token)"
        )
    return message
