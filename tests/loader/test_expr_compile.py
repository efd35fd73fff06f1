"""Compiling expressions: the load-time errors, with their positions, and the step
references recorded for the load-time checks (evaluation is in test_expr.py)."""

from __future__ import annotations

import pytest

from pocketbatch import load_flow
from pocketbatch._errors import LoadError
from pocketbatch.loader._expr_compile import CompileContext, compile_expr
from pocketbatch.loader._source import Document, parse_document

# --------------------------------------------------------------------------- helpers


def compile_error(yaml_text: str) -> LoadError:
    """The LoadError for an expression given as YAML under the key ``x``."""
    doc = parse_document(yaml_text, name="e.yaml")
    with pytest.raises(LoadError) as caught:
        compile_expr(doc.data["x"], CompileContext(doc, step="s"), ("x",))
    return caught.value


# --------------------------------------------------------------------------- compile errors


@pytest.mark.parametrize(
    ("yaml_text", "message", "column"),
    [
        ("x: {$inptu: a}", "unknown expression '$inptu' (did you mean '$input'?)", 5),
        ("x: {$nope: a}", "unknown expression '$nope'", 5),
        ("x: {$input: a, path: b}", "$input does not take 'path' (it takes nothing else)", 16),
        (
            "x: {$step: a, pth: b}",
            "$step does not take 'pth' (did you mean 'path'?) (it takes onSkip, on_skip, path)",
            15,
        ),
        (
            "x: {$input: a, $step: b}",
            "an expression has one $-key, found $input, $step; "
            "use {$literal: ...} for data with $-keys",
            1,
        ),
        ("x: {$if: true}", "$if needs a 'then' (and optionally an 'else')", 5),
        ("x: {$coalesce: []}", "$coalesce takes a non-empty list of expressions", 5),
        ("x: {$coalesce: a}", "$coalesce takes a non-empty list of expressions", 5),
        ("x: {$template: 5}", "$template takes a string", 5),
        ("x: {$template: 'a {b'}", "unbalanced '{' in template (write {{ for a literal one)", 5),
        ("x: {$template: 'a } b'}", "unbalanced '}' in template (write }} for a literal one)", 5),
        (
            "x: {$template: '{inptu.a}'}",
            "template placeholder {inptu.a} must start with one of input, step, variable, item "
            "(did you mean 'input'?)",
            5,
        ),
        ("x: {$template: '{step}'}", "template placeholder {step} needs a step id", 5),
        (
            "x: {$template: '{item.a}'}",
            "template placeholder {item.a}: no for_each element here",
            5,
        ),
        ("x: {$step: ''}", "$step takes a step id", 5),
        ("x: {$step: [a]}", "$step takes a step id", 5),
        ("x: {$variable: ''}", "$variable takes a variable name", 5),
        (
            "x: {$input: 5}",
            "$input takes a path string (a field name, or JSONPath like '$.a.b[0]'), got int",
            5,
        ),
        ("x: {$input: '$.a['}", "malformed path '$.a[' at '['", 5),
        ("x: {$item: a}", "$item is only defined in the input of a step with for_each", 5),
        ("x: {$from: {step: a, x: 1}}", "$from takes {step: <id>} or {workflow: input}", 5),
        (
            "x: {$step: a, on_skip: {action: maybe}}",
            "on_skip action must be use_default or skip, got 'maybe'",
            15,
        ),
    ],
)
def test_compile_errors(yaml_text: str, message: str, column: int) -> None:
    error = compile_error(yaml_text)
    assert error.message == message
    assert (error.file, error.line, error.column, error.step) == ("e.yaml", 1, column, "s")
    assert str(error) == f"e.yaml:1:{column}: step 's': {message}"


def test_unknown_template_head_in_a_step_lists_each_head_once() -> None:
    with pytest.raises(LoadError) as caught:
        load_flow(
            "steps:\n"
            "  - id: s\n"
            "    component: /builtin/noop\n"
            "    input: {$template: '{inptu.a}'}\n"
            "output: {$step: s}\n"
        )
    assert caught.value.message == (
        "template placeholder {inptu.a} must start with one of input, step, variable, item "
        "(did you mean 'input'?)"
    )


def test_compile_records_step_references() -> None:
    doc = parse_document("x: [{$step: a}, {$template: '{step.b.c}'}, {$if: {$step: c}, then: 1}]")
    ctx = CompileContext(doc, step="s")
    compile_expr(doc.data["x"], ctx, ("x",))
    assert [ref for ref, _ in ctx.refs] == ["a", "b", "c"]


def test_non_json_value_is_rejected() -> None:
    doc = Document(data={"x": {1, 2}}, name="e.yaml")
    with pytest.raises(LoadError, match="expressions are JSON values; got set"):
        compile_expr(doc.data["x"], CompileContext(doc), ("x",))
