"""Grade every student of every class: a parallel batch flow inside a parallel batch flow.

``Classes`` (outer ``AsyncParallelBatchFlow``) runs one sub-flow per class, at most 2
classes at a time. Its sub-flow is ``Students`` (inner ``AsyncParallelBatchFlow``),
which runs ``GradeStudent`` (an ``AsyncNode``) once per student of that class, at most
3 at a time, with ``on_item_error="collect"``: one student has no exam score, their
grading fails, and the failure is recorded while the rest of the class (and every
other class) is graded.

Run it from the repository root or from this folder::

    python cookbook/nested-batch/main.py
"""

from __future__ import annotations

import asyncio
from fractions import Fraction
from typing import Any

from pocketbatch import AsyncNode, AsyncParallelBatchFlow, Event, EventKind, ItemError

# class id -> student -> scores. Gus has no exam score: grading him fails.
CLASSES: dict[str, dict[str, dict[str, Any]]] = {
    "7A": {
        "Ada": {"homework": [92, 88, 95, 90], "exam": 94},
        "Ben": {"homework": [75, 80, 72, 78], "exam": 70},
        "Cleo": {"homework": [85, 91, 89, 87], "exam": 90},
        "Dev": {"homework": [60, 65, 70, 58], "exam": 66},
    },
    "7B": {
        "Eli": {"homework": [88, 84, 90, 86], "exam": 91},
        "Fay": {"homework": [70, 74, 68, 72], "exam": 75},
        "Gus": {"homework": [81, 79, 85, 80], "exam": None},
        "Hana": {"homework": [95, 97, 93, 99], "exam": 98},
    },
    "7C": {
        "Ivy": {"homework": [78, 82, 80, 76], "exam": 81},
        "Jon": {"homework": [66, 70, 64, 68], "exam": 62},
        "Kai": {"homework": [90, 92, 94, 88], "exam": 89},
        "Lea": {"homework": [84, 80, 86, 82], "exam": 85},
        "Max": {"homework": [72, 75, 70, 71], "exam": 77},
    },
}
CLASS_CONCURRENCY = 2
STUDENT_CONCURRENCY = 3


class MissingScoreError(ValueError):
    pass


class GradeStudent(AsyncNode):
    """Grade one student: 40% homework average, 60% exam, to one decimal."""

    async def prep_async(self, shared: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        student = self.params["student"]
        return student, shared["classes"][self.params["class_id"]][student]

    async def exec_async(self, job: tuple[str, dict[str, Any]]) -> Fraction:
        student, record = job
        await asyncio.sleep(0.01)  # stands in for slow work, e.g. an LLM marking an essay
        if record["exam"] is None:
            raise MissingScoreError(f"{student} has no exam score")
        homework = Fraction(sum(record["homework"]), len(record["homework"]))
        return round(Fraction(2, 5) * homework + Fraction(3, 5) * record["exam"], 1)

    async def post_async(self, shared: dict[str, Any], job: object, grade: Fraction) -> None:
        shared["grades"][self.params["class_id"]][self.params["student"]] = grade


class Students(AsyncParallelBatchFlow):
    """Inner batch: one GradeStudent run per student of ``params["class_id"]``."""

    async def prep_async(self, shared: dict[str, Any]) -> list[dict[str, str]]:
        class_id = self.params["class_id"]  # set by the outer flow for this run
        shared["grades"][class_id] = {}
        return [{"student": s} for s in shared["classes"][class_id]]

    async def post_async(
        self, shared: dict[str, Any], param_sets: list[dict[str, str]], results: list[Any]
    ) -> None:
        # With on_item_error="collect", `results` holds one entry per student: the
        # sub-flow's last action, or an ItemError in the position of a failed run.
        for params, result in zip(param_sets, results):
            if isinstance(result, ItemError):
                shared["failures"].append(
                    {
                        "class_id": self.params["class_id"],
                        "student": params["student"],
                        "index": result.index,
                        "error": result.exception,
                    }
                )


class Classes(AsyncParallelBatchFlow):
    """Outer batch: one Students run per class."""

    async def prep_async(self, shared: dict[str, Any]) -> list[dict[str, str]]:
        return [{"class_id": c} for c in shared["classes"]]

    async def post_async(
        self, shared: dict[str, Any], param_sets: list[dict[str, str]], _: None
    ) -> None:
        report = {}
        for params in param_sets:
            class_id = params["class_id"]
            grades = shared["grades"][class_id]
            students = list(shared["classes"][class_id])
            report[class_id] = {
                "grades": {s: float(grades[s]) for s in students if s in grades},
                "graded": len(grades),
                "students": len(students),
                "average": float(round(sum(grades.values(), Fraction(0)) / len(grades), 2)),
            }
        shared["report"] = report


class InFlight:
    """Observer: items in flight per batch level (events name the flow they belong to)."""

    def __init__(self) -> None:
        self.now: dict[str, int] = {}
        self.peak: dict[str, int] = {}

    def __call__(self, event: Event) -> None:
        if event.kind is EventKind.ITEM_STARTED:
            self.now[event.node] = self.now.get(event.node, 0) + 1
            self.peak[event.node] = max(self.peak.get(event.node, 0), self.now[event.node])
        elif event.kind in (EventKind.ITEM_FINISHED, EventKind.ITEM_FAILED):
            self.now[event.node] -= 1


def build_flow() -> Classes:
    students = Students(
        start=GradeStudent(name="grade"),
        name="students",
        max_concurrency=STUDENT_CONCURRENCY,
        on_item_error="collect",
    )
    return Classes(start=students, name="classes", max_concurrency=CLASS_CONCURRENCY)


def main() -> dict[str, Any]:
    """Grade everyone; return the per-class report, the failures and the peaks."""
    shared: dict[str, Any] = {"classes": CLASSES, "grades": {}, "failures": []}
    observer = InFlight()
    asyncio.run(build_flow().run_async(shared, observer=observer))
    return {
        "report": shared["report"],
        "failures": shared["failures"],
        "peak_in_flight": observer.peak,
    }


def report(result: dict[str, Any]) -> None:
    for class_id, r in result["report"].items():
        print(
            f"Class {class_id}: average {r['average']:.2f} ({r['graded']} of {r['students']} graded)"
        )
        print("  " + ", ".join(f"{s} {g:.1f}" for s, g in r["grades"].items()))
    print()
    for f in result["failures"]:
        print(
            f"FAILED: class {f['class_id']}, student {f['student']} (item {f['index']}): "
            f"{type(f['error']).__name__}: {f['error']}"
        )
    peak = result["peak_in_flight"]
    print()
    print(f"Peak classes in flight: {peak['classes']} (max_concurrency={CLASS_CONCURRENCY})")
    print(
        f"Peak students in flight, all classes together: {peak['students']} "
        f"(at most {CLASS_CONCURRENCY} x {STUDENT_CONCURRENCY})"
    )


if __name__ == "__main__":
    report(main())
