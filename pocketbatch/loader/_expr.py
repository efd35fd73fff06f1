"""Value expressions: the compiled tree, evaluated per run, never with ``eval``.

An expression is JSON data in which some objects are references::

    {$input: "$.doc.title"}                 the run's input (bare name, JSONPath, "$")
    {$step: summarise, path: "text"}        a step's output
    {$variable: api_url, default: "..."}    a run variable
    {$item: "$.id"}                         the current element of a for_each step
    {$literal: {...}}                       taken as is, unevaluated
    {$if: <cond>, then: <a>, else: <b>}     only the branch taken is evaluated
    {$coalesce: [<a>, <b>, ...]}            the first non-null value
    {$template: "Summarise {input.text}"}   a string built from references

Anything else is data, recursed into. Semantics follow Stepflow 0.13: only
``false`` and ``null`` are falsy in ``$if``; a missing path is an
``EXPRESSION_FAILURE``, not ``null``.

:mod:`pocketbatch.loader._expr_compile` turns the document into this tree once, at
load time, checking every expression's shape. Evaluation (:meth:`Expr.eval`) is
synchronous: a reference to a step whose result is not known yet raises
:class:`NeedStep`, so the caller can run that step and evaluate again. That keeps
evaluation lazy (an untaken ``$if`` branch never runs its steps) without making
every expression a coroutine.

Adding a kind of expression takes exactly these edits:

1. here, a subclass of :class:`Expr` with ``__slots__``, ``eval`` and, when it
   contains expressions, ``children()`` (plus ``eager_children()`` if it
   evaluates some of them only sometimes, ``_own_steps()`` if it refers to a step
   itself, ``_reads_run()`` returning ``False`` if it reads nothing of the run
   but its children); its ``__init__`` ends with ``self._deps()``;
2. in :mod:`~pocketbatch.loader._expr_compile`, its ``$key`` and the keys it
   takes in ``_FORMS``, and the branch of ``_compile_form`` that builds it;
3. in ``tests/loader/test_expr.py``, an example in ``KIND_EXAMPLES`` (a test fails
   until there is one, and checks that ``children()`` shows every slot).

Nothing else: every walker (:meth:`Expr.walk`, the dependency sets
``eager_steps``/``all_steps``, the load-time checks and the Mermaid graph that
use them) goes through ``children()``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = (
    "Arr",
    "Coalesce",
    "Const",
    "EvalError",
    "Expr",
    "If",
    "InputRef",
    "ItemRef",
    "NeedStep",
    "Obj",
    "OnSkip",
    "PathSegments",
    "Scope",
    "StepRef",
    "StepSkipped",
    "Template",
    "VarRef",
    "format_path",
    "parse_path",
    "truthy",
)

PathSegments = tuple[str | int, ...]


class EvalError(Exception):
    """An expression could not be evaluated (``EXPRESSION_FAILURE``)."""

    code = "EXPRESSION_FAILURE"

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class NeedStep(Exception):
    """Evaluation needs the result of ``step``, which is not known yet."""

    def __init__(self, step: str) -> None:
        self.step = step
        super().__init__(step)


class StepSkipped(Exception):
    """A referenced step was skipped and the reference has no ``on_skip`` default."""

    def __init__(self, step: str) -> None:
        self.step = step
        super().__init__(step)


_SKIPPED: Any = object()


class Scope(Protocol):
    """What an expression is evaluated against (one run of a flow)."""

    input: Any
    variables: Mapping[str, Any]
    item: Any

    def step_output(self, step: str) -> Any:
        """The step's output; raise NeedStep / StepSkipped / the step's failure."""
        ...

    def undeclared_variable(self, name: str) -> Any:
        """The value of a variable nobody supplied (declared defaults, or EvalError)."""
        ...


def truthy(value: Any) -> bool:
    """Stepflow's ``$if`` truthiness: only ``false`` and ``null`` are falsy.

    Example:
        >>> [truthy(v) for v in (0, "", [], "false", None, False)]
        [True, True, True, True, False, False]
    """
    return value is not None and value is not False


# -- paths ----------------------------------------------------------------------------

_SEGMENT = re.compile(
    r"""\.(?P<name>[^.\[\]]+)          # .name
      | \[(?P<index>-?\d+)\]           # [0]
      | \[(?P<q>['"])(?P<quoted>.*?)(?P=q)\]   # ['a.b'] or ["a.b"]
    """,
    re.X,
)


def parse_path(text: str) -> PathSegments:
    """Parse ``"$"``, ``"$.a.b[0]"``, ``"$['a.b']"`` or a bare ``"a.b[0]"`` into segments.

    Raises:
        ValueError: the path is malformed.

    Example:
        >>> parse_path("$.doc['x.y'][2]"), parse_path("title"), parse_path("$")
        (('doc', 'x.y', 2), ('title',), ())
    """
    if not isinstance(text, str):
        raise ValueError(f"a path must be a string, got {type(text).__name__}")
    rest = text[1:] if text.startswith("$") else "." + text if text else ""
    if text.startswith("$") and rest and rest[0] not in ".[":
        raise ValueError(f"malformed path {text!r}: expected '.' or '[' after '$'")
    segments: list[str | int] = []
    pos = 0
    while pos < len(rest):
        match = _SEGMENT.match(rest, pos)
        if match is None:
            raise ValueError(f"malformed path {text!r} at {rest[pos:]!r}")
        if match["name"] is not None:
            segments.append(match["name"])
        elif match["index"] is not None:
            segments.append(int(match["index"]))
        else:
            segments.append(match["quoted"])
        pos = match.end()
    return tuple(segments)


def format_path(segments: PathSegments) -> str:
    """The JSONPath text for ``segments`` (``$.a[0]``), as used in messages."""
    out = "$"
    for seg in segments:
        if isinstance(seg, int):
            out += f"[{seg}]"
        elif re.fullmatch(r"[A-Za-z_][\w-]*", seg):
            out += f".{seg}"
        else:
            out += f"[{json.dumps(seg, ensure_ascii=False)}]"
    return out


_INDEX = re.compile(r"-?[0-9]+")


def _walk(value: Any, segments: PathSegments) -> Any:
    """Follow ``segments`` into ``value``; raise ``LookupError`` when one is missing."""
    for seg in segments:
        if isinstance(seg, int):
            if not isinstance(value, list) or not -len(value) <= seg < len(value):
                raise LookupError(seg)
            value = value[seg]
        elif isinstance(value, dict) and seg in value:
            value = value[seg]
        elif isinstance(value, list) and _INDEX.fullmatch(seg):
            index = int(seg)
            if not -len(value) <= index < len(value):
                raise LookupError(seg)
            value = value[index]
        else:
            raise LookupError(seg)
    return value


def _lookup(value: Any, segments: PathSegments, what: str) -> Any:
    """Follow ``segments`` into ``value``; a missing one is an ``EvalError`` naming ``what``."""
    try:
        return _walk(value, segments)
    except LookupError:
        raise EvalError(f"{what} {format_path(segments)} not found") from None


# -- the expression tree ----------------------------------------------------------------


class Expr:
    """A compiled expression.

    Every kind exposes the expressions it contains through :meth:`children`, so a
    walker (:meth:`walk`, the dependency sets below) needs no list of kinds or
    attribute names. A kind that evaluates some children only sometimes (``$if``,
    ``$coalesce``, a ``$variable`` default) says which ones it always evaluates in
    :meth:`eager_children`.

    Attributes:
        eager_steps: steps every evaluation needs (safe to start in advance).
        all_steps: every step the expression may refer to (for load-time checks).
        constant: whether the value never depends on the run.
    """

    __slots__ = ("all_steps", "constant", "eager_steps")

    eager_steps: frozenset[str]
    all_steps: frozenset[str]
    constant: bool

    def eval(self, scope: Scope) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def children(self) -> tuple[Expr, ...]:
        """The expressions directly inside this one, in document order."""
        return ()

    def eager_children(self) -> tuple[Expr, ...]:
        """The children every evaluation evaluates (the others only sometimes)."""
        return self.children()

    def walk(self) -> Iterator[Expr]:
        """This expression and every expression inside it, depth first.

        Example:
            >>> expr = If(StepRef("a", (), None), Arr([InputRef(())]), Const(None))
            >>> [type(e).__name__ for e in expr.walk()]
            ['If', 'StepRef', 'Arr', 'InputRef', 'Const']
        """
        yield self
        for child in self.children():
            yield from child.walk()

    def _deps(self) -> None:
        """Set the dependency attributes from the children; call at the end of ``__init__``."""
        own = self._own_steps()
        kids = self.children()
        self.eager_steps = own.union(*(e.eager_steps for e in self.eager_children()))
        self.all_steps = own.union(*(e.all_steps for e in kids))
        self.constant = not self._reads_run() and all(e.constant for e in kids)

    def _own_steps(self) -> frozenset[str]:
        """The steps this node itself refers to (not its children)."""
        return frozenset()

    def _reads_run(self) -> bool:
        """Whether this node itself reads the run (input, a step, a variable, the item)."""
        return True


class Const(Expr):
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value
        self._deps()

    def _reads_run(self) -> bool:
        return False

    def eval(self, scope: Scope) -> Any:
        return self.value


class Obj(Expr):
    __slots__ = ("items",)

    def __init__(self, items: list[tuple[str, Expr]]) -> None:
        self.items = items
        self._deps()

    def children(self) -> tuple[Expr, ...]:
        return tuple(e for _, e in self.items)

    def _reads_run(self) -> bool:
        return False

    def eval(self, scope: Scope) -> Any:
        return {key: expr.eval(scope) for key, expr in self.items}


class Arr(Expr):
    __slots__ = ("items",)

    def __init__(self, items: list[Expr]) -> None:
        self.items = items
        self._deps()

    def children(self) -> tuple[Expr, ...]:
        return tuple(self.items)

    def _reads_run(self) -> bool:
        return False

    def eval(self, scope: Scope) -> Any:
        return [expr.eval(scope) for expr in self.items]


class InputRef(Expr):
    __slots__ = ("path",)

    def __init__(self, path: PathSegments) -> None:
        self.path = path
        self._deps()

    def eval(self, scope: Scope) -> Any:
        return _lookup(scope.input, self.path, "Input path")


class ItemRef(Expr):
    __slots__ = ("path",)

    def __init__(self, path: PathSegments) -> None:
        self.path = path
        self._deps()

    def eval(self, scope: Scope) -> Any:
        return _lookup(scope.item, self.path, "Item path")


@dataclass(frozen=True)
class OnSkip:
    """What a reference to a skipped step gives: a default, or skip in turn."""

    use_default: bool
    default_value: Any = None


class StepRef(Expr):
    __slots__ = ("on_skip", "path", "step")

    def __init__(self, step: str, path: PathSegments, on_skip: OnSkip | None) -> None:
        self.step = step
        self.path = path
        self.on_skip = on_skip
        self._deps()

    def _own_steps(self) -> frozenset[str]:
        return frozenset([self.step])

    def eval(self, scope: Scope) -> Any:
        try:
            value = scope.step_output(self.step)
        except StepSkipped:
            if self.on_skip is not None and self.on_skip.use_default:
                return self.on_skip.default_value
            raise
        return _lookup(value, self.path, "Path")


class VarRef(Expr):
    __slots__ = ("default", "name", "path")

    def __init__(self, name: str, path: PathSegments, default: Expr | None) -> None:
        self.name = name
        self.path = path
        self.default = default
        self._deps()

    def children(self) -> tuple[Expr, ...]:
        return () if self.default is None else (self.default,)

    def eager_children(self) -> tuple[Expr, ...]:
        return ()  # the default is evaluated only when the variable is not supplied

    def eval(self, scope: Scope) -> Any:
        if self.name in scope.variables:
            value = scope.variables[self.name]
        elif self.default is not None:
            value = self.default.eval(scope)
        else:
            value = scope.undeclared_variable(self.name)
        try:
            return _walk(value, self.path)
        except LookupError:
            path = format_path(self.path).replace("$", self.name, 1)
            raise EvalError(f"Variable path {path} not found") from None


class If(Expr):
    __slots__ = ("cond", "else_", "then")

    def __init__(self, cond: Expr, then: Expr, else_: Expr) -> None:
        self.cond, self.then, self.else_ = cond, then, else_
        self._deps()

    def children(self) -> tuple[Expr, ...]:
        return (self.cond, self.then, self.else_)

    def eager_children(self) -> tuple[Expr, ...]:
        return (self.cond,)  # only the branch taken is evaluated

    def _reads_run(self) -> bool:
        return False

    def eval(self, scope: Scope) -> Any:
        return (self.then if truthy(self.cond.eval(scope)) else self.else_).eval(scope)


class Coalesce(Expr):
    __slots__ = ("items",)

    def __init__(self, items: list[Expr]) -> None:
        self.items = items
        self._deps()

    def children(self) -> tuple[Expr, ...]:
        return tuple(self.items)

    def eager_children(self) -> tuple[Expr, ...]:
        return tuple(self.items[:1])  # the rest only while the values so far are null

    def _reads_run(self) -> bool:
        return False

    def eval(self, scope: Scope) -> Any:
        for expr in self.items:
            try:
                value = expr.eval(scope)
            except StepSkipped:
                continue  # a skipped step counts as null here
            if value is not None:
                return value
        return None


class Template(Expr):
    """``{$template: "text {input.x} {step.id.path} {variable.v} {item.f}"}``."""

    __slots__ = ("parts",)

    def __init__(self, parts: list[str | Expr]) -> None:
        self.parts = parts
        self._deps()

    def children(self) -> tuple[Expr, ...]:
        return tuple(p for p in self.parts if isinstance(p, Expr))

    def _reads_run(self) -> bool:
        return False

    def eval(self, scope: Scope) -> Any:
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            else:
                value = part.eval(scope)
                out.append(value if isinstance(value, str) else _compact_json(value))
        return "".join(out)


def _compact_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
