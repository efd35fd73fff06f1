"""The batch layer: run one flow over many inputs.

:func:`evaluate_batch` (async) and :func:`run_batch` (blocking) return every
input's :class:`~pocketbatch.FlowResult` in input order; :func:`iter_batch`
yields ``(index, result)`` as items finish (``async for`` or plain ``for``).
Executors decide where items run (:class:`AsyncExecutor` in-process,
:class:`ProcessExecutor` on a process pool).
``pocketbatch run-batch`` streams a JSONL file through the same runner.
"""

from pocketbatch.batch._executors import (
    INPUT_KEY,
    OUTPUT_KEY,
    AsyncExecutor,
    Executor,
    ProcessExecutor,
    flow_runner,
    make_executor,
)
from pocketbatch.batch._lines import InputProblem
from pocketbatch.batch._runner import (
    BatchItemError,
    BatchIterator,
    evaluate_batch,
    iter_batch,
    run_batch,
)

__all__ = (
    "INPUT_KEY",
    "OUTPUT_KEY",
    "AsyncExecutor",
    "BatchItemError",
    "BatchIterator",
    "Executor",
    "InputProblem",
    "ProcessExecutor",
    "evaluate_batch",
    "flow_runner",
    "iter_batch",
    "make_executor",
    "run_batch",
)
