"""Reading a Stepflow ``type: grpc`` plugin: defaults, checks, substitution, environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from pocketbatch import LoadError
from pocketbatch.loader._config_files import load_config
from pocketbatch.loader._worker_config import Backoff, substitute


def _config(tmp: Path, text: str) -> Path:
    path = tmp / "stepflow-config.yml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_grpc_plugin_as_stepflow_reads_it(tmp_path: Path) -> None:
    config = load_config(
        _config(
            tmp_path,
            "plugins:\n  py:\n    type: grpc\n    command: uv\n"
            '    args: [run, "${APP:-app}.py"]\n    queueName: pyq\n'
            "    env: {MODE: '${MODE}', N: 3}\n    executionTimeoutSecs: 9\n"
            "retry:\n  transportMaxRetries: 5\n  backoff: {type: exponential, minDelayMs: 100}\n"
            'routes:\n  "/py":\n    - plugin: py\n',
        )
    )
    worker = config.plugins["py"].worker
    assert worker is not None
    assert (worker.name, worker.queue_name, worker.command) == ("py", "pyq", "uv")
    assert (worker.queue_timeout, worker.execution_timeout) == (30.0, 9.0)
    assert worker.transport_max_retries == 5
    assert worker.backoff == Backoff("exponential", 100, 10000, 2.0)
    assert worker.cwd == tmp_path.resolve()
    assert worker.where == f"{tmp_path / 'stepflow-config.yml'}:2:3"
    assert worker.argv({"APP": "main"}) == ["uv", "run", "main.py"]
    env = worker.launch_env("127.0.0.1:9", {"MODE": "x", "PATH": "/bin"})
    assert env == {
        "MODE": "x", "N": "3", "PATH": "/bin", "STEPFLOW_TRANSPORT": "grpc",
        "STEPFLOW_TASKS_URL": "127.0.0.1:9", "STEPFLOW_QUEUE_NAME": "pyq",
        "STEPFLOW_BLOB_URL": "127.0.0.1:9",
    }  # fmt: skip
    with pytest.raises(KeyError, match="MODE"):
        worker.launch_env("127.0.0.1:9", {})


def test_queue_name_is_required_and_timeouts_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match=r"stepflow-config.yml:2:3: plugin 'py': 'queueName' is"):
        load_config(_config(tmp_path, "plugins:\n  py:\n    type: grpc\n    command: w\n"))
    with pytest.raises(LoadError, match="'queueTimeoutSecs' must be greater than 0"):
        load_config(
            _config(tmp_path, "plugins:\n  py: {type: grpc, queueName: q, queueTimeoutSecs: 0}\n")
        )


def test_substitution_and_backoff() -> None:
    assert substitute("${A}-${B:-b}-${C:-c}", {"A": "a", "C": ""}) == "a-b-c"
    assert substitute("$A ${A", {"A": "x"}) == "$A ${A"
    assert [Backoff().delay(n) for n in range(1, 8)] == [1, 1, 2, 3, 5, 8, 10]
