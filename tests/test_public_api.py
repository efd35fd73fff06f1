"""The public surface of the pocketbatch package."""

from __future__ import annotations

import inspect
import subprocess
import sys
import types

import pytest

import pocketbatch

PUBLIC = [name for name in pocketbatch.__all__ if name != "__version__"]


def test_all_is_a_tuple() -> None:
    """pocketbatch.__all__ is a tuple."""
    assert isinstance(pocketbatch.__all__, tuple)


def test_all_matches_public_names() -> None:
    """__all__ equals the sorted public, non-module names of the package (including
    those imported on first use) plus __version__."""
    public = {
        name
        for name, value in vars(pocketbatch).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    lazy = set(pocketbatch._LAZY)
    assert pocketbatch.__all__ == tuple(sorted(public | lazy | {"__version__"}))


def test_all_has_no_duplicates_and_resolves() -> None:
    """Every name in __all__ is unique and exists on the package."""
    assert len(set(pocketbatch.__all__)) == len(pocketbatch.__all__)
    for name in pocketbatch.__all__:
        assert hasattr(pocketbatch, name), name


def test_version_is_a_string() -> None:
    """__version__ is a non-empty string."""
    assert isinstance(pocketbatch.__version__, str)
    assert pocketbatch.__version__


@pytest.mark.parametrize("name", PUBLIC)
def test_public_names_have_docstring_with_example(name: str) -> None:
    """Every public class or function has a docstring containing a '>>>' example."""
    obj = getattr(pocketbatch, name)
    assert inspect.isclass(obj) or inspect.isfunction(obj), name
    doc = obj.__doc__
    assert doc, f"{name} has no docstring"
    assert ">>>" in doc, f"{name}'s docstring has no example"


def test_package_docstring_has_example() -> None:
    """The package docstring itself shows an example."""
    assert pocketbatch.__doc__
    assert ">>>" in pocketbatch.__doc__


def test_import_is_light() -> None:
    """`import pocketbatch` in a fresh interpreter imports no optional dependency."""
    heavy = ["yaml", "httpx", "jsonschema", "orjson", "tqdm", "fastapi", "uvicorn", "ray"]
    code = (
        "import sys, pocketbatch\n"
        f"heavy = {heavy!r}\n"
        "loaded = sorted(m for m in heavy if m in sys.modules)\n"
        "print(','.join(loaded))\n"
        "sys.exit(1 if loaded else 0)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert proc.stdout.strip() == ""


def test_import_completes_in_fresh_interpreter() -> None:
    """`import pocketbatch` alone exits 0 in a fresh interpreter, with -W error."""
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", "import pocketbatch"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
