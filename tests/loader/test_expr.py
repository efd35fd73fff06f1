"""Expressions: paths, every form's evaluation, templates and variables.

Most tests compile a value with :func:`compile_expr` and evaluate it against a small
hand-made scope (``FakeScope``), so each form is checked on its own. Variables'
fallbacks come from the flow's ``variables_schema``, so those go through
:func:`pocketbatch.load_flow`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from pocketbatch import load_flow
from pocketbatch.loader._expr import (
    Const,
    EvalError,
    Expr,
    NeedStep,
    StepSkipped,
    format_path,
    parse_path,
    truthy,
)
from pocketbatch.loader._expr_compile import CompileContext, compile_expr
from pocketbatch.loader._source import Document

# --------------------------------------------------------------------------- helpers


class FakeScope:
    """A run's view for expressions: input, variables, an item, and known step outputs."""

    def __init__(
        self,
        input: Any = None,
        *,
        variables: Mapping[str, Any] | None = None,
        item: Any = None,
        steps: Mapping[str, Any] | None = None,
        skipped: tuple[str, ...] = (),
    ) -> None:
        self.input = input
        self.variables = dict(variables or {})
        self.item = item
        self.steps = dict(steps or {})
        self.skipped = skipped
        self.asked: list[str] = []

    def step_output(self, step: str) -> Any:
        self.asked.append(step)
        if step in self.skipped:
            raise StepSkipped(step)
        if step in self.steps:
            return self.steps[step]
        raise NeedStep(step)

    def undeclared_variable(self, name: str) -> Any:
        raise EvalError(f"Undefined variable: {name}")


def compile_value(value: Any, *, for_each: bool = False, item_name: str = "item") -> Expr:
    doc = Document(data={"x": value}, name="expr.yaml")
    ctx = CompileContext(doc, step="s", item_names=frozenset({item_name}), in_for_each=for_each)
    return compile_expr(value, ctx, ("x",))


def evaluate(value: Any, scope: FakeScope | None = None, **compile_kw: Any) -> Any:
    return compile_value(value, **compile_kw).eval(scope or FakeScope())


def eval_error(value: Any, scope: FakeScope) -> str:
    with pytest.raises(EvalError) as caught:
        compile_value(value).eval(scope)
    assert caught.value.code == "EXPRESSION_FAILURE"
    return caught.value.message


# --------------------------------------------------------------------------- paths


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("$", ()),
        ("", ()),
        ("title", ("title",)),
        ("a.b", ("a", "b")),
        ("a[0]", ("a", 0)),
        ("a.b[2].c", ("a", "b", 2, "c")),
        ("$.a", ("a",)),
        ("$.a.b[0]", ("a", "b", 0)),
        ("$[0]", (0,)),
        ("$[-1]", (-1,)),
        ("$.a[0][1]", ("a", 0, 1)),
        ("$['a.b']", ("a.b",)),
        ('$["a.b"]', ("a.b",)),
        ("$.doc['x y'][2]", ("doc", "x y", 2)),
        ("$['']", ("",)),
        ("$.a-b", ("a-b",)),
        ("$.$weird", ("$weird",)),
        ("$['a]b']", ("a]b",)),
        ("$.é", ("é",)),
    ],
)
def test_parse_path(text: str, segments: tuple[str | int, ...]) -> None:
    assert parse_path(text) == segments


@pytest.mark.parametrize(
    "text",
    ["$a", "$$", "$.a[", "$.a..b", "$.a]", "$[x]", "$[0", "a..b", "$.", "$['a]", "[0]", "$[1.5]"],
)
def test_parse_path_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError, match="malformed path"):
        parse_path(text)


@pytest.mark.parametrize("bad", [None, 3, ["a"], {"a": 1}])
def test_parse_path_rejects_non_strings(bad: Any) -> None:
    with pytest.raises(ValueError, match="a path must be a string"):
        parse_path(bad)


@pytest.mark.parametrize(
    ("segments", "text"),
    [
        ((), "$"),
        (("a",), "$.a"),
        (("a", 0, "b"), "$.a[0].b"),
        ((-1,), "$[-1]"),
        (("a.b",), '$["a.b"]'),
        (("x y",), '$["x y"]'),
        (("a-b",), "$.a-b"),
        (("_x1",), "$._x1"),
        (("1a",), '$["1a"]'),
        (("",), '$[""]'),
        (("é",), '$["é"]'),
    ],
)
def test_format_path(segments: tuple[str | int, ...], text: str) -> None:
    assert format_path(segments) == text


