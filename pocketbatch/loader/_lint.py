"""Warnings about flows that load but will not do what they seem to.

Stepflow evaluates a data-flow flow lazily: only the steps its ``output`` needs run,
plus the steps marked ``mustExecute: true`` (and what those need). A flow with no
``output:`` at all (its result is then ``null``) therefore runs none of its other
steps, and each input still "succeeds". pocketbatch does the same, to match, and
says so at load: a :class:`~pocketbatch.LoadWarning` on
:attr:`~pocketbatch.LoadedFlow.warnings`, which every command prints (``validate
--strict`` fails on it), so that this is never silent.
Flows whose steps use ``next:`` (control flow) run from their start step: no warning.
"""

from __future__ import annotations

from pocketbatch._warnings import LoadWarning
from pocketbatch.loader._spec import FlowSpec

__all__ = ("flow_warnings",)


def flow_warnings(spec: FlowSpec) -> tuple[LoadWarning, ...]:
    """The warnings for a parsed flow, each at its ``file:line:column``.

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
    listed = ", ".join(idle)
    if not runs:
        which = f"none of its steps ({listed}) will run"
    else:
        which = f"its step{'s' if len(idle) > 1 else ''} {listed} will not run"
    message = (
        f"the flow has no 'output:', so {which}: as in Stepflow, only "
        "the steps the output needs run (and those with 'mustExecute: true'), and each "
        f"input succeeds with the result null. Add an output, e.g. 'output: {{$step: "
        f"{idle[-1]}}}'"
    )
    return (
        LoadWarning(
            message,
            file=spec.doc.name,
            line=pos.line if pos else None,
            column=pos.column if pos else None,
        ),
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
