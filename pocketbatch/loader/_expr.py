"""Value expressions: compiled once at load time, evaluated per run, never with ``eval``.

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

Compilation (:func:`compile_expr`) checks the shape of every expression and
reports problems with the file position. Evaluation (:meth:`Expr.eval`) is
synchronous: a reference to a step whose result is not known yet raises
:class:`NeedStep`, so the caller can run that step and evaluate again. That keeps
evaluation lazy (an untaken ``$if`` branch never runs its steps) without making
every expression a coroutine.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pocketbatch.loader._source import DocPath, Document, did_you_mean

__all__ = (
    "CompileContext",
    "EvalError",
    "Expr",
    "NeedStep",
    "Scope",
    "StepSkipped",
    "compile_expr",
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
        try:
            return _walk(scope.input, self.path)
        except LookupError:
            raise EvalError(f"Input path {format_path(self.path)} not found") from None


class ItemRef(Expr):
    __slots__ = ("path",)

    def __init__(self, path: PathSegments) -> None:
        self.path = path
        self._deps()

    def eval(self, scope: Scope) -> Any:
        try:
            return _walk(scope.item, self.path)
        except LookupError:
            raise EvalError(f"Item path {format_path(self.path)} not found") from None


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
        try:
            return _walk(value, self.path)
        except LookupError:
            raise EvalError(f"Path {format_path(self.path)} not found") from None


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


# -- compiling ----------------------------------------------------------------------------


@dataclass
class CompileContext:
    """Where an expression sits, for error messages and what it may refer to.

    Attributes:
        doc: the document, for positions.
        step: the step the expression belongs to (``None`` for the flow output).
        item_names: names the current for_each element may be referred to by in
            templates (``$item`` is always accepted inside a for_each step).
        in_for_each: whether ``$item`` is allowed here.
        refs: every ``(step id, position path)`` referenced, for load-time checks.
    """

    doc: Document
    step: str | None = None
    item_names: frozenset[str] = frozenset()
    in_for_each: bool = False
    refs: list[tuple[str, DocPath]] = field(default_factory=list)

    def error(self, message: str, where: DocPath) -> Exception:
        return self.doc.error(message, where, step=self.step)


_FORMS: dict[str, frozenset[str]] = {
    "$input": frozenset({"$input"}),
    "$step": frozenset({"$step", "path", "on_skip", "onSkip"}),
    "$variable": frozenset({"$variable", "default"}),
    "$item": frozenset({"$item"}),
    "$literal": frozenset({"$literal"}),
    "$if": frozenset({"$if", "then", "else"}),
    "$coalesce": frozenset({"$coalesce"}),
    "$template": frozenset({"$template"}),
    "$from": frozenset({"$from", "path", "on_skip", "onSkip"}),
}


def compile_expr(value: Any, ctx: CompileContext, where: DocPath) -> Expr:
    """Compile the JSON ``value`` found at ``where`` in ``ctx.doc`` into an :class:`Expr`.

    Raises:
        LoadError: the expression is malformed (unknown ``$form``, a reference
            missing its target, a bad path...), with its file position.

    Example:
        >>> from pocketbatch.loader._source import parse_document
        >>> doc = parse_document("x: {$if: {$input: ok}, then: yes, else: no}")  # YAML 1.2
        >>> expr = compile_expr(doc.data["x"], CompileContext(doc), ("x",))
        >>> class Run:
        ...     input, variables, item = {"ok": False}, {}, None
        >>> expr.eval(Run())
        'no'
    """
    if isinstance(value, dict):
        dollar = [k for k in value if isinstance(k, str) and k.startswith("$")]
        if dollar:
            return _compile_form(value, dollar, ctx, where)
        items = [(key, compile_expr(inner, ctx, (*where, key))) for key, inner in value.items()]
        return _fold(Obj(items))
    if isinstance(value, list):
        return _fold(Arr([compile_expr(v, ctx, (*where, i)) for i, v in enumerate(value)]))
    if isinstance(value, str | int | float | bool) or value is None:
        return Const(value)
    raise ctx.error(f"expressions are JSON values; got {type(value).__name__}", where)


def _fold(expr: Obj | Arr) -> Expr:
    """A container with nothing to evaluate becomes one constant."""
    return Const(expr.eval(_NO_SCOPE)) if expr.constant else expr


class _NoScope:
    input = None
    variables: Mapping[str, Any] = {}
    item = None

    def step_output(self, step: str) -> Any:  # pragma: no cover - constants never ask
        raise NeedStep(step)

    def undeclared_variable(self, name: str) -> Any:  # pragma: no cover
        raise EvalError(f"Undefined variable: {name}")


_NO_SCOPE = _NoScope()


def _compile_form(
    value: dict[str, Any], dollar: list[str], ctx: CompileContext, where: DocPath
) -> Expr:
    form = dollar[0]
    if len(dollar) > 1:
        raise ctx.error(
            f"an expression has one $-key, found {', '.join(dollar)}; "
            "use {$literal: ...} for data with $-keys",
            where,
        )
    if form not in _FORMS:
        hint = did_you_mean(form, _FORMS)
        raise ctx.error(f"unknown expression {form!r}{hint}", (*where, form))
    extra = [k for k in value if k not in _FORMS[form]]
    if extra:
        allowed = ", ".join(sorted(_FORMS[form] - {form})) or "nothing else"
        hint = did_you_mean(str(extra[0]), _FORMS[form])
        raise ctx.error(
            f"{form} does not take {extra[0]!r}{hint} (it takes {allowed})", (*where, extra[0])
        )
    arg = value[form]
    here = (*where, form)
    if form == "$literal":
        return Const(arg)
    if form == "$input":
        return InputRef(_path(arg, ctx, here, form))
    if form == "$item":
        if not ctx.in_for_each:
            raise ctx.error("$item is only defined in the input of a step with for_each", here)
        return ItemRef(_path(arg, ctx, here, form))
    if form == "$step" or form == "$from":
        return _compile_step_ref(value, form, ctx, where)
    if form == "$variable":
        if not isinstance(arg, str) or not arg:
            raise ctx.error("$variable takes a variable name", here)
        segments = _path(arg, ctx, here, form)
        if not segments or not isinstance(segments[0], str):
            raise ctx.error(f"$variable needs a name, got {arg!r}", here)
        default = (
            compile_expr(value["default"], ctx, (*where, "default")) if "default" in value else None
        )
        return VarRef(segments[0], segments[1:], default)
    if form == "$if":
        if "then" not in value:
            raise ctx.error("$if needs a 'then' (and optionally an 'else')", here)
        cond = compile_expr(arg, ctx, here)
        then = compile_expr(value["then"], ctx, (*where, "then"))
        else_ = compile_expr(value.get("else"), ctx, (*where, "else"))
        return If(cond, then, else_)
    if form == "$coalesce":
        if not isinstance(arg, list) or not arg:
            raise ctx.error("$coalesce takes a non-empty list of expressions", here)
        return Coalesce([compile_expr(v, ctx, (*here, i)) for i, v in enumerate(arg)])
    return _compile_template(arg, ctx, here)


def _path(arg: Any, ctx: CompileContext, where: DocPath, form: str) -> PathSegments:
    if arg is None or arg == "$":
        return ()
    if not isinstance(arg, str):
        raise ctx.error(
            f"{form} takes a path string (a field name, or JSONPath like '$.a.b[0]'), "
            f"got {type(arg).__name__}",
            where,
        )
    try:
        return parse_path(arg)
    except ValueError as exc:
        raise ctx.error(str(exc), where) from None


def _compile_step_ref(
    value: dict[str, Any], form: str, ctx: CompileContext, where: DocPath
) -> Expr:
    arg = value[form]
    here = (*where, form)
    if form == "$from":  # Stepflow's legacy form: {$from: {step: id} | {workflow: input}, path}
        if isinstance(arg, dict) and arg.get("workflow") == "input" and len(arg) == 1:
            if "on_skip" in value or "onSkip" in value:
                raise ctx.error("on_skip applies to step references only", here)
            return InputRef(_path(value.get("path"), ctx, (*where, "path"), "path"))
        if not (isinstance(arg, dict) and set(arg) == {"step"} and isinstance(arg["step"], str)):
            raise ctx.error("$from takes {step: <id>} or {workflow: input}", here)
        step = arg["step"]
    else:
        if not isinstance(arg, str) or not arg:
            raise ctx.error("$step takes a step id", here)
        step = arg
    path = _path(value.get("path"), ctx, (*where, "path"), "path")
    if "on_skip" in value and "onSkip" in value:
        raise ctx.error("'on_skip' and 'onSkip' mean the same thing; keep one", (*where, "onSkip"))
    key = "on_skip" if "on_skip" in value else "onSkip"
    on_skip = _on_skip(value[key], key, ctx, where) if key in value else None
    ctx.refs.append((step, here))
    return StepRef(step, path, on_skip)


_ON_SKIP_KEYS = frozenset({"action", "default_value", "defaultValue"})


def _on_skip(raw: Any, key: str, ctx: CompileContext, where: DocPath) -> OnSkip:
    here = (*where, key)
    if not isinstance(raw, dict) or "action" not in raw:
        raise ctx.error(
            "on_skip takes {action: use_default, default_value: ...} or {action: skip}", here
        )
    unknown = [k for k in raw if k not in _ON_SKIP_KEYS]
    if unknown:
        hint = did_you_mean(str(unknown[0]), _ON_SKIP_KEYS)
        raise ctx.error(f"on_skip does not take {unknown[0]!r}{hint}", (*here, unknown[0]))
    if "default_value" in raw and "defaultValue" in raw:
        raise ctx.error(
            "'default_value' and 'defaultValue' mean the same thing; keep one",
            (*here, "defaultValue"),
        )
    action = raw["action"]
    if action in ("use_default", "useDefault"):
        return OnSkip(True, raw.get("default_value", raw.get("defaultValue")))
    if action == "skip":
        return OnSkip(False)
    raise ctx.error(f"on_skip action must be use_default or skip, got {action!r}", here)


_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


def _compile_template(arg: Any, ctx: CompileContext, where: DocPath) -> Expr:
    if not isinstance(arg, str):
        raise ctx.error("$template takes a string", where)
    parts: list[str | Expr] = []
    text: list[str] = []
    pos = 0
    for match in _PLACEHOLDER.finditer(arg):
        text.append(arg[pos : match.start()])
        pos = match.end()
        token = match.group(0)
        if token in ("{{", "}}"):
            text.append(token[0])
            continue
        if match.group(1) is None:
            raise ctx.error(
                f"unbalanced {token!r} in template (write {token * 2} for a literal one)", where
            )
        if text:
            parts.append("".join(text))
            text = []
        parts.append(_placeholder(match.group(1).strip(), ctx, where))
    text.append(arg[pos:])
    if "".join(text):
        parts.append("".join(text))
    return Template(parts)


def _placeholder(ref: str, ctx: CompileContext, where: DocPath) -> Expr:
    head, _, rest = ref.partition(".")
    head, bracket, tail = head.partition("[")
    rest_path = (bracket + tail + ("." + rest if rest else "")) if bracket else rest

    def segs(text: str) -> PathSegments:
        if not text:
            return ()
        try:
            return parse_path("$" + text if text.startswith("[") else text)
        except ValueError as exc:
            raise ctx.error(f"template placeholder {{{ref}}}: {exc}", where) from None

    if head == "input":
        return InputRef(segs(rest_path))
    if head in ("item", *ctx.item_names):
        if not ctx.in_for_each:
            raise ctx.error(f"template placeholder {{{ref}}}: no for_each element here", where)
        return ItemRef(segs(rest_path))
    if head in ("variable", "variables", "var"):
        name, _, vrest = rest.partition(".")
        if not name:
            raise ctx.error(f"template placeholder {{{ref}}} needs a variable name", where)
        return VarRef(name, segs(vrest), None)
    if head in ("step", "steps"):
        step, _, srest = rest.partition(".")
        step, b, t = step.partition("[")
        if not step:
            raise ctx.error(f"template placeholder {{{ref}}} needs a step id", where)
        ctx.refs.append((step, where))
        return StepRef(step, segs(b + t + ("." + srest if srest else "") if b else srest), None)
    known = list(dict.fromkeys(["input", "step", "variable", "item", *sorted(ctx.item_names)]))
    raise ctx.error(
        f"template placeholder {{{ref}}} must start with one of {', '.join(known)}"
        f"{did_you_mean(head, known)}",
        where,
    )
