"""What ``run-batch`` keeps beside its output: a fingerprint of the run, and a lock.

A resumed run must continue *the same* run: the same flow and config, the same
inputs for every record already written. And only one run may write an output at
a time. So an output ``OUT.jsonl`` (a regular file) gets two companions:

* ``OUT.jsonl.lock``: held with an exclusive POSIX lock (``fcntl.lockf``) for the
  whole run, holding the run's process id. A second run on the same output fails at
  once (:func:`lock_output`). The operating system drops the lock when the process
  ends, even by SIGKILL, so resuming after a crash just works; a lock file left
  behind by a crash is harmless. POSIX locks (not ``flock``) because they belong to
  the process: worker processes forked by ``--executor process`` do not inherit
  them, so a worker outliving its parent cannot keep the output locked. On Windows
  there is no lock (not supported there).

* ``OUT.jsonl.pocketbatch``, the *fingerprint* (:class:`Fingerprint`): what the run
  is (flow file and config file content hashes, ``--var`` values as hashes, never
  in clear) and which inputs its records come from. The records themselves are left
  exactly as they are (byte-identical to those of a run without a fingerprint and
  to the server's).

The inputs part must say exactly which inputs the records in the output came from,
at any moment a crash may stop the run; yet an fsync, or even a write, per record
would cost too much (a batch runs ~24k items/s). The layout::

    {"pocketbatch": "run-batch fingerprint", "format": 1, "batch": B, ...}\\n   (header)
    B line slots, 32 bytes each                                              (ring)
    checkpoints, 32 bytes each, appended                                      (log)

Every input line (its content without the line ending; blank lines are not
inputs) has a 16-byte BLAKE2b digest ``d[i]``; ``H(n)`` hashes ``d[0..n-1]``.

* a checkpoint ``(n, H(n))`` is appended only when the first ``n`` records are
  written, so a checkpoint never claims more than the output holds;
* then the digests of the next ``B`` input lines are written into the ring (slot
  ``i % B`` holds ``(i, d[i])``), *before* any of their records is written.

So whenever a record ``i`` is in the output, its digest is in the ring or covered
by a checkpoint: with ``K`` records, the last checkpoint ``c <= K`` covers inputs
``0..c-1`` and the ring holds ``c..K-1`` (it is refilled only after the next
checkpoint). That costs two small writes per ``B`` (256) records and no fsync: a
killed process's writes are kept by the operating system. Each slot and
checkpoint carries its own check (a CRC), so a torn or missing one (after a power
loss, not a crash) reads as missing: a resume then refuses (a false alarm the
user can override with ``--force``) rather than accepting inputs it cannot check.

At the start of a run the fingerprint is written anew (to a temporary file,
fsync'ed, renamed), after the output was truncated (a fresh run) or its torn last
line cut (a resume), so the two never disagree about the records before it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Self

from pocketbatch._errors import PocketbatchError

if TYPE_CHECKING:
    from pocketbatch.loader import LoadedFlow

__all__ = (
    "CHECKPOINT_EVERY",
    "Fingerprint",
    "FlowIdentity",
    "InputsPrefix",
    "OutputLock",
    "check_resume",
    "lock_output",
    "lock_path",
    "sidecar_path",
)

CHECKPOINT_EVERY = 256
"""Records between two checkpoints of a run's inputs (and the ring's size)."""

FORMAT = 1
_KIND = "run-batch fingerprint"
_SLOT = struct.Struct("<Q16s8s")  # index + 1 (0: empty) or count, digest, check
_HEADER_MAX = 1 << 20


def sidecar_path(output: str | Path) -> Path:
    """The fingerprint file of ``output``.

    Example:
        >>> sidecar_path("out/results.jsonl").as_posix()
        'out/results.jsonl.pocketbatch'
    """
    output = Path(output)
    return output.with_name(output.name + ".pocketbatch")


def lock_path(output: str | Path) -> Path:
    """The lock file of ``output``.

    Example:
        >>> lock_path("out/results.jsonl").as_posix()
        'out/results.jsonl.lock'
    """
    output = Path(output)
    return output.with_name(output.name + ".lock")


# -- the lock -----------------------------------------------------------------------------

_held: set[Path] = set()  # POSIX locks do not exclude the process holding them


class OutputLock:
    """An exclusive lock on an output, held until :meth:`release` (see the module
    docstring). Made by :func:`lock_output`.

    Example:
        >>> import pathlib, tempfile
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "out.jsonl"
        >>> with lock_output(out):
        ...     lock_output(out)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        pocketbatch._errors.PocketbatchError: ...out.jsonl is in use by another pocketbatch ...
    """

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path = path
        self._fd = fd

    def release(self) -> None:
        """Remove the lock file and let go (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        _held.discard(self.path)
        # While still locked: a run that opened the file meanwhile sees it gone, retries.
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def lock_output(output: str | Path) -> OutputLock:
    """Lock ``output`` for this run, or fail at once if another run holds it.

    Raises:
        PocketbatchError: another run (or this process) holds the lock (the message
            names the output and the holder's process id), or the lock file cannot be
            created (no such directory, no permission).
    """
    path = lock_path(Path(output).resolve())
    try:
        import fcntl
    except ImportError:  # Windows: no lock
        return OutputLock(path, None)
    if path in _held:
        raise _in_use(output, str(os.getpid()))
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise PocketbatchError(
                f"cannot lock --output {output}: {exc.strerror} ({path})"
            ) from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip()
            os.close(fd)
            raise _in_use(output, holder) from None
        # The holder before us may have removed the file just before we opened it:
        # then our lock is on a file nobody else sees, so start again.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held.add(path)
    return OutputLock(path, fd)


def _in_use(output: str | Path, holder: str) -> PocketbatchError:
    pid = f" (pid {holder})" if holder.isdigit() else ""
    return PocketbatchError(
        f"{output} is in use by another pocketbatch run{pid}; wait for it to end, "
        "or choose another --output"
    )


# -- what the run is ----------------------------------------------------------------------


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
        from pocketbatch.loader._config_files import find_config

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


# -- which inputs -------------------------------------------------------------------------


def _line_digest(raw: bytes) -> bytes:
    """An input line's digest: its content without the line ending."""
    return hashlib.blake2b(raw.rstrip(b"\r\n"), digest_size=16).digest()


def _running() -> Any:
    return hashlib.blake2b(digest_size=16, person=b"pb-inputs")


_HEAD = struct.Struct("<Q16s")
_CHECK = struct.Struct("<Q")
_LINE, _COUNT = zlib.crc32(b"pb-line"), zlib.crc32(b"pb-count")  # slot kinds


def _pack(key: int, digest: bytes, kind: int) -> bytes:
    head = _HEAD.pack(key, digest)
    return head + _CHECK.pack(zlib.crc32(head, kind))


def _unpack(raw: bytes, kind: int) -> tuple[int, bytes] | None:
    """(key, digest), or None for an empty, torn or foreign slot."""
    key, digest, check = _SLOT.unpack(raw)
    if _CHECK.unpack(check)[0] != zlib.crc32(raw[:24], kind):
        return None
    return key, digest


def _inputs(stream: IO[bytes]) -> Iterator[bytes]:
    """Each input (non-blank line) of ``stream``, as read."""
    for raw in stream:
        if raw.strip():
            yield raw


@dataclass
class InputsPrefix:
    """The first ``count`` inputs of a file, hashed: where they end (``offset``), the
    running hash after them, and checkpoints ``(n, H(n))`` every
    :data:`CHECKPOINT_EVERY` inputs and at ``count``.

    Example:
        >>> InputsPrefix.empty().count
        0
    """

    count: int
    offset: int
    running: Any
    checkpoints: list[tuple[int, bytes]]

    @classmethod
    def empty(cls) -> InputsPrefix:
        """No inputs yet: a fresh run."""
        running = _running()
        return cls(0, 0, running, [(0, running.digest())])


@dataclass
class _Stored:
    """A fingerprint file, read back."""

    identity: FlowIdentity
    salt: bytes
    variables: dict[str, str]  # hashed with salt
    batch: int
    ring: dict[int, bytes]  # input index -> digest
    checkpoints: dict[int, bytes]  # count -> running hash


class _Unreadable(Exception):
    pass


def _read_stored(path: Path) -> _Stored:
    """Read a fingerprint file. Raises FileNotFoundError, or _Unreadable."""
    with open(path, "rb") as stream:
        header = stream.readline(_HEADER_MAX)
        body = stream.read()
    try:
        data = json.loads(header)
        if not isinstance(data, dict) or data.get("pocketbatch") != _KIND:
            raise ValueError("not a pocketbatch fingerprint")
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r}, this pocketbatch reads {FORMAT}")
        batch = data["batch"]
        if not isinstance(batch, int) or batch < 1:
            raise ValueError(f"bad batch size {batch!r}")
        identity, salt, variables = FlowIdentity.from_json(data)
    except (ValueError, KeyError, TypeError) as exc:
        raise _Unreadable(str(exc)) from None
    size = _SLOT.size
    ring: dict[int, bytes] = {}
    for at in range(0, min(batch * size, len(body) - len(body) % size), size):
        slot = _unpack(body[at : at + size], _LINE)
        if slot is not None and slot[0] > 0:
            ring[slot[0] - 1] = slot[1]
    checkpoints: dict[int, bytes] = {}
    for at in range(batch * size, len(body) - size + 1, size):
        entry = _unpack(body[at : at + size], _COUNT)
        if entry is not None:
            checkpoints[entry[0]] = entry[1]
    return _Stored(identity, salt, variables, batch, ring, checkpoints)


