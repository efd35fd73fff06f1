"""Property tests for expressions: arbitrary JSON never crashes the compiler or the
evaluator, and no input, however code-like, is ever executed.

* Compiling any JSON value (with ``$``-keys such as ``$input``, ``$if``, ``$eval``
  and ``__import__`` mixed in) either gives an expression or raises ``LoadError``.
* Evaluating a compiled expression against any JSON input, variables and step
  results gives a JSON value or raises one of the loader's own evaluation signals
  (``EvalError``, ``StepSkipped``, ``NeedStep``).
* Code-like text (``__import__('os').system(...)``, ``{input.__class__}``,
  ``{{7*7}}``) in templates and data is inert: no file appears, and template text
  outside placeholders comes out literally.

Generated text leaves out the characters for which ``str.isdigit()`` is true but
``str.isdecimal()`` is not (such as ``²``): a path segment made of them crashes
``_walk`` with a ``ValueError`` on lists, a known bug pinned down by explicit
``xfail`` tests in ``test_expr.py``, and letting the generator stumble on it now
and then would only make these tests flaky.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pocketbatch import load_flow
from pocketbatch._errors import LoadError
from pocketbatch.loader._expr import (
    EvalError,
    NeedStep,
    StepSkipped,
    format_path,
    parse_path,
)
from pocketbatch.loader._expr_compile import CompileContext, compile_expr
from pocketbatch.loader._source import Document

MARKER_DIR = Path(tempfile.mkdtemp(prefix="pocketbatch-props-"))
MARKER = MARKER_DIR / "pwned"
PWNED = Path("/tmp/pwned")
PWNED_EXISTED = PWNED.exists()

DANGEROUS = [
    f"__import__('os').system('touch {MARKER}')",
    "__import__('os').system('touch /tmp/pwned')",
    f"{{__import__('os').system('touch {MARKER}')}}",
    "{input.__class__}",
    "{input.__class__.__mro__}",
    "{input.__globals__}",
    "{{7*7}}",
    "{7*7}",
    "${7*7}",
    "#{7*7}",
    "{{config}}",
    "{% for x in () %}{% endfor %}",
    "eval('1+1')",
    "exec(\"open('" + str(MARKER) + "', 'w')\")",
    "$",
    "$.a",
    "$.a[0]",
    "a.b",
    "s",
    "then",
    "{input.a}",
    "{step.s.x}",
    "{variable.v}",
    "{item.x}",
    "{input}",
]

SPECIAL_KEYS = [
    "$input",
    "$step",
    "$if",
    "$template",
    "$variable",
    "$literal",
    "$coalesce",
    "$item",
    "$from",
    "$eval",
    "$expr",
    "__import__",
    "__class__",
    "then",
    "else",
    "path",
    "default",
    "on_skip",
    "onSkip",
    "action",
    "default_value",
    "step",
    "workflow",
]


def _safe_char(c: str) -> bool:
    return not (c.isdigit() and not c.isdecimal())


safe_text = st.text(max_size=12).filter(lambda s: all(_safe_char(c) for c in s))
strings = st.one_of(st.sampled_from(DANGEROUS), safe_text)
keys = st.one_of(st.sampled_from(SPECIAL_KEYS), st.sampled_from(["a", "s", "x"]), safe_text)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    strings,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(keys, inner, max_size=4),
    ),
    max_leaves=20,
)
# Plain JSON data for inputs, variables and step results (any keys).
json_data = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(["a", "x", "s", "__class__"]), safe_text), inner, max_size=4
        ),
    ),
    max_leaves=15,
)

EVAL_SIGNALS = (EvalError, StepSkipped, NeedStep)
PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_json(value: Any) -> None:
    """``value`` is plain JSON data (and survives a round trip unchanged)."""
    text = json.dumps(value, allow_nan=False)
    assert json.loads(text) == value


def assert_nothing_ran() -> None:
    assert not MARKER.exists()
    assert list(MARKER_DIR.iterdir()) == []
    if not PWNED_EXISTED:
        assert not PWNED.exists()


class Scope:
    """An arbitrary run: JSON input, variables, an item, and step results (some
    known, some skipped, some not run yet)."""

    def __init__(
        self,
        input: Any,
        variables: dict[str, Any],
        item: Any,
        steps: dict[str, Any],
        skipped: frozenset[str],
    ) -> None:
        self.input = input
        self.variables = variables
        self.item = item
        self.steps = steps
        self.skipped = skipped

    def step_output(self, step: str) -> Any:
        if step in self.skipped:
            raise StepSkipped(step)
        if step in self.steps:
            return self.steps[step]
        raise NeedStep(step)

    def undeclared_variable(self, name: str) -> Any:
        raise EvalError(f"Undefined variable: {name}")


scopes = st.builds(
    Scope,
    input=json_data,
    variables=st.dictionaries(st.sampled_from(["v", "a", "x", "s"]), json_data, max_size=3),
    item=json_data,
    steps=st.dictionaries(st.sampled_from(["s", "a", "x", "b"]), json_data, max_size=3),
    skipped=st.frozensets(st.sampled_from(["s", "a", "x", "b"]), max_size=2),
)


def compile_value(value: Any, in_for_each: bool) -> Any:
    doc = Document(data={"input": value}, name="props.yaml")
    ctx = CompileContext(doc, step="t", item_names=frozenset({"item"}), in_for_each=in_for_each)
    return compile_expr(value, ctx, ("input",))


# --------------------------------------------------------------------------- compile


@PROPS
@given(value=json_values, in_for_each=st.booleans())
def test_compiling_any_json_gives_an_expression_or_a_load_error(
    value: Any, in_for_each: bool
) -> None:
    error: LoadError | None = None
    try:
        expr = compile_value(value, in_for_each)
    except LoadError as exc:
        error = exc
    if error is not None:
        assert error.file == "props.yaml"
        assert error.step == "t"
        assert str(error).startswith("props.yaml: step 't': ")
    else:
        assert isinstance(expr.all_steps, frozenset)
        assert expr.eager_steps <= expr.all_steps
    assert_nothing_ran()


@PROPS
@given(value=json_values)
def test_loading_any_json_step_input_gives_a_flow_or_a_load_error(value: Any) -> None:
    flow_text = json.dumps(
        {
            "steps": [
                {"id": "s", "component": "/builtin/noop", "input": {"k": 1}},
                {"id": "t", "component": "/builtin/noop", "input": value},
            ],
            "output": {"$step": "t"},
        }
    )
    error: LoadError | None = None
    try:
        flow = load_flow(flow_text)
    except LoadError as exc:
        error = exc
    if error is not None:
        assert error.file == "<string>"
        assert error.line is not None
        assert error.column is not None
    else:
        assert flow.spec.steps[1].id == "t"
    assert_nothing_ran()


# --------------------------------------------------------------------------- evaluate


@PROPS
@given(value=json_values, in_for_each=st.booleans(), scope=scopes)
def test_evaluating_gives_json_or_an_evaluation_signal(
    value: Any, in_for_each: bool, scope: Scope
) -> None:
    try:
        expr = compile_value(value, in_for_each)
    except LoadError:
        assume(False)
        return
    signal: Exception | None = None
    try:
        result = expr.eval(scope)
    except EVAL_SIGNALS as exc:
        signal = exc
    if isinstance(signal, EvalError):
        assert signal.code == "EXPRESSION_FAILURE"
        assert isinstance(signal.message, str)
    elif isinstance(signal, StepSkipped):
        assert signal.step in scope.skipped
    elif isinstance(signal, NeedStep):
        assert signal.step not in scope.steps
    else:
        assert signal is None
        assert_json(result)
        if expr.constant:
            assert expr.eval(Scope(None, {}, None, {}, frozenset())) == result
    assert_nothing_ran()


@PROPS
@given(value=json_values, input=json_data)
def test_running_any_loadable_flow_returns_a_result(value: Any, input: Any) -> None:
    flow_text = json.dumps(
        {
            "steps": [{"id": "s", "component": "/builtin/noop", "input": {"a": {"$input": "$"}}}],
            "output": value,
        }
    )
    try:
        flow = load_flow(flow_text)
    except LoadError:
        assume(False)
        return
    result = flow.run(input)  # never raises
    as_dict = result.to_dict()
    assert_json(as_dict)
    assert as_dict["outcome"] in ("success", "failed", "skipped")
    if result.outcome == "failed":
        assert result.error is not None
        assert result.error.code == "EXPRESSION_FAILURE"
    assert_nothing_ran()


@PROPS
@given(value=json_values)
def test_literal_is_returned_untouched(value: Any) -> None:
    expr = compile_value({"$literal": value}, False)
    assert expr.constant
    assert expr.eval(Scope(None, {}, None, {}, frozenset())) == value
    assert_nothing_ran()


# --------------------------------------------------------------------------- templates

placeholder_names = st.one_of(
    st.sampled_from(["a", "x", "__class__", "__import__", "__globals__", "system", "_"]),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True),
)
pieces = st.lists(
    st.one_of(
        st.tuples(st.just("text"), strings),
        st.tuples(st.just("ref"), placeholder_names),
    ),
    max_size=6,
)


def escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def render(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@PROPS
@given(parts=pieces, values=st.dictionaries(placeholder_names, json_data, max_size=6))
def test_template_text_comes_out_literally(
    parts: list[tuple[str, str]], values: dict[str, Any]
) -> None:
    names = {name for kind, name in parts if kind == "ref"}
    data = {name: values.get(name, name.upper()) for name in names}
    template = "".join(escape(s) if kind == "text" else f"{{input.{s}}}" for kind, s in parts)
    expected = "".join(s if kind == "text" else render(data[s]) for kind, s in parts)

    expr = compile_value({"$template": template}, False)
    assert expr.eval(Scope(data, {}, None, {}, frozenset())) == expected
    assert_nothing_ran()


@PROPS
@given(text=strings)
def test_template_without_braces_is_the_text_itself(text: str) -> None:
    assume("{" not in text and "}" not in text)
    expr = compile_value({"$template": text}, False)
    assert expr.eval(Scope({}, {}, None, {}, frozenset())) == text
    assert_nothing_ran()


@PROPS
@given(text=strings)
def test_any_template_compiles_or_fails_to_load(text: str) -> None:
    try:
        expr = compile_value({"$template": text}, True)
    except LoadError:
        return
    try:
        out = expr.eval(Scope({"a": 1}, {"v": "V"}, {"x": 2}, {"s": {"x": 3}}, frozenset()))
    except EvalError:
        return
    assert isinstance(out, str)
    assert_nothing_ran()


@pytest.mark.parametrize("text", DANGEROUS)
def test_dangerous_text_is_data_in_every_position(text: str) -> None:
    flow_text = json.dumps(
        {
            "steps": [
                {
                    "id": "s",
                    "component": "/builtin/noop",
                    "input": {"value": text, "escaped": {"$template": escape(text)}},
                }
            ],
            "output": {
                "step": {"$step": "s"},
                "literal": {"$literal": {"$eval": text, "__import__": text}},
                "from_input": {"$input": "payload"},
            },
        }
    )
    result = load_flow(flow_text).run({"payload": text})
    assert result.to_dict() == {
        "outcome": "success",
        "result": {
            "step": {"value": text, "escaped": text},
            "literal": {"$eval": text, "__import__": text},
            "from_input": text,
        },
    }
    assert_nothing_ran()


def test_class_placeholder_reads_data_not_attributes() -> None:
    expr = compile_value({"$template": "{input.__class__} {{7*7}}"}, False)
    with pytest.raises(EvalError, match=r"^Input path \$\.__class__ not found$"):
        expr.eval(Scope({"a": 1}, {}, None, {}, frozenset()))
    assert expr.eval(Scope({"__class__": "plain"}, {}, None, {}, frozenset())) == "plain {7*7}"
    assert_nothing_ran()


# --------------------------------------------------------------------------- paths

ascii_keys = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters='"\\'),
    max_size=8,
)


@PROPS
@given(st.lists(st.one_of(st.integers(min_value=-50, max_value=50), ascii_keys), max_size=6))
def test_format_path_round_trips_through_parse_path(segments: list[str | int]) -> None:
    # Keys with quotes, backslashes or non-ASCII characters are written with JSON
    # escapes, which are for reading in messages and are not parsed back.
    assert parse_path(format_path(tuple(segments))) == tuple(segments)


@PROPS
@given(text=safe_text)
def test_parse_path_gives_segments_or_value_error(text: str) -> None:
    try:
        segments = parse_path(text)
    except ValueError:
        return
    assert all(isinstance(s, str | int) for s in segments)


def teardown_module() -> None:
    for child in MARKER_DIR.iterdir():
        child.unlink()
    os.rmdir(MARKER_DIR)
