"""The builtin components a flow step can call without any registration.

:func:`builtin_components` maps each path to a fresh component:

* ``/builtin/create_messages``: ``{user_prompt, system_instructions?}`` → ``{messages}``.
* ``/builtin/load_file``: read a JSON, YAML or text file (confined to a root directory).
* ``/builtin/openai``: one OpenAI-compatible chat completion.
* ``/http/request``: one HTTP request; every status is returned, not raised.
* ``/builtin/noop``: returns its input unchanged.
* ``/builtin/sleep``: waits ``duration_ms``, returns ``{duration_ms, passthrough?}``.

Inputs are snake_case, as in Stepflow 0.13. Every component checks its input
first: a missing required field or a field of the wrong type fails the step with
``INVALID_INPUT`` and a message that names the component and the field. An
optional field given as ``null`` counts as absent; unknown fields are ignored.

httpx and PyYAML are imported only when a component that needs them runs, so
``import pocketbatch`` stays light.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from pocketbatch._errors import ComponentError, LoadError
from pocketbatch.loader._component import CallContext, Component, LoaderOptions

if TYPE_CHECKING:
    import httpx

    from pocketbatch.loader._network import NetworkPolicy

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

INVALID_INPUT: Final = "INVALID_INPUT"

_OPENAI_DEFAULT_BASE_URL: Final = "https://api.openai.com/v1"  # = _network.DEFAULT_OPENAI_BASE_URL
_OPENAI_DEFAULT_MODEL: Final = "gpt-4o-mini"
_OPENAI_DEFAULT_TIMEOUT: Final = 120.0
_HTTP_DEFAULT_TIMEOUT: Final = 30.0
_BODY_SNIPPET: Final = 300
_FORMATS: Final = ("json", "yaml", "text")


def _status_code(status: int) -> str:
    """The error code for an HTTP error status: worth retrying or not.

    429 and 5xx are ``RESOURCE_UNAVAILABLE`` and 408 ``TIMEOUT`` (both retried by
    ``on_error: retry``); 401 and 403 are ``PERMISSION_DENIED``; any other 4xx means
    the request itself is wrong, ``INVALID_INPUT`` (neither is retried).
    """
    if status == 429 or status >= 500:
        return "RESOURCE_UNAVAILABLE"
    if status == 408:
        return "TIMEOUT"
    if status in (401, 403):
        return "PERMISSION_DENIED"
    return "INVALID_INPUT"


def builtin_components() -> dict[str, Component]:
    """Fresh instances of every builtin component, keyed by their path.

    Returns:
        ``{path: component}`` for ``/builtin/create_messages``,
        ``/builtin/load_file``, ``/builtin/openai``, ``/http/request``,
        ``/builtin/noop`` and ``/builtin/sleep``.

    Example:
        >>> sorted(builtin_components())  # doctest: +NORMALIZE_WHITESPACE
        ['/builtin/create_messages', '/builtin/load_file', '/builtin/noop',
         '/builtin/openai', '/builtin/sleep', '/http/request']
    """
    components: tuple[_Builtin, ...] = (
        CreateMessages(),
        LoadFile(),
        OpenAIChat(),
        HttpRequest(),
        Noop(),
        Sleep(),
    )
    return {c.path: c for c in components}


# --------------------------------------------------------------------------- input checks


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_KINDS: Final[dict[str, Callable[[Any], bool]]] = {
    "a string": lambda v: isinstance(v, str),
    "an integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "a number": _is_number,
    "a boolean": lambda v: isinstance(v, bool),
    "a list": lambda v: isinstance(v, list),
    "an object": lambda v: isinstance(v, Mapping),
}


class _Builtin:
    """Shared plumbing: the component's path and its input checks."""

    path: str = "/builtin/?"

    async def __call__(self, input: Any, ctx: CallContext, /) -> Any:
        raise NotImplementedError

    def invalid(self, message: str) -> ComponentError:
        """An ``INVALID_INPUT`` error whose message starts with this component's path."""
        return ComponentError(INVALID_INPUT, f"{self.path}: {message}")

    def mapping(self, input: Any) -> Mapping[str, Any]:
        """``input`` itself, checked to be an object."""
        if not isinstance(input, Mapping):
            raise self.invalid(f"input must be an object, got {_type_name(input)}")
        return input

    def field(
        self, input: Mapping[str, Any], name: str, kind: str, *, required: bool = False
    ) -> Any:
        """The value of ``input[name]`` checked to be of ``kind`` (a key of ``_KINDS``).

        An absent optional field, or one given as ``null``, is ``None``.
        """
        if name not in input:
            if required:
                raise self.invalid(f"{name!r} is required")
            return None
        value = input[name]
        if value is None and not required:
            return None
        if not _KINDS[kind](value):
            raise self.invalid(f"{name!r} must be {kind}, got {_type_name(value)}")
        return value

    def timeout(self, input: Mapping[str, Any], default: float) -> float:
        """The optional ``timeout`` field (seconds, finite and > 0), or ``default``."""
        value = self.field(input, "timeout", "a number")
        if value is None:
            return default
        if not (math.isfinite(value) and value > 0):
            raise self.invalid(f"'timeout' must be a number of seconds > 0, got {value!r}")
        return float(value)


