"""What ``/builtin/openai`` sends and what it returns: the request body built from
its input, and its result read from the provider's reply.

:func:`request_body` checks the chat-completions options the builtin passes
through (``top_p``, ``stop``, ``seed``, ``n``, ``tools``, ``response_format``...)
and fails with ``INVALID_INPUT`` naming the field; :func:`read_reply` turns the
parsed reply into the builtin's result, checking structured output: with
``response_format`` ``json_object`` the content must be JSON, with
``json_schema`` it must also match the schema (``INVALID_OUTPUT`` with the JSON
path of the mismatch otherwise). Schema validators are built once per distinct
schema (:func:`_validator`, an LRU cache keyed by the schema's canonical JSON).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final

from pocketbatch._errors import ComponentError
from pocketbatch.loader._builtin_base import Builtin, type_name

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator

__all__ = ("read_reply", "request_body")

INVALID_OUTPUT: Final = "INVALID_OUTPUT"
_SNIPPET: Final = 300

# Options passed through as given, after a check of their kind (Builtin.field's kinds).
_PLAIN_OPTIONS: Final = (
    ("max_tokens", "an integer"),
    ("max_completion_tokens", "an integer"),
    ("temperature", "a number"),
    ("top_p", "a number"),
    ("seed", "an integer"),
    ("presence_penalty", "a number"),
    ("frequency_penalty", "a number"),
    ("user", "a string"),
    ("parallel_tool_calls", "a boolean"),
)
_FORMATS: Final = ("text", "json_object", "json_schema")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _stop(component: Builtin, value: Any) -> Any:
    if isinstance(value, str) or (
        isinstance(value, list) and all(isinstance(s, str) for s in value)
    ):
        return value
    raise component.invalid(f"'stop' must be a string or a list of strings, got {type_name(value)}")


def _logit_bias(component: Builtin, value: Any) -> Any:
    if not isinstance(value, Mapping):
        raise component.invalid(f"'logit_bias' must be an object, got {type_name(value)}")
    for key, bias in value.items():
        if not _is_number(bias):
            raise component.invalid(
                f"'logit_bias[{key!r}]' must be a number, got {type_name(bias)}"
            )
    return dict(value)


def _tools(component: Builtin, value: Any) -> Any:
    if not isinstance(value, list):
        raise component.invalid(f"'tools' must be a list, got {type_name(value)}")
    for i, tool in enumerate(value):
        if not isinstance(tool, Mapping):
            raise component.invalid(f"'tools[{i}]' must be an object, got {type_name(tool)}")
    return [dict(t) for t in value]


def _tool_choice(component: Builtin, value: Any) -> Any:
    if isinstance(value, str | Mapping):
        return value if isinstance(value, str) else dict(value)
    raise component.invalid(f"'tool_choice' must be a string or an object, got {type_name(value)}")


def _response_format(component: Builtin, value: Any) -> Any:
    if not isinstance(value, Mapping):
        raise component.invalid(f"'response_format' must be an object, got {type_name(value)}")
    kind = value.get("type")
    if kind not in _FORMATS:
        raise component.invalid(
            f"'response_format.type' must be one of {', '.join(_FORMATS)}, got {kind!r}"
        )
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, Mapping):
            raise component.invalid(
                f"'response_format.json_schema' must be an object, got {type_name(spec)}"
            )
        schema = spec.get("schema")
        if not isinstance(schema, Mapping):
            raise component.invalid(
                f"'response_format.json_schema.schema' must be an object, got {type_name(schema)}"
            )
        try:
            _validator(_canonical(schema))
        except ValueError as exc:  # SchemaError, or a schema JSON cannot hold
            raise component.invalid(
                f"'response_format.json_schema.schema' is not a valid JSON Schema: {exc}"
            ) from None
    return dict(value)


_CHECKED_OPTIONS: Final[dict[str, Callable[[Builtin, Any], Any]]] = {
    "stop": _stop,
    "logit_bias": _logit_bias,
    "tools": _tools,
    "tool_choice": _tool_choice,
    "response_format": _response_format,
}


def request_body(
    component: Builtin, data: Mapping[str, Any], model: str, messages: list[Any]
) -> dict[str, Any]:
    """The JSON body to POST to ``/chat/completions``: ``model``, ``messages`` and
    every option ``data`` gives (``null`` counts as absent), each checked first.

    Example:
        >>> from pocketbatch.loader._builtin_http import OpenAIChat
        >>> request_body(OpenAIChat(), {"top_p": 0.5, "stop": None}, "m", [])
        {'model': 'm', 'messages': [], 'top_p': 0.5}
        >>> request_body(OpenAIChat(), {"n": 0}, "m", [])
        Traceback (most recent call last):
        ...
        pocketbatch._errors.ComponentError: [INVALID_INPUT] /builtin/openai: 'n' must be >= 1, got 0
    """
    body: dict[str, Any] = {"model": model, "messages": [dict(m) for m in messages]}
    for name, kind in _PLAIN_OPTIONS:
        value = component.field(data, name, kind)
        if value is not None:
            body[name] = value
    n = component.field(data, "n", "an integer")
    if n is not None:
        if n < 1:
            raise component.invalid(f"'n' must be >= 1, got {n}")
        body["n"] = n
    for name, check in _CHECKED_OPTIONS.items():
        value = data.get(name)
        if value is not None:
            body[name] = check(component, value)
    return body


# --------------------------------------------------------------------------- the reply


def _canonical(schema: Mapping[str, Any]) -> str:
    return json.dumps(schema, sort_keys=True, separators=(",", ":"), allow_nan=False)


@lru_cache(maxsize=64)
def _validator(schema_json: str) -> Draft202012Validator:
    """A checked validator for one schema (its canonical JSON), built once."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    schema = json.loads(schema_json)
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ValueError(exc.message) from None
    return Draft202012Validator(schema)


