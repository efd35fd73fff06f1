"""Flow.to_mermaid(): Mermaid flowchart source for a flow graph."""

from __future__ import annotations

import re

from pocketbatch import AsyncFlow, AsyncNode, Flow, Node

DECL = re.compile(r'^\s*(n\d+)\["(.*)"\]$')
SUBGRAPH = re.compile(r'^\s*subgraph (n\d+)\["(.*)"\]$')
EDGE = re.compile(r'^\s*(n\d+) -->(?:\|"(.*)"\|)? (n\d+)$')


def declarations(src: str) -> dict[str, str]:
    """Map node id -> label for plain node declarations."""
    return {m[1]: m[2] for line in src.splitlines() if (m := DECL.match(line))}


def subgraphs(src: str) -> dict[str, str]:
    """Map subgraph id -> label."""
    return {m[1]: m[2] for line in src.splitlines() if (m := SUBGRAPH.match(line))}


def ids_by_label(src: str) -> dict[str, str]:
    """Map label -> id (nodes and subgraphs)."""
    return {label: ident for ident, label in {**declarations(src), **subgraphs(src)}.items()}


def edges(src: str) -> list[tuple[str, str | None, str]]:
    """(source label, action label or None, target label) for every edge."""
    labels = {**declarations(src), **subgraphs(src)}
    out = []
    for line in src.splitlines():
        if m := EDGE.match(line):
            out.append((labels[m[1]], m[2], labels[m[3]]))
    return out


def test_starts_with_flowchart_td() -> None:
    """The source starts with 'flowchart TD'."""
    src = Flow(start=Node(name="a")).to_mermaid()
    assert src.splitlines()[0] == "flowchart TD"


def test_empty_flow() -> None:
    """A flow with no start renders just the header."""
    assert Flow().to_mermaid() == "flowchart TD"


def test_single_node() -> None:
    """A one-node flow declares that node and has no edges."""
    src = Flow(start=Node(name="only")).to_mermaid()
    assert list(declarations(src).values()) == ["only"]
    assert edges(src) == []


def test_default_edge_is_plain_arrow() -> None:
    """A default transition renders as '-->' without a label."""
    a, b = Node(name="a"), Node(name="b")
    a >> b
    src = Flow(start=a).to_mermaid()
    assert edges(src) == [("a", None, "b")]
    ids = ids_by_label(src)
    assert f"{ids['a']} --> {ids['b']}" in src
    assert "|" not in src


def test_labelled_edge() -> None:
    """A named action renders as -->|"action"|."""
    a, b, c = Node(name="review"), Node(name="publish"), Node(name="redo")
    a - "approve" >> b
    a - "reject" >> c
    src = Flow(start=a).to_mermaid()
    ids = ids_by_label(src)
    assert f'{ids["review"]} -->|"approve"| {ids["publish"]}' in src
    assert f'{ids["review"]} -->|"reject"| {ids["redo"]}' in src
    assert sorted(edges(src)) == [("review", "approve", "publish"), ("review", "reject", "redo")]


def test_docstring_example_exact() -> None:
    """The documented example renders exactly."""
    a, b = Node(name="draft"), Node(name="publish")
    a - "approve" >> b
    assert Flow(start=a, name="review").to_mermaid() == (
        'flowchart TD\n    n0["draft"]\n    n1["publish"]\n    n0 -->|"approve"| n1'
    )


def test_default_names_are_class_names() -> None:
    """Nodes without name= are labelled with their class name."""

    class Fetch(Node):
        pass

    class Parse(Node):
        pass

    f = Fetch()
    f >> Parse()
    assert sorted(declarations(Flow(start=f).to_mermaid()).values()) == ["Fetch", "Parse"]


def test_nested_flow_is_subgraph_containing_its_nodes() -> None:
    """A nested flow appears as 'subgraph ... end' wrapping its own nodes."""
    x, y = Node(name="x"), Node(name="y")
    x >> y
    inner = Flow(start=x, name="inner")
    before, after = Node(name="before"), Node(name="after")
    before >> inner >> after
    src = Flow(start=before, name="outer").to_mermaid()
    lines = src.splitlines()
    start = next(i for i, line in enumerate(lines) if SUBGRAPH.match(line))
    assert SUBGRAPH.match(lines[start])[2] == "inner"  # type: ignore[index]
    end = next(i for i in range(start, len(lines)) if lines[i].strip() == "end")
    inside = {m[2] for line in lines[start + 1 : end] if (m := DECL.match(line))}
    outside = {m[2] for line in lines[:start] + lines[end + 1 :] if (m := DECL.match(line))}
    assert inside == {"x", "y"}
    assert outside == {"before", "after"}
    assert sorted(edges(src)) == [
        ("before", None, "inner"),
        ("inner", None, "after"),
        ("x", None, "y"),
    ]


