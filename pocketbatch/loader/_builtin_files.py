"""``/builtin/load_file`` and the confinement every file a flow names goes through.

:func:`confined_path` decides whether a flow may read a path (``/builtin/load_file``
here, the sub-flow paths of ``/builtin/eval`` and ``/builtin/map`` elsewhere);
:class:`LoadFile` reads a JSON, YAML or text file. PyYAML is imported only when a
YAML file is read.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any, Final

from pocketbatch._errors import ComponentError, LoadError
from pocketbatch.loader._builtin_base import INVALID_INPUT, Builtin
from pocketbatch.loader._component import CallContext, LoaderOptions
from pocketbatch.loader._source import MAX_DEPTH, nesting_depth, parse_data_yaml

__all__ = ("LoadFile", "confined_path")

_FORMATS: Final = ("json", "yaml", "text")


def confined_path(
    given: str,
    options: LoaderOptions,
    flow_dir: Path | None,
    *,
    what: str,
    base: Path | None = None,
) -> Path:
    """The file ``given`` names, resolved, after checking that a flow may read it.

    Every builtin that reads a file a flow names (``/builtin/load_file``, and the
    sub-flow paths of ``/builtin/eval`` and ``/builtin/map``) goes through here.
    The *root* is ``options.load_file_root``, else ``flow_dir``, else the current
    directory (the server sets it to ``--data-dir``). A relative ``given`` is taken
    from ``base`` (default: the root); an absolute one stands alone. Unless
    ``options.load_file_anywhere`` is set, the path must lie inside the root twice
    over: first as written (``..`` folded, no file system access, so a path outside
    is refused the same way whether or not it exists), then with symlinks resolved.

    Args:
        given: the path as the flow wrote it.
        options: the loader's options (root and ``load_file_anywhere``).
        flow_dir: the directory of the flow naming the file (``None``: none).
        what: who asks, to start the message with (``/builtin/load_file``).
        base: the directory a relative ``given`` is taken from.

    Raises:
        ComponentError: ``PERMISSION_DENIED`` for a path outside the root; the
            message names ``given`` and the root only, never where the path leads.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.gettempdir()).resolve()
        >>> confined_path("a/b.json", LoaderOptions(load_file_root=root), None, what="x") == (
        ...     root / "a" / "b.json"
        ... )
        True
        >>> try:
        ...     confined_path("../b.json", LoaderOptions(load_file_root=root), None, what="x")
        ... except ComponentError as exc:
        ...     print(exc.code)
        PERMISSION_DENIED
    """
    if options.load_file_root is not None:
        root = Path(options.load_file_root)
    elif flow_dir is not None:
        root = Path(flow_dir)
    else:
        root = Path.cwd()
    real_root = root.resolve()
    start = base if base is not None else root
    written = Path(os.path.normpath(os.path.join(os.path.abspath(start), given)))
    outside = ComponentError(
        "PERMISSION_DENIED",
        f"{what}: {given!r} is outside {real_root}; to allow it, set "
        "LoaderOptions(load_file_root=...) (the server's --data-dir) to a directory that "
        "contains it, or LoaderOptions(load_file_anywhere=True)",
    )
    anywhere = options.load_file_anywhere
    if not anywhere and not (
        written.is_relative_to(os.path.abspath(root)) or written.is_relative_to(real_root)
    ):
        raise outside  # decided from the text alone: nothing outside the root is looked at
    try:
        resolved = written.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise ComponentError(
            INVALID_INPUT, f"{what}: {given!r} cannot be resolved: {exc}"
        ) from None
    if not anywhere and not resolved.is_relative_to(real_root):
        raise outside  # a symlink inside the root leads out of it
    return resolved


class LoadFile(Builtin):
    """``/builtin/load_file``: read a JSON, YAML or text file.

    Input ``{path: str, format?: "json" | "yaml" | "text"}``. Without ``format``
    it follows the extension: ``.json`` is JSON, ``.yaml``/``.yml`` YAML,
    anything else text. Output ``{data, metadata: {resolved_path, size_bytes,
    format}}``.

    A relative ``path`` is taken from the *root*: ``options.load_file_root``,
    else the flow file's directory, else the current directory. Unless
    ``options.load_file_anywhere`` is set, the file (as written, and with
    symlinks resolved) must lie inside the root, or the step fails with
    ``PERMISSION_DENIED`` (see :func:`confined_path`, which the sub-flow paths of
    ``/builtin/eval`` and ``/builtin/map`` share). A missing file is
    ``NOT_FOUND``; a file that does not parse as its format is
    ``INVALID_INPUT``. YAML is read with PyYAML's C safe loader only.

    Example:
        >>> import asyncio, tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     _ = (Path(tmp) / "cfg.yaml").write_text("size: 3\\n")
        ...     ctx = CallContext(step_id="s", flow_dir=Path(tmp), variables={})
        ...     out = asyncio.run(LoadFile()({"path": "cfg.yaml"}, ctx))
        >>> out["data"], out["metadata"]["format"], out["metadata"]["size_bytes"]
        ({'size': 3}, 'yaml', 8)
    """

    path = "/builtin/load_file"

    async def __call__(self, input: Any, ctx: CallContext, /) -> Any:
        data = self.mapping(input)
        given = self.field(data, "path", "a string", required=True)
        fmt = self.field(data, "format", "a string")
        if fmt is not None and fmt not in _FORMATS:
            listed = ", ".join(repr(f) for f in _FORMATS)
            raise self.invalid(f"'format' must be one of {listed}, got {fmt!r}")
        if not given:
            raise self.invalid("'path' must not be empty")
        return await asyncio.to_thread(self._load, given, fmt, ctx)

    def _load(self, given: str, fmt: str | None, ctx: CallContext) -> dict[str, Any]:
        resolved = confined_path(given, ctx.options, ctx.flow_dir, what=self.path)
        if fmt is None:
            suffix = Path(given).suffix.lower()
            fmt = "json" if suffix == ".json" else "yaml" if suffix in (".yaml", ".yml") else "text"
        try:
            raw = resolved.read_bytes()
        except FileNotFoundError:
            raise ComponentError("NOT_FOUND", f"{self.path}: no such file: {resolved}") from None
        except IsADirectoryError:
            raise self.invalid(f"{resolved} is a directory, not a file") from None
        except PermissionError as exc:
            raise ComponentError(
                "PERMISSION_DENIED", f"{self.path}: cannot read {resolved}: {exc.strerror}"
            ) from None
        except OSError as exc:
            raise ComponentError(
                "COMPONENT_FAILED", f"{self.path}: cannot read {resolved}: {exc}"
            ) from None
        try:
            text = raw.decode("utf-8" if fmt == "text" else "utf-8-sig")
        except UnicodeDecodeError as exc:
            raise self.invalid(
                f"{resolved} is not valid UTF-8 ({exc.reason} at byte {exc.start})"
            ) from None
        content = self._parse(text, fmt, resolved)
        metadata = {"resolved_path": str(resolved), "size_bytes": len(raw), "format": fmt}
        return {"data": content, "metadata": metadata}

    def _parse(self, text: str, fmt: str, resolved: Path) -> Any:
        too_deep = f"{resolved} nests more than {MAX_DEPTH} levels deep"
        if fmt == "json":
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise self.invalid(
                    f"{resolved} is not valid JSON: {exc.msg} "
                    f"(line {exc.lineno}, column {exc.colno})"
                ) from None
            except RecursionError:  # deeper than Python's own parser goes
                raise self.invalid(too_deep) from None
            if nesting_depth(data, MAX_DEPTH) > MAX_DEPTH:
                raise self.invalid(too_deep)
            return data
        if fmt == "yaml":
            import yaml

            try:
                # The C *safe* loader only; aliases and nesting are limited.
                return parse_data_yaml(text, name=str(resolved))
            except LoadError as exc:
                raise self.invalid(f"{exc}") from None
            except yaml.MarkedYAMLError as exc:
                mark = exc.problem_mark or exc.context_mark
                problem = " ".join(p for p in (exc.context, exc.problem) if p) or str(exc)
                where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
                raise self.invalid(f"{resolved} is not valid YAML: {problem}{where}") from None
            except yaml.YAMLError as exc:
                raise self.invalid(f"{resolved} is not valid YAML: {exc}") from None
        return text