def _bad_output(component: Builtin, message: str, content: str) -> ComponentError:
    return ComponentError(
        INVALID_OUTPUT, f"{component.path}: {message}", {"content": content[:_SNIPPET]}
    )


def _structured(
    component: Builtin, content: str, response_format: Mapping[str, Any], where: str
) -> Any:
    """``content`` parsed as JSON and, for ``json_schema``, checked against the schema."""
    try:
        parsed = json.loads(content)
    except ValueError as exc:
        raise _bad_output(
            component,
            f"{where} is not JSON ({response_format['type']} output was asked for): {exc}",
            content,
        ) from None
    if response_format["type"] == "json_schema":
        validator = _validator(_canonical(response_format["json_schema"]["schema"]))
        try:
            errors = list(validator.iter_errors(parsed))
        except RecursionError:
            raise _bad_output(
                component, f"{where} is nested too deeply to check against the schema", content
            ) from None
        if errors:
            from jsonschema.exceptions import best_match

            error = best_match(errors)
            raise _bad_output(
                component,
                f"{where} does not match response_format's schema at {error.json_path}: "
                f"{error.message}",
                content,
            )
    return parsed


def _tool_calls(component: Builtin, message: Mapping[str, Any], where: str) -> list[Any]:
    """The message's tool calls as ``{id, name, arguments}``, arguments parsed from JSON."""
    calls = message.get("tool_calls") or []
    result: list[Any] = []
    for i, call in enumerate(calls):
        function = call["function"]
        arguments = function.get("arguments") or "{}"
        try:
            parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
        except ValueError as exc:
            raise _bad_output(
                component,
                f"{where}.tool_calls[{i}].function.arguments is not JSON: {exc}",
                str(arguments),
            ) from None
        result.append({"id": call.get("id"), "name": function["name"], "arguments": parsed})
    return result


def _choice(
    component: Builtin, choice: Mapping[str, Any], index: int, body: Mapping[str, Any]
) -> dict[str, Any]:
    where = f"choices[{index}].message"
    message = choice["message"]
    content = message.get("content")
    calls = _tool_calls(component, message, where) if "tools" in body else []
    if not (isinstance(content, str) or (content is None and calls)):
        raise TypeError(f"{where}.content is {type_name(content)}, not a string")
    result: dict[str, Any] = {"response": content}
    response_format = body.get("response_format")
    if response_format is not None and response_format["type"] != "text":
        result["parsed"] = (
            None if content is None else _structured(component, content, response_format, where)
        )
    if "tools" in body:
        result["tool_calls"] = calls
    result["finish_reason"] = choice.get("finish_reason")
    return result


def read_reply(
    component: Builtin, reply: Any, model: str, body: Mapping[str, Any]
) -> dict[str, Any]:
    """The builtin's result from a parsed 200 reply to the request ``body``.

    Always ``{response, model, usage}``: the first choice's content, the model the
    server reports (else ``model``), its ``usage`` (or ``None``). With
    ``response_format`` ``json_object`` or ``json_schema`` also ``parsed`` (the
    content as JSON, checked against the schema); with ``tools`` also
    ``tool_calls`` (``[{id, name, arguments}]``, arguments parsed; ``response``
    may then be ``None``); with ``n`` > 1 also ``choices``, one
    ``{response, parsed?, tool_calls?, finish_reason}`` per choice.

    A reply without ``choices[0].message.content`` (or tool calls) raises
    ``LookupError``/``TypeError`` for the caller to report as malformed; content
    that is not the JSON asked for fails with ``INVALID_OUTPUT``.

    Example:
        >>> from pocketbatch.loader._builtin_http import OpenAIChat
        >>> body = {"response_format": {"type": "json_object"}}
        >>> reply = {"choices": [{"message": {"content": '{"a": 1}'}}]}
        >>> read_reply(OpenAIChat(), reply, "m", body)
        {'response': '{"a": 1}', 'model': 'm', 'usage': None, 'parsed': {'a': 1}}
    """
    choices = reply["choices"]
    if not choices:
        raise LookupError("no choices")
    read = [_choice(component, choice, i, body) for i, choice in enumerate(choices)]
    first = read[0]
    returned = reply.get("model")
    result: dict[str, Any] = {
        "response": first["response"],
        "model": returned if isinstance(returned, str) else model,
        "usage": reply.get("usage"),
    }
    for key in ("parsed", "tool_calls"):
        if key in first:
            result[key] = first[key]
    if body.get("n", 1) > 1:
        result["choices"] = read
    return result
