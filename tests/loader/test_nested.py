"""Sub-flow paths of /builtin/eval and /builtin/map: confined like /builtin/load_file.

A path outside the root (``LoaderOptions.load_file_root``, by default the flow's
folder; the server's ``--data-dir``) is refused before anything is read, with the
same message whether or not the file exists, and never with the file's content.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pocketbatch import LoadError, load_flow
from pocketbatch.loader import LoaderOptions

# What /etc/passwd looks like: a flow-shaped error about it would quote it.
SECRET = "root:x:0:0:s3cret:/root:/bin/bash\n"
INNER = "output: {doubled: {$input: x}}\n"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """``tmp_path/flows`` (the flow's folder) with a sub-flow in it and one in a
    subfolder; outside it a secret file, a sub-flow and a symlink loop."""
    root = tmp_path.resolve() / "flows"
    (root / "sub").mkdir(parents=True)
    (root / "inner.yaml").write_text(INNER, encoding="utf-8")
    (root / "sub" / "uses_sibling.yaml").write_text(
        "steps:\n  - id: e\n    component: /builtin/eval\n"
        "    input: {flow: ../inner.yaml, input: {x: {$input: x}}}\n"
        "output: {$step: e, path: result.result}\n",
        encoding="utf-8",
    )
    (tmp_path / "secret.yaml").write_text(SECRET, encoding="utf-8")
    (tmp_path / "outside_inner.yaml").write_text(INNER, encoding="utf-8")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (root / "innocent.yaml").symlink_to(tmp_path / "secret.yaml")
    return root


def eval_flow(source: str) -> str:
    return (
        "steps:\n  - id: e\n    component: /builtin/eval\n"
        f"    input: {{flow: {source}, input: {{x: 2}}}}\n"
        "output: {$step: e, path: result}\n"
    )


def map_flow(source: str) -> str:
    return (
        "steps:\n  - id: m\n    component: /builtin/map\n"
        f"    input: {{workflow: {source}, items: [{{x: 1}}]}}\n"
        "output: {$step: m}\n"
    )


def outside(tree: Path) -> dict[str, str]:
    """Paths out of ``tree``: to an existing secret, a missing file, a symlink loop,
    an existing valid flow, by '..', absolutely and through a symlink inside."""
    up = tree.parent
    return {
        "../secret.yaml": "exists",
        "../missing.yaml": "missing",
        "../loop": "a symlink loop",
        "../outside_inner.yaml": "a valid flow",
        str(up / "secret.yaml"): "exists, absolute",
        str(up / "missing.yaml"): "missing, absolute",
        "innocent.yaml": "a symlink inside to the secret",
        "sub/../../secret.yaml": "exists, by a detour",
    }


def refusal(source: str, root: Path) -> str:
    return f"nested flow: {source!r} is outside {root}; to allow it"


@pytest.mark.parametrize("make", [eval_flow, map_flow])
def test_a_sub_flow_path_outside_the_flow_folder_is_a_load_error(tree: Path, make: Any) -> None:
    """Written in the file: a load error at the path's line and column, the same
    whether the file exists or not, without its content."""
    for source, kind in outside(tree).items():
        flow = tree / "flow.yaml"
        flow.write_text(make(f"'{source}'"), encoding="utf-8")
        with pytest.raises(LoadError) as info:
            load_flow(flow)
        message = str(info.value)
        assert message.startswith(f"{flow}:4:"), (kind, message)
        assert refusal(source, tree) in message, kind
        assert "s3cret" not in message, kind


@pytest.mark.parametrize("make", [eval_flow, map_flow])
def test_a_sub_flow_path_from_the_input_outside_the_root_fails_the_step(
    tree: Path, make: Any
) -> None:
    """Chosen at run time: the step fails with PERMISSION_DENIED, the same message
    whether the file exists or not, without its content."""
    flow = load_flow(make("{$input: path}"), options=_root(tree))
    for source, kind in outside(tree).items():
        result = flow.run({"path": source}).to_dict()
        assert result["outcome"] == "failed", kind
        assert result["error"]["code"] == "PERMISSION_DENIED", (kind, result)
        assert result["error"]["message"].startswith(refusal(source, tree)), kind
        assert "s3cret" not in str(result), kind


def _root(tree: Path, **options: Any) -> LoaderOptions:
    return LoaderOptions(allow_python_imports=False, load_file_root=tree, **options)


def test_sub_flow_paths_inside_the_root_still_load(tree: Path) -> None:
    """Beside the flow, in a subfolder, and a subfolder's flow naming its sibling
    by '..' (relative to its own folder) while staying inside the root."""
    flow = tree / "flow.yaml"
    flow.write_text(eval_flow("inner.yaml"), encoding="utf-8")
    assert load_flow(flow).run({}).result == {"outcome": "success", "result": {"doubled": 2}}
    flow.write_text(eval_flow("sub/uses_sibling.yaml"), encoding="utf-8")
    result = load_flow(flow).run({}).result
    assert result == {"outcome": "success", "result": {"doubled": 2}}


def test_server_style_root_takes_relative_paths_from_it(tree: Path) -> None:
    """A flow given as text (as the server gets it) with load_file_root set (the
    server's --data-dir): relative sub-flow paths are taken from the root."""
    flow = load_flow(eval_flow("{$input: path}"), options=_root(tree))
    assert flow.run({"path": "inner.yaml"}).result["result"] == {"doubled": 2}
    assert flow.run({"path": str(tree / "inner.yaml")}).result["result"] == {"doubled": 2}


def test_load_file_anywhere_lifts_the_confinement_for_sub_flows(tree: Path) -> None:
    """The option that lifts /builtin/load_file's confinement lifts this one too."""
    options = _root(tree, load_file_anywhere=True)
    flow = load_flow(eval_flow("{$input: path}"), options=options)
    result = flow.run({"path": "../outside_inner.yaml"}).result
    assert result["result"] == {"doubled": 2}