@pytest.mark.parametrize(
    "segments",
    [(), ("a",), ("a", 0, "b"), (-3,), ("a.b", 1), ("x y", "z"), ("a-b", "c_d"), ("a]b",)],
)
def test_format_then_parse_round_trips(segments: tuple[str | int, ...]) -> None:
    assert parse_path(format_path(segments)) == segments


def test_truthy_is_stepflows() -> None:
    assert [truthy(v) for v in (0, 0.0, "", [], {}, "false", "null", True)] == [True] * 8
    assert [truthy(v) for v in (False, None)] == [False, False]


# --------------------------------------------------------------------------- literals

DOC = {"title": "T", "doc": {"tags": ["x", "y", "z"]}, "a.b": "dotted", "n": 0, "none": None}


@pytest.mark.parametrize("value", [None, True, False, 0, -1.5, "text", "$input", [], {}])
def test_bare_values_are_constants(value: Any) -> None:
    expr = compile_value(value)
    assert isinstance(expr, Const)
    assert expr.constant
    assert expr.eval(FakeScope()) == value


def test_containers_without_references_fold_to_one_constant() -> None:
    expr = compile_value({"a": [1, {"b": "c"}], "d": None})
    assert isinstance(expr, Const)
    assert expr.eval(FakeScope()) == {"a": [1, {"b": "c"}], "d": None}


def test_containers_are_recursed_into() -> None:
    value = {"a": [{"$input": "title"}, 2], "b": {"c": {"$input": "n"}}, "dollar-free": "$x"}
    expr = compile_value(value)
    assert not expr.constant
    assert expr.eval(FakeScope(DOC)) == {"a": ["T", 2], "b": {"c": 0}, "dollar-free": "$x"}


def test_literal_keeps_dollar_keys_and_is_not_evaluated() -> None:
    raw = {"$input": "missing", "$step": "nowhere", "nested": [{"$if": 1}]}
    scope = FakeScope({})
    assert evaluate({"$literal": raw}, scope) == raw
    assert evaluate({"$literal": None}, scope) is None
    assert scope.asked == []


# --------------------------------------------------------------------------- $input


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("title", "T"),
        ("$.title", "T"),
        ("$.doc.tags[1]", "y"),
        ("doc.tags[0]", "x"),
        ("$.doc.tags[-1]", "z"),
        ("$.doc.tags.2", "z"),  # a digit name indexes a list
        ("$['a.b']", "dotted"),
        ("$.n", 0),
        ("$.none", None),  # present and null is not missing
        ("$", DOC),
        (None, DOC),
    ],
)
def test_input_reference(path: str | None, expected: Any) -> None:
    assert evaluate({"$input": path}, FakeScope(DOC)) == expected


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("x", "Input path $.x not found"),
        ("$.x", "Input path $.x not found"),
        ("$.doc.tags[3]", "Input path $.doc.tags[3] not found"),
        ("$.doc.tags[-4]", "Input path $.doc.tags[-4] not found"),
        ("$.doc.tags.first", "Input path $.doc.tags.first not found"),
        ("$.title.length", "Input path $.title.length not found"),
        ("$.none.x", "Input path $.none.x not found"),
        ("$.doc[0]", "Input path $.doc[0] not found"),
        ("$['a b']", 'Input path $["a b"] not found'),
    ],
)
def test_missing_input_path_is_an_expression_failure(path: str, message: str) -> None:
    assert eval_error({"$input": path}, FakeScope(DOC)) == message


def test_non_decimal_digit_name_on_a_list_is_a_missing_path() -> None:
    with pytest.raises(EvalError, match=r"^Input path .* not found$"):
        evaluate({"$input": "$.a.²"}, FakeScope({"a": [1, 2, 3]}))


def test_non_decimal_digit_name_fails_the_run_instead_of_raising() -> None:
    flow = load_flow("output: {$input: '$.a.²'}\n")
    result = flow.run({"a": [1, 2, 3]})
    assert result.outcome == "failed"
    assert result.error is not None
    assert result.error.code == "EXPRESSION_FAILURE"


def test_input_reference_against_a_scalar_input() -> None:
    assert evaluate({"$input": "$"}, FakeScope(7)) == 7
    assert eval_error({"$input": "a"}, FakeScope(7)) == "Input path $.a not found"