# --------------------------------------------------------------------------- simple ones


class CreateMessages(_Builtin):
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


class Noop(_Builtin):
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


class Sleep(_Builtin):
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


# --------------------------------------------------------------------------- load_file


def confined_path(
    given: str,
    options: LoaderOptions,
    flow_dir: Path | None,
    *,
    what: str,
    base: Path | None = None,
) -> Path:
    """The file ``given`` names, resolved, after checking that a flow may read it.

    Every builtin that reads a file a flow names (``/builtin/load_file``, and the
    sub-flow paths of ``/builtin/eval`` and ``/builtin/map``) goes through here.
    The *root* is ``options.load_file_root``, else ``flow_dir``, else the current
    directory (the server sets it to ``--data-dir``). A relative ``given`` is taken
    from ``base`` (default: the root); an absolute one stands alone. Unless
    ``options.load_file_anywhere`` is set, the path must lie inside the root twice
    over: first as written (``..`` folded, no file system access, so a path outside
    is refused the same way whether or not it exists), then with symlinks resolved.

    Args:
        given: the path as the flow wrote it.
        options: the loader's options (root and ``load_file_anywhere``).
        flow_dir: the directory of the flow naming the file (``None``: none).
        what: who asks, to start the message with (``/builtin/load_file``).
        base: the directory a relative ``given`` is taken from.

    Raises:
        ComponentError: ``PERMISSION_DENIED`` for a path outside the root; the
            message names ``given`` and the root only, never where the path leads.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.gettempdir()).resolve()
        >>> confined_path("a/b.json", LoaderOptions(load_file_root=root), None, what="x") == (
        ...     root / "a" / "b.json"
        ... )
        True
        >>> try:
        ...     confined_path("../b.json", LoaderOptions(load_file_root=root), None, what="x")
        ... except ComponentError as exc:
        ...     print(exc.code)
        PERMISSION_DENIED
    """
    if options.load_file_root is not None:
        root = Path(options.load_file_root)
    elif flow_dir is not None:
        root = Path(flow_dir)
    else:
        root = Path.cwd()
    real_root = root.resolve()
    start = base if base is not None else root
    written = Path(os.path.normpath(os.path.join(os.path.abspath(start), given)))
    outside = ComponentError(
        "PERMISSION_DENIED",
        f"{what}: {given!r} is outside {real_root}; to allow it, set "
        "LoaderOptions(load_file_root=...) (the server's --data-dir) to a directory that "
        "contains it, or LoaderOptions(load_file_anywhere=True)",
    )
    anywhere = options.load_file_anywhere
    if not anywhere and not (
        written.is_relative_to(os.path.abspath(root)) or written.is_relative_to(real_root)
    ):
        raise outside  # decided from the text alone: nothing outside the root is looked at
    try:
        resolved = written.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise ComponentError(
            INVALID_INPUT, f"{what}: {given!r} cannot be resolved: {exc}"
        ) from None
    if not anywhere and not resolved.is_relative_to(real_root):
        raise outside  # a symlink inside the root leads out of it
    return resolved


