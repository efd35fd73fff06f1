"""The fingerprint ``run-batch`` keeps beside its output, for a safe ``--resume``.

A resumed run must continue *the same* run: the same flow and config, the same
inputs for every record already written. So an output ``OUT.jsonl`` (a regular
file) gets ``OUT.jsonl.pocketbatch``, the *fingerprint* (:class:`Fingerprint`):
what the run is (flow file and config file content hashes, ``--var`` values as
hashes, never in clear) and which inputs its records come from. The records
themselves are left exactly as they are (byte-identical to those of a run without
a fingerprint and to the server's). The run also holds ``OUT.jsonl.lock``
(:mod:`pocketbatch.batch._lock`), so only one run writes an output at a time.

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pocketbatch._errors import PocketbatchError
from pocketbatch.batch._identity import FlowIdentity
from pocketbatch.batch._lines import non_blank_lines

__all__ = (
    "CHECKPOINT_EVERY",
    "Fingerprint",
    "InputsPrefix",
    "check_resume",
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


# -- which inputs -------------------------------------------------------------------------


def _line_digest(raw: bytes) -> bytes:
    """An input line's digest: its content without the line ending and any ``b"\\r"``
    before it."""
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
        self._lines = (line for _, line in non_blank_lines(inputs))  # from prefix.offset on
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