def _hash_prefix(
    inputs: Path, done: int, stored: _Stored | None
) -> tuple[InputsPrefix, str | None]:
    """Hash the first ``done`` inputs of ``inputs`` (now), checking them against
    ``stored`` as far as it covers them. Returns the prefix (``count < done`` when
    the file has fewer inputs) and what differs first, if anything."""
    expected = stored.checkpoints if stored is not None else {}
    tail = max((n for n in expected if n <= done), default=0)  # the ring must cover the rest
    ring = stored.ring if stored is not None else {}
    running = _running()
    checkpoints = [(0, running.digest())]
    problem: str | None = None
    count = offset = number = 0
    block_start = 1  # the line number where the inputs since the last checkpoint start
    with open(inputs, "rb") as stream:
        while count < done:
            raw = stream.readline()
            if not raw:
                break
            offset += len(raw)
            number += 1
            if not raw.strip():
                continue
            digest = _line_digest(raw)
            if stored is not None and problem is None:
                if count in ring:  # known one by one: name the line
                    if ring[count] != digest:
                        problem = (
                            f"input line {number} of {inputs} differs from the one already run"
                        )
                elif count >= tail:
                    problem = (
                        f"its fingerprint does not cover inputs {count + 1} to {done}, "
                        "so they cannot be checked (was the output cut short or edited?)"
                    )
            running.update(digest)
            count += 1
            if count % CHECKPOINT_EVERY == 0 or count == done:
                checkpoints.append((count, running.digest()))
            want = expected.get(count)
            if want is not None:
                if problem is None and running.digest() != want:
                    problem = (
                        f"input line {number} of {inputs} differs from the one already run"
                        if block_start == number
                        else f"an input between line {block_start} and line {number} of "
                        f"{inputs} differs from the ones already run"
                    )
                block_start = number + 1
    return InputsPrefix(count, offset, running, checkpoints), problem


