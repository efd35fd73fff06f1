"""Stepflow Python components run in-process: the fast path to a stepflow-py worker module.

A module that builds a stepflow-py ``StepflowServer`` and registers components on it
with ``@server.component`` is what Stepflow launches as a worker process. Routed from
``pocketbatch.yaml`` (``routes: {/python: {module: my_server}}``; a plain module name
works too), its components run here, in the run's event loop, with no worker process:

* the input, as the worker would receive it (keys sorted, whole numbers as ints:
  :func:`~pocketbatch.loader._stepflow_context.wire`), is converted to the
  component's msgspec ``Struct`` (``msgspec.convert``);
  a mismatch fails the step as the worker fails the task (``COMPONENT_FAILED``,
  msgspec's message, ``data: {exception_type: "ValidationError"}``);
* a ``StepflowContext`` argument gets an in-process context
  (:class:`~pocketbatch.loader._stepflow_context.InProcessContext`): blobs in the run's
  store, sub-runs through the flow's nested-flow loader;
* the output is converted back to JSON (``msgspec.to_builtins``, pydantic's
  ``model_dump``) as the worker sends it and the run reads it
  (:func:`~pocketbatch.loader._stepflow_context.returned`);
* an exception fails the step with the code the worker gives it (``StepflowError``
  subclasses their own; ``TypeError`` ``INVALID_INPUT``; ``OSError``, ``TimeoutError``,
  ``ConnectionError`` ``RESOURCE_UNAVAILABLE``; others ``COMPONENT_FAILED``), its
  message as is, and ``data: {exception_type, details?}`` (the worker's traceback is
  left out, so records do not depend on where the code ran).

A component that calls ``sys.exit`` would kill its worker process; Stepflow restarts
the worker and runs the task again (a transport retry, up to 3, with the next
``context.attempt``). Here the call is run again the same way, and after the last
attempt the step fails with ``UNREACHABLE``. (A component that kills the process by
other means, ``os._exit`` or a crash in native code, takes the run with it: use the
worker path for such code.)

A component is found by its ``subpath`` under the route's prefix (by default
``/<function name>``), path parameters (``{name}``, ``{*rest}``) included, a literal
path before one with parameters (as Stepflow routes a worker's components). Sync
components run on a worker thread. Nothing here imports msgspec or stepflow_py until
a routed module has imported them itself.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from pocketbatch._errors import ComponentError
from pocketbatch.loader._component import CallContext, Component
from pocketbatch.loader._python_modules import _first_on_sys_path, _import_from

__all__ = ("StepflowComponent", "stepflow_component", "stepflow_servers")

TRANSPORT_RETRIES = 3
"""Stepflow's default ``retry.transportMaxRetries``: a component that exits its worker
(``sys.exit``) is run again this many times, each with the next ``context.attempt``."""


def stepflow_servers(module: ModuleType) -> list[Any]:
    """The stepflow-py ``StepflowServer`` objects a module holds (imported or its own).

    Example:
        >>> import json
        >>> stepflow_servers(json)
        []
    """
    server_module = sys.modules.get("stepflow_py.worker.server")
    if server_module is None:  # the module never imported stepflow-py
        return []
    kind = server_module.StepflowServer
    found: dict[int, Any] = {}
    for value in vars(module).values():
        if isinstance(value, kind):
            found.setdefault(id(value), value)
    return list(found.values())


def stepflow_component(
    directory: Path | None, module_name: str, path: str, rest: str, choices: list[str]
) -> Component | str | None:
    """The in-process component for ``rest`` (the path after a route's prefix) when
    ``module_name`` holds a ``StepflowServer``; a message (and ``choices`` filled with
    its components' paths) when the server has no such component; ``None`` when the
    module is no stepflow-py worker module (or cannot be imported: the caller says
    why)."""
    try:
        with _first_on_sys_path(directory):
            module = _import_from(directory, module_name)
    except Exception:
        return None
    servers = stepflow_servers(module)
    if not servers:
        return None
    from pocketbatch.loader._worker_runtime import match_path

    mounts = [
        (entry.path or f"/{entry.name}", entry)
        for server in servers
        for entry in server.get_components().values()
    ]
    found = match_path(mounts, rest)  # as the worker path routes (literal paths win)
    if found is not None:
        entry, params = found
        return StepflowComponent(entry, params, path)
    prefix = path[: len(path) - len(rest)]
    choices.extend(prefix + mount.lstrip("/") for mount, _ in mounts)
    return (
        f"unknown component {path!r}: the StepflowServer of module {module_name!r} has no "
        f"component at {'/' + rest!r}"
    )


def _wants_context(function: Callable[..., Any], params: dict[str, str]) -> bool:
    """Whether the component takes a ``StepflowContext`` (as the worker decides it)."""
    from stepflow_py.worker.context import StepflowContext

    for parameter in inspect.signature(function).parameters.values():
        if parameter.name == "input" or parameter.name in params:
            continue
        annotation = parameter.annotation
        if annotation is StepflowContext or (
            isinstance(annotation, str) and "Context" in annotation
        ):
            return True
    return False


class StepflowComponent:
    """One ``@server.component`` of a stepflow-py ``StepflowServer``, run in-process.

    Args:
        entry: the server's ``ComponentEntry``.
        params: the path parameters matched from the step's component path.
        path: the step's component path (for ``repr``).
    """

    def __init__(self, entry: Any, params: dict[str, str], path: str) -> None:
        self.entry = entry
        self.params = params
        self.path = path
        self.wants_context = _wants_context(entry.function, params)
        self.is_async = inspect.iscoroutinefunction(entry.function)

    async def __call__(self, input: Any, ctx: CallContext, /) -> Any:
        import msgspec

        from pocketbatch.loader._stepflow_context import returned, wire

        received = wire(input)
        for crashed in range(TRANSPORT_RETRIES + 1):
            try:
                output = await self._once(received, ctx, ctx.attempt + crashed)
            except SystemExit as exc:  # the worker process would have died: run it again
                exit_code = exc.code
                continue
            except ComponentError:
                raise
            except Exception as exc:
                raise _classified(exc) from exc
            if hasattr(output, "__struct_fields__"):
                output = msgspec.to_builtins(output)
            elif hasattr(output, "model_dump"):
                output = output.model_dump()
            return returned(output)
        raise ComponentError(
            "UNREACHABLE",
            f"component {self.path!r} exited its worker (SystemExit: {exit_code}) on each of "
            f"{TRANSPORT_RETRIES + 1} attempts",
            {"exception_type": "SystemExit"},
        )

    async def _once(self, received: Any, ctx: CallContext, attempt: int) -> Any:
        import msgspec

        from pocketbatch.loader._stepflow_context import InProcessContext

        try:
            value = msgspec.convert(received, type=self.entry.input_type)
        except TypeError as exc:  # a type msgspec cannot build: given as is
            if "is not supported" not in str(exc):
                raise
            value = received
        args: list[Any] = [value]
        if self.wants_context:
            args.append(InProcessContext(ctx, attempt=attempt))
        function = self.entry.function
        if self.is_async:
            return await function(*args, **self.params)
        return await asyncio.to_thread(function, *args, **self.params)

    def __repr__(self) -> str:
        return f"<stepflow component {self.path!r}: {self.entry.name}>"


def _classified(exc: Exception) -> ComponentError:
    """The step failure the worker reports for ``exc`` (see the module docstring)."""
    from stepflow_py.worker.exceptions import StepflowError

    from pocketbatch.loader._worker_convert import code_name

    data: dict[str, Any]
    if isinstance(exc, StepflowError):
        code = code_name(exc.task_error_code)  # as the worker path reads the number
        data = exc.task_error_data()
    else:
        data = {"exception_type": type(exc).__name__}
        if isinstance(exc, TypeError):
            code = "INVALID_INPUT"
        elif isinstance(exc, ConnectionError | TimeoutError | OSError):
            code = "RESOURCE_UNAVAILABLE"
        else:
            code = "COMPONENT_FAILED"
    return ComponentError(code, str(exc), data)
