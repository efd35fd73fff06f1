"""``pocketbatch run-batch``: stream a JSONL file through a flow into a JSONL file.

One output record per non-blank input line, in input order (stdout when there is
no ``--output``). Exit codes: 0 all succeeded, 1 some failed, 2 usage or load
error, 3 no space left writing the output (ENOSPC, EDQUOT or EFBIG), 130
interrupted (after 3 and 130 the output is left resumable: rerun with ``--resume``).

Ctrl-C once: no new items start; those in flight finish and are written. Twice:
in-flight items are cancelled. Either way the records written so far are a
clean prefix of the full output.

With ``--output OUT.jsonl`` the run holds ``OUT.jsonl.lock`` (a second run on the
same output fails at once) and keeps a fingerprint of the run in
``OUT.jsonl.pocketbatch``, so ``--resume`` refuses to continue with another flow,
config or inputs (``--force`` overrides); see :mod:`pocketbatch.batch._sidecar`.
Nothing is written to the output before the executor is up: a run that cannot
start leaves an existing output as it was.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import sys
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pocketbatch.batch._executors import Executor, ExecutorKind, make_executor
from pocketbatch.batch._identity import FlowIdentity
from pocketbatch.batch._jsonl import JsonlWriter, Resumed, record, resume_state
from pocketbatch.batch._lines import count_inputs, read_inputs
from pocketbatch.batch._lock import OutputLock, lock_output
from pocketbatch.batch._progress import Progress
from pocketbatch.batch._runner import stream_results
from pocketbatch.batch._sidecar import Fingerprint, InputsPrefix, check_resume
from pocketbatch.core import Usage
from pocketbatch.loader._services import ServiceSettings

if TYPE_CHECKING:
    from pocketbatch.loader import LoadedFlow

__all__ = ("run_batch_command",)

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 0, 1, 130, 141
EXIT_NO_SPACE = 3  # the output could not be written: a full disk, a quota, a file size limit
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the exit flush stays quiet."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _say(message: str) -> None:
    print(f"pocketbatch: {message}", file=sys.stderr, flush=True)


def _lock(output: Path | None) -> OutputLock | None:
    """Lock the output for this run (stdout, a pipe or a device need none)."""
    if output is None or (output.exists() and not output.is_file()):
        return None
    return lock_output(output)


def _open_output(output: Path | None, earlier: Resumed) -> JsonlWriter:
    """The writer, opened only now that the executor is up: a fresh run empties the
    file, a resume cuts a torn last line and appends."""
    if output is None:
        return JsonlWriter(sys.stdout.buffer)
    if earlier.done and output.stat().st_size != earlier.end:
        os.truncate(output, earlier.end)
    return JsonlWriter(output, append=bool(earlier.done))


@dataclass(frozen=True)
class _Options:
    """The command's options, as :func:`run_batch_command` takes them."""

    max_concurrent: int
    resume: bool
    executor: ExecutorKind | Executor
    workers: int | None
    progress: bool
    chunk_size: int | None
    force: bool
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None


