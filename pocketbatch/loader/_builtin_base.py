"""What every builtin component shares: its path, and the checks of its input.

A builtin (:class:`Builtin`) checks its input first: a missing required field or a
field of the wrong type fails the step with ``INVALID_INPUT`` and a message that
names the component and the field. An optional field given as ``null`` counts as
absent; unknown fields are ignored.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Final

from pocketbatch._errors import ComponentError
from pocketbatch.loader._component import CallContext

__all__ = ("INVALID_INPUT", "Builtin", "type_name")

INVALID_INPUT: Final = "INVALID_INPUT"


def type_name(value: Any) -> str:
    """``null`` or the Python type name of ``value``, for messages."""
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


class Builtin:
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
            raise self.invalid(f"input must be an object, got {type_name(input)}")
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
            raise self.invalid(f"{name!r} must be {kind}, got {type_name(value)}")
        return value

    def timeout(self, input: Mapping[str, Any], default: float) -> float:
        """The optional ``timeout`` field (seconds, finite and > 0), or ``default``."""
        value = self.field(input, "timeout", "a number")
        if value is None:
            return default
        if not (math.isfinite(value) and value > 0):
            raise self.invalid(f"'timeout' must be a number of seconds > 0, got {value!r}")
        return float(value)
