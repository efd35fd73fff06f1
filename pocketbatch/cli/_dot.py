"""``visualize --format dot``: the flow's Mermaid flowchart as a Graphviz DOT graph
(the same nodes, labels and edges; nested flows as clusters)."""

from __future__ import annotations

import json
import re

__all__ = ("mermaid_to_dot",)

_NODE = re.compile(r'^(\w+)(\(\[|\[)"(.*)"(\]\)|\])$')
_SUBGRAPH = re.compile(r'^subgraph (\w+)\["(.*)"\]$')
_EDGE = re.compile(r'^(\w+) -->(?:\|"(.*)"\|)? (\w+)$')


def _text(label: str) -> str:
    """A Mermaid label as DOT wants it: quoted, ``<br/>`` a line break."""
    plain = label.replace("#quot;", '"').replace("<br/>", "\n")
    return json.dumps(plain, ensure_ascii=False)


def mermaid_to_dot(mermaid: str) -> str:
    """Translate the flowcharts pocketbatch draws (``LoadedFlow.to_mermaid``) to DOT.

    Raises:
        ValueError: a line this translation does not know (a bug: it would drop it).

    Example:
        >>> print(mermaid_to_dot('flowchart TD\\n    a["draft"]\\n    a -->|"ok"| a'))
        digraph flow {
            rankdir=TB;
            node [shape=box];
            a [label="draft"];
            a -> a [label="ok"];
        }
    """
    lines = ["digraph flow {", "    rankdir=TB;", "    node [shape=box];"]
    depth = 1
    for raw in mermaid.splitlines()[1:]:
        line = raw.strip()
        indent = "    " * depth
        if (node := _NODE.match(line)) is not None:
            shape = "shape=ellipse, " if node.group(2) == "([" else ""
            lines.append(f"{indent}{node.group(1)} [{shape}label={_text(node.group(3))}];")
        elif (group := _SUBGRAPH.match(line)) is not None:
            ident, label = group.group(1), _text(group.group(2))
            lines.append(f"{indent}subgraph cluster_{ident} {{")
            lines.append(f"{indent}    label={label};")
            lines.append(f"{indent}    {ident} [label={label}, style=dashed];")
            depth += 1
        elif line == "end":
            depth -= 1
            lines.append("    " * depth + "}")
        elif (edge := _EDGE.match(line)) is not None:
            label = f" [label={_text(edge.group(2))}]" if edge.group(2) is not None else ""
            lines.append(f"{indent}{edge.group(1)} -> {edge.group(3)}{label};")
        else:
            raise ValueError(f"cannot translate this Mermaid line to DOT: {line!r}")
    lines.append("}")
    return "\n".join(lines)
