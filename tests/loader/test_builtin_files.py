"""/builtin/load_file against real files: formats, the root, confinement, failures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _builtin_support import fails, make_ctx

from pocketbatch.loader._builtin_files import LoadFile

# --------------------------------------------------------------------------- load_file


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """``tmp_path/flows`` (the root) with data files, and a secret beside it."""
    root = tmp_path.resolve() / "flows"  # resolved, so messages can be compared
    (root / "data").mkdir(parents=True)
    (root / "data" / "config.json").write_text('{"name": "café", "n": [1, 2]}', encoding="utf-8")
    (root / "data" / "config.yaml").write_text("name: café\nn: [1, 2]\n", encoding="utf-8")
    (root / "data" / "config.yml").write_text("- a\n- b\n", encoding="utf-8")
    (root / "data" / "notes.md").write_text("# Notes\nnaïve\n", encoding="utf-8")
    (tmp_path / "secret.json").write_text('{"token": "s3cret"}', encoding="utf-8")
    return root


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("path", "data", "fmt"),
    [
        ("data/config.json", {"name": "café", "n": [1, 2]}, "json"),
        ("data/config.yaml", {"name": "café", "n": [1, 2]}, "yaml"),
        ("data/config.yml", ["a", "b"], "yaml"),
        ("data/notes.md", "# Notes\nnaïve\n", "text"),
    ],
)
async def test_load_file_infers_the_format(tree: Path, path: str, data: Any, fmt: str) -> None:
    out = await LoadFile()({"path": path}, make_ctx(flow_dir=tree))
    resolved = (tree / path).resolve()
    assert out == {
        "data": data,
        "metadata": {
            "resolved_path": str(resolved),
            "size_bytes": len(resolved.read_bytes()),
            "format": fmt,
        },
    }


@pytest.mark.asyncio
async def test_load_file_size_counts_bytes_not_characters(tree: Path) -> None:
    out = await LoadFile()({"path": "data/notes.md"}, make_ctx(flow_dir=tree))
    assert out["metadata"]["size_bytes"] == len("# Notes\nnaïve\n") + 1


@pytest.mark.asyncio
async def test_load_file_explicit_format_wins(tree: Path) -> None:
    ctx = make_ctx(flow_dir=tree)
    as_text = await LoadFile()({"path": "data/config.json", "format": "text"}, ctx)
    assert as_text["data"] == '{"name": "café", "n": [1, 2]}'
    assert as_text["metadata"]["format"] == "text"
    as_yaml = await LoadFile()({"path": "data/config.json", "format": "yaml"}, ctx)
    assert as_yaml["data"] == {"name": "café", "n": [1, 2]}  # JSON is YAML


@pytest.mark.asyncio
async def test_load_file_root_option_beats_flow_dir(tree: Path) -> None:
    ctx = make_ctx(flow_dir=tree.parent, load_file_root=tree / "data")
    out = await LoadFile()({"path": "config.yml"}, ctx)
    assert out["data"] == ["a", "b"]


@pytest.mark.asyncio
async def test_load_file_without_flow_dir_uses_the_cwd(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tree / "data")
    out = await LoadFile()({"path": "config.yml"}, make_ctx())
    assert out["metadata"]["resolved_path"] == str((tree / "data" / "config.yml").resolve())


@pytest.mark.asyncio
async def test_load_file_accepts_an_absolute_path_inside_the_root(tree: Path) -> None:
    path = str((tree / "data" / "config.json").resolve())
    out = await LoadFile()({"path": path}, make_ctx(flow_dir=tree))
    assert out["data"]["n"] == [1, 2]


@pytest.mark.asyncio
async def test_load_file_follows_a_symlink_that_stays_inside(tree: Path) -> None:
    (tree / "link.json").symlink_to(tree / "data" / "config.json")
    out = await LoadFile()({"path": "link.json"}, make_ctx(flow_dir=tree))
    assert out["metadata"]["resolved_path"] == str((tree / "data" / "config.json").resolve())


def escapes(tree: Path) -> list[str]:
    """Three ways out of ``tree``: ``..``, an absolute path and a symlink."""
    (tree / "data" / "innocent.json").symlink_to(tree.parent / "secret.json")
    return ["../secret.json", str(tree.parent / "secret.json"), "data/innocent.json"]


@pytest.mark.asyncio
async def test_load_file_refuses_paths_outside_the_root(tree: Path) -> None:
    for path in escapes(tree):
        err = await fails(LoadFile(), {"path": path}, make_ctx(flow_dir=tree))
        assert err.code == "PERMISSION_DENIED", path
        assert f"outside {tree}" in err.message
        assert "load_file_anywhere=True" in err.message
        assert "load_file_root" in err.message
        assert "s3cret" not in err.message


@pytest.mark.asyncio
async def test_load_file_refusal_does_not_tell_whether_an_outside_file_exists(tree: Path) -> None:
    """An outside path gets the same message whether it exists, is missing, is a
    symlink loop, or is reached through a symlink inside: only the path as given
    and the root, never where it leads."""
    (tree.parent / "loop").symlink_to(tree.parent / "loop")
    (tree / "data" / "innocent.json").symlink_to(tree.parent / "secret.json")
    ctx = make_ctx(flow_dir=tree)
    given = ["../secret.json", "../nope.json", "../loop", "data/innocent.json"]
    messages = set()
    for path in given:
        err = await fails(LoadFile(), {"path": path}, ctx)
        assert err.code == "PERMISSION_DENIED", path
        assert "secret.json" not in err.message.replace(repr(path), ""), path
        messages.add(err.message.replace(repr(path), "<path>"))
    assert len(messages) == 1, messages


@pytest.mark.asyncio
async def test_load_file_refuses_an_escape_from_load_file_root(tree: Path) -> None:
    ctx = make_ctx(flow_dir=tree, load_file_root=tree / "data")
    err = await fails(LoadFile(), {"path": "../data/../data/../../secret.json"}, ctx)
    assert err.code == "PERMISSION_DENIED"
    err = await fails(LoadFile(), {"path": "../flows/data/config.json"}, ctx)
    assert err.code == "PERMISSION_DENIED"


@pytest.mark.asyncio
async def test_load_file_anywhere_lifts_the_confinement(tree: Path) -> None:
    ctx = make_ctx(flow_dir=tree, load_file_anywhere=True)
    for path in escapes(tree):
        out = await LoadFile()({"path": path}, ctx)
        assert out["data"] == {"token": "s3cret"}, path
        assert out["metadata"]["resolved_path"] == str((tree.parent / "secret.json").resolve())


@pytest.mark.asyncio
async def test_load_file_missing_file_is_not_found(tree: Path) -> None:
    err = await fails(LoadFile(), {"path": "data/nope.json"}, make_ctx(flow_dir=tree))
    assert err.code == "NOT_FOUND"
    assert str((tree / "data" / "nope.json").resolve()) in err.message


@pytest.mark.asyncio
async def test_load_file_missing_file_outside_the_root_is_refused_first(tree: Path) -> None:
    err = await fails(LoadFile(), {"path": "../nope.json"}, make_ctx(flow_dir=tree))
    assert err.code == "PERMISSION_DENIED"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("bad.json", '{"a": 1,\n "b": }', "is not valid JSON: Expecting value (line 2, column 7)"),
        ("bad.yaml", "a: [1, 2\nb: 3\n", "is not valid YAML: "),
        ("evil.yaml", "!!python/object/apply:os.system ['true']\n", "is not valid YAML: "),
    ],
)
async def test_load_file_unparseable_content_is_invalid_input(
    tree: Path, name: str, content: str, expected: str
) -> None:
    (tree / name).write_text(content, encoding="utf-8")
    err = await fails(LoadFile(), {"path": name}, make_ctx(flow_dir=tree))
    assert err.code == "INVALID_INPUT"
    assert err.message.startswith(f"/builtin/load_file: {(tree / name).resolve()} {expected}")


@pytest.mark.asyncio
async def test_load_file_yaml_error_gives_the_line(tree: Path) -> None:
    (tree / "bad.yaml").write_text("ok: 1\nlist: [1, 2\nnext: 3\n", encoding="utf-8")
    err = await fails(LoadFile(), {"path": "bad.yaml"}, make_ctx(flow_dir=tree))
    assert "(line " in err.message


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("input", "message"),
    [
        ({}, "'path' is required"),
        ({"path": 3}, "'path' must be a string, got int"),
        ({"path": ""}, "'path' must not be empty"),
        (
            {"path": "a.json", "format": "xml"},
            "'format' must be one of 'json', 'yaml', 'text', got 'xml'",
        ),
        ("a.json", "input must be an object, got str"),
    ],
)
async def test_load_file_rejects_bad_input(tree: Path, input: Any, message: str) -> None:
    err = await fails(LoadFile(), input, make_ctx(flow_dir=tree))
    assert (err.code, err.message) == ("INVALID_INPUT", f"/builtin/load_file: {message}")


@pytest.mark.asyncio
async def test_load_file_refuses_a_directory(tree: Path) -> None:
    err = await fails(LoadFile(), {"path": "data"}, make_ctx(flow_dir=tree))
    assert err.code == "INVALID_INPUT"
    assert "is a directory" in err.message
