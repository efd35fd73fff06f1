"""The builtins that reach the network: ``/http/request`` and ``/builtin/openai``.

Both send on the run's pooled httpx client (:class:`~pocketbatch.loader._services.RunServices`
from the call context; httpx is imported only when one runs), or, called outside a
run, on a client made for the one call. ``/builtin/openai`` also waits for its
provider's :class:`~pocketbatch.ProviderLimiter`, retries transient failures by
itself (:data:`~pocketbatch.loader._services.DEFAULT_RETRY`) and counts usage.
Under a :class:`~pocketbatch.loader.NetworkPolicy` (``options.network``, set by the
server) the request goes through a
:class:`~pocketbatch.loader._transport.GuardedTransport`, which refuses addresses
the policy forbids, and ``/builtin/openai`` sends the environment's API key only to
base URLs the operator chose. Transport failures map to ``UNREACHABLE``,
``TIMEOUT`` or ``INVALID_INPUT``; error statuses to the codes of :func:`_status_code`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from pocketbatch._errors import ComponentError
from pocketbatch.core._limits import estimate_tokens, retry_after
from pocketbatch.loader._builtin_base import Builtin, type_name
from pocketbatch.loader._component import CallContext
from pocketbatch.loader._network import NetworkPolicy
from pocketbatch.loader._openai_shape import read_reply, request_body
from pocketbatch.loader._services import RetryPolicy, RunServices, ServiceSettings

if TYPE_CHECKING:
    import httpx  # imported when a request is sent, with _transport

__all__ = ("HttpRequest", "OpenAIChat")

_OPENAI_DEFAULT_BASE_URL: Final = "https://api.openai.com/v1"  # = _network.DEFAULT_OPENAI_BASE_URL
_OPENAI_DEFAULT_MODEL: Final = "gpt-4o-mini"
_OPENAI_DEFAULT_TIMEOUT: Final = 120.0
_HTTP_DEFAULT_TIMEOUT: Final = 30.0
_BODY_SNIPPET: Final = 300


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


async def _send(
    component: Builtin,
    method: str,
    url: str,
    *,
    seconds: float,
    network: NetworkPolicy | None = None,
    services: RunServices | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """Send one request on the run's client (``services``), else on a short-lived
    one, mapping transport failures to codes.

    ``UNREACHABLE`` for connection problems, ``TIMEOUT`` for timeouts and
    ``INVALID_INPUT`` for URLs httpx cannot use. Messages carry no headers, so
    no credentials.

    With a ``network`` policy the request goes through a
    :class:`~pocketbatch.loader._transport.GuardedTransport` (a refused address
    fails with ``PERMISSION_DENIED``), and proxy settings from the environment are
    ignored: the policy must judge the address really connected to.
    """
    import httpx  # here, not at the top: ``import pocketbatch`` stays free of httpx

    try:
        if services is not None:
            shared = services.client(network)
            return await shared.request(method, url, timeout=seconds, **kwargs)
        if network is None:
            client = httpx.AsyncClient(timeout=seconds)
        else:
            from pocketbatch.loader._transport import GuardedTransport  # imports httpx

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
    except httpx.TooManyRedirects as exc:
        raise ComponentError(
            "COMPONENT_FAILED", f"{component.path}: {method} {url}: {exc} (a redirect loop?)"
        ) from None
    except httpx.TransportError as exc:
        detail = str(exc) or type(exc).__name__
        raise ComponentError(
            "UNREACHABLE", f"{component.path}: cannot reach {url}: {detail}"
        ) from None


_RETRIED_STATUS: Final = frozenset({408, 429})
_RETRIED_CODES: Final = frozenset({"TIMEOUT", "UNREACHABLE"})


async def _send_llm(
    component: Builtin,
    ctx: CallContext,
    provider: tuple[str, str | None, tuple[float | None, float | None]],
    tokens: int,
    url: str,
    *,
    seconds: float,
    **kwargs: Any,
) -> httpx.Response:
    """POST to an LLM provider: wait for its limiter, retry transient failures.

    ``provider`` is ``(base_url, api_key, (requests_per_minute, tokens_per_minute))``,
    the limits set by hand in the step (``None``: not set). 429, 408, 5xx, timeouts
    and connection errors are retried with the run's
    :class:`~pocketbatch.loader._services.RetryPolicy` (``retry-after-ms`` /
    ``retry-after`` honoured), unless the step has ``on_error: retry``
    (``ctx.step_retries``: then the flow's policy retries, and this sends once); a
    429, or a 503 with ``retry-after``, pauses the provider's limiter either way, so
    every item waits (a bare 503 is one item's failure: only that item backs off). The
    last failing reply is returned (a transport error raised). Called outside a
    run (no ``ctx.services``: the component on its own) it sends once.
    """
    if ctx.services is None:  # called outside a run: one attempt, on a client for it
        async with RunServices(ServiceSettings(retry=RetryPolicy(attempts=1))) as own:
            alone = CallContext(ctx.step_id, ctx.flow_dir, ctx.variables, ctx.options, services=own)
            return await _send_llm(
                component, alone, provider, tokens, url, seconds=seconds, **kwargs
            )
    services = ctx.services
    base_url, credential, (per_minute, tokens_per_minute) = provider
    limiter = services.limiter(base_url, credential)
    for configured_url, configured_requests, configured_tokens in ctx.options.provider_limits:
        if configured_url == base_url.rstrip("/"):  # pocketbatch.yaml's; the step's win
            per_minute = per_minute or configured_requests
            tokens_per_minute = tokens_per_minute or configured_tokens
    share = services.settings.budget_share  # 1/N on each of N Ray actors
    limiter.set_limits(
        requests_per_minute=per_minute and per_minute * share,
        tokens_per_minute=tokens_per_minute and tokens_per_minute * share,
    )
    usage = services.usage
    attempts = 1 if ctx.step_retries else services.settings.retry.attempts
    policy = services.settings.retry
    attempt = 0
    while True:
        attempt += 1
        try:
            async with limiter.request(tokens):
                usage.requests += 1
                response = await _send(
                    component,
                    "POST",
                    url,
                    seconds=seconds,
                    network=ctx.options.network,
                    services=services,
                    **kwargs,
                )
                # Inside the request: its headers are learned before the limiter lets
                # the next caller go (the first answer of a run sets the pace).
                limiter.update_from_headers(response.headers)
        except ComponentError as exc:
            if exc.code not in _RETRIED_CODES or attempt >= attempts:
                raise
            wait = policy.delay(attempt)
        else:
            status = response.status_code
            if status not in _RETRIED_STATUS and status < 500:
                return response
            if status == 429:
                usage.rate_limited += 1
            asked = retry_after(response.headers)
            wait = policy.delay(attempt, asked)
            if status == 429 or (status == 503 and asked is not None):
                # Everyone waits, not just this item. A 503 that asks for nothing is
                # this request's failure, not the provider's budget: pausing every item
                # for its backoff cost the benchmark 20% (1% of requests are 503s).
                limiter.pause(wait)
            if attempt >= attempts:
                return response
        usage.retries += 1
        await services.sleep(wait)


def _count_tokens(services: RunServices | None, reported: Any) -> None:
    """Add a reply's ``usage`` (``prompt_tokens``, ``completion_tokens``) to the run's."""
    if services is None or not isinstance(reported, Mapping):
        return
    for ours, theirs in (("tokens_in", "prompt_tokens"), ("tokens_out", "completion_tokens")):
        value = reported.get(theirs)
        if isinstance(value, int) and not isinstance(value, bool):
            setattr(services.usage, ours, getattr(services.usage, ours) + value)


def _string_map(component: Builtin, value: Any, name: str) -> dict[str, str] | None:
    """An optional object of string values (HTTP headers), as a ``dict``."""
    if value is None:
        return None
    result: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(item, str):
            raise component.invalid(f"{name}[{key!r}] must be a string, got {type_name(item)}")
        result[str(key)] = item
    return result


def _query_params(component: Builtin, value: Any) -> dict[str, Any] | None:
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
                f"got {type_name(item)}"
            )
        result[str(key)] = item
    return result


class OpenAIChat(Builtin):
    """``/builtin/openai``: one chat completion from an OpenAI-compatible server.

    Input ``{messages: list, model?, api_key?, base_url?, timeout?}`` plus the
    chat-completions options passed through when given: ``max_tokens``,
    ``max_completion_tokens``, ``temperature``, ``top_p``, ``stop``, ``seed``,
    ``n``, ``presence_penalty``, ``frequency_penalty``, ``logit_bias``, ``user``,
    ``response_format``, ``tools``, ``tool_choice``, ``parallel_tool_calls``.
    Output ``{response, model, usage}``: the first choice's message content, the
    model the server reports, and its ``usage`` (or ``None``); plus ``parsed``
    with a JSON ``response_format`` (the content checked against the schema,
    else ``INVALID_OUTPUT``), ``tool_calls`` with ``tools`` and ``choices`` with
    ``n`` > 1 (see :func:`~pocketbatch.loader._openai_shape.read_reply`).

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

    It POSTs ``{model, messages, ...options}`` to
    ``{base_url}/chat/completions`` with a ``timeout`` of 120 s unless given.
    Failures: HTTP 429 and 5xx are ``RESOURCE_UNAVAILABLE``, other statuses
    >= 400 and malformed replies ``COMPONENT_FAILED`` (the message has the status
    and the start of the body), connection errors ``UNREACHABLE``, timeouts
    ``TIMEOUT``. The API key never appears in a message.

    Sending: on the run's pooled client, after waiting for the provider's
    :class:`~pocketbatch.ProviderLimiter` (one per base URL and key for the run;
    optional inputs ``requests_per_minute`` and ``tokens_per_minute`` set its limits
    by hand, else they are learned from ``x-ratelimit-*`` headers). A request's
    tokens are estimated as the characters of its messages / 4 plus
    ``max_tokens``. 429, 408, 5xx, timeouts and connection errors are retried
    by default (5 attempts, backoff 0.5 s doubling to 30 s with full jitter, or
    the reply's ``retry-after-ms``/``retry-after`` when longer; a 429, or a 503
    with ``retry-after``, pauses the provider for every item); the failure above
    is raised only after the last attempt. (Those are the run's: called on its
    own, outside a flow, the builtin sends once.) The reply's ``usage`` is added
    to the run's :class:`~pocketbatch.Usage`.

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
                f"variable {variable!r} must be a string, got {type_name(from_vars)}"
            )
        return from_vars or None

    def _setting(self, value: str | None, ctx: CallContext, variable: str, env: str) -> str | None:
        return self._from_flow(value, ctx, variable) or os.environ.get(env) or None

    def cache_key_extra(self, input: Any, ctx: CallContext) -> Any:
        """What a step cache keys on besides the input: the base URL and model this
        call resolves from the input, run variables and environment (never the key).

        Example:
            >>> ctx = CallContext(step_id="s", flow_dir=None, variables={"openai_model": "m"})
            >>> OpenAIChat().cache_key_extra({"base_url": "http://h/v1"}, ctx)
            {'base_url': 'http://h/v1', 'model': 'm'}
        """
        data = self.mapping(input)
        base_url = self.field(data, "base_url", "a string")
        base_url = self._from_flow(base_url, ctx, "openai_base_url")
        model = self.field(data, "model", "a string")
        model = self._setting(model, ctx, "openai_model", "OPENAI_MODEL")
        return {
            "base_url": base_url or os.environ.get("OPENAI_BASE_URL") or _OPENAI_DEFAULT_BASE_URL,
            "model": model or _OPENAI_DEFAULT_MODEL,
        }

    async def __call__(self, input: Any, ctx: CallContext, /) -> Any:
        data = self.mapping(input)
        messages = self.field(data, "messages", "a list", required=True)
        for i, message in enumerate(messages):
            if not isinstance(message, Mapping):
                raise self.invalid(f"'messages[{i}]' must be an object, got {type_name(message)}")
        model = self.field(data, "model", "a string")
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

        body = request_body(self, data, model, messages)
        headers = {"Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"

        limits = (
            self.field(data, "requests_per_minute", "a number"),
            self.field(data, "tokens_per_minute", "a number"),
        )
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
        tokens = estimate_tokens(messages, max_tokens)
        try:
            response = await _send_llm(
                self,
                ctx,
                (base_url, api_key, limits),
                tokens,
                url,
                json=body,
                headers=headers,
                seconds=timeout,
            )
            result = self._result(response, model, body)
            _count_tokens(ctx.services, result["usage"])
            return result
        except ComponentError as exc:
            if api_key and api_key in exc.message:  # e.g. a server that echoes the key back
                raise ComponentError(
                    exc.code, exc.message.replace(api_key, "***"), _redact(exc.data, api_key)
                ) from None
            raise

    def _result(self, response: httpx.Response, model: str, body: dict[str, Any]) -> dict[str, Any]:
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
            return read_reply(self, response.json(), model, body)
        except (ValueError, LookupError, TypeError, AttributeError) as exc:
            raise ComponentError(
                "COMPONENT_FAILED",
                f"{self.path}: malformed response (HTTP {status}): expected JSON with "
                f"choices[0].message.content ({exc}), got: {snippet}",
                {"status_code": status, "body": snippet},
            ) from None


def _redact(value: Any, secret: str) -> Any:
    if isinstance(value, str):
        return value.replace(secret, "***")
    if isinstance(value, dict):
        return {k: _redact(v, secret) for k, v in value.items()}
    return value


def _is_json_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


class HttpRequest(Builtin):
    """``/http/request``: send one HTTP request and return the response.

    Input ``{url: str, method?: str = "GET", headers?: {str: str}, params?:
    {str: scalar | [scalar]}, json?: any, body?: str, timeout?: seconds = 30,
    follow_redirects?: bool = false}`` (``json`` and ``body`` are exclusive). Output
    ``{status_code, headers, body, json}``:
    header names are lower-case (repeated headers joined by ``", "``), ``body`` is
    the decoded text, and ``json`` the parsed body when the response's
    content-type is JSON (``application/json`` or ``*/*+json``) and it parses,
    else ``None``.

    Every HTTP status is returned, 4xx and 5xx included. Redirects are not followed
    unless ``follow_redirects: true``, as in httpx (whose default is not to follow;
    ``requests`` follows): then up to 20 hops are followed (more fail with
    ``COMPONENT_FAILED``), ``timeout`` holds per hop, and the output is the last
    response's. Under a network policy every hop is checked, so a redirect to a
    forbidden address fails with ``PERMISSION_DENIED`` before it is connected to.
    Connection errors fail with ``UNREACHABLE``, timeouts with
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
        follow = self.field(data, "follow_redirects", "a boolean") or False
        payload = data.get("json")
        if payload is not None and body is not None:
            raise self.invalid("give 'json' or 'body', not both")

        kwargs: dict[str, Any] = {"follow_redirects": follow}
        if headers is not None:
            kwargs["headers"] = headers
        if params is not None:
            kwargs["params"] = params
        if payload is not None:
            kwargs["json"] = payload
        elif body is not None:
            kwargs["content"] = body.encode("utf-8")
        response = await _send(
            self,
            method.upper(),
            url,
            seconds=timeout,
            network=ctx.options.network,
            services=ctx.services,
            **kwargs,
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
