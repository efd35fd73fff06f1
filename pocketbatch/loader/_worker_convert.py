"""Values and errors between pocketbatch and the Stepflow worker protocol (protobuf).

JSON values cross as ``google.protobuf.Value``. Coming back, they are read as Stepflow's
orchestrator reads them: whole numbers become integers and mapping keys are sorted (a
protobuf ``Struct`` has no key order), so a worker's blob ids equal Stepflow's. Needs the
``stepflow`` extra (protobuf and stepflow-py's generated messages).
"""

from __future__ import annotations

import math
from typing import Any

from google.protobuf import struct_pb2
from stepflow_py.proto import common_pb2

from pocketbatch._errors import ComponentError

__all__ = ("error_code", "from_value", "task_error", "to_value")


def to_value(obj: Any) -> struct_pb2.Value:
    """A JSON-like Python value as a protobuf ``Value``.

    Example:
        >>> from_value(to_value({"b": [1, 2.5, None], "a": True}))
        {'a': True, 'b': [1, 2.5, None]}
    """
    value = struct_pb2.Value()
    _fill(value, obj)
    return value


def _fill(value: struct_pb2.Value, obj: Any) -> None:
    if obj is None:
        value.null_value = struct_pb2.NULL_VALUE
    elif isinstance(obj, bool):
        value.bool_value = obj
    elif isinstance(obj, int | float):
        value.number_value = float(obj)
    elif isinstance(obj, str):
        value.string_value = obj
    elif isinstance(obj, dict):
        fields = value.struct_value.fields
        if not obj:
            value.struct_value.SetInParent()
        for key, item in obj.items():
            _fill(fields[str(key)], item)
    elif isinstance(obj, list | tuple):
        values = value.list_value.values
        if not obj:
            value.list_value.SetInParent()
        for item in obj:
            _fill(values.add(), item)
    else:
        value.string_value = str(obj)


def from_value(value: struct_pb2.Value) -> Any:
    """A protobuf ``Value`` as Stepflow reads it: whole numbers as ints, keys sorted.

    Example:
        >>> from_value(to_value({"z": 3.0, "a": 0.5}))
        {'a': 0.5, 'z': 3}
    """
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        n = value.number_value
        if math.isfinite(n) and n == int(n) and abs(n) < 2**63:
            return int(n)
        return n if math.isfinite(n) else None
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        fields = value.struct_value.fields
        return {key: from_value(fields[key]) for key in sorted(fields)}
    if kind == "list_value":
        return [from_value(v) for v in value.list_value.values]
    return None


def from_struct(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A protobuf ``Struct`` as a dict (keys sorted)."""
    return {key: from_value(struct.fields[key]) for key in sorted(struct.fields)}


def code_name(code: int) -> str:
    """A ``TaskErrorCode`` number as the name a result shows (``COMPONENT_FAILED``).

    Example:
        >>> code_name(3), code_name(99)
        ('COMPONENT_FAILED', 'WORKER_ERROR')
    """
    try:
        name = common_pb2.TaskErrorCode.Name(code)
    except ValueError:
        return "WORKER_ERROR"
    return name.removeprefix("TASK_ERROR_CODE_") if code else "WORKER_ERROR"


def error_code(name: str | int) -> int:
    """A result's error code as a ``TaskErrorCode`` number (unknown: ``COMPONENT_FAILED``).

    Example:
        >>> error_code("TIMEOUT"), error_code("RATE_LIMITED")
        (1, 3)
    """
    try:
        return int(common_pb2.TaskErrorCode.Value(f"TASK_ERROR_CODE_{name}"))
    except ValueError:
        return int(common_pb2.TASK_ERROR_CODE_COMPONENT_FAILED)


def task_error(error: Any) -> ComponentError:
    """A worker's ``TaskError`` as the step's error: code, message and data unchanged,
    except the worker's ``traceback``, which is left out (as on the in-process path, so
    a record does not depend on where the code ran, nor carry the worker's file paths)."""
    data = from_struct(error.data) if error.HasField("data") else None
    if isinstance(data, dict):
        data.pop("traceback", None)
    return ComponentError(code_name(error.code), error.message, data=data)
