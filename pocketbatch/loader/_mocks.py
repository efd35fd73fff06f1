"""Mock components: stand-ins defined by behaviours, as in Stepflow's ``mock`` plugin.

A config file's ``mocks`` (and the components of a Stepflow ``mock`` plugin) are
read into :class:`MockComponent` objects by :mod:`pocketbatch.loader._config_reader`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from typing import Any

from pocketbatch._errors import ComponentError
from pocketbatch.loader._component import CallContext, PluginFailure

__all__ = ("Behavior", "MockComponent")

Behavior = tuple[Any, str, Any]
"""One mock behaviour: ``(input, outcome, result or error)``."""


def _json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values: ``true`` is not ``1``, ``1`` is ``1.0``, key order is irrelevant."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b))
    if type(a) is not type(b) and not (isinstance(a, str) and isinstance(b, str)):
        return False
    return bool(a == b)


def _dump(value: Any) -> str:
    """``value`` as Stepflow prints a JSON value: compact, keys sorted."""
    try:
        return json.dumps(
            value, sort_keys=True, default=repr, separators=(",", ":"), ensure_ascii=False
        )
    except (TypeError, ValueError):
        return repr(value)


class MockComponent:
    """A stand-in component defined by behaviours, as in Stepflow's ``mock`` plugin.

    Each behaviour is ``(input, outcome, result_or_error)``. A call picks the first
    behaviour whose input equals the call's input exactly (as JSON values: ``true``
    is not ``1``, key order does not matter). ``"success"`` returns a copy of the
    result; ``"failed"`` raises :class:`~pocketbatch.ComponentError` with the error's
    ``code`` (default ``"COMPONENT_FAILED"``), ``message`` and ``data``. An input no
    behaviour matches raises :class:`~pocketbatch.loader._component.PluginFailure`
    (``No behavior defined for <path> on <input>``), so the step fails as in
    Stepflow: ``UNREACHABLE``, ``step "<id>" failed``, the error stack as ``data``.

    Args:
        path: the component path, for messages.
        behaviors: ``(input, "success", result)`` or ``(input, "failed", error)``.
        input_schema, output_schema: kept for reference; not enforced.

    Raises:
        ValueError: an outcome other than ``"success"`` or ``"failed"``.
        TypeError: a behaviour that is not a triple, or a failed one whose error is
            not a mapping.

    Example:
        >>> import asyncio
        >>> from pocketbatch.loader._component import CallContext, PluginFailure
        >>> mock = MockComponent("/mock/error", [
        ...     ({"mode": "succeed"}, "success", {"output": "succeeded"}),
        ...     ({"mode": "error"}, "failed", {"code": 8, "message": "error"}),
        ... ])
        >>> asyncio.run(mock({"mode": "succeed"}, CallContext("s", None, {})))
        {'output': 'succeeded'}
    """

    def __init__(
        self,
        path: str,
        behaviors: Iterable[Behavior],
        *,
        input_schema: Any = None,
        output_schema: Any = None,
    ) -> None:
        self.path = path
        checked: list[Behavior] = []
        for index, behavior in enumerate(behaviors):
            try:
                expected, outcome, value = behavior
            except (TypeError, ValueError):
                raise TypeError(
                    f"mock {path!r}: behavior {index} must be (input, outcome, result or "
                    f"error), got {behavior!r}"
                ) from None
            if outcome not in ("success", "failed"):
                raise ValueError(
                    f"mock {path!r}: behavior {index} has outcome {outcome!r}; "
                    "expected 'success' or 'failed'"
                )
            if outcome == "failed" and not isinstance(value, Mapping):
                raise TypeError(
                    f"mock {path!r}: behavior {index} failed with {value!r}; the error "
                    "must be a mapping like {'code': ..., 'message': ...}"
                )
            checked.append((expected, outcome, value))
        self.behaviors: tuple[Behavior, ...] = tuple(checked)
        self.input_schema = input_schema
        self.output_schema = output_schema

    async def __call__(self, input: Any, ctx: CallContext, /) -> Any:
        for expected, outcome, value in self.behaviors:
            if _json_equal(expected, input):
                if outcome == "success":
                    return copy.deepcopy(value)
                raise ComponentError(
                    value.get("code", "COMPONENT_FAILED"),
                    str(value.get("message", "")),
                    value.get("data"),
                )
        # As Stepflow's mock plugin: its own error, which the step reports as UNREACHABLE.
        raise PluginFailure(
            self.path,
            f"No behavior defined for {self.path} on {_dump(input)}",
            "error executing user-defined function",
        )

    def __repr__(self) -> str:
        return f"MockComponent({self.path!r}, {len(self.behaviors)} behaviors)"
