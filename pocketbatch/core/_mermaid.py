"""Render a flow as a Mermaid ``flowchart``: nodes, labelled transitions, nested
flows as subgraphs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pocketbatch.core._node import BaseNode, node_name

if TYPE_CHECKING:
    from pocketbatch.core._flow import Flow

__all__ = ("render",)


def _label(text: str) -> str:
    # Mermaid's entity codes keep quotes and brackets from ending the label.
    return (
        text.replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")
    )


class _Renderer:
    def __init__(self) -> None:
        self.ids: dict[int, str] = {}
        self.lines: list[str] = ["flowchart TD"]
        self.edges: list[str] = []
        self.declared: set[int] = set()

    def ident(self, node: BaseNode[Any, Any, Any]) -> str:
        key = id(node)
        if key not in self.ids:
            self.ids[key] = f"n{len(self.ids)}"
        return self.ids[key]

    def declare(self, flow: Flow[Any], indent: str) -> None:
        from pocketbatch.core._flow import Flow

        declared: set[int] = set()
        stack = [] if flow.start_node is None else [flow.start_node]
        order: list[BaseNode[Any, Any, Any]] = []
        while stack:  # depth-first, successors in wiring order
            node = stack.pop()
            if id(node) in declared:
                continue
            declared.add(id(node))
            order.append(node)
            stack.extend(reversed(list(node.successors.values())))
        for node in order:
            ident = self.ident(node)
            if id(node) not in self.declared:
                self.declared.add(id(node))
                name = _label(node_name(node))
                if isinstance(node, Flow):
                    self.lines.append(f'{indent}subgraph {ident}["{name}"]')
                    self.declare(node, indent + "    ")
                    self.lines.append(f"{indent}end")
                else:
                    self.lines.append(f'{indent}{ident}["{name}"]')
            for action, target in node.successors.items():
                arrow = "-->" if action == "default" else f'-->|"{_label(action)}"|'
                self.edges.append(f"    {ident} {arrow} {self.ident(target)}")


def render(flow: Flow[Any]) -> str:
    """Return the Mermaid source for ``flow`` (see :meth:`Flow.to_mermaid`)."""
    renderer = _Renderer()
    renderer.declare(flow, "    ")
    return "\n".join(renderer.lines + list(dict.fromkeys(renderer.edges)))
