"""Compiling expressions: from a flow document's JSON to the tree of :mod:`._expr`.

:func:`compile_expr` checks the shape of every expression (one ``$key``, the keys
that form takes, paths that parse, ``$item`` only inside a for_each step, template
placeholders) and reports each problem as a ``LoadError`` with the file position.
It records every step reference with its position in the
:class:`CompileContext`, for the load-time checks of
:mod:`~pocketbatch.loader._spec`. Containers with nothing to evaluate fold into
one constant.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pocketbatch.loader._expr import (
    Arr,
    Coalesce,
    Const,
    EvalError,
    Expr,
    If,
    InputRef,
    ItemRef,
    NeedStep,
    Obj,
    OnSkip,
    PathSegments,
    StepRef,
    Template,
    VarRef,
    parse_path,
)
from pocketbatch.loader._source import DocPath, Document, did_you_mean

__all__ = ("CompileContext", "compile_expr")


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
