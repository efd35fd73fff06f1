"""Read YAML or JSON text into plain Python data, remembering where every value was.

Parsing goes through PyYAML's C ``CSafeLoader`` (never a loader that can build
arbitrary objects). The document is *composed* into nodes first and constructed
by hand, so that

* every value's ``line:column`` is recorded under its path in the document
  (``("steps", 2, "input", "text")``), for error messages that point at the spot;
* a mapping whose keys cannot be dict keys (Stepflow's mock behaviours are keyed
  by YAML mappings, ``{ input: "a" }: ...``) becomes a :class:`PairList` instead
  of failing.

JSON is YAML, so one reader serves both.

Before any Python object is built, the composed node graph is measured (in one
pass, linear in the graph: an alias is a shared node, counted once per node), and
a document is refused with a :class:`LoadError` when

* it nests mappings/sequences more than :data:`MAX_DEPTH` levels deep (counting
  through aliases), or
* its aliases would add more than :data:`MAX_ALIAS_NODES` nodes when expanded (a
  "billion laughs" bomb is refused in milliseconds, not expanded), or an alias
  refers to its own anchor (an endless structure).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pocketbatch._errors import LoadError
from pocketbatch._warnings import LoadWarning

__all__ = (
    "MAX_ALIAS_NODES",
    "MAX_DEPTH",
    "Document",
    "PairList",
    "Position",
    "did_you_mean",
    "listed",
    "nesting_depth",
    "parse_data_yaml",
    "parse_document",
    "read_document",
)

MAX_DEPTH = 100
"""How deeply mappings and sequences may nest in a flow, config or input (levels)."""

MAX_ALIAS_NODES = 100_000
"""How many nodes YAML aliases may add to a document when expanded."""

DocPath = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Position:
    """A 1-based line and column in a source text."""

    line: int
    column: int


class PairList(list[tuple[Any, Any]]):
    """A YAML mapping whose keys are not hashable, kept as ``(key, value)`` pairs.

    It *is* a ``list`` (check for ``PairList`` before ``list``): Stepflow's mock
    behaviours, keyed by input mappings, arrive as one.
    """


@dataclass
class Document:
    """Parsed data plus where each part of it came from.

    Attributes:
        data: the plain Python value (dicts, lists, scalars, :class:`PairList`).
        name: the file path as given, or ``"<string>"``.
        path: the file, when the text came from one.
        positions: document path -> position of the value at that path (for a
            mapping entry: the position of its key).
        warnings: what reading it found that Stepflow accepts but looks wrong
            (see :meth:`warn`), in the order found.
    """

    data: Any
    name: str
    path: Path | None = None
    positions: dict[DocPath, Position] = field(default_factory=dict)
    warnings: list[LoadWarning] = field(default_factory=list, compare=False, repr=False)

    def position(self, where: DocPath) -> Position | None:
        """The position of ``where``, or of its closest ancestor that has one."""
        where = tuple(where)
        while True:
            found = self.positions.get(where)
            if found is not None or not where:
                return found
            where = where[:-1]

    def error(self, message: str, where: DocPath = (), *, step: str | None = None) -> LoadError:
        """A :class:`LoadError` for ``message`` at ``where`` in this document."""
        pos = self.position(where)
        return LoadError(
            message,
            file=self.name,
            line=pos.line if pos else None,
            column=pos.column if pos else None,
            step=step,
        )

    def warn(self, message: str, where: DocPath = (), *, step: str | None = None) -> None:
        """Record a :class:`LoadWarning` for ``message`` at ``where`` in this document."""
        pos = self.position(where)
        self.warnings.append(
            LoadWarning(
                message,
                file=self.name,
                line=pos.line if pos else None,
                column=pos.column if pos else None,
                step=step,
            )
        )


def read_document(path: str | Path) -> Document:
    """Read and parse the file at ``path``.

    Raises:
        LoadError: the file cannot be read, or is not valid YAML/JSON.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LoadError("no such file", file=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LoadError(f"cannot read the file: {exc}", file=str(path)) from None
    return parse_document(text, name=str(path), path=file)


def parse_document(
    text: str,
    *,
    name: str = "<string>",
    path: Path | None = None,
    max_depth: int = MAX_DEPTH,
    max_alias_nodes: int = MAX_ALIAS_NODES,
) -> Document:
    """Parse YAML or JSON ``text`` into a :class:`Document`.

    Raises:
        LoadError: a syntax error (with its line and column), a tag that the
            safe loader refuses, an empty document, nesting deeper than
            ``max_depth`` levels, or aliases that would add more than
            ``max_alias_nodes`` nodes (or refer to themselves).

    Example:
        >>> parse_document("a: [1, {b: true}]").data
        {'a': [1, {'b': True}]}
        >>> parse_document("[[[1]]]", max_depth=2)
        Traceback (most recent call last):
        ...
        pocketbatch._errors.LoadError: <string>:1:3: nested more than 2 levels deep here ...
    """
    import yaml

    loader = _loader_class()(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise LoadError("the document is empty", file=name, line=1, column=1)
        _check_graph(node, name, max_depth=max_depth, max_alias_nodes=max_alias_nodes)
        doc = Document(data=None, name=name, path=path)
        doc.data = _Builder(loader, doc).build(node, ())
        return doc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(p for p in (exc.context, exc.problem) if p) or str(exc)
        raise LoadError(
            f"invalid YAML: {problem}",
            file=name,
            line=mark.line + 1 if mark else None,
            column=mark.column + 1 if mark else None,
        ) from None
    except yaml.YAMLError as exc:
        raise LoadError(f"invalid YAML: {exc}", file=name) from None
    finally:
        loader.dispose()


def parse_data_yaml(text: str, *, name: str = "<string>") -> Any:
    """Parse a YAML data file as ``yaml.safe_load`` does (C loader, YAML 1.1 scalars),
    with the reader's limits on nesting and aliases checked before anything is built.

    Raises:
        yaml.YAMLError: the text is not valid YAML.
        LoadError: nesting deeper than :data:`MAX_DEPTH`, or an alias bomb.

    Example:
        >>> parse_data_yaml("a: &x [1, 2]\\nb: *x")
        {'a': [1, 2], 'b': [1, 2]}
    """
    import yaml

    loader = yaml.CSafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_graph(node, name, max_depth=MAX_DEPTH, max_alias_nodes=MAX_ALIAS_NODES)
        return loader.construct_document(node)
    finally:
        loader.dispose()


_LOADER: Any = None


def _loader_class() -> Any:
    """PyYAML's C safe loader, resolving plain scalars as YAML 1.2 does (Stepflow's
    parser is YAML 1.2): only ``true``/``false`` are booleans (``yes``, ``no``,
    ``on``, ``off`` stay strings), integers are decimal (``0755`` is 755), ``0x``
    hex or ``0o`` octal, floats may omit the dot (``1e3``), and there are no
    ``1_000`` or ``1:30`` forms. The resolvers' order is kept: ints before floats."""
    global _LOADER
    if _LOADER is None:
        import re

        import yaml

        class Yaml12SafeLoader(yaml.CSafeLoader):
            pass

        bool_tag, int_tag = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:int"
        float_tag = "tag:yaml.org,2002:float"
        # YAML 1.2 has no implicit timestamps: 2024-05-01 stays a string.
        replaced = (bool_tag, int_tag, float_tag, "tag:yaml.org,2002:timestamp")
        resolvers = {
            first: [(tag, regexp) for tag, regexp in entries if tag not in replaced]
            for first, entries in yaml.CSafeLoader.yaml_implicit_resolvers.items()
        }
        Yaml12SafeLoader.yaml_implicit_resolvers = resolvers
        Yaml12SafeLoader.add_implicit_resolver(
            bool_tag, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
        )
        Yaml12SafeLoader.add_implicit_resolver(
            int_tag,
            re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
            list("-+0123456789"),
        )

        Yaml12SafeLoader.add_implicit_resolver(
            float_tag,
            re.compile(
                r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
            ),
            list("-+.0123456789"),
        )

        def construct_int(loader: Any, node: Any) -> int:
            text = loader.construct_scalar(node)
            if text.startswith(("0x", "0o")):
                return int(text, 0)
            return int(text, 10)

        Yaml12SafeLoader.add_constructor(int_tag, construct_int)
        _LOADER = Yaml12SafeLoader
    return _LOADER


def _check_graph(root: Any, name: str, *, max_depth: int, max_alias_nodes: int) -> None:
    """Refuse a composed document that is too deep, or that aliases would blow up.

    One iterative post-order walk over the collections of the node graph computes,
    for each distinct one, its expanded size (nodes, counting an aliased value
    each time it appears) and its depth (collection levels, through aliases).
    The work is linear in the composed graph, however large the expansion would be.
    A scalar counts as written where it appears (an alias to a scalar is one node
    for one token); only aliased mappings and sequences multiply.
    """
    import yaml

    mapping, sequence = yaml.MappingNode, yaml.SequenceNode
    if root.__class__ is not mapping and root.__class__ is not sequence:
        return

    def inner(node: Any) -> tuple[int, list[Any]]:
        """(scalar children, collection children) of a collection."""
        flat = (
            [part for pair in node.value for part in pair]
            if node.__class__ is mapping
            else node.value
        )
        subs = [k for k in flat if k.__class__ is mapping or k.__class__ is sequence]
        return len(flat) - len(subs), subs

    size: dict[int, int] = {}  # id(collection) -> expanded size
    depth: dict[int, int] = {}  # id(collection) -> levels, itself included
    uses: dict[int, int] = {}  # id(collection) -> how many collections hold it
    nodes: dict[int, Any] = {}
    written = 0  # nodes as written: each collection once, each scalar where it appears
    active: set[int] = {id(root)}
    scalars, subs = inner(root)
    stack: list[tuple[Any, int, list[Any], int]] = [(root, scalars, subs, 0)]
    while stack:
        node, scalars, subs, at = stack[-1]
        if at < len(subs):
            stack[-1] = (node, scalars, subs, at + 1)
            kid = subs[at]
            key = id(kid)
            uses[key] = uses.get(key, 0) + 1
            if key in active:
                raise _graph_error(
                    name,
                    kid,
                    "an alias refers to its own anchor here: the value would contain "
                    "itself without end",
                )
            if key not in size:
                nodes[key] = kid
                active.add(key)
                stack.append((kid, *inner(kid), 0))
            continue
        stack.pop()
        key = id(node)
        active.discard(key)
        written += 1 + scalars
        size[key] = 1 + scalars + sum([size[id(k)] for k in subs])
        depth[key] = 1 + max([depth[id(k)] for k in subs], default=0)

    added = size[id(root)] - written  # nodes that only aliases contribute
    if added > max_alias_nodes:
        shared = [k for k, n in uses.items() if n > 1]
        biggest = nodes[max(shared, key=lambda k: size[k])] if shared else root
        raise _graph_error(
            name,
            biggest,
            f"YAML aliases would expand the document by {added} nodes, more than the "
            f"limit of {max_alias_nodes}; the largest aliased value is the anchor here",
        )
    if depth[id(root)] > max_depth:
        node = root
        for _ in range(max_depth):  # follow the deepest path to the first level too many
            node = max(inner(node)[1], key=lambda k: depth[id(k)])
        raise _graph_error(name, node, _too_deep(max_depth))


def _too_deep(limit: int) -> str:
    return f"nested more than {limit} levels deep here (mappings and lists may nest {limit})"


def nesting_depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """How many levels of dicts and lists ``value`` nests, counting at most to ``limit + 1``.

    Iterative, so a value nested thousands of levels deep is measured without
    recursion; the walk stops as soon as the count passes ``limit``.

    Example:
        >>> nesting_depth({"a": [1, {"b": 2}]}), nesting_depth("text")
        (3, 0)
        >>> nesting_depth([[[[[]]]]], limit=2)
        3
    """
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            inner: Any = item.values()
        elif isinstance(item, list | tuple):
            inner = item
        else:
            continue
        if level > deepest:
            deepest = level
            if deepest > limit:
                return deepest
        stack.extend((v, level + 1) for v in inner if isinstance(v, dict | list | tuple))
    return deepest


def _graph_error(name: str, node: Any, message: str) -> LoadError:
    pos = _pos(node)
    return LoadError(message, file=name, line=pos.line, column=pos.column)


_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"


class _Builder:
    """Constructs plain data from composed nodes, recording positions by path."""

    def __init__(self, loader: Any, doc: Document) -> None:
        self.loader = loader
        self.doc = doc

    def build(self, node: Any, where: DocPath) -> Any:
        import yaml

        self.doc.positions.setdefault(where, _pos(node))
        plain_tag = {yaml.MappingNode: _MAP_TAG, yaml.SequenceNode: _SEQ_TAG}.get(type(node))
        if plain_tag is not None and node.tag != plain_tag:
            raise yaml.MarkedYAMLError(
                None, None, f"the tag {node.tag!r} is not allowed here", node.start_mark
            )
        if isinstance(node, yaml.MappingNode):
            self.loader.flatten_mapping(node)  # resolves `<<` merge keys, as the safe loader does
            pairs: list[tuple[Any, Any]] = []
            hashable = True
            for key_node, value_node in node.value:
                key = self.build_key(key_node)
                try:
                    hash(key)
                except TypeError:
                    hashable = False
                child = (*where, key) if isinstance(key, str | int) else (*where, len(pairs))
                self.doc.positions[child] = _pos(key_node)
                pairs.append((key, self.build(value_node, child)))
            if not hashable:
                return PairList(pairs)
            result: dict[Any, Any] = {}
            for (key, value), (key_node, _) in zip(pairs, node.value):
                if key in result:
                    raise yaml.MarkedYAMLError(
                        "while reading a mapping",
                        None,
                        f"duplicate key {key!r}",
                        key_node.start_mark,
                    )
                result[key] = value
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*where, i)) for i, item in enumerate(node.value)]
        return self.loader.construct_object(node, deep=True)

    def build_key(self, node: Any) -> Any:
        import yaml

        if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            # A complex key (Stepflow mock behaviours): build it without positions.
            return _plain(self, node)
        return self.loader.construct_object(node, deep=True)


def _plain(builder: _Builder, node: Any) -> Any:
    """Build a node's value without recording positions (used for complex keys)."""
    scratch = Document(data=None, name=builder.doc.name)
    return _Builder(builder.loader, scratch).build(node, ())


def _pos(node: Any) -> Position:
    return Position(node.start_mark.line + 1, node.start_mark.column + 1)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices`` to ``word``, or ``""``.

    Example:
        >>> did_you_mean("inptu", ["input", "id", "component"])
        " (did you mean 'input'?)"
    """
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def listed(names: Sequence[str]) -> str:
    """``'a', 'b', 'c'`` for error messages."""
    return ", ".join(repr(n) for n in names)