def test_missing_input_fails_the_flow_as_expression_failure() -> None:
    flow = load_flow("output: {$input: x}\n")
    result = flow.run({"y": 1})
    assert result.to_dict() == {
        "outcome": "failed",
        "error": {"code": "EXPRESSION_FAILURE", "message": "Input path $.x not found"},
    }


# --------------------------------------------------------------------------- $step


def test_step_reference_and_path() -> None:
    scope = FakeScope(steps={"fetch": {"user": {"id": 42, "roles": ["a", "b"]}}})
    assert evaluate({"$step": "fetch"}, scope) == {"user": {"id": 42, "roles": ["a", "b"]}}
    assert evaluate({"$step": "fetch", "path": "user.id"}, scope) == 42
    assert evaluate({"$step": "fetch", "path": "$.user.roles[1]"}, scope) == "b"
    assert evaluate({"$step": "fetch", "path": "$"}, scope)["user"]["id"] == 42


def test_missing_step_path() -> None:
    scope = FakeScope(steps={"s": {"a": 1}})
    assert eval_error({"$step": "s", "path": "nope"}, scope) == "Path $.nope not found"
    assert eval_error({"$step": "s", "path": "$.a.b"}, scope) == "Path $.a.b not found"


def test_step_reference_asks_for_an_unknown_result() -> None:
    with pytest.raises(NeedStep) as caught:
        evaluate({"$step": "later"}, FakeScope())
    assert caught.value.step == "later"


def test_step_reference_records_dependencies() -> None:
    expr = compile_value({"a": {"$step": "one"}, "b": [{"$step": "two", "path": "x"}]})
    assert expr.all_steps == {"one", "two"}
    assert expr.eager_steps == {"one", "two"}


@pytest.mark.parametrize("key", ["on_skip", "onSkip"])
@pytest.mark.parametrize("default_key", ["default_value", "defaultValue"])
@pytest.mark.parametrize("action", ["use_default", "useDefault"])
def test_on_skip_use_default(key: str, default_key: str, action: str) -> None:
    ref = {"$step": "s", "path": "x", key: {"action": action, default_key: {"d": 1}}}
    assert evaluate(ref, FakeScope(skipped=("s",))) == {"d": 1}
    # Not skipped: the real value (the default is not used).
    assert evaluate(ref, FakeScope(steps={"s": {"x": 5}})) == 5


def test_on_skip_use_default_without_a_value_gives_null() -> None:
    ref = {"$step": "s", "on_skip": {"action": "use_default"}}
    assert evaluate(ref, FakeScope(skipped=("s",))) is None


@pytest.mark.parametrize("on_skip", [None, {"action": "skip"}])
def test_skipped_step_propagates_without_use_default(on_skip: Any) -> None:
    ref: dict[str, Any] = {"$step": "s"}
    if on_skip is not None:
        ref["on_skip"] = on_skip
    with pytest.raises(StepSkipped) as caught:
        evaluate(ref, FakeScope(skipped=("s",)))
    assert caught.value.step == "s"


def test_legacy_from_references() -> None:
    scope = FakeScope(DOC, steps={"s": {"v": [1, 2]}})
    assert evaluate({"$from": {"workflow": "input"}}, scope) == DOC
    assert evaluate({"$from": {"workflow": "input"}, "path": "doc.tags[0]"}, scope) == "x"
    assert evaluate({"$from": {"step": "s"}}, scope) == {"v": [1, 2]}
    assert evaluate({"$from": {"step": "s"}, "path": "$.v[1]"}, scope) == 2
    skipped = {"$from": {"step": "t"}, "onSkip": {"action": "useDefault", "defaultValue": 0}}
    assert evaluate(skipped, FakeScope(skipped=("t",))) == 0


# --------------------------------------------------------------------------- $variable


def test_variable_supplied() -> None:
    scope = FakeScope(variables={"model": "big", "cfg": {"url": "u", "ports": [1, 2]}})
    assert evaluate({"$variable": "model"}, scope) == "big"
    assert evaluate({"$variable": "cfg.url"}, scope) == "u"
    assert evaluate({"$variable": "$.cfg.ports[1]"}, scope) == 2
    assert evaluate({"$variable": "model", "default": "small"}, scope) == "big"


def test_variable_supplied_as_null_is_not_replaced_by_the_default() -> None:
    scope = FakeScope(variables={"model": None})
    assert evaluate({"$variable": "model", "default": "small"}, scope) is None