class LoadFile(_Builtin):
    """``/builtin/load_file``: read a JSON, YAML or text file.

    Input ``{path: str, format?: "json" | "yaml" | "text"}``. Without ``format``
    it follows the extension: ``.json`` is JSON, ``.yaml``/``.yml`` YAML,
    anything else text. Output ``{data, metadata: {resolved_path, size_bytes,
    format}}``.

    A relative ``path`` is taken from the *root*: ``options.load_file_root``,
    else the flow file's directory, else the current directory. Unless
    ``options.load_file_anywhere`` is set, the file (as written, and with
    symlinks resolved) must lie inside the root, or the step fails with
    ``PERMISSION_DENIED`` (see :func:`confined_path`, which the sub-flow paths of
    ``/builtin/eval`` and ``/builtin/map`` share). A missing file is
    ``NOT_FOUND``; a file that does not parse as its format is
    ``INVALID_INPUT``. YAML is read with PyYAML's C safe loader only.

    Example:
        >>> import asyncio, tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     _ = (Path(tmp) / "cfg.yaml").write_text("size: 3\\n")
        ...     ctx = CallContext(step_id="s", flow_dir=Path(tmp), variables={})
        ...     out = asyncio.run(LoadFile()({"path": "cfg.yaml"}, ctx))
        >>> out["data"], out["metadata"]["format"], out["metadata"]["size_bytes"]
        ({'size': 3}, 'yaml', 8)
    """

    path = "/builtin/load_file"

    async def __call__(self, input: Any, ctx: CallContext, /) -> Any:
        data = self.mapping(input)
        given = self.field(data, "path", "a string", required=True)
        fmt = self.field(data, "format", "a string")
        if fmt is not None and fmt not in _FORMATS:
            listed = ", ".join(repr(f) for f in _FORMATS)
            raise self.invalid(f"'format' must be one of {listed}, got {fmt!r}")
        if not given:
            raise self.invalid("'path' must not be empty")
        return await asyncio.to_thread(self._load, given, fmt, ctx)

    def _load(self, given: str, fmt: str | None, ctx: CallContext) -> dict[str, Any]:
        resolved = confined_path(given, ctx.options, ctx.flow_dir, what=self.path)
        if fmt is None:
            suffix = Path(given).suffix.lower()
            fmt = "json" if suffix == ".json" else "yaml" if suffix in (".yaml", ".yml") else "text"
        try:
            raw = resolved.read_bytes()
        except FileNotFoundError:
            raise ComponentError("NOT_FOUND", f"{self.path}: no such file: {resolved}") from None
        except IsADirectoryError:
            raise self.invalid(f"{resolved} is a directory, not a file") from None
        except PermissionError as exc:
            raise ComponentError(
                "PERMISSION_DENIED", f"{self.path}: cannot read {resolved}: {exc.strerror}"
            ) from None
        except OSError as exc:
            raise ComponentError(
                "COMPONENT_FAILED", f"{self.path}: cannot read {resolved}: {exc}"
            ) from None
        try:
            text = raw.decode("utf-8" if fmt == "text" else "utf-8-sig")
        except UnicodeDecodeError as exc:
            raise self.invalid(
                f"{resolved} is not valid UTF-8 ({exc.reason} at byte {exc.start})"
            ) from None
        content = self._parse(text, fmt, resolved)
        metadata = {"resolved_path": str(resolved), "size_bytes": len(raw), "format": fmt}
        return {"data": content, "metadata": metadata}

    def _parse(self, text: str, fmt: str, resolved: Path) -> Any:
        from pocketbatch.loader._source import MAX_DEPTH, nesting_depth, parse_data_yaml

        too_deep = f"{resolved} nests more than {MAX_DEPTH} levels deep"
        if fmt == "json":
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise self.invalid(
                    f"{resolved} is not valid JSON: {exc.msg} "
                    f"(line {exc.lineno}, column {exc.colno})"
                ) from None
            except RecursionError:  # deeper than Python's own parser goes
                raise self.invalid(too_deep) from None
            if nesting_depth(data, MAX_DEPTH) > MAX_DEPTH:
                raise self.invalid(too_deep)
            return data
        if fmt == "yaml":
            import yaml

            try:
                # The C *safe* loader only; aliases and nesting are limited.
                return parse_data_yaml(text, name=str(resolved))
            except LoadError as exc:
                raise self.invalid(f"{exc}") from None
            except yaml.MarkedYAMLError as exc:
                mark = exc.problem_mark or exc.context_mark
                problem = " ".join(p for p in (exc.context, exc.problem) if p) or str(exc)
                where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
                raise self.invalid(f"{resolved} is not valid YAML: {problem}{where}") from None
            except yaml.YAMLError as exc:
                raise self.invalid(f"{resolved} is not valid YAML: {exc}") from None
        return text