def test_doubly_nested_flows() -> None:
    """Flows nested two deep give nested subgraphs, each closed by 'end'."""
    leaf = Node(name="leaf")
    middle = Flow(start=leaf, name="middle")
    top = Flow(start=middle, name="top")
    src = Flow(start=top, name="root").to_mermaid()
    lines = [line.strip() for line in src.splitlines()]
    opened = [i for i, line in enumerate(lines) if line.startswith("subgraph")]
    closed = [i for i, line in enumerate(lines) if line == "end"]
    assert len(opened) == len(closed) == 2
    leaf_at = next(i for i, line in enumerate(lines) if line.endswith('["leaf"]'))
    assert opened[0] < opened[1] < leaf_at < closed[0] < closed[1]
    assert sorted(subgraphs(src).values()) == ["middle", "top"]


def test_async_flow_nested() -> None:
    """Async flows and nodes render like sync ones."""
    inner = AsyncFlow(start=AsyncNode(name="fetch"), name="io")
    inner >> Node(name="save")
    src = AsyncFlow(start=inner).to_mermaid()
    assert subgraphs(src)
    assert list(subgraphs(src).values()) == ["io"]
    assert sorted(declarations(src).values()) == ["fetch", "save"]


def test_loops_terminate_and_declare_once() -> None:
    """A cycle is rendered once, with its back edge, and does not recurse forever."""
    a, b = Node(name="a"), Node(name="b")
    a >> b
    b - "again" >> a
    a - "self" >> a
    src = Flow(start=a).to_mermaid()
    assert sorted(declarations(src).values()) == ["a", "b"]
    assert sorted(edges(src), key=str) == sorted(
        [("a", None, "b"), ("b", "again", "a"), ("a", "self", "a")], key=str
    )


def test_loop_through_nested_flow_terminates() -> None:
    """A cycle through a nested flow terminates, declaring each node once."""
    x = Node(name="x")
    inner = Flow(start=x, name="inner")
    back = Node(name="back")
    inner >> back
    back - "retry" >> inner
    src = Flow(start=inner).to_mermaid()
    assert src.count('["inner"]') == 1
    assert sorted(declarations(src).values()) == ["back", "x"]


def test_flow_containing_itself_terminates() -> None:
    """A flow wired back into itself still renders (and terminates)."""
    a = Node(name="a")
    flow = Flow(start=a, name="self")
    a - "recurse" >> flow
    src = flow.to_mermaid()
    assert src.startswith("flowchart TD")
    assert list(declarations(src).values()).count("a") == 1


def test_reused_node_declared_once() -> None:
    """A node reachable along two paths is declared once, with both incoming edges."""
    a, b, shared_node = Node(name="a"), Node(name="b"), Node(name="shared")
    a >> b
    a - "shortcut" >> shared_node
    b >> shared_node
    src = Flow(start=a).to_mermaid()
    assert list(declarations(src).values()).count("shared") == 1
    assert sorted(edges(src), key=str) == sorted(
        [("a", None, "b"), ("a", "shortcut", "shared"), ("b", None, "shared")], key=str
    )


def test_same_name_distinct_nodes_get_distinct_ids() -> None:
    """Two different nodes with the same name are two declarations."""
    a, b = Node(name="same"), Node(name="same")
    a >> b
    src = Flow(start=a).to_mermaid()
    assert list(declarations(src).values()) == ["same", "same"]
    assert len(declarations(src)) == 2


def test_reused_subflow_declared_once() -> None:
    """A nested flow reached twice is one subgraph."""
    inner = Flow(start=Node(name="in"), name="sub")
    a = Node(name="a")
    a - "one" >> inner
    a - "two" >> inner
    src = Flow(start=a).to_mermaid()
    assert list(subgraphs(src).values()) == ["sub"]
    assert src.count('["in"]') == 1
    assert sorted(edges(src), key=str) == [("a", "one", "sub"), ("a", "two", "sub")]


def test_edges_are_not_duplicated() -> None:
    """Each edge line appears once."""
    a, b = Node(name="a"), Node(name="b")
    a >> b
    b - "loop" >> a
    lines = [line for line in Flow(start=a).to_mermaid().splitlines() if "-->" in line]
    assert len(lines) == len(set(lines)) == 2


def test_quotes_and_brackets_are_escaped_in_labels() -> None:
    """Labels with quotes/brackets never contain a raw double quote."""
    tricky = 'say "hi" [now] <b> & {x}'
    a, b = Node(name=tricky), Node(name='end"]; click n0 "x')
    a - 'go "fast"' >> b
    inner = Flow(start=Node(name='in"ner'), name='sub"graph[1]')
    b >> inner
    src = Flow(start=a).to_mermaid()
    label_re = re.compile(r'\["(.*)"\]$|\|"(.*)"\|')
    labels = []
    for line in src.splitlines()[1:]:
        stripped = line.strip()
        if stripped == "end" or '"' not in stripped:
            continue
        m = label_re.search(stripped)
        assert m, f"line without a quoted label: {line!r}"
        label = m[1] if m[1] is not None else m[2]
        labels.append(label)
        assert '"' not in label, line
        # exactly two quotes per declaration / action label on the line
        assert stripped.count('"') == 2, line
    assert any("#quot;hi#quot;" in label for label in labels)
    assert any(label == "go #quot;fast#quot;" for label in labels)
    decl_labels = declarations(src).values()
    assert all("<" not in label and ">" not in label for label in decl_labels)