def test_variable_default() -> None:
    scope = FakeScope({"fallback": "from-input"})
    assert evaluate({"$variable": "model", "default": "small"}, scope) == "small"
    assert evaluate({"$variable": "model", "default": None}, scope) is None
    assert evaluate({"$variable": "model", "default": {"$input": "fallback"}}, scope) == (
        "from-input"
    )
    assert evaluate({"$variable": "cfg.url", "default": {"url": "d"}}, scope) == "d"


def test_variable_missing_path() -> None:
    scope = FakeScope(variables={"cfg": {"url": 1}})
    assert eval_error({"$variable": "cfg.nope"}, scope) == "Variable path cfg.nope not found"


def test_variable_not_supplied_asks_the_scope() -> None:
    assert eval_error({"$variable": "ghost"}, FakeScope()) == "Undefined variable: ghost"


VARIABLES_FLOW = """\
variables_schema:
  type: object
  properties:
    s: {type: string}
    i: {type: integer}
    b: {type: boolean}
    with_default: {type: array, default: [1, 2]}
    arr: {type: array}
    obj: {type: object}
    untyped: {description: no type}
output:
  $variable: {$input: name}
"""


def _variable_flow(name: str) -> str:
    # $variable takes a name, not an expression: build one flow per variable.
    return VARIABLES_FLOW.replace("$variable: {$input: name}", f"$variable: {name}")


@pytest.mark.parametrize(
    ("name", "expected"),
    [("s", ""), ("i", 0), ("b", False), ("with_default", [1, 2])],
)
def test_declared_variable_fallbacks(name: str, expected: Any) -> None:
    result = load_flow(_variable_flow(name)).run({})
    assert result.to_dict() == {"outcome": "success", "result": expected}
    assert type(result.result) is type(expected)


@pytest.mark.parametrize("name", ["arr", "obj", "untyped", "never_declared"])
def test_undefined_variable(name: str) -> None:
    result = load_flow(_variable_flow(name)).run({})
    assert result.to_dict() == {
        "outcome": "failed",
        "error": {"code": "EXPRESSION_FAILURE", "message": f"Undefined variable: {name}"},
    }


def test_declared_variables_under_schemas_properties() -> None:
    flow = load_flow(
        "schemas:\n"
        "  type: object\n"
        "  properties:\n"
        "    variables: {type: object, properties: {s: {type: string}, b: {type: boolean}}}\n"
        "output: [{$variable: s}, {$variable: b}]\n"
    )
    assert flow.run({}).result == ["", False]


def test_variables_at_load_and_at_run() -> None:
    text = "output: {m: {$variable: model}, r: {$variable: region, default: eu}}\n"
    flow = load_flow(text, variables={"model": "load-time"})
    assert flow.run({}).result == {"m": "load-time", "r": "eu"}
    assert flow.run({}, variables={"model": "run-time", "region": "us"}).result == {
        "m": "run-time",
        "r": "us",
    }
    # Run variables do not stick to the flow.
    assert flow.run({}).result == {"m": "load-time", "r": "eu"}


def test_supplied_variable_beats_declared_fallback() -> None:
    flow = load_flow(_variable_flow("s"))
    assert flow.run({}, variables={"s": "given"}).result == "given"


# --------------------------------------------------------------------------- $if


@pytest.mark.parametrize(
    ("cond", "branch"),
    [
        (0, "then"),
        (0.0, "then"),
        ("", "then"),
        ([], "then"),
        ({}, "then"),
        ("false", "then"),
        (True, "then"),
        (False, "else"),
        (None, "else"),
    ],
)
def test_if_truthiness(cond: Any, branch: str) -> None:
    scope = FakeScope({"c": cond})
    assert evaluate({"$if": {"$input": "c"}, "then": "then", "else": "else"}, scope) == branch


def test_if_without_else_gives_null() -> None:
    assert evaluate({"$if": False, "then": 1}) is None
    assert evaluate({"$if": None, "then": 1}) is None


def test_if_evaluates_only_the_branch_taken() -> None:
    expr = compile_value(
        {"$if": {"$input": "go"}, "then": {"$step": "a"}, "else": {"$input": "missing"}}
    )
    assert expr.eager_steps == frozenset()  # the branch's step is not started in advance
    assert expr.all_steps == {"a"}
    scope = FakeScope({"go": False})
    with pytest.raises(EvalError):
        expr.eval(scope)
    assert scope.asked == []
    scope = FakeScope({"go": True}, steps={"a": "A"})
    assert expr.eval(scope) == "A"