# --------------------------------------------------------------------------- HTTP


async def _send(
    component: _Builtin,
    method: str,
    url: str,
    *,
    seconds: float,
    network: NetworkPolicy | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """Send one request on a short-lived client, mapping transport failures to codes.

    ``UNREACHABLE`` for connection problems, ``TIMEOUT`` for timeouts and
    ``INVALID_INPUT`` for URLs httpx cannot use. Messages carry no headers, so
    no credentials.

    With a ``network`` policy the request goes through a
    :class:`~pocketbatch.loader._transport.GuardedTransport` (a refused address
    fails with ``PERMISSION_DENIED``), and proxy settings from the environment are
    ignored: the policy must judge the address really connected to.
    """
    import httpx

    try:
        if network is None:
            client = httpx.AsyncClient(timeout=seconds)
        else:
            from pocketbatch.loader._transport import GuardedTransport

            client = httpx.AsyncClient(
                timeout=seconds, transport=GuardedTransport(network), trust_env=False
            )
        async with client:
            return await client.request(method, url, **kwargs)
    except ComponentError as exc:  # refused by the network policy
        raise ComponentError(exc.code, f"{component.path}: {method} {url}: {exc.message}") from None
    except httpx.TimeoutException as exc:
        detail = str(exc) or type(exc).__name__
        raise ComponentError(
            "TIMEOUT", f"{component.path}: {method} {url} timed out after {seconds:g} s ({detail})"
        ) from None
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        raise component.invalid(f"cannot use URL {url!r}: {exc}") from None
    except httpx.TransportError as exc:
        detail = str(exc) or type(exc).__name__
        raise ComponentError(
            "UNREACHABLE", f"{component.path}: cannot reach {url}: {detail}"
        ) from None


def _string_map(component: _Builtin, value: Any, name: str) -> dict[str, str] | None:
    """An optional object of string values (HTTP headers), as a ``dict``."""
    if value is None:
        return None
    result: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(item, str):
            raise component.invalid(f"{name}[{key!r}] must be a string, got {_type_name(item)}")
        result[str(key)] = item
    return result


def _query_params(component: _Builtin, value: Any) -> dict[str, Any] | None:
    """Optional query parameters: scalar values, or lists of them for repeated keys."""
    if value is None:
        return None

    def scalar(item: Any) -> bool:
        return item is None or isinstance(item, str | int | float)  # bool is an int

    result: dict[str, Any] = {}
    for key, item in value.items():
        if not (scalar(item) or (isinstance(item, list) and all(scalar(i) for i in item))):
            raise component.invalid(
                f"params[{key!r}] must be a string, number, boolean or a list of them, "
                f"got {_type_name(item)}"
            )
        result[str(key)] = item
    return result


class OpenAIChat(_Builtin):
    """``/builtin/openai``: one chat completion from an OpenAI-compatible server.

    Input ``{messages: list, model?, max_tokens?, temperature?, api_key?,
    base_url?, timeout?}``; output ``{response, model, usage}``: the first
    choice's message content, the model the server reports, and its ``usage``
    (or ``None``).

    Each setting is the first non-empty one of: the input field, the run
    variable, the environment variable, the default.

    * base URL: ``openai_base_url``, ``OPENAI_BASE_URL``, ``https://api.openai.com/v1``;
    * API key: ``openai_api_key``, ``OPENAI_API_KEY``, none (no ``Authorization``
      header is sent, as local servers need none);
    * model: ``openai_model``, ``OPENAI_MODEL``, ``gpt-4o-mini``.

    Under a :class:`~pocketbatch.loader.NetworkPolicy` (``options.network``, set
    by the server) the environment's ``OPENAI_API_KEY`` is sent only to a base URL
    the operator configured: one not chosen by the flow (so from
    ``OPENAI_BASE_URL`` or the default), or one of the policy's
    ``credential_base_urls``. A flow that picks another ``base_url`` must bring its
    own key (``api_key`` or ``openai_api_key``), and the address it connects to
    must pass the policy.

    It POSTs ``{model, messages, max_tokens?, temperature?}`` to
    ``{base_url}/chat/completions`` with a ``timeout`` of 120 s unless given.
    Failures: HTTP 429 and 5xx are ``RESOURCE_UNAVAILABLE``, other statuses
    >= 400 and malformed replies ``COMPONENT_FAILED`` (the message has the status
    and the start of the body), connection errors ``UNREACHABLE``, timeouts
    ``TIMEOUT``. The API key never appears in a message.

    Example:
        >>> import asyncio
        >>> ctx = CallContext(step_id="s", flow_dir=None, variables={})
        >>> asyncio.run(OpenAIChat()({"model": "m"}, ctx))
        Traceback (most recent call last):
        ...
        pocketbatch._errors.ComponentError: [INVALID_INPUT] /builtin/openai: 'messages' is required
    """

    path = "/builtin/openai"

    def _from_flow(self, value: str | None, ctx: CallContext, variable: str) -> str | None:
        """The input field, else the run variable: what the flow itself chose."""
        if value:
            return value
        from_vars = ctx.variables.get(variable)
        if from_vars is not None and not isinstance(from_vars, str):
            raise self.invalid(
                f"variable {variable!r} must be a string, got {_type_name(from_vars)}"
            )
        return from_vars or None

    def _setting(self, value: str | None, ctx: CallContext, variable: str, env: str) -> str | None:
        return self._from_flow(value, ctx, variable) or os.environ.get(env) or None

    async def __call__(self, input: Any, ctx: CallContext, /) -> Any:
        data = self.mapping(input)
        messages = self.field(data, "messages", "a list", required=True)
        for i, message in enumerate(messages):
            if not isinstance(message, Mapping):
                raise self.invalid(f"'messages[{i}]' must be an object, got {_type_name(message)}")
        model = self.field(data, "model", "a string")
        max_tokens = self.field(data, "max_tokens", "an integer")
        temperature = self.field(data, "temperature", "a number")
        api_key = self.field(data, "api_key", "a string")
        base_url = self.field(data, "base_url", "a string")
        timeout = self.timeout(data, _OPENAI_DEFAULT_TIMEOUT)

        network = ctx.options.network
        chosen_base_url = self._from_flow(base_url, ctx, "openai_base_url")
        base_url = chosen_base_url or os.environ.get("OPENAI_BASE_URL") or _OPENAI_DEFAULT_BASE_URL
        api_key = self._from_flow(api_key, ctx, "openai_api_key")
        if not api_key and (
            chosen_base_url is None
            or network is None
            or network.may_send_credentials(chosen_base_url)
        ):
            api_key = os.environ.get("OPENAI_API_KEY") or None  # the server's own key
        model = self._setting(model, ctx, "openai_model", "OPENAI_MODEL")
        url = base_url.rstrip("/") + "/chat/completions"
        model = model or _OPENAI_DEFAULT_MODEL

        body: dict[str, Any] = {"model": model, "messages": [dict(m) for m in messages]}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if temperature is not None:
            body["temperature"] = temperature
        headers = {"Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"

        try:
            response = await _send(
                self, "POST", url, seconds=timeout, network=network, json=body, headers=headers
            )
            return self._result(response, model)
        except ComponentError as exc:
            if api_key and api_key in exc.message:  # e.g. a server that echoes the key back
                raise ComponentError(
                    exc.code, exc.message.replace(api_key, "***"), _redact(exc.data, api_key)
                ) from None
            raise

    def _result(self, response: httpx.Response, model: str) -> dict[str, Any]:
        status = response.status_code
        snippet = response.text[:_BODY_SNIPPET]
        if status >= 400:
            code = _status_code(status)
            raise ComponentError(
                code,
                f"{self.path}: HTTP {status}: {snippet}",
                {"status_code": status, "body": snippet},
            )
        try:
            reply = response.json()
            content = reply["choices"][0]["message"]["content"]
        except (ValueError, LookupError, TypeError):
            raise ComponentError(
                "COMPONENT_FAILED",
                f"{self.path}: malformed response (HTTP {status}): expected JSON with "
                f"choices[0].message.content, got: {snippet}",
                {"status_code": status, "body": snippet},
            ) from None
        if not isinstance(content, str):
            raise ComponentError(
                "COMPONENT_FAILED",
                f"{self.path}: malformed response: choices[0].message.content is "
                f"{_type_name(content)}, not a string: {snippet}",
                {"status_code": status, "body": snippet},
            )
        returned = reply.get("model")
        return {
            "response": content,
            "model": returned if isinstance(returned, str) else model,
            "usage": reply.get("usage"),
        }


def _redact(value: Any, secret: str) -> Any:
    if isinstance(value, str):
        return value.replace(secret, "***")
    if isinstance(value, dict):
        return {k: _redact(v, secret) for k, v in value.items()}
    return value


def _is_json_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


class HttpRequest(_Builtin):
    """``/http/request``: send one HTTP request and return the response.

    Input ``{url: str, method?: str = "GET", headers?: {str: str}, params?:
    {str: scalar | [scalar]}, json?: any, body?: str, timeout?: seconds = 30}`` (``json`` and
    ``body`` are exclusive). Output ``{status_code, headers, body, json}``:
    header names are lower-case (repeated headers joined by ``", "``), ``body`` is
    the decoded text, and ``json`` the parsed body when the response's
    content-type is JSON (``application/json`` or ``*/*+json``) and it parses,
    else ``None``.

    Every HTTP status is returned, 4xx and 5xx included; redirects are not
    followed. Connection errors fail with ``UNREACHABLE``, timeouts with
    ``TIMEOUT``, and a destination refused by the
    :class:`~pocketbatch.loader.NetworkPolicy` in ``options.network`` (the server's:
    loopback, link-local, private, ... addresses, after DNS resolution) with
    ``PERMISSION_DENIED`` before anything is connected to.

    Example:
        >>> import asyncio
        >>> ctx = CallContext(step_id="s", flow_dir=None, variables={})
        >>> try:
        ...     asyncio.run(HttpRequest()({"url": 42}, ctx))
        ... except ComponentError as exc:
        ...     print(exc.code, exc.message)
        INVALID_INPUT /http/request: 'url' must be a string, got int
    """

    path = "/http/request"

    async def __call__(self, input: Any, ctx: CallContext, /) -> Any:
        data = self.mapping(input)
        url = self.field(data, "url", "a string", required=True)
        method = self.field(data, "method", "a string") or "GET"
        headers = _string_map(self, self.field(data, "headers", "an object"), "headers")
        params = _query_params(self, self.field(data, "params", "an object"))
        body = self.field(data, "body", "a string")
        timeout = self.timeout(data, _HTTP_DEFAULT_TIMEOUT)
        payload = data.get("json")
        if payload is not None and body is not None:
            raise self.invalid("give 'json' or 'body', not both")

        kwargs: dict[str, Any] = {}
        if headers is not None:
            kwargs["headers"] = headers
        if params is not None:
            kwargs["params"] = params
        if payload is not None:
            kwargs["json"] = payload
        elif body is not None:
            kwargs["content"] = body.encode("utf-8")
        response = await _send(
            self, method.upper(), url, seconds=timeout, network=ctx.options.network, **kwargs
        )

        parsed: Any = None
        if _is_json_type(response.headers.get("content-type", "")):
            try:
                parsed = response.json()
            except ValueError:
                parsed = None
        return {
            "status_code": response.status_code,
            "headers": dict(response.headers),
            "body": response.text,
            "json": parsed,
        }
