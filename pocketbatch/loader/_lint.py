"""Warnings about flows that load but will not do what they seem to.

Stepflow evaluates a data-flow flow lazily: only the steps its ``output`` needs run,
plus the steps marked ``mustExecute: true`` (and what those need). A flow with no
``output:`` at all (its result is then ``null``) therefore runs none of its other
steps, and each input still "succeeds". pocketbatch does the same, to match, and
warns at load (and ``pocketbatch validate`` prints it) so that this is never silent.
Flows whose steps use ``next:`` (control flow) run from their start step: no warning.
"""

from __future__ import annotations

import warnings

from pocketbatch._errors import FlowWarning
from pocketbatch.loader._spec import FlowSpec

__all__ = ("flow_warnings", "warn_about")


def flow_warnings(spec: FlowSpec) -> tuple[str, ...]:
    """The warnings for a parsed flow, each leading with ``file:line:column``.

    Example:
        >>> from pocketbatch.loader._source import parse_document
        >>> from pocketbatch.loader._spec import parse_flow
        >>> text = "steps:\\n  - {id: a, component: /builtin/noop, input: {}}\\n"
        >>> print(flow_warnings(parse_flow(parse_document(text)))[0])  # doctest: +ELLIPSIS
        <string>:1:1: the flow has no 'output:', so none of its steps (a) will run...
        >>> flow_warnings(parse_flow(parse_document(text + "output: {$step: a}\\n")))
        ()
    """
    data = spec.doc.data
    if spec.control_flow or not spec.steps or not isinstance(data, dict) or "output" in data:
        return ()
    runs = _needed({s.id for s in spec.steps if s.must_execute}, spec)
    idle = [s.id for s in spec.steps if s.id not in runs]
    if not idle:
        return ()
    pos = spec.doc.position(("steps",))
    where = f"{spec.doc.name}:{pos.line}:{pos.column}" if pos else spec.doc.name
    listed = ", ".join(idle)
    if not runs:
        which = f"none of its steps ({listed}) will run"
    else:
        which = f"its step{'s' if len(idle) > 1 else ''} {listed} will not run"
    return (
        f"{where}: the flow has no 'output:', so {which}: as in Stepflow, only "
        "the steps the output needs run (and those with 'mustExecute: true'), and each "
        f"input succeeds with the result null. Add an output, e.g. 'output: {{$step: "
        f"{idle[-1]}}}'",
    )


def _needed(roots: set[str], spec: FlowSpec) -> set[str]:
    """``roots`` and every step they depend on, transitively."""
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        step_id = stack.pop()
        if step_id in seen or step_id not in spec.step_index:
            continue
        seen.add(step_id)
        stack.extend(spec.step_index[step_id].deps)
    return seen


def warn_about(spec: FlowSpec, *, stacklevel: int = 2) -> None:
    """Issue each of :func:`flow_warnings` as a :class:`~pocketbatch.FlowWarning`."""
    for message in flow_warnings(spec):
        warnings.warn(FlowWarning(message), stacklevel=stacklevel + 1)