def test_if_condition_may_reference_a_step() -> None:
    expr = compile_value({"$if": {"$step": "check", "path": "ok"}, "then": "y", "else": "n"})
    assert expr.eager_steps == {"check"}
    assert expr.eval(FakeScope(steps={"check": {"ok": 0}})) == "y"
    assert expr.eval(FakeScope(steps={"check": {"ok": False}})) == "n"


# --------------------------------------------------------------------------- $coalesce


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ([None, 1, 2], 1),
        ([None, None], None),
        ([0, 1], 0),
        ([False, 1], False),
        (["", "x"], ""),
        ([[], "x"], []),
        ([{"$input": "none"}, {"$input": "title"}], "T"),
    ],
)
def test_coalesce(items: list[Any], expected: Any) -> None:
    assert evaluate({"$coalesce": items}, FakeScope(DOC)) == expected


def test_coalesce_is_lazy_and_skipped_counts_as_null() -> None:
    expr = compile_value({"$coalesce": [{"$step": "skipped"}, "found", {"$step": "never"}]})
    assert expr.eager_steps == {"skipped"}
    scope = FakeScope(skipped=("skipped",))
    assert expr.eval(scope) == "found"
    assert scope.asked == ["skipped"]


def test_coalesce_does_not_hide_a_missing_path() -> None:
    # Only null (or a skipped step) falls through; a missing path is still an error.
    msg = eval_error({"$coalesce": [{"$input": "nope"}, 1]}, FakeScope(DOC))
    assert msg == "Input path $.nope not found"


# --------------------------------------------------------------------------- $template


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("plain text", "plain text"),
        ("", ""),
        ("Hello {input.title}!", "Hello T!"),
        ("{input.title}{input.title}", "TT"),
        ("{ input.title }", "T"),
        ("{input.doc.tags[1]}", "y"),
        ("{input['a.b']}", "dotted"),
        ("{{literal}} and {{{input.title}}}", "{literal} and {T}"),
        ("}} {{", "} {"),
        ("{{input.title}}", "{input.title}"),
        ('{{"json": {input.n}}}', '{"json": 0}'),
        ("n={input.n} none={input.none}", "n=0 none=null"),
        ("tags={input.doc.tags}", 'tags=["x","y","z"]'),
        ("doc={input.doc}", 'doc={"tags":["x","y","z"]}'),
        ("{input.flag} {input.f} {input.big}", "true 1.5 12345678901234567890"),
        ("{input.uni}", "é ✓"),
        ("{input.nested}", '{"k":"é","l":[true,null]}'),
    ],
)
def test_template(template: str, expected: str) -> None:
    data = {
        **DOC,
        "flag": True,
        "f": 1.5,
        "big": 12345678901234567890,
        "uni": "é ✓",
        "nested": {"k": "é", "l": [True, None]},
    }
    assert evaluate({"$template": template}, FakeScope(data)) == expected


def test_template_whole_input_and_index() -> None:
    assert evaluate({"$template": "{input}"}, FakeScope([1, {"a": "b"}])) == '[1,{"a":"b"}]'
    assert evaluate({"$template": "{input[1].a}"}, FakeScope([1, {"a": "b"}])) == "b"
    assert evaluate({"$template": "{input}"}, FakeScope("just text")) == "just text"


def test_template_step_and_variable_placeholders() -> None:
    scope = FakeScope(
        steps={"sum": {"text": "short", "n": [1]}}, variables={"lang": "fr", "cfg": {"k": 1}}
    )
    template = (
        "{step.sum.text}|{steps.sum.n[0]}|{step.sum}|{variable.lang}|{var.lang}|{variables.cfg.k}"
    )
    expr = compile_value({"$template": template})
    assert expr.all_steps == {"sum"}
    assert expr.eval(scope) == 'short|1|{"text":"short","n":[1]}|fr|fr|1'


def test_template_item_placeholders_in_for_each() -> None:
    scope = FakeScope(item={"id": 3, "tags": ["a"]})
    value = {"$template": "{item.id} {row.tags[0]} {item}"}
    assert evaluate(value, scope, for_each=True, item_name="row") == '3 a {"id":3,"tags":["a"]}'


