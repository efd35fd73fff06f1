"""Render a flow as a Mermaid ``flowchart``: nodes, labelled transitions, nested
flows as subgraphs."""

from __future__ import annotations

from typing import Any, Protocol

from pocketbatch.core._base import BaseNode, node_name

__all__ = ("Graph", "render")


class Graph(Protocol):
    """What the renderer needs of a flow: its first node (the rest is reached
    through each node's ``successors``)."""

    @property
    def start_node(self) -> BaseNode[Any, Any, Any] | None: ...


def _label(text: str) -> str:
    # Mermaid's entity codes keep quotes and brackets from ending the label.
    return (
        text.replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")
    )


class _Renderer:
    def __init__(self, graph_type: type[Graph]) -> None:
        self.graph_type = graph_type
        self.ids: dict[int, str] = {}
        self.lines: list[str] = ["flowchart TD"]
        self.edges: list[str] = []
        self.declared: set[int] = set()

    def ident(self, node: BaseNode[Any, Any, Any]) -> str:
        key = id(node)
        if key not in self.ids:
            self.ids[key] = f"n{len(self.ids)}"
        return self.ids[key]

    def declare(self, flow: Graph, indent: str) -> None:
        declared: set[int] = set()
        stack = [] if flow.start_node is None else [flow.start_node]
        order: list[BaseNode[Any, Any, Any]] = []
        while stack:  # depth-first, successors in wiring order
            node = stack.pop()
            if id(node) in declared:
                continue
            declared.add(id(node))
            order.append(node)
            stack.extend(n for n in reversed(node.successors.values()) if n is not None)
        for node in order:
            ident = self.ident(node)
            if id(node) not in self.declared:
                self.declared.add(id(node))
                name = _label(node_name(node))
                if isinstance(node, self.graph_type):
                    self.lines.append(f'{indent}subgraph {ident}["{name}"]')
                    self.declare(node, indent + "    ")
                    self.lines.append(f"{indent}end")
                else:
                    self.lines.append(f'{indent}{ident}["{name}"]')
            for action, target in node.successors.items():
                if target is None:  # ``- action >> None``: the flow ends there
                    continue
                arrow = "-->" if action == "default" else f'-->|"{_label(action)}"|'
                self.edges.append(f"    {ident} {arrow} {self.ident(target)}")


def render(flow: Graph, graph_type: type[Graph]) -> str:
    """Return the Mermaid source for ``flow`` (see :meth:`Flow.to_mermaid`).

    Nodes that are instances of ``graph_type`` (the flow class) are drawn as
    subgraphs, their own steps inside.
    """
    renderer = _Renderer(graph_type)
    renderer.declare(flow, "    ")
    return "\n".join(renderer.lines + list(dict.fromkeys(renderer.edges)))
