"""A flow file's structure: parsed, checked, and turned into frozen records.

:func:`parse_flow` reads a :class:`~pocketbatch.loader._source.Document` into a
:class:`FlowSpec`. It accepts Stepflow's keys in snake_case and camelCase, warns
about unknown keys with a did-you-mean (see :mod:`._spec_keys`), compiles every
expression, and checks what can
be checked without components: step ids, references to unknown steps, reference
cycles, ``next`` targets. Each problem is a ``LoadError`` naming file, line,
column and step.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pocketbatch.loader._expr import Const, Expr, Obj
from pocketbatch.loader._expr_compile import CompileContext, compile_expr
from pocketbatch.loader._source import DocPath, Document, did_you_mean, listed
from pocketbatch.loader._spec_keys import (
    _CACHE_KEYS,
    _CASE_KEYS,
    _ON_ERROR_KEYS,
    _STEP_KEYS,
    _TEST_KEYS,
    _TOP_KEYS,
    _Keys,
    _kind,
    _whole,
)

__all__ = ("FlowSpec", "OnError", "StepSpec", "TestCase", "parse_flow")

_STEP_ID = re.compile(r"[A-Za-z_][\w-]*\Z")
# Input keys of builtins that take a nested flow, which is data, not expressions.
LITERAL_INPUT_KEYS = {
    "/builtin/map": ("workflow", "flow"),
    "/builtin/eval": ("flow",),
    "/builtin/iterate": ("flow",),
}


@dataclass(frozen=True)
class OnError:
    """What a step does when its component fails.

    Attributes:
        action: ``fail`` (the flow fails), ``retry`` (then fail), or
            ``use_default`` (the step's output becomes ``default_value``).
        max_retries: retries after the first attempt (Stepflow's default is 3).
        default_value: the output for ``use_default``.
        wait: seconds before the first retry; doubled (``backoff``) after each.
    """

    action: Literal["fail", "retry", "use_default"] = "fail"
    max_retries: int = 3
    default_value: Any = None
    wait: float = 0.5
    backoff: float = 2.0


@dataclass(frozen=True)
class StepSpec:
    """One step of a flow file."""

    id: str
    component: str
    input: Expr
    where: DocPath
    skip: Expr | None = None
    on_error: OnError = OnError()
    must_execute: bool = False
    next: Mapping[str, str] | None = None
    action: Expr | None = None
    for_each: Expr | None = None
    item_name: str = "item"
    max_concurrency: int | None = None
    on_item_error: Literal["raise", "collect"] = "raise"
    input_schema: Mapping[str, Any] | None = None
    output_schema: Mapping[str, Any] | None = None
    cache: str | None = None  # the salt ("" for cache: true); None: not cached
    refs: tuple[tuple[str, DocPath], ...] = field(default=(), compare=False, repr=False)

    @property
    def deps(self) -> frozenset[str]:
        """Steps this step's input, skip condition and for_each list may read."""
        found = self.input.all_steps
        for expr in (self.skip, self.for_each):
            if expr is not None:
                found = found | expr.all_steps
        return found


@dataclass(frozen=True)
class TestCase:
    """One ``test.cases`` entry: an input and the expected result."""

    __test__ = False  # not a pytest test class

    name: str
    input: Any
    expected: Mapping[str, Any] | None
    where: DocPath
    description: str | None = None


@dataclass(frozen=True)
class FlowSpec:
    """A parsed, checked flow file."""

    doc: Document
    steps: tuple[StepSpec, ...]
    output: Expr
    name: str | None = None
    description: str | None = None
    input_schema: Mapping[str, Any] | None = None
    output_schema: Mapping[str, Any] | None = None
    variables_schema: Mapping[str, Any] | None = None
    start: str | None = None
    max_steps: int = 10_000
    tests: tuple[TestCase, ...] = ()
    test_config: Mapping[str, Any] | None = None
    test_config_file: str | None = None
    step_index: Mapping[str, StepSpec] = field(default_factory=dict)

    @property
    def control_flow(self) -> bool:
        """Whether steps run by ``next`` transitions (PocketFlow style) rather than
        by data dependencies (Stepflow style)."""
        return any(step.next is not None for step in self.steps)


def parse_flow(doc: Document) -> FlowSpec:
    """Parse and check a flow document.

    Raises:
        LoadError: the first problem found, with its position.

    Example:
        >>> from pocketbatch.loader._source import parse_document
        >>> spec = parse_flow(parse_document('''
        ... steps:
        ...   - id: hello
        ...     component: /builtin/noop
        ...     input: {name: {$input: name}}
        ... output: {$step: hello, path: name}
        ... '''))
        >>> [s.id for s in spec.steps], spec.control_flow
        (['hello'], False)
    """
    top = _Keys(doc, doc.data, (), _TOP_KEYS, "the flow")
    for key in ("name", "description"):
        if key in top and not isinstance(top.get(key), str):
            raise top.error(f"{key} must be a string", key)
    input_schema = _schema(top, "input_schema", "input")
    output_schema = _schema(top, "output_schema", "output")
    variables_schema = _schema(top, "variables_schema", "variables")

    raw_steps = top.get("steps", [])
    if not isinstance(raw_steps, list):
        raise top.error(f"steps must be a list, got {_kind(raw_steps)}", "steps")
    steps_at = top.at("steps")
    ids: dict[str, DocPath] = {}
    for i, raw in enumerate(raw_steps):
        where = (*steps_at, i)
        if not isinstance(raw, dict):
            raise doc.error(f"a step must be a mapping, got {_kind(raw)}", where)
        step_id = raw.get("id")
        if not isinstance(step_id, str) or not _STEP_ID.match(step_id):
            raise doc.error(
                "a step needs an id: a name of letters, digits, '_' or '-', "
                f"not starting with a digit (got {step_id!r})",
                (*where, "id") if "id" in raw else where,
            )
        if step_id in ids:
            first = doc.position(ids[step_id])
            at = f" (first defined at line {first.line})" if first else ""
            raise doc.error(f"duplicate step id {step_id!r}{at}", (*where, "id"), step=step_id)
        ids[step_id] = (*where, "id")

    steps = tuple(_parse_step(doc, raw, (*steps_at, i)) for i, raw in enumerate(raw_steps))
    index = {s.id: s for s in steps}
    for step in steps:
        _check_refs(doc, list(step.refs), index, step.id)

    out_ctx = CompileContext(doc)
    output = compile_expr(top.get("output"), out_ctx, top.at("output"))
    _check_refs(doc, out_ctx.refs, index, None)

    control = any(s.next is not None for s in steps)
    start = top.get("start")
    if start is not None:
        if not control:
            raise top.error("start only applies to flows whose steps use next", "start")
        if start not in index:
            raise top.error(
                f"start names no step: {start!r}{did_you_mean(str(start), index)}", "start"
            )
    for step in steps:
        if step.next is not None:
            for action, target in step.next.items():
                if target not in index:
                    raise doc.error(
                        f"next{'' if action == 'default' else f' {action!r}'} goes to "
                        f"{target!r}, but no step has that id{did_you_mean(target, index)} "
                        f"(steps: {listed(list(index))})",
                        (*step.where, "next"),
                        step=step.id,
                    )
    if not control:
        _check_cycles(doc, steps, index)

    max_steps = top.get("max_steps", 10_000)
    if not _whole(max_steps, minimum=1):
        raise top.error("max_steps must be a whole number >= 1", "max_steps")
    tests, test_config, test_config_file = _parse_tests(doc, top)
    return FlowSpec(
        doc=doc,
        steps=steps,
        output=output,
        name=top.get("name"),
        description=top.get("description"),
        input_schema=input_schema,
        output_schema=output_schema,
        variables_schema=variables_schema,
        start=start,
        max_steps=max_steps,
        tests=tests,
        test_config=test_config,
        test_config_file=test_config_file,
        step_index=index,
    )


def _schema(top: _Keys, key: str, under_schemas: str) -> Mapping[str, Any] | None:
    """A JSON Schema from ``key`` or from ``schemas.properties.<under_schemas>``."""
    found: Any = None
    where: DocPath = top.at(key)
    if key in top:
        found = top.get(key)
    schemas = top.get("schemas")
    if isinstance(schemas, dict) and isinstance(schemas.get("properties"), dict):
        nested = schemas["properties"].get(under_schemas)
        if nested is not None:
            if found is not None:
                raise top.error(
                    f"the {under_schemas} schema is given twice: as {top.found[key]} and "
                    f"under schemas.properties.{under_schemas}; keep one",
                    key,
                )
            found, where = nested, (*top.at("schemas"), "properties", under_schemas)
    elif "schemas" in top and not isinstance(schemas, dict):
        raise top.error("schemas must be a mapping (a JSON Schema object)", "schemas")
    if found is None:
        return None
    if not isinstance(found, dict | bool):
        raise top.doc.error(f"a JSON Schema must be a mapping, got {_kind(found)}", where)
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(found)
    except SchemaError as exc:
        inner = (*where, *exc.path)
        raise top.doc.error(f"invalid JSON Schema: {exc.message}", inner) from None
    return found if isinstance(found, dict) else {} if found else {"not": {}}


def _parse_step(doc: Document, raw: dict[str, Any], where: DocPath) -> StepSpec:
    step_id: str = raw["id"]
    keys = _Keys(doc, raw, where, _STEP_KEYS, "a step", step=step_id)
    component = keys.get("component")
    if not isinstance(component, str) or not component.startswith("/"):
        raise keys.error(
            "a step needs a component path starting with '/', such as /builtin/openai "
            f"(got {component!r})",
            "component" if "component" in keys else None,
        )

    for_each = None
    for_each_refs: list[tuple[str, DocPath]] = []
    item_name = "item"
    if "for_each" in keys:
        if "as" in keys:
            item_name = keys.get("as")
            if not isinstance(item_name, str) or not item_name.isidentifier():
                raise keys.error("as takes a name for the current element, like item", "as")
        each_ctx = _ctx(doc, step_id)
        for_each = compile_expr(keys.get("for_each"), each_ctx, keys.at("for_each"))
        for_each_refs = each_ctx.refs
    else:
        for key in ("as", "max_concurrency", "on_item_error"):
            if key in keys:
                raise keys.error(f"{keys.found[key]} only applies to a step with for_each", key)

    input_ctx = _ctx(doc, step_id, in_for_each=for_each is not None, item_name=item_name)
    input_expr = _compile_input(keys, component, input_ctx)

    ctx = _ctx(doc, step_id)
    skip = compile_expr(keys.get("skip"), ctx, keys.at("skip")) if "skip" in keys else None
    refs = input_ctx.refs + ctx.refs + for_each_refs

    next_map: dict[str, str] | None = None
    if "next" in keys:
        raw_next = keys.get("next")
        if isinstance(raw_next, str):
            next_map = {"default": raw_next}
        elif (
            isinstance(raw_next, dict)
            and raw_next
            and all(isinstance(k, str) and isinstance(v, str) for k, v in raw_next.items())
        ):
            next_map = dict(raw_next)
        else:
            raise keys.error(
                "next takes a step id, or a mapping from actions to step ids "
                "({approve: publish, revise: draft})",
                "next",
            )
    action = None
    if "action" in keys:
        if next_map is None:
            raise keys.error("action picks a transition, so it needs next", "action")
        action_ctx = _ctx(doc, step_id)
        action = compile_expr(keys.get("action"), action_ctx, keys.at("action"))
        refs += action_ctx.refs

    max_concurrency = keys.get("max_concurrency")
    if max_concurrency is not None and (
        isinstance(max_concurrency, bool)
        or not isinstance(max_concurrency, int)
        or max_concurrency < 1
    ):
        raise keys.error("max_concurrency must be a whole number >= 1", "max_concurrency")
    on_item_error = keys.get("on_item_error", "raise")
    if on_item_error not in ("raise", "collect"):
        raise keys.error(
            f"on_item_error must be raise or collect, got {on_item_error!r}", "on_item_error"
        )
    must_execute = keys.get("must_execute", False)
    if not isinstance(must_execute, bool):
        raise keys.error("must_execute must be true or false", "must_execute")

    for name in ("input_schema", "output_schema"):
        value = keys.get(name)
        if value is not None and not isinstance(value, dict):
            raise keys.error(f"{keys.found[name]} must be a JSON Schema mapping or null", name)

    return StepSpec(
        id=step_id,
        component=component,
        input=input_expr,
        where=where,
        skip=skip,
        on_error=_on_error(keys),
        must_execute=must_execute,
        next=next_map,
        action=action,
        for_each=for_each,
        item_name=item_name,
        max_concurrency=max_concurrency,
        on_item_error=on_item_error,
        input_schema=keys.get("input_schema"),
        output_schema=keys.get("output_schema"),
        cache=_cache(keys),
        refs=tuple(refs),
    )


def _compile_input(keys: _Keys, component: str, ctx: CompileContext) -> Expr:
    raw = keys.get("input")
    where = keys.at("input")
    literal = LITERAL_INPUT_KEYS.get(component, ())
    if isinstance(raw, dict) and literal and not any(str(k).startswith("$") for k in raw):
        # An inline sub-flow is data for the builtin, not expressions for this step.
        def entry(key: str, value: Any) -> Expr:
            # An inline sub-flow is data; an expression ($literal, $step, ...) is not.
            computed = isinstance(value, dict) and any(str(k).startswith("$") for k in value)
            if key in literal and not computed:
                return Const(value)
            return compile_expr(value, ctx, (*where, key))

        return Obj([(k, entry(k, v)) for k, v in raw.items()])
    return compile_expr(raw, ctx, where)


def _ctx(
    doc: Document, step: str, *, in_for_each: bool = False, item_name: str = "item"
) -> CompileContext:
    return CompileContext(
        doc, step=step, item_names=frozenset({item_name}), in_for_each=in_for_each
    )


def _cache(keys: _Keys) -> str | None:
    """The step's cache salt: ``cache: true`` gives ``""``, ``{salt: v2}`` (or
    ``version``) gives ``"v2"``; absent or ``false``, ``None``."""
    raw = keys.get("cache", False)
    if isinstance(raw, bool):
        return "" if raw else None
    if not isinstance(raw, dict):
        raise keys.error(f"cache takes true, false or {{salt: v2}}, got {_kind(raw)}", "cache")
    sub = _Keys(
        keys.doc, raw, keys.at("cache"), _CACHE_KEYS, "cache", step=keys.step, lenient=False
    )
    salt = sub.get("salt", "")
    if isinstance(salt, bool) or not isinstance(salt, str | int):
        raise sub.error(f"{sub.found['salt']} must be a string or a whole number", "salt")
    return str(salt)


def _on_error(keys: _Keys) -> OnError:
    if "on_error" not in keys:
        return OnError()
    raw = keys.get("on_error")
    if isinstance(raw, str):
        raw = {"action": raw}
    sub = _Keys(keys.doc, raw, keys.at("on_error"), _ON_ERROR_KEYS, "on_error", step=keys.step)
    action = sub.get("action", "fail")
    canonical: dict[str, Literal["fail", "retry", "use_default"]] = {
        "fail": "fail",
        "retry": "retry",
        "use_default": "use_default",
        "useDefault": "use_default",
    }
    if action not in canonical:
        hint = (
            " (Stepflow's 'continue' is spelled use_default here)"
            if action == "continue"
            else did_you_mean(str(action), canonical)
        )
        raise sub.error(
            f"on_error action must be fail, retry or use_default, got {action!r}{hint}", "action"
        )
    chosen = canonical[action]
    for key, allowed in (
        ("max_retries", "retry"),
        ("wait", "retry"),
        ("backoff", "retry"),
        ("default_value", "use_default"),
    ):
        if key in sub and chosen != allowed:
            raise sub.error(f"{sub.found[key]} only applies to action {allowed}", key)
    max_retries = sub.get("max_retries", 3)
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise sub.error("max_retries must be a whole number >= 0", "max_retries")
    wait = sub.get("wait", 0.5)
    backoff = sub.get("backoff", 2.0)
    for key, value in (("wait", wait), ("backoff", backoff)):
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise sub.error(f"{key} must be a number >= 0", key)
    return OnError(chosen, max_retries, sub.get("default_value"), float(wait), float(backoff))


def _check_refs(
    doc: Document, refs: list[tuple[str, DocPath]], index: Mapping[str, StepSpec], step: str | None
) -> None:
    for ref, where in refs:
        if ref not in index:
            raise doc.error(
                f"reference to unknown step {ref!r}{did_you_mean(ref, index)} "
                f"(steps: {listed(list(index)) or 'none'})",
                where,
                step=step,
            )


def _check_cycles(
    doc: Document, steps: tuple[StepSpec, ...], index: Mapping[str, StepSpec]
) -> None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    trail: list[str] = []

    def visit(step_id: str) -> None:
        state[step_id] = 1
        trail.append(step_id)
        for dep in sorted(index[step_id].deps):
            if state.get(dep) == 1:
                cycle = [*trail[trail.index(dep) :], dep]
                spec = index[step_id]
                where = next((w for r, w in spec.refs if r == dep), spec.where)
                raise doc.error(
                    f"reference cycle: {' -> '.join(cycle)}; a step cannot depend on its own "
                    "output (use next for loops)",
                    where,
                    step=step_id,
                )
            if state.get(dep) is None:
                visit(dep)
        trail.pop()
        state[step_id] = 2

    for step in steps:
        if step.id not in state:
            visit(step.id)


def _parse_tests(doc: Document, top: _Keys) -> tuple[tuple[TestCase, ...], Any, Any]:
    if "test" not in top:
        return (), None, None
    test = _Keys(doc, top.get("test"), top.at("test"), _TEST_KEYS, "test")
    raw_cases = test.get("cases", [])
    if not isinstance(raw_cases, list):
        raise test.error("test.cases must be a list", "cases")
    cases = []
    for i, raw in enumerate(raw_cases):
        where = (*test.at("cases"), i)
        case = _Keys(doc, raw, where, _CASE_KEYS, "a test case")
        name = case.get("name", f"case {i + 1}")
        expected = case.get("output")
        if expected is not None and (
            not isinstance(expected, dict)
            or expected.get("outcome") not in ("success", "failed", "skipped")
        ):
            raise case.error(
                "a test case's output is {outcome: success, result: ...} or "
                "{outcome: failed, error: {code, message}}",
                "output",
            )
        cases.append(
            TestCase(str(name), case.get("input"), expected, where, case.get("description"))
        )
    if "config" in test and "config_file" in test:
        raise test.error("test.config and test.config_file exclude each other; keep one", "config")
    return tuple(cases), test.get("config"), test.get("config_file")