def test_template_missing_placeholder_fails() -> None:
    assert eval_error({"$template": "x {input.nope}"}, FakeScope(DOC)) == (
        "Input path $.nope not found"
    )
    assert eval_error({"$template": "{variable.ghost}"}, FakeScope()) == (
        "Undefined variable: ghost"
    )


def test_template_skipped_step_propagates() -> None:
    with pytest.raises(StepSkipped):
        evaluate({"$template": "{step.s.x}"}, FakeScope(skipped=("s",)))


def test_template_text_is_not_interpreted() -> None:
    text = "__import__('os') {{7*7}} $${{x}} %s {{input.__class__}} \\n"
    assert evaluate({"$template": text}) == "__import__('os') {7*7} $${x} %s {input.__class__} \\n"


def test_template_attribute_access_is_only_a_path() -> None:
    # A dunder name is a key like any other: looked up in the data, never on objects.
    assert evaluate({"$template": "{input.__class__}"}, FakeScope({"__class__": "k"})) == "k"
    assert eval_error({"$template": "{input.__class__}"}, FakeScope({})) == (
        "Input path $.__class__ not found"
    )
    assert eval_error({"$template": "{input.title.upper}"}, FakeScope(DOC)) == (
        "Input path $.title.upper not found"
    )


# --------------------------------------------------------------------------- $item


def test_item_reference() -> None:
    scope = FakeScope(item={"id": 1, "v": [5]})
    assert evaluate({"$item": "$"}, scope, for_each=True) == {"id": 1, "v": [5]}
    assert evaluate({"$item": None}, scope, for_each=True) == {"id": 1, "v": [5]}
    assert evaluate({"$item": "id"}, scope, for_each=True) == 1
    assert evaluate({"$item": "$.v[0]"}, scope, for_each=True) == 5
    with pytest.raises(EvalError, match=r"^Item path \$\.nope not found$"):
        evaluate({"$item": "nope"}, scope, for_each=True)


# --------------------------------------------------------------------------- children


def _every_kind() -> set[type[Expr]]:
    found: set[type[Expr]] = set()
    pending = [Expr]
    while pending:
        for sub in pending.pop().__subclasses__():
            found.add(sub)
            pending.append(sub)
    return found


# One example of every kind, each with a step reference `s` in every child slot it has.
# A new kind of expression must be added here (test_every_kind_has_an_example).
KIND_EXAMPLES: list[tuple[str, Any, bool]] = [
    ("Const", {"$literal": {"$step": "s"}}, False),
    ("InputRef", {"$input": "a"}, False),
    ("ItemRef", {"$item": "a"}, False),
    ("StepRef", {"$step": "s", "path": "a"}, True),
    ("Obj", {"a": 1, "b": {"$step": "s"}}, True),
    ("Arr", [1, {"$step": "s"}], True),
    ("VarRef", {"$variable": "v", "default": {"$step": "s"}}, True),
    ("If", {"$if": {"$step": "s"}, "then": 1}, True),
    ("If", {"$if": True, "then": {"$step": "s"}}, True),
    ("If", {"$if": True, "then": 1, "else": {"$step": "s"}}, True),
    ("Coalesce", {"$coalesce": [None, {"$step": "s"}]}, True),
    ("Template", {"$template": "x {step.s.a} y"}, True),
]


def test_every_kind_has_an_example() -> None:
    assert {kind for kind, _, _ in KIND_EXAMPLES} == {k.__name__ for k in _every_kind()}


@pytest.mark.parametrize(("kind", "value", "refers"), KIND_EXAMPLES)
def test_every_kind_exposes_its_children(kind: str, value: Any, refers: bool) -> None:
    expr = compile_value(value, for_each=True)
    assert type(expr).__name__ == kind
    assert all(isinstance(child, Expr) for child in expr.children())
    refs = [e for e in expr.walk() if type(e).__name__ == "StepRef"]
    assert [e.step for e in refs] == (["s"] if refers else [])  # type: ignore[attr-defined]
    assert expr.all_steps == ({"s"} if refers else set())


def test_walk_visits_nested_kinds_in_document_order() -> None:
    expr = compile_value(
        {"a": [{"$coalesce": [{"$variable": "v", "default": {"$template": "{step.x}"}}]}]}
    )
    assert [type(e).__name__ for e in expr.walk()] == [
        "Obj",
        "Arr",
        "Coalesce",
        "VarRef",
        "Template",
        "StepRef",
    ]
    assert expr.all_steps == {"x"}
    assert expr.eager_steps == set()
