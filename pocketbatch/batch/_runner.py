"""The batch runner: many inputs through one flow, bounded, fault-isolated, streaming.

``max_concurrency`` worker tasks pull inputs one at a time from any iterable or
async iterable, so inputs are read lazily and about ``max_concurrency`` items are
in flight. Every item gets a :class:`~pocketbatch.FlowResult`; one item's failure
never stops the others. Results come back as they finish (:func:`iter_batch`), or
in input order through a bounded reorder window: when the oldest unfinished item
holds the window full, workers stop pulling new inputs until it finishes, so
memory stays flat however many inputs there are. The workers are the core's
(:func:`~pocketbatch.core._parallel.bounded_stream`); this module adds what a
batch item is (:func:`~pocketbatch.batch._lines.run_input`), events and the
public entry points.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Iterable
from contextlib import aclosing, suppress
from typing import Any, Literal, Self

from pocketbatch._errors import PocketbatchError
from pocketbatch._result import FlowResult
from pocketbatch.batch._executors import Executor, ExecutorKind, RunnableFlow, make_executor
from pocketbatch.batch._lines import run_input
from pocketbatch.core import Event, EventKind, Observer, Usage
from pocketbatch.core._events import guarded
from pocketbatch.core._parallel import bounded_stream

__all__ = (
    "BatchItemError",
    "BatchIterator",
    "evaluate_batch",
    "iter_batch",
    "run_batch",
)


class BatchItemError(PocketbatchError):
    """An item failed in a batch run with ``on_error="raise"``.

    Attributes:
        index: the item's position in the inputs.
        result: its failed :class:`~pocketbatch.FlowResult`.

    Example:
        >>> from pocketbatch import run_batch, load_flow
        >>> try:
        ...     run_batch(load_flow("output: {$input: x}\\n"), [{"x": 1}, {}], on_error="raise")
        ... except BatchItemError as exc:
        ...     print(exc.index, exc.result.error.code)
        1 EXPRESSION_FAILURE
    """

    def __init__(self, index: int, result: FlowResult) -> None:
        self.index = index
        self.result = result
        error = result.error
        detail = f"[{error.code}] {error.message}" if error else result.outcome
        super().__init__(f"batch item {index} failed: {detail}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.index, self.result), self.__dict__)


async def stream_results(
    executor: Executor,
    inputs: Iterable[Any] | AsyncIterable[Any],
    *,
    max_concurrency: int,
    ordered: bool = False,
    window: int | None = None,
    start: int = 0,
    stop: asyncio.Event | None = None,
    observer: Observer | None = None,
    name: str = "batch",
) -> AsyncGenerator[tuple[int, FlowResult], None]:
    """``(index, result)`` for every input: the engine under :func:`iter_batch`.

    The items run on the core's worker primitive
    (:func:`~pocketbatch.core._parallel.bounded_stream`), each through
    :func:`~pocketbatch.batch._lines.run_input`.

    Args:
        executor: an entered executor.
        inputs: items (an :class:`~pocketbatch.batch.InputProblem` item fails without running; a
            :class:`~pocketbatch.batch._lines.Line` runs its value, and an
            ``INVALID_INPUT`` failure names its line).
        max_concurrency: worker tasks, hence items in flight.
        ordered: yield in input order (through a reorder window).
        window: the most inputs pulled but not yet yielded (default
            ``4 * max_concurrency``, at least ``max_concurrency``): the reorder
            buffer's bound, and back-pressure on reading.
        start: the index of the first input (for resuming).
        stop: when set, no new input is pulled; in-flight items finish.
        observer: told ``item_started/finished/failed`` for each item.
        name: the name in those events.
    """
    if max_concurrency < 1:
        raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
    if observer is not None:
        observer = guarded(observer)  # its exceptions become ObserverError

    async def run(index: int, item: Any) -> FlowResult:
        if observer is None:
            return await run_input(executor.run, index, item)
        observer(Event(EventKind.ITEM_STARTED, name, item=index))
        result = await run_input(executor.run, index, item)
        kind = EventKind.ITEM_FINISHED if result.ok else EventKind.ITEM_FAILED
        observer(Event(kind, name, item=index))
        return result

    stream = bounded_stream(
        run,
        inputs,
        limit=max_concurrency,
        ordered=ordered,
        window=window,
        start=start,
        stop=None if stop is None else stop.is_set,
    )
    async with aclosing(stream):
        async for pair in stream:
            yield pair


def iter_batch(
    flow: RunnableFlow,
    inputs: Iterable[Any] | AsyncIterable[Any],
    *,
    max_concurrency: int = 16,
    executor: ExecutorKind | Executor = "async",
    max_workers: int | None = None,
    observer: Observer | None = None,
    ordered: bool = False,
    requests_per_minute: float | None = None,
    tokens_per_minute: float | None = None,
    usage: Usage | None = None,
) -> BatchIterator:
    """``(index, FlowResult)`` for each input as it finishes (or in input order):
    ``async for`` in async code, plain ``for`` in sync code.

    Inputs are consumed lazily from any iterable or async iterable; about
    ``max_concurrency`` items are in flight. Failing items yield failed results;
    the batch goes on. Nothing runs until the iteration starts. A plain ``for`` runs
    the batch on an event loop of its own (so not inside a running loop: use
    ``async for`` there), and the items run only while the loop asks for the next
    pair; leaving the loop early (``break``, an exception) cancels the items still
    in flight, as closing the async iteration does.

    Args:
        flow: a :class:`~pocketbatch.LoadedFlow`, or a core flow/node (its input is
            ``shared["input"]``, its result ``shared["output"]``).
        inputs: the items.
        max_concurrency: items in flight at once.
        executor: ``"async"`` (this process), ``"process"`` (a process pool), or
            an :class:`~pocketbatch.batch.Executor`.
        max_workers: processes for the process executor.
        observer: receives each item's events (and, in-process, the flows' own).
        ordered: yield in input order instead of as items finish.
        requests_per_minute, tokens_per_minute: limits set by hand for each
            provider the flow's ``/builtin/openai`` steps call (for providers that
            send no ``x-ratelimit-*`` headers; the process executor's workers spend
            them together; each Ray actor spends its share: the limit divided by
            the actors).
        usage: a :class:`~pocketbatch.Usage` to add the run's requests, tokens,
            429s and retries to (when the executor counts them).

    Example:
        >>> import asyncio
        >>> from pocketbatch import iter_batch, load_flow
        >>> flow = load_flow("output: {$input: n}\\n")
        >>> sorted((i, r.result) for i, r in iter_batch(flow, [{"n": 1}, {"n": 2}]))
        [(0, 1), (1, 2)]
        >>> async def main():
        ...     pairs = [(i, r.result) async for i, r in iter_batch(flow, [{"n": 1}, {"n": 2}])]
        ...     return sorted(pairs)
        >>> asyncio.run(main())
        [(0, 1), (1, 2)]
    """
    return BatchIterator(
        lambda: _iter_batch(
            flow,
            inputs,
            max_concurrency=max_concurrency,
            executor=executor,
            max_workers=max_workers,
            observer=observer,
            ordered=ordered,
            requests_per_minute=requests_per_minute,
            tokens_per_minute=tokens_per_minute,
            usage=usage,
        )
    )


_END: Any = object()


class BatchIterator:
    """What :func:`iter_batch` returns: ``(index, FlowResult)`` pairs, by ``async for``
    or by ``for`` (one or the other, once).

    ``for`` runs the batch on a private event loop (:class:`asyncio.Runner`), one
    step per pair; ``close()`` (or ``with``, or dropping the iterator) cancels what is
    still in flight. ``aclose()`` does the same for ``async for``.

    Example:
        >>> from pocketbatch import iter_batch, load_flow
        >>> flow = load_flow("output: {$input: n}\\n")
        >>> with iter_batch(flow, [{"n": k} for k in range(100)], ordered=True) as pairs:
        ...     for index, result in pairs:
        ...         if index == 2:
        ...             break
        >>> result.result
        2
    """

    def __init__(self, start: Callable[[], AsyncGenerator[tuple[int, FlowResult], None]]) -> None:
        self._start = start
        self._stream: AsyncGenerator[tuple[int, FlowResult], None] | None = None
        self._runner: asyncio.Runner | None = None
        self._done = False

    def _begin(self, sync: bool) -> AsyncGenerator[tuple[int, FlowResult], None]:
        if self._stream is None:
            self._stream = self._start()
            return self._stream
        if (self._runner is not None) != sync:
            raise RuntimeError(
                "this iter_batch() is already iterated with "
                f"{'async for' if sync else 'for'}; use one or the other"
            )
        return self._stream

    # -- async for

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> tuple[int, FlowResult]:
        return await self._begin(sync=False).__anext__()

    async def aclose(self) -> None:
        """Stop the batch: the items in flight are cancelled and awaited."""
        if self._stream is not None and self._runner is None:
            await self._stream.aclose()

    # -- for

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> tuple[int, FlowResult]:
        if self._done:
            raise StopIteration
        if self._runner is None:
            if self._stream is not None:
                self._begin(sync=True)  # raises: already iterated with async for
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                pass
            else:
                raise RuntimeError(
                    "iterating iter_batch() with a plain for inside an event loop would "
                    "block it; use async for"
                )
            self._runner = asyncio.Runner()
        stream = self._begin(sync=True)

        async def step() -> Any:
            try:
                return await stream.__anext__()
            except StopAsyncIteration:
                return _END

        try:
            pair = self._runner.run(step())
        except BaseException:
            self.close()
            raise
        if pair is _END:
            self.close()
            raise StopIteration
        result: tuple[int, FlowResult] = pair
        return result

    def close(self) -> None:
        """Stop a batch iterated with ``for``: the items in flight are cancelled."""
        runner, self._runner = self._runner, None
        self._done = True
        if runner is None:
            return
        try:
            if self._stream is not None:
                runner.run(self._stream.aclose())
        finally:
            runner.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        if self._runner is not None:
            with suppress(Exception):
                self.close()


async def _iter_batch(
    flow: RunnableFlow,
    inputs: Iterable[Any] | AsyncIterable[Any],
    *,
    max_concurrency: int,
    executor: ExecutorKind | Executor,
    max_workers: int | None,
    observer: Observer | None,
    ordered: bool,
    requests_per_minute: float | None,
    tokens_per_minute: float | None,
    usage: Usage | None,
) -> AsyncGenerator[tuple[int, FlowResult], None]:
    """The async generator under :func:`iter_batch` (see there)."""
    from pocketbatch.loader._services import ServiceSettings

    name = getattr(flow, "name", None) or type(flow).__name__
    settings = ServiceSettings(
        max_connections=max_concurrency,
        requests_per_minute=requests_per_minute,
        tokens_per_minute=tokens_per_minute,
    )
    runner = make_executor(
        executor, flow, max_workers=max_workers, observer=observer, services=settings
    )
    try:
        async with runner:
            stream = stream_results(
                runner,
                inputs,
                max_concurrency=max_concurrency,
                ordered=ordered,
                observer=observer,
                name=str(name),
            )
            async with aclosing(stream):
                async for pair in stream:
                    yield pair
    finally:
        spent = getattr(runner, "usage", None)
        if usage is not None and isinstance(spent, Usage):
            usage.add(spent)


async def evaluate_batch(
    flow: RunnableFlow,
    inputs: Iterable[Any] | AsyncIterable[Any],
    *,
    max_concurrency: int = 16,
    on_error: Literal["collect", "raise"] = "collect",
    executor: ExecutorKind | Executor = "async",
    max_workers: int | None = None,
    observer: Observer | None = None,
    requests_per_minute: float | None = None,
    tokens_per_minute: float | None = None,
    usage: Usage | None = None,
) -> list[FlowResult]:
    """Run ``flow`` over every input; the results, in input order.

    Like Stepflow's ``evaluate_batch``: each input gets its own
    :class:`~pocketbatch.FlowResult`, and with ``on_error="collect"`` (the default)
    a failing input fails only its own result. With ``on_error="raise"`` the first
    failure raises :class:`BatchItemError` and the items in flight are cancelled.

    Args:
        flow, inputs, max_concurrency, executor, max_workers, observer,
            requests_per_minute, tokens_per_minute, usage: as for :func:`iter_batch`.
        on_error: ``"collect"`` or ``"raise"``.

    Example:
        >>> import asyncio
        >>> from pocketbatch import evaluate_batch, load_flow
        >>> flow = load_flow("output: {$input: x}\\n")
        >>> results = asyncio.run(evaluate_batch(flow, [{"x": 1}, {}, {"x": 3}], max_concurrency=2))
        >>> [r.outcome for r in results]
        ['success', 'failed', 'success']
    """
    if on_error not in ("collect", "raise"):
        raise ValueError(f"on_error must be 'collect' or 'raise', got {on_error!r}")
    results: list[Any] = []
    stream = _iter_batch(
        flow,
        inputs,
        max_concurrency=max_concurrency,
        executor=executor,
        max_workers=max_workers,
        observer=observer,
        ordered=False,
        requests_per_minute=requests_per_minute,
        tokens_per_minute=tokens_per_minute,
        usage=usage,
    )
    async with aclosing(stream):  # on a raise, in-flight items are cancelled at once
        async for index, result in stream:
            if on_error == "raise" and not result.ok:
                raise BatchItemError(index, result)
            if index >= len(results):
                results.extend([None] * (index + 1 - len(results)))
            results[index] = result
    return results


def run_batch(
    flow: RunnableFlow,
    inputs: Iterable[Any] | AsyncIterable[Any],
    *,
    max_concurrency: int = 16,
    on_error: Literal["collect", "raise"] = "collect",
    executor: ExecutorKind | Executor = "async",
    max_workers: int | None = None,
    observer: Observer | None = None,
    requests_per_minute: float | None = None,
    tokens_per_minute: float | None = None,
    usage: Usage | None = None,
) -> list[FlowResult]:
    """Blocking twin of :func:`evaluate_batch` (not for use inside an event loop).

    Example:
        >>> from pocketbatch import load_flow, run_batch
        >>> [r.result for r in run_batch(load_flow("output: {$input: x}\\n"), [{"x": 1}, {"x": 2}])]
        [1, 2]
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("run_batch() cannot run inside an event loop; await evaluate_batch()")
    return asyncio.run(
        evaluate_batch(
            flow,
            inputs,
            max_concurrency=max_concurrency,
            on_error=on_error,
            executor=executor,
            max_workers=max_workers,
            observer=observer,
            requests_per_minute=requests_per_minute,
            tokens_per_minute=tokens_per_minute,
            usage=usage,
        )
    )