async def _run(
    flow: LoadedFlow,
    inputs: Path,
    output: Path | None,
    options: _Options,
    *,
    fingerprinted: bool,
) -> int:
    total = count_inputs(inputs)
    identity = FlowIdentity.of(flow) if fingerprinted else None
    earlier, prefix = Resumed(0, 0), InputsPrefix.empty()
    if options.resume and output is not None:
        # Only read here: nothing is written before the executor is up.
        earlier = resume_state(output, inputs=total, repair=False)
        if identity is not None:
            prefix = check_resume(
                output, identity, inputs, earlier.done, force=options.force, warn=_say
            )
    skip = earlier.done
    if skip:
        _say(
            f"resuming: {skip} of {total} inputs already in {output} "
            f"({earlier.failed} of them failed)"
        )
    progress = Progress(total - skip, enabled=options.progress)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    interrupts = 0

    def on_interrupt() -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1:
            stop.set()
            _say("interrupted: finishing the items in flight (Ctrl-C again to cancel them)")
        elif main is not None:
            main.cancel()

    loop.add_signal_handler(signal.SIGINT, on_interrupt)
    writer: JsonlWriter | None = None
    fingerprint: Fingerprint | None = None
    runner = make_executor(
        options.executor,
        flow,
        max_workers=options.workers,
        chunk_size=options.chunk_size,
        services=ServiceSettings(
            max_connections=options.max_concurrent,
            requests_per_minute=options.requests_per_minute,
            tokens_per_minute=options.tokens_per_minute,
        ),
    )
    spent = getattr(runner, "usage", None)  # the executor's live usage counters
    progress.usage = spent if isinstance(spent, Usage) else None
    cancelled = broken_pipe = False
    no_space: OSError | None = None
    try:
        async with runner:
            # The executor is up (and the flow loaded): only now touch the output.
            writer = _open_output(output, earlier)
            if output is not None and identity is not None:
                fingerprint = Fingerprint.create(output, identity, inputs, prefix)
            stream = stream_results(
                runner,
                read_inputs(inputs, skip=skip),
                max_concurrency=options.max_concurrent,
                ordered=True,
                start=skip,
                stop=stop,
            )
            async with aclosing(stream):
                async for index, result in stream:
                    before = writer.failed_outputs
                    if fingerprint is not None:
                        fingerprint.before(index)
                    writer.write(record(index, result), line=result.line)
                    progress.update(ok=result.ok and writer.failed_outputs == before)
    except asyncio.CancelledError:
        cancelled = True
    except BrokenPipeError:  # `run-batch ... | head`: the reader has gone
        broken_pipe = True
    except OSError as exc:  # a full disk: stop; the records written stay a resumable prefix
        if exc.errno not in _NO_SPACE:
            raise
        no_space = exc
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        if fingerprint is not None and writer is not None:
            done = skip + writer.written
            no_space = no_space or _unless_no_space(lambda: fingerprint.close(done))
        if broken_pipe:
            _silence_stdout()
        elif writer is not None:
            no_space = no_space or _unless_no_space(writer.close)
        progress.close()
    if broken_pipe:
        return EXIT_BROKEN_PIPE
    if no_space is not None:
        what = os.strerror(no_space.errno or errno.ENOSPC).lower()
        if output is None:
            _silence_stdout()  # the exit's own flush of stdout would fail again
            _say(f"error: {what} writing stdout; free space and run again")
        else:
            _say(f"error: {what} writing {output}; free space and rerun with --resume")
        return EXIT_NO_SPACE
    written = writer.written if writer is not None else 0
    _say(progress.summary())
    failed = progress.failed + earlier.failed
    if skip:
        _say(f"with the {skip} earlier records: {skip + written} done, {failed} failed")
    if cancelled or stop.is_set():
        done = skip + written
        if output is None:  # the records went to stdout: there is no file to resume
            _say(
                f"stopped after {done} of {total} inputs (their records are on stdout); "
                "run again with --output FILE to be able to --resume"
            )
        else:
            _say(f"stopped after {done} of {total} inputs; rerun with --resume --output {output}")
        return EXIT_INTERRUPTED
    return EXIT_OK if failed == 0 else EXIT_FAILED


def _unless_no_space(close: Callable[[], object]) -> OSError | None:
    """Call ``close``; a full disk (ENOSPC, EDQUOT, EFBIG) is returned, not raised."""
    try:
        close()
    except OSError as exc:
        if exc.errno not in _NO_SPACE:
            raise
        return exc
    return None


def run_batch_command(
    flow: LoadedFlow,
    inputs: Path,
    output: Path | None,
    *,
    max_concurrent: int,
    resume: bool,
    executor: ExecutorKind | Executor,
    workers: int | None,
    progress: bool,
    chunk_size: int | None = None,
    force: bool = False,
    requests_per_minute: float | None = None,
    tokens_per_minute: float | None = None,
) -> int:
    """Run the command (the CLI has parsed and checked the arguments).

    With an ``output`` file, the run holds ``OUTPUT.lock`` and writes its fingerprint
    to ``OUTPUT.pocketbatch`` (see :mod:`pocketbatch.batch._sidecar`); a resume whose
    flow, config or inputs differ from the first run's is refused unless ``force``.
    The output is opened for writing only once the executor is up. The flow's
    ``/builtin/openai`` steps share one HTTP pool (``max_concurrent`` connections)
    and a limiter per provider (``requests_per_minute``/``tokens_per_minute`` set
    its limits by hand); their usage is in the progress and the summary line.

    Raises:
        ResumeError: the resume does not continue the same run.
        PocketbatchError: another run holds the output, or the executor cannot start.
    """
    lock = _lock(output)  # before anything else: a second run fails at once
    try:
        return asyncio.run(
            _run(
                flow,
                inputs,
                output,
                _Options(
                    max_concurrent,
                    resume,
                    executor,
                    workers,
                    progress,
                    chunk_size,
                    force,
                    requests_per_minute,
                    tokens_per_minute,
                ),
                fingerprinted=lock is not None,
            )
        )
    finally:
        if lock is not None:
            lock.release()
