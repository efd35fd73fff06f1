"""The builtin components a flow step can call without any registration.

:func:`builtin_components` maps each path to a fresh component:

* ``/builtin/create_messages``: ``{user_prompt, system_instructions?}`` → ``{messages}``.
* ``/builtin/load_file``: read a JSON, YAML or text file (confined to a root directory).
* ``/builtin/openai``: one OpenAI-compatible chat completion.
* ``/http/request``: one HTTP request; every status is returned, not raised.
* ``/builtin/noop``: returns its input unchanged.
* ``/builtin/sleep``: waits ``duration_ms``, returns ``{duration_ms, passthrough?}``.
* ``/builtin/put_blob``, ``/builtin/get_blob``: the run's content-addressed blobs
  (in :mod:`~pocketbatch.loader._builtin_blobs`).

Inputs are snake_case, as in Stepflow 0.13, and checked first (see
:mod:`~pocketbatch.loader._builtin_base`). The small ones live here;
``/builtin/load_file`` in :mod:`~pocketbatch.loader._builtin_files`, the network
ones (``/http/request``, ``/builtin/openai``) in
:mod:`~pocketbatch.loader._builtin_http`.

httpx and PyYAML are imported only when a component that needs them runs, so
``import pocketbatch`` stays light.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from pocketbatch.loader._builtin_base import Builtin
from pocketbatch.loader._builtin_blobs import GetBlob, PutBlob
from pocketbatch.loader._builtin_files import LoadFile, confined_path
from pocketbatch.loader._builtin_http import HttpRequest, OpenAIChat
from pocketbatch.loader._component import CallContext, Component

__all__ = (
    "CreateMessages",
    "HttpRequest",
    "LoadFile",
    "Noop",
    "OpenAIChat",
    "Sleep",
    "builtin_components",
    "confined_path",
)


def builtin_components() -> dict[str, Component]:
    """Fresh instances of every builtin component, keyed by their path.

    Returns:
        ``{path: component}`` for ``/builtin/create_messages``,
        ``/builtin/load_file``, ``/builtin/openai``, ``/http/request``,
        ``/builtin/noop``, ``/builtin/sleep``, ``/builtin/put_blob`` and
        ``/builtin/get_blob``.

    Example:
        >>> sorted(builtin_components())  # doctest: +NORMALIZE_WHITESPACE
        ['/builtin/create_messages', '/builtin/get_blob', '/builtin/load_file',
         '/builtin/noop', '/builtin/openai', '/builtin/put_blob', '/builtin/sleep',
         '/http/request']
    """
    components: tuple[Builtin, ...] = (
        CreateMessages(),
        LoadFile(),
        OpenAIChat(),
        HttpRequest(),
        Noop(),
        Sleep(),
        PutBlob(),
        GetBlob(),
    )
    return {c.path: c for c in components}


# --------------------------------------------------------------------------- simple ones


class CreateMessages(Builtin):
    """``/builtin/create_messages``: build a chat ``messages`` list from prompts.

    Input ``{user_prompt: str, system_instructions?: str}``; output
    ``{messages: [{role: "system", content}?, {role: "user", content}]}``.

    Example:
        >>> import asyncio
        >>> ctx = CallContext(step_id="s", flow_dir=None, variables={})
        >>> prompts = {"user_prompt": "Hi", "system_instructions": "Hm"}
        >>> out = asyncio.run(CreateMessages()(prompts, ctx))
        >>> out["messages"]
        [{'role': 'system', 'content': 'Hm'}, {'role': 'user', 'content': 'Hi'}]
    """

    path = "/builtin/create_messages"

    async def __call__(self, input: Any, ctx: CallContext, /) -> Any:
        data = self.mapping(input)
        user = self.field(data, "user_prompt", "a string", required=True)
        system = self.field(data, "system_instructions", "a string")
        messages: list[dict[str, str]] = []
        if system is not None:
            messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": user})
        return {"messages": messages}


class Noop(Builtin):
    """``/builtin/noop``: return the input unchanged (Stepflow uses it for benchmarks).

    Example:
        >>> import asyncio
        >>> ctx = CallContext(step_id="s", flow_dir=None, variables={})
        >>> asyncio.run(Noop()({"x": [1, 2]}, ctx))
        {'x': [1, 2]}
    """

    path = "/builtin/noop"

    async def __call__(self, input: Any, ctx: CallContext, /) -> Any:
        return input


class Sleep(Builtin):
    """``/builtin/sleep``: wait ``duration_ms`` milliseconds without blocking the loop.

    Input ``{duration_ms: number >= 0, passthrough?: any}``; output
    ``{duration_ms, passthrough?}`` (``passthrough`` only when given and not null).

    Example:
        >>> import asyncio
        >>> ctx = CallContext(step_id="s", flow_dir=None, variables={})
        >>> asyncio.run(Sleep()({"duration_ms": 1, "passthrough": "x"}, ctx))
        {'duration_ms': 1, 'passthrough': 'x'}
    """

    path = "/builtin/sleep"

    async def __call__(self, input: Any, ctx: CallContext, /) -> Any:
        data = self.mapping(input)
        duration = self.field(data, "duration_ms", "a number", required=True)
        if not (math.isfinite(duration) and duration >= 0):
            raise self.invalid(f"'duration_ms' must be a number >= 0, got {duration!r}")
        await asyncio.sleep(duration / 1000)
        result: dict[str, Any] = {"duration_ms": duration}
        if data.get("passthrough") is not None:
            result["passthrough"] = data["passthrough"]
        return result