def check_resume(
    output: Path,
    identity: FlowIdentity,
    inputs: Path,
    done: int,
    *,
    force: bool = False,
    warn: Callable[[str], None],
) -> InputsPrefix:
    """Check that resuming ``output`` (holding ``done`` records) continues the same
    run: same flow and config, and the same first ``done`` inputs; return those inputs
    hashed, to go on from. With ``force``, a mismatch is only warned about.

    An output without a fingerprint (written by an older pocketbatch) cannot be
    checked: ``warn`` says so and the resume goes on.

    Raises:
        ResumeError: something changed (each change named), or the inputs are
            shorter than ``done`` (even with ``force``).

    Example:
        >>> import pathlib, tempfile
        >>> from pocketbatch import load_flow
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "in.jsonl").write_text('{"a": 1}\\n')
        >>> identity = FlowIdentity.of(load_flow("output: 1\\n"))
        >>> check_resume(d / "out.jsonl", identity, d / "in.jsonl", 0, warn=print).count
        0
    """
    from pocketbatch.batch._jsonl import ResumeError

    if done == 0:  # nothing written yet: nothing to mix
        return InputsPrefix.empty()
    sidecar = sidecar_path(Path(output).resolve())
    problems: list[str] = []
    stored: _Stored | None = None
    try:
        stored = _read_stored(sidecar)
    except FileNotFoundError:
        warn(
            f"{output} has no fingerprint ({sidecar.name}; written by an older pocketbatch?): "
            "cannot check that the flow and inputs are those of the first run; continuing"
        )
    except _Unreadable as exc:
        problems.append(f"its fingerprint {sidecar} cannot be read ({exc})")
    except OSError as exc:
        problems.append(f"its fingerprint {sidecar} cannot be read ({exc.strerror})")
    if stored is not None:
        changed, notes = identity.changes(stored.identity, stored.salt, stored.variables)
        problems.extend(changed)
        for note in notes:
            warn(note)
    prefix, inputs_problem = _hash_prefix(inputs, done, stored)
    if prefix.count < done:
        raise ResumeError(
            f"cannot resume {output}: the inputs are shorter than the {done} already run "
            f"({inputs} has {prefix.count}); resume only continues a run on the same inputs"
        )
    if inputs_problem is not None:
        problems.append(inputs_problem)
    if problems:
        if not force:
            raise ResumeError(
                f"cannot resume {output}: {'; '.join(problems)}. Rerun with --resume --force "
                "to continue anyway (the output then mixes records of both runs), or without "
                "--resume to start over"
            )
        warn(f"resuming anyway (--force), although {'; '.join(problems)}")
    return prefix


