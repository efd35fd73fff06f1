"""What a ``run-batch`` run is, for its fingerprint: the flow, its config, its variables.

:class:`FlowIdentity` holds content hashes of the flow file and of the config file
that shapes it, and the ``--var`` values; the fingerprint
(:mod:`pocketbatch.batch._sidecar`) stores it with the variables only hashed (they
may be secrets), and a resume compares the run against it (:meth:`FlowIdentity.changes`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pocketbatch.loader._config_files import find_config

if TYPE_CHECKING:
    from pocketbatch.loader import LoadedFlow

__all__ = ("FlowIdentity",)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def _variable_hashes(variables: Mapping[str, Any], salt: bytes) -> dict[str, str]:
    """Each variable's value, hashed with a key of the fingerprint's own (a secret
    passed as ``--var`` is not written, nor guessable from a plain hash)."""
    out: dict[str, str] = {}
    for name, value in sorted(variables.items()):
        text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=repr)
        out[name] = hashlib.blake2b(text.encode(), key=salt, digest_size=16).hexdigest()
    return out


@dataclass(frozen=True)
class FlowIdentity:
    """The flow a batch runs: content hashes of the flow file and of the config file
    that shapes it (``--config``, the flow's ``test.config_file``, or a
    ``pocketbatch.yaml`` / ``stepflow-config.yml`` beside it), and the ``--var``
    values (kept in memory; the fingerprint stores them only hashed, as they may be
    secrets).

    Example:
        >>> from pocketbatch import load_flow
        >>> identity = FlowIdentity.of(load_flow("output: 1\\n", variables={"k": 2}))
        >>> identity.flow, identity.config, sorted(identity.variables)
        ('<text>', None, ['k'])
    """

    flow: str
    flow_sha256: str
    config: str | None = None
    config_sha256: str | None = None
    variables: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, flow: LoadedFlow) -> FlowIdentity:
        """The identity of a loaded flow, from the files as they are now."""
        recipe = flow.recipe
        source = recipe.source if recipe is not None else None
        path = flow.spec.doc.path
        if path is not None:
            name, digest = str(Path(path).resolve()), _sha256_file(Path(path))
        else:
            text = source if source is not None else repr(flow.spec)
            name, digest = "<text>", hashlib.sha256(text.encode()).hexdigest()
        config: Path | None = None
        if recipe is not None and recipe.config is not None:
            config = Path(recipe.config)
        elif flow.spec.test_config_file:
            config = (flow.flow_dir or Path.cwd()) / flow.spec.test_config_file
        elif flow.spec.test_config is None:  # an inline config is in the flow file
            config = find_config(flow.flow_dir)
        return cls(
            name,
            digest,
            None if config is None else str(config.resolve()),
            None if config is None or not config.is_file() else _sha256_file(config),
            dict(flow.variables),
        )

    def to_json(self, salt: bytes) -> dict[str, Any]:
        """As stored in the fingerprint's header (variables hashed with ``salt``)."""
        return {
            "flow": {"path": self.flow, "sha256": self.flow_sha256},
            "config": None
            if self.config is None
            else {"path": self.config, "sha256": self.config_sha256},
            "salt": salt.hex(),
            "variables": _variable_hashes(self.variables, salt),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> tuple[FlowIdentity, bytes, dict[str, str]]:
        """Read back :meth:`to_json`: the identity (without variables), the salt and
        the variables' hashes. Raises ``KeyError``/``TypeError``/``ValueError`` when
        malformed."""
        config = data["config"]
        variables = data["variables"]
        if not isinstance(variables, dict):
            raise TypeError("variables is not a mapping")
        identity = cls(
            str(data["flow"]["path"]),
            str(data["flow"]["sha256"]),
            None if config is None else str(config["path"]),
            None if config is None or config["sha256"] is None else str(config["sha256"]),
        )
        hashes = {str(k): str(v) for k, v in variables.items()}
        return identity, bytes.fromhex(data["salt"]), hashes

    def changes(
        self, first: FlowIdentity, salt: bytes, variables: Mapping[str, str]
    ) -> tuple[list[str], list[str]]:
        """``(problems, notes)``: how this run differs from ``first`` (whose variables
        hashed with ``salt`` were ``variables``). Problems (the flow or its config)
        refuse a resume; notes (``--var`` values) only warn, as a variable often tunes
        how a run goes (a timeout, a rate) rather than what it gives, and only the
        user knows which."""
        problems: list[str] = []
        if self.flow_sha256 != first.flow_sha256:
            where = Path(self.flow).name
            if Path(first.flow).name != where:
                where = f"first run: {first.flow}, now: {self.flow}"
            problems.append(f"the flow changed since the first run ({where})")
        if self.config_sha256 != first.config_sha256 or (self.config is None) != (
            first.config is None
        ):
            if first.config is None or self.config is None:
                problems.append(
                    f"the first run used {'no config' if first.config is None else first.config}"
                    f", this one {'no config' if self.config is None else self.config}"
                )
            else:
                problems.append(f"the config changed since the first run ({self.config})")
        now = _variable_hashes(self.variables, salt)
        notes = [
            f"--var {name} differs from the first run's (the records already written used "
            "the first run's value)"
            for name in sorted(set(now) | set(variables))
            if now.get(name) != variables.get(name)
        ]
        return problems, notes
