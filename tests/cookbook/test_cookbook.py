"""Run every cookbook example as a script and check what its ``main()`` returns."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from decimal import Decimal
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
COOKBOOK = ROOT / "cookbook"
EXAMPLES = ("batch-csv", "parallel-translate", "batch-flow", "nested-batch")


@cache
def load(name: str) -> ModuleType:
    """Import ``cookbook/<name>/main.py`` under a unique module name."""
    module_name = f"cookbook_{name.replace('-', '_')}_main"
    spec = importlib.util.spec_from_file_location(module_name, COOKBOOK / name / "main.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def run_script(name: str, cwd: Path) -> str:
    script = COOKBOOK / name / "main.py"
    proc = subprocess.run(
        [sys.executable, str(script.relative_to(cwd))],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no warnings, no tracebacks
    return proc.stdout


@cache
def script_output(name: str) -> str:
    """stdout of ``python cookbook/<name>/main.py`` run from the repository root."""
    return run_script(name, ROOT)


# -- every example --------------------------------------------------------------------


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_has_readme(name: str) -> None:
    readme = COOKBOOK / name / "README.md"
    assert readme.is_file()
    text = readme.read_text(encoding="utf-8")
    assert f"python cookbook/{name}/main.py" in text
    assert "PocketFlow" in text


@pytest.mark.parametrize("name", EXAMPLES)
def test_script_output_is_the_same_from_its_own_folder(name: str) -> None:
    # Data files are found relative to __file__, and the output is deterministic.
    assert run_script(name, COOKBOOK / name) == script_output(name)


@pytest.mark.parametrize("name", EXAMPLES)
def test_main_is_repeatable(name: str) -> None:
    module = load(name)
    first, second = module.main(), module.main()
    if name == "parallel-translate":  # timings differ between runs; outcomes do not
        for result in (first, second):
            del result["peak_llm_calls"]
    elif name == "nested-batch":  # exception objects compare by identity
        for result in (first, second):
            for failure in result["failures"]:
                failure["error"] = repr(failure["error"])
    assert first == second


# -- batch-csv ------------------------------------------------------------------------

CSV_BY_REGION = {
    "East": Decimal("102712.18"),
    "West": Decimal("97231.55"),
    "North": Decimal("93242.42"),
    "South": Decimal("77022.21"),
    "Central": Decimal("70154.68"),
}


def test_batch_csv_script() -> None:
    out = script_output("batch-csv")
    assert "Read 2000 rows in 8 chunks of 250" in out
    assert "    0  A00001-A00250   250   54,662.24  A00051 (1,080.00)" in out
    assert "    7  A01751-A02000   250   52,459.52  A01848 (1,080.00)" in out
    assert "Total sales:   440,363.04" in out
    assert "Average sale:  220.18" in out
    assert "Top region:    East" in out
    assert "  East     102,712.18" in out
    assert "Chunks read lazily (read 0, exec 0, read 1, exec 1, ...): True" in out


def test_batch_csv_main() -> None:
    shared = load("batch-csv").main()
    summary = shared["summary"]
    assert summary == {
        "chunks": 8,
        "rows": 2000,
        "total_sales": Decimal("440363.04"),
        "average_sale": Decimal("220.18"),
        "by_region": CSV_BY_REGION,
        "top_region": "East",
        "biggest_order": ("A00051", Decimal("1080.00")),
    }
    assert list(summary["by_region"]) == ["East", "West", "North", "South", "Central"]
    assert [c["rows"] for c in shared["chunks"]] == [250] * 8
    assert [c["sales"] for c in shared["chunks"]] == [
        Decimal(s)
        for s in (
            "54662.24",
            "48078.59",
            "64827.64",
            "54613.07",
            "58690.26",
            "52039.59",
            "54992.13",
            "52459.52",
        )
    ]
    assert [(c["first"], c["last"]) for c in shared["chunks"]][::7] == [
        ("A00001", "A00250"),
        ("A01751", "A02000"),
    ]
    # Lazy: each chunk is read just before it is processed, never ahead.
    assert shared["trace"] == [f"{step} {i}" for i in range(8) for step in ("read", "exec")]


def test_batch_csv_totals_do_not_depend_on_chunk_size() -> None:
    module = load("batch-csv")
    shared = module.main(chunk_size=333)
    assert [c["rows"] for c in shared["chunks"]] == [333] * 6 + [2]
    assert shared["summary"]["total_sales"] == Decimal("440363.04")
    assert shared["summary"]["by_region"] == CSV_BY_REGION


def test_batch_csv_data_file() -> None:
    lines = (COOKBOOK / "batch-csv" / "data" / "sales.csv").read_text().splitlines()
    assert lines[0] == "order_id,date,region,product,quantity,unit_price"
    assert len(lines) == 2001


# -- parallel-translate ----------------------------------------------------------------

TRANSLATIONS = [
    ("fr", "Bonjour, le monde"),
    ("es", "Hola, mundo"),
    ("de", "Hallo, Welt"),
    ("it", "Ciao, mondo"),
    ("pt", "Ola, mundo"),
    ("nl", "Hallo, wereld"),
    ("sv", "Hej, varlden"),
    ("pl", "Witaj, swiecie"),
    ("tr", "Merhaba, dunya"),
    ("id", "Halo, dunia"),
    ("sw", "Habari, dunia"),
    ("fi", "Hei, maailma"),
]


def test_parallel_translate_script() -> None:
    out = script_output("parallel-translate")
    assert 'Translations of "Hello, world" (input order):' in out
    lines = [line.split() for line in out.splitlines()[1:13]]
    assert [(parts[0], " ".join(parts[2:])) for parts in lines] == TRANSLATIONS
    assert (
        "Retried German after failed attempt 1: TransientLLMError('503 Service Unavailable')" in out
    )
    assert "LLM calls: 13 for 12 languages" in out
    assert "Peak items in flight: 4 (max_concurrency=4)" in out
    assert "Concurrent LLM calls never above 4: True" in out
    assert "Rate limit of 50/s respected: True" in out


def test_parallel_translate_main() -> None:
    result = load("parallel-translate").main()
    assert result["translations"] == TRANSLATIONS
    assert result["peak_in_flight"] == 4
    assert 1 <= result["peak_llm_calls"] <= 4
    assert result["retries"] == [("German", 1, "TransientLLMError('503 Service Unavailable')")]
    assert result["llm_calls"] == 13
    assert result["rate_limit_respected"] is True


# -- batch-flow --------------------------------------------------------------------------

# (image, filter): (quality, min, max, mean, checksum), in run order
BATCH_FLOW_TABLE = {
    ("checker", "invert"): (90, 0, 254, 127.0, 2032),
    ("checker", "blur"): (90, 112, 140, 126.0, 2016),
    ("checker", "threshold"): (90, 0, 254, 127.0, 2032),
    ("gradient", "invert"): (50, 12, 252, 132.0, 2112),
    ("gradient", "blur"): (50, 36, 198, 118.5, 1896),
    ("gradient", "threshold"): (50, 0, 252, 126.0, 2016),
    ("spot", "invert"): (90, 54, 234, 189.0, 3024),
    ("spot", "blur"): (90, 64, 100, 81.0, 1296),
    ("spot", "threshold"): (90, 0, 254, 63.5, 1016),
}


def test_batch_flow_script() -> None:
    out = script_output("batch-flow")
    assert "Flow params: {'quality': 90, 'threshold': 128}; 9 runs of load -> filter -> save" in out
    assert "checker   invert          90    0  254  127.00     2032" in out
    assert "gradient  blur            50   36  198  118.50     1896" in out
    assert "spot      threshold       90    0  254   63.50     1016" in out
    assert (
        "('gradient', 'blur'): "
        "{'quality': 50, 'threshold': 128, 'image': 'gradient', 'filter': 'blur'}" in out
    )


def test_batch_flow_main() -> None:
    shared = load("batch-flow").main()
    outputs: dict[tuple[str, str], dict[str, Any]] = shared["outputs"]
    assert shared["runs"] == 9
    assert shared["work"] == {}  # every run's scratch image was consumed by save
    assert {
        k: (o["quality"], o["min"], o["max"], o["mean"], o["checksum"]) for k, o in outputs.items()
    } == BATCH_FLOW_TABLE
    assert list(outputs) == list(BATCH_FLOW_TABLE)
    # Param sets are merged over the flow's params; a param set's own value wins.
    assert outputs[("checker", "invert")]["params"] == {
        "quality": 90,
        "threshold": 128,
        "image": "checker",
        "filter": "invert",
    }
    assert outputs[("gradient", "blur")]["params"] == {
        "quality": 50,
        "threshold": 128,
        "image": "gradient",
        "filter": "blur",
    }
    assert outputs[("spot", "blur")]["pixels"] == [
        [64, 80, 80, 64],
        [80, 100, 100, 80],
        [80, 100, 100, 80],
        [64, 80, 80, 64],
    ]
    assert outputs[("checker", "threshold")]["pixels"][0] == [0, 254, 0, 254]


# -- nested-batch --------------------------------------------------------------------------


def test_nested_batch_script() -> None:
    out = script_output("nested-batch")
    assert "Class 7A: average 79.88 (4 of 4 graded)" in out
    assert "Class 7B: average 86.67 (3 of 4 graded)" in out
    assert "  Eli 89.4, Fay 73.4, Hana 97.2" in out
    assert "Class 7C: average 78.64 (5 of 5 graded)" in out
    assert "FAILED: class 7B, student Gus (item 2): MissingScoreError: Gus has no exam score" in out
    assert "Peak classes in flight: 2 (max_concurrency=2)" in out
    assert "Peak students in flight, all classes together: 6 (at most 2 x 3)" in out


def test_nested_batch_main() -> None:
    module = load("nested-batch")
    result = module.main()
    assert result["report"] == {
        "7A": {
            "grades": {"Ada": 92.9, "Ben": 72.5, "Cleo": 89.2, "Dev": 64.9},
            "graded": 4,
            "students": 4,
            "average": 79.88,
        },
        "7B": {
            "grades": {"Eli": 89.4, "Fay": 73.4, "Hana": 97.2},
            "graded": 3,
            "students": 4,
            "average": 86.67,
        },
        "7C": {
            "grades": {"Ivy": 80.2, "Jon": 64.0, "Kai": 89.8, "Lea": 84.2, "Max": 75.0},
            "graded": 5,
            "students": 5,
            "average": 78.64,
        },
    }
    [failure] = result["failures"]
    error = failure.pop("error")
    assert failure == {"class_id": "7B", "student": "Gus", "index": 2}
    assert type(error) is module.MissingScoreError
    assert str(error) == "Gus has no exam score"
    assert result["peak_in_flight"] == {"classes": 2, "students": 6}
