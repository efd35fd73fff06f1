"""Mermaid pictures of data-flow files: input, steps and output, linked by what reads what.

Control-flow files are drawn by the core (their ``next`` graph); see
:meth:`~pocketbatch.LoadedFlow.to_mermaid`.
"""

from __future__ import annotations

from pocketbatch.loader._expr import Expr, InputRef
from pocketbatch.loader._spec import FlowSpec

__all__ = ()


def _dataflow_mermaid(spec: FlowSpec) -> str:
    def label(text: str) -> str:
        return text.replace('"', "#quot;")

    lines = ["flowchart TD", '    input(["input"])']
    for step in spec.steps:
        kind = " (for_each)" if step.for_each is not None else ""
        lines.append(f'    {step.id}["{label(step.id)}<br/>{label(step.component)}{kind}"]')
    lines.append('    output(["output"])')
    edges: list[str] = []

    def reads_input(expr: Expr | None) -> bool:
        return expr is not None and _any_node(expr, (InputRef,))

    for step in spec.steps:
        if reads_input(step.input) or reads_input(step.skip) or reads_input(step.for_each):
            edges.append(f"    input --> {step.id}")
        for dep in sorted(step.deps):
            edges.append(f"    {dep} --> {step.id}")
    for dep in sorted(spec.output.all_steps):
        edges.append(f"    {dep} --> output")
    if reads_input(spec.output):
        edges.append("    input --> output")
    return "\n".join(lines + edges)


def _any_node(expr: Expr, kinds: tuple[type, ...]) -> bool:
    return any(isinstance(node, kinds) for node in expr.walk())
