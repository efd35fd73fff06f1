"""Finding and reading the component config of a flow.

:func:`find_config` looks beside a flow for ``pocketbatch.yaml`` or Stepflow's
``stepflow-config.yml``; :func:`load_config` reads either (the format is
detected); :func:`config_for_flow` picks the config a flow uses, as Stepflow does;
:func:`options_from_config` turns what the config says into
:class:`~pocketbatch.loader.LoaderOptions`.
"""

from __future__ import annotations

from pathlib import Path

from pocketbatch.loader._component import LoaderOptions
from pocketbatch.loader._config import ComponentConfig
from pocketbatch.loader._config_pocketbatch import read_pocketbatch
from pocketbatch.loader._config_reader import ConfigReader, kind_of
from pocketbatch.loader._config_stepflow import read_stepflow
from pocketbatch.loader._source import Document, read_document
from pocketbatch.loader._spec import FlowSpec

__all__ = (
    "CONFIG_NAMES",
    "config_for_flow",
    "config_from_document",
    "find_config",
    "load_config",
    "options_from_config",
)

CONFIG_NAMES = (
    "pocketbatch.yaml",
    "pocketbatch.yml",
    "stepflow-config.test.yml",
    "stepflow-config.yml",
)


def find_config(flow_dir: Path | None) -> Path | None:
    """The component config beside a flow, or ``None``.

    Looks in ``flow_dir`` for ``pocketbatch.yaml``, ``pocketbatch.yml``,
    ``stepflow-config.test.yml`` and ``stepflow-config.yml``, in that order.

    Example:
        >>> find_config(None) is None
        True
    """
    if flow_dir is None:
        return None
    for name in CONFIG_NAMES:
        candidate = Path(flow_dir) / name
        if candidate.is_file():
            return candidate
    return None


def load_config(path: str | Path) -> ComponentConfig:
    """Read a ``pocketbatch.yaml`` or a Stepflow ``stepflow-config.yml``.

    The format is detected: a top-level ``plugins`` key (or a file named
    ``stepflow-config*``) means Stepflow's file, which is read as Stepflow reads it
    (unknown keys such as ``storageConfig`` are accepted). Anything else is
    pocketbatch's format, where unknown keys are errors::

        routes:                       # path prefix -> Python module
          /data: my_components.data   # '/data/validate' -> my_components.data.validate
          /tools:                     # or with its components listed: only these
            module: my_components
            components: [clean, text.count]   # '/tools/clean', '/tools/text/count'
        mocks:
          /mock/error:
            behaviors:
              - {input: {mode: error}, outcome: failed, error: {code: 8, message: error}}
        python_imports: true          # allow /python/<module>.<function>
        load_file: {root: data, anywhere: false}

    Routed modules are imported only when a flow uses them. A plain route reaches
    one name after its prefix (``-`` read as ``_``): a function or node class that
    the module defines, or lists in its ``__all__``; never a name starting with
    ``_``, a module, or anything inside a class or another module. A route with
    ``components`` (a list of dotted names, or a mapping from the path after the
    prefix to a dotted name) reaches exactly those.

    Raises:
        LoadError: the file cannot be read or parsed, or something in it is wrong;
            the message leads with ``file:line:column``.

    Example:
        >>> import pathlib, shutil, tempfile
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / "pocketbatch.yaml").write_text("routes:\\n  /data: tools.data\\n")
        >>> load_config(folder / "pocketbatch.yaml").routes
        {'/data': 'tools.data'}
        >>> shutil.rmtree(folder)
    """
    return config_from_document(read_document(path), Path(path).resolve())


def config_from_document(doc: Document, file: Path) -> ComponentConfig:
    """Read a config already parsed into ``doc`` (a file, or a flow's inline
    ``test.config``); ``file`` anchors relative module and ``load_file`` paths.

    Raises:
        LoadError: as :func:`load_config`.
    """
    data = doc.data
    if not isinstance(data, dict):
        raise doc.error(f"a component config must be a mapping, got {kind_of(data)}")
    if "plugins" in data or file.name.startswith("stepflow-config"):
        return read_stepflow(ConfigReader(doc, strict=False), data, file)
    return read_pocketbatch(ConfigReader(doc, strict=True), data, file)


def config_for_flow(
    spec: FlowSpec, doc: Document, config: str | Path | None, flow_dir: Path | None
) -> ComponentConfig | None:
    """The component config, looked up as Stepflow does: ``config`` (``--config``),
    else the flow's ``test.config_file``, else its inline ``test.config``, else a
    ``pocketbatch.yaml`` / ``stepflow-config.yml`` beside the flow."""
    if config is not None:
        return load_config(config)
    if spec.test_config_file:
        return load_config((flow_dir or Path.cwd()) / spec.test_config_file)
    if spec.test_config is not None:
        at = ("test", "config")
        inline = Document(
            data=spec.test_config,
            name=doc.name,
            path=doc.path,
            positions={p[2:]: pos for p, pos in doc.positions.items() if p[:2] == at},
        )
        return config_from_document(inline, doc.path or Path.cwd() / "<flow>")
    found = find_config(flow_dir)
    return load_config(found) if found is not None else None


def options_from_config(
    parsed: ComponentConfig | None, flow_dir: Path | None, allow_python_imports: bool
) -> LoaderOptions:
    allow = allow_python_imports
    root = None
    anywhere = False
    providers: tuple[tuple[str, float | None, float | None], ...] = ()
    if parsed is not None:
        providers = tuple((url, *limits) for url, limits in parsed.providers.items())
        if parsed.python_imports is False:
            allow = False
        root = parsed.load_file_root
        anywhere = bool(parsed.load_file_anywhere)
    return LoaderOptions(
        allow_python_imports=allow,
        load_file_root=root or flow_dir,
        load_file_anywhere=anywhere,
        provider_limits=providers,
    )