# -- writing it ---------------------------------------------------------------------------


def _pwrite(fd: int, data: bytes, offset: int) -> None:
    if hasattr(os, "pwrite"):
        os.pwrite(fd, data, offset)
    else:  # pragma: no cover - Windows
        os.lseek(fd, offset, os.SEEK_SET)
        os.write(fd, data)


class Fingerprint:
    """The fingerprint of a run being written; see the module docstring.

    Call :meth:`before` before writing each record, in order, and :meth:`close`
    with the number of records in the output at the end.

    Example:
        >>> import pathlib, tempfile
        >>> from pocketbatch import load_flow
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "in.jsonl").write_text('{"a": 1}\\n{"a": 2}\\n')
        >>> identity = FlowIdentity.of(load_flow("output: 1\\n"))
        >>> fp = Fingerprint.create(d / "out.jsonl", identity, d / "in.jsonl")
        >>> for i in range(2):
        ...     fp.before(i)  # ... then write record i
        >>> fp.close(2)
        >>> check_resume(d / "out.jsonl", identity, d / "in.jsonl", 2, warn=print).count
        2
    """

    def __init__(
        self, fd: int, ring_at: int, end: int, batch: int, inputs: IO[bytes], prefix: InputsPrefix
    ) -> None:
        self._fd: int | None = fd
        self._ring_at = ring_at
        self._end = end  # where the next checkpoint goes
        self._batch = batch
        self._lines = _inputs(inputs)
        self._stream = inputs
        self._running = prefix.running  # H(_checked)
        self._checked = prefix.checkpoints[-1][0]  # the last checkpoint
        self._announced = prefix.count  # inputs whose digests are in the ring
        self._digests: list[bytes] = []  # of inputs _announced - len(...) .. _announced - 1

    @classmethod
    def create(
        cls,
        output: Path,
        identity: FlowIdentity,
        inputs: Path,
        prefix: InputsPrefix | None = None,
        *,
        batch: int = CHECKPOINT_EVERY,
    ) -> Fingerprint:
        """Write a new fingerprint for ``output`` (whose records are the inputs of
        ``prefix``, none by default), replacing any earlier one atomically."""
        prefix = prefix or InputsPrefix.empty()
        path = sidecar_path(Path(output).resolve())
        header = {
            "pocketbatch": _KIND,
            "format": FORMAT,
            "batch": batch,
            **identity.to_json(os.urandom(16)),
            "inputs": str(Path(inputs).resolve()),
        }
        head = json.dumps(header, ensure_ascii=False).encode() + b"\n"
        body = b"".join(_pack(n, digest, _COUNT) for n, digest in prefix.checkpoints)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, head + bytes(batch * _SLOT.size) + body)
            os.fsync(fd)
            os.replace(tmp, path)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)
        stream = open(inputs, "rb")  # noqa: SIM115 - closed by close()
        stream.seek(prefix.offset)
        ring_at = len(head)
        end = ring_at + batch * _SLOT.size + len(body)
        return cls(fd, ring_at, end, batch, stream, prefix)

    def before(self, index: int) -> None:
        """Record ``index`` is about to be written; records ``0..index-1`` are.

        Cheap unless a new batch of input digests must go to the ring first."""
        if index < self._announced:
            return
        if index != self._announced:
            raise ValueError(f"record {index} out of order: expected {self._announced}")
        assert self._fd is not None, "fingerprint closed"
        self._checkpoint(index)
        digests = [_line_digest(raw) for raw in _take(self._lines, self._batch)]
        if not digests:
            raise PocketbatchError(
                f"the inputs file changed during the run: input {index + 1} is gone"
            )
        size, first = _SLOT.size, index % self._batch
        slots = [_pack(index + k + 1, d, _LINE) for k, d in enumerate(digests)]
        head, rest = slots[: self._batch - first], slots[self._batch - first :]
        _pwrite(self._fd, b"".join(head), self._ring_at + first * size)
        if rest:
            _pwrite(self._fd, b"".join(rest), self._ring_at)
        self._digests = digests
        self._announced = index + len(digests)

    def _checkpoint(self, count: int) -> None:
        """Records ``0..count-1`` are written: log ``(count, H(count))``."""
        assert self._fd is not None
        if count == self._checked:
            return
        start = self._announced - len(self._digests)
        if not start <= self._checked < count <= self._announced:
            raise ValueError(f"{count} records written, but inputs up to {self._announced} ran")
        self._running.update(b"".join(self._digests[self._checked - start : count - start]))
        entry = _pack(count, self._running.digest(), _COUNT)
        _pwrite(self._fd, entry, self._end)
        self._end += len(entry)
        self._checked = count

    def close(self, written: int) -> None:
        """A last checkpoint, ``written`` records being in the output; close the files."""
        fd = self._fd
        if fd is None:
            return
        try:
            # Only a shortcut for the next resume (the ring covers these records):
            # a full disk here must not hide what stopped the run.
            with contextlib.suppress(OSError):
                self._checkpoint(written)
        finally:
            self._fd = None
            os.close(fd)
            self._stream.close()


def _take(lines: Iterator[bytes], n: int) -> list[bytes]:
    out: list[bytes] = []
    for item in lines:
        out.append(item)
        if len(out) == n:
            break
    return out


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (not possible, nor needed, on Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
