"""One Stepflow ``grpc`` plugin at run time: its task queue and its worker process.

A task waits in the queue until the plugin's worker pulls it (``PullTasks``); the
worker claims it with a first heartbeat, heartbeats every second while it runs and
reports the result (``CompleteTask``), as with Stepflow 0.13's orchestrator:

* a task not claimed within ``queueTimeoutSecs`` fails with ``TIMEOUT`` ("timed out
  waiting for worker to start"); one claimed but silent for 5 s, or whose worker
  process exits, fails with ``TIMEOUT`` ("no heartbeat received (worker presumed
  crashed)"); one running past ``executionTimeoutSecs`` fails with ``TIMEOUT``
  ("exceeded execution timeout"). Those are transport failures: the caller
  (:mod:`~pocketbatch.loader._worker_component`) retries them, restarting the worker.
* A worker is sent one task it has not claimed at a time (Stepflow's stream buffer of
  one), so the rest stay queued here and the worker's own ``STEPFLOW_MAX_CONCURRENT``
  bounds what runs. Tasks sent to a worker that died before claiming them go back
  to the head of the queue.
* The worker process is launched on the first task (its own process group; stdout
  discarded, stderr inherited, as Stepflow does) and stopped at the end of the run:
  SIGTERM to the group, SIGKILL after 5 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from stepflow_py.proto import common_pb2, tasks_pb2

from pocketbatch._errors import ComponentError
from pocketbatch.loader._worker_config import WorkerPlugin

__all__ = ("PluginRuntime", "TransportFailure", "match_component", "match_path")

_T = TypeVar("_T")

HEARTBEAT_TIMEOUT = 5.0
"""Seconds a claimed task may go without a heartbeat (Stepflow's value)."""
CONNECT_TIMEOUT = 30.0
"""Seconds a new worker has to connect (Stepflow's value)."""
DISCOVERY_TIMEOUT = 10.0
STOP_GRACE = 5.0


class TransportFailure(ComponentError):
    """A task failed for want of a worker (``TIMEOUT``/``UNREACHABLE``): retried.

    Attributes:
        generation: which launch of the worker the task was with (0: none).
    """

    def __init__(self, code: str, message: str, generation: int) -> None:
        super().__init__(code, message)
        self.generation = generation


@dataclass(eq=False)
class _Connection:
    worker_id: str
    generation: int
    unclaimed: set[str] = field(default_factory=set)
    closed: bool = False


@dataclass(eq=False)
class _Task:
    task_id: str
    assignment: tasks_pb2.TaskAssignment
    future: asyncio.Future[Any]
    execution_timeout: float | None
    generation: int = 0
    executing: bool = False
    worker_id: str | None = None
    started: float = 0.0
    seen: bool = False
    timer: asyncio.TimerHandle | None = None
    sent_to: _Connection | None = None


def _segments_match(pattern: str, path: str) -> dict[str, str] | None:
    wanted = pattern.strip("/").split("/")
    parts = path.strip("/").split("/")
    params: dict[str, str] = {}
    for index, segment in enumerate(wanted):
        if segment.startswith("{*") and segment.endswith("}"):
            rest = parts[index:]
            if not rest or not all(rest):
                return None
            params[segment[2:-1]] = "/".join(rest)
            return params
        if index >= len(parts):
            return None
        if segment.startswith("{") and segment.endswith("}"):
            if not parts[index]:
                return None
            params[segment[1:-1]] = parts[index]
        elif segment != parts[index]:
            return None
    return params if len(parts) == len(wanted) else None


def match_component(
    components: Iterable[tasks_pb2.ComponentInfo], subpath: str
) -> tuple[str, dict[str, str]] | None:
    """``(component_id, path_params)`` of the worker component mounted at ``subpath``
    (the part of the step's path after the route's prefix); literal paths win.

    Example:
        >>> infos = [tasks_pb2.ComponentInfo(component_id="h", path="/core/{*rest}"),
        ...          tasks_pb2.ComponentInfo(component_id="udf", path="/udf")]
        >>> match_component(infos, "/udf"), match_component(infos, "core/a/b")
        (('udf', {}), ('h', {'rest': 'a/b'}))
    """
    return match_path(((info.path or f"/{info.component_id}", info.component_id)
                       for info in components), subpath)  # fmt: skip


def match_path(mounts: Iterable[tuple[str, _T]], subpath: str) -> tuple[_T, dict[str, str]] | None:
    """``(what, path_params)`` of the first ``(pattern, what)`` mounted at ``subpath``
    with the fewest path parameters (literal paths win, as in Stepflow's router).

    Example:
        >>> match_path([("/{*rest}", "any"), ("/udf", "udf")], "/udf")
        ('udf', {})
    """
    found: list[tuple[int, _T, dict[str, str]]] = []
    for pattern, what in mounts:
        params = _segments_match(pattern, subpath)
        if params is not None:
            found.append((len(params), what, params))
    if not found:
        return None
    _, what, params = min(found, key=lambda f: f[0])
    return what, params


class PluginRuntime:
    """The queue and worker process of one ``grpc`` plugin for one run.

    Args:
        plugin: what to launch.
        tasks_url: the ``host:port`` of the run's worker services.
    """

    def __init__(self, plugin: WorkerPlugin, tasks_url: str) -> None:
        self.plugin = plugin
        self.tasks_url = tasks_url
        self.launches = 0
        self.generation = 0
        self._queue: deque[_Task] = deque()
        self._tasks: dict[str, _Task] = {}
        self._changed = asyncio.Event()
        self._process: asyncio.subprocess.Process | None = None
        self._connected = asyncio.Event()
        self._starting: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._components: list[tasks_pb2.ComponentInfo] | None = None
        self._discovery = asyncio.Lock()
        self._discoveries = 0
        self._scanner: asyncio.Task[None] | None = None
        self._closing = False

    # ------------------------------------------------------------------ the caller's side

    def task(
        self,
        component_id: str,
        input: Any,
        *,
        attempt: int,
        path_params: dict[str, str],
        task_id: str,
        token: str,
        step_id: str,
    ) -> tasks_pb2.TaskAssignment:
        """An execute task (the worker's context reaches the run through ``token``)."""
        from pocketbatch.loader._worker_convert import to_value

        return tasks_pb2.TaskAssignment(
            task_id=task_id,
            execute=tasks_pb2.ComponentExecuteRequest(
                component_id=component_id,
                input=to_value(input),
                attempt=attempt,
                observability=common_pb2.ObservabilityContext(
                    run_id=token, flow_id=token, step_id=step_id
                ),
                path_params=path_params,
            ),
            context=tasks_pb2.TaskContext(
                orchestrator_service_url=self.tasks_url, root_run_id=token
            ),
            heartbeat_interval_secs=1,
        )

    async def submit(self, assignment: tasks_pb2.TaskAssignment, queue_timeout: float) -> Any:
        """Queue a task and wait for its result (raises its error; a
        :class:`TransportFailure` when no worker saw it through)."""
        if self._closing:
            raise ComponentError("CANCELLED", "the run has ended")
        loop = asyncio.get_running_loop()
        task = _Task(
            assignment.task_id, assignment, loop.create_future(), self.plugin.execution_timeout
        )
        self._tasks[task.task_id] = task
        task.timer = loop.call_later(queue_timeout, self._timeout, task, "queue")
        self._queue.append(task)
        self._wake()
        self._ensure_worker()
        if self._scanner is None:
            self._scanner = asyncio.create_task(self._scan())
        try:
            return await task.future
        finally:
            self._forget(task)

    async def components(self) -> list[tasks_pb2.ComponentInfo]:
        """The worker's components (asked once per run, as Stepflow's discovery does)."""
        async with self._discovery:
            if self._components is None:
                self._discoveries += 1
                assignment = tasks_pb2.TaskAssignment(
                    task_id=f"discovery-{self._discoveries}",
                    list_components=tasks_pb2.ListComponentsRequest(),
                    context=tasks_pb2.TaskContext(orchestrator_service_url=self.tasks_url),
                )
                result = await self.submit(assignment, CONNECT_TIMEOUT + DISCOVERY_TIMEOUT)
                self._components = list(result)
            return self._components

    async def prepare_for_retry(self, generation: int) -> None:
        """Restart the worker that failed a task, unless it was restarted already."""
        process = self._process
        if generation == self.generation and process is not None and process.returncode is None:
            await self._stop(process)
        self._ensure_worker()

    # ------------------------------------------------------------------ the worker's side

    def connect(self, worker_id: str) -> _Connection:
        """A worker opened ``PullTasks``."""
        connection = _Connection(worker_id, self.generation)
        self._connected.set()
        return connection

    async def next_for(self, connection: _Connection) -> tasks_pb2.TaskAssignment | None:
        """The next task for a worker's stream; ``None`` ends the stream."""
        while True:
            if connection.closed or self._closing:
                return None
            if self._queue and not connection.unclaimed:
                task = self._queue.popleft()
                task.sent_to = connection
                task.generation = connection.generation
                connection.unclaimed.add(task.task_id)
                return task.assignment
            changed = self._changed
            await changed.wait()

    def disconnect(self, connection: _Connection) -> None:
        """A worker's stream ended: tasks it had not claimed go back to the queue."""
        connection.closed = True
        self._requeue(connection)

    def heartbeat(self, task_id: str, worker_id: str) -> int | None:
        """A ``TaskStatus`` for a worker's heartbeat; ``None`` for an unknown task."""
        from stepflow_py.proto import orchestrator_pb2

        task = self._tasks.get(task_id)
        if task is None:
            return None
        if not task.executing:
            task.executing, task.worker_id, task.seen = True, worker_id, True
            task.started = time.monotonic()
            if task.timer is not None:
                task.timer.cancel()
                task.timer = None
            if task.execution_timeout is not None:
                loop = asyncio.get_running_loop()
                task.timer = loop.call_later(task.execution_timeout, self._timeout, task, "run")
            if task.sent_to is not None:
                task.sent_to.unclaimed.discard(task_id)
            self._wake()
            return int(orchestrator_pb2.TASK_STATUS_IN_PROGRESS)
        if task.worker_id == worker_id:
            task.seen = True
            return int(orchestrator_pb2.TASK_STATUS_IN_PROGRESS)
        return int(orchestrator_pb2.TASK_STATUS_ALREADY_CLAIMED)

    def complete(
        self, task_id: str, result: Any = None, error: BaseException | None = None
    ) -> bool:
        """A worker reported a result; ``False`` for an unknown task."""
        task = self._tasks.get(task_id)
        if task is None:
            return False
        self._forget(task)
        if not task.future.done():
            if error is not None:
                task.future.set_exception(error)
            else:
                task.future.set_result(result)
        return True

    def owns(self, task_id: str) -> bool:
        return task_id in self._tasks

    # ------------------------------------------------------------------ internals

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _forget(self, task: _Task) -> None:
        if self._tasks.get(task.task_id) is task:
            del self._tasks[task.task_id]
        if task.timer is not None:
            task.timer.cancel()
            task.timer = None
        with contextlib.suppress(ValueError):
            self._queue.remove(task)
        if task.sent_to is not None and task.task_id in task.sent_to.unclaimed:
            task.sent_to.unclaimed.discard(task.task_id)
            self._wake()

    def _fail(self, task: _Task, code: str, message: str) -> None:
        self._forget(task)
        if not task.future.done():
            task.future.set_exception(TransportFailure(code, message, task.generation))

    def _timeout(self, task: _Task, kind: str) -> None:
        if self._tasks.get(task.task_id) is not task:
            return
        if kind == "queue":
            if task.executing:
                return
            message = f"task '{task.task_id}' timed out waiting for worker to start"
        elif kind == "run":
            message = f"task '{task.task_id}' exceeded execution timeout"
        else:
            message = (
                f"task '{task.task_id}' timed out: no heartbeat received (worker presumed crashed)"
            )
        self._fail(task, "TIMEOUT", message)

    def _requeue(self, connection: _Connection) -> None:
        for task_id in sorted(connection.unclaimed, reverse=True):
            task = self._tasks.get(task_id)
            if task is not None and not task.executing and task not in self._queue:
                task.sent_to = None
                self._queue.appendleft(task)
        connection.unclaimed.clear()
        self._wake()

    async def _scan(self) -> None:
        while not self._closing:
            await asyncio.sleep(HEARTBEAT_TIMEOUT)
            now = time.monotonic()
            silent = [
                t
                for t in self._tasks.values()
                if t.executing and not t.seen and now - t.started >= HEARTBEAT_TIMEOUT
            ]
            for t in self._tasks.values():
                t.seen = False
            for t in silent:
                self._timeout(t, "heartbeat")

    def _ensure_worker(self) -> None:
        if self._closing or (self._starting is not None and not self._starting.done()):
            return
        if self._process is not None and self._process.returncode is None:
            return
        if self.plugin.command is None:
            self._fail_waiting(
                "UNREACHABLE",
                f"plugin {self.plugin.name!r} ({self.plugin.where}) has no 'command': "
                "pocketbatch launches its workers itself and cannot wait for a remote one",
            )
            return
        self._starting = asyncio.create_task(self._launch())

    def _fail_waiting(self, code: str, message: str) -> None:
        for task in list(self._queue):
            self._fail(task, code, message)

    async def _launch(self) -> None:
        self.generation += 1
        generation = self.generation
        self._connected = asyncio.Event()
        plugin = self.plugin
        try:
            argv = plugin.argv()
            env = plugin.launch_env(self.tasks_url)
            process = await asyncio.create_subprocess_exec(
                *argv,
                cwd=plugin.cwd,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        except (OSError, KeyError) as exc:
            why = f"environment variable {exc} is not set" if isinstance(exc, KeyError) else exc
            self._fail_waiting(
                "UNREACHABLE",
                f"plugin {plugin.name!r} ({plugin.where}): cannot start its worker "
                f"{plugin.command!r}: {why}",
            )
            return
        self.launches += 1
        self._process = process
        watcher = asyncio.create_task(self._watch(process, generation))
        self._background.add(watcher)
        watcher.add_done_callback(self._background.discard)
        connected = asyncio.create_task(self._connected.wait())
        try:
            await asyncio.wait(
                {connected, watcher}, timeout=CONNECT_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            connected.cancel()
        if self._connected.is_set():
            return
        if process.returncode is None:
            await self._stop(process)
            why = f"did not connect within {CONNECT_TIMEOUT:g} seconds"
        else:
            why = f"exited with code {process.returncode} before connecting"
        self._fail_waiting(
            "UNREACHABLE",
            f"plugin {plugin.name!r} ({plugin.where}): its worker {' '.join(argv)!r} {why}",
        )

    async def _watch(self, process: asyncio.subprocess.Process, generation: int) -> None:
        await process.wait()
        for task in list(self._tasks.values()):
            if task.executing and task.generation == generation:
                self._timeout(task, "heartbeat")
        if self._process is process:
            self._process = None
            if self._queue and not self._closing and self._connected.is_set():
                self._ensure_worker()

    async def _stop(self, process: asyncio.subprocess.Process) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if process.returncode is not None:
                return
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, sig)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(process.wait(), STOP_GRACE)

    async def aclose(self) -> None:
        """Stop the worker (SIGTERM, then SIGKILL) and fail what is left."""
        self._closing = True
        self._wake()
        for task in list(self._tasks.values()):  # not a transport failure: no retry
            self._forget(task)
            if not task.future.done():
                task.future.set_exception(ComponentError("CANCELLED", "the run has ended"))
        if self._starting is not None:
            self._starting.cancel()  # a worker still connecting is stopped below
            with contextlib.suppress(BaseException):
                await self._starting
        if self._process is not None:
            await self._stop(self._process)
        for background in [self._scanner, *self._background]:
            if background is not None:
                background.cancel()
                with contextlib.suppress(BaseException):
                    await background


def component_ids(components: Sequence[tasks_pb2.ComponentInfo]) -> list[str]:
    """The mount paths of a worker's components, for messages."""
    return sorted(info.path or f"/{info.component_id}" for info in components)
