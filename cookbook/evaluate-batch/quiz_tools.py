"""Components for the quiz-grading flow: ``grade_all`` runs the ``grade-one.yaml``
sub-flow once per answer with ``ctx.evaluate_batch`` (a batch inside a workflow);
``check`` grades one answer against a fixed answer key, so every run gives the same
result.
"""

from __future__ import annotations

from typing import Any

from pocketbatch import ComponentError
from pocketbatch.loader import CallContext

ANSWER_KEY = {"q1": "paris", "q2": "4", "q3": "blue whale", "q4": "1969"}


def check(answer: dict[str, Any]) -> dict[str, Any]:
    """``{question, answer}`` -> ``{question, correct}``.

    Raises:
        ComponentError: ``NOT_FOUND`` for a question the key does not have.
    """
    question = answer["question"]
    if question not in ANSWER_KEY:
        raise ComponentError("NOT_FOUND", f"no question {question!r} in the answer key")
    given = " ".join(str(answer["answer"]).lower().split())
    return {"question": question, "correct": given == ANSWER_KEY[question]}


async def grade_all(sheet: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
    """Grade a student's answer sheet: one run of ``grade-one.yaml`` per distinct
    question (a question answered twice counts its last answer), at most 2 at a time.

    ``ctx.evaluate_batch`` answers one FlowResult per input, in input order; a failed
    run is a result like any other, so this component decides what it means.
    """
    latest = {answer["question"]: answer for answer in sheet["answers"]}
    answers = list(latest.values())
    results = await ctx.evaluate_batch("grade-one.yaml", answers, max_concurrency=2)
    graded = [r.result for r in results if r.ok]
    correct = [g["question"] for g in graded if g["correct"]]
    return {
        "student": sheet["student"],
        "score": f"{len(correct)}/{len(graded)}",
        "correct": correct,
        "wrong": [g["question"] for g in graded if not g["correct"]],
        "not_graded": [
            f"{a['question']}: {r.error.message}"
            for a, r in zip(answers, results)
            if r.error is not None
        ],
    }
