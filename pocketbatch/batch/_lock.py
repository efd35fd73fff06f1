"""The output lock of ``run-batch``: one run writes an output at a time.

An output ``OUT.jsonl`` (a regular file) gets ``OUT.jsonl.lock``, held with an
exclusive POSIX lock (``fcntl.lockf``) for the whole run, holding the run's process
id. A second run on the same output fails at once (:func:`lock_output`). The
operating system drops the lock when the process ends, even by SIGKILL, so resuming
after a crash just works; a lock file left behind by a crash is harmless. POSIX
locks (not ``flock``) because they belong to the process: worker processes forked
by ``--executor process`` do not inherit them, so a worker outliving its parent
cannot keep the output locked. On Windows there is no lock (not supported there).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Self

from pocketbatch._errors import PocketbatchError

__all__ = ("OutputLock", "lock_output", "lock_path")


def lock_path(output: str | Path) -> Path:
    """The lock file of ``output``.

    Example:
        >>> lock_path("out/results.jsonl").as_posix()
        'out/results.jsonl.lock'
    """
    output = Path(output)
    return output.with_name(output.name + ".lock")


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
