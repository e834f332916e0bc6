"""VQA accuracy against the official evaluation's own scores (tests/data/vqa_accuracy_golden.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pgmm_core.vqa_accuracy import exact_match, normalize_answer, question_accuracy, vqa_accuracy

GOLDEN = json.loads((Path(__file__).parent / "data" / "vqa_accuracy_golden.json").read_text(encoding="utf-8"))
CASES = GOLDEN["vqa"]


def test_every_question_scores_as_the_official_code():
    wrong = [(c["question_id"], c["prediction"], question_accuracy(c["prediction"], c["answers"]), c["accuracy"])
             for c in CASES if abs(question_accuracy(c["prediction"], c["answers"]) - c["accuracy"]) > 1e-9]
    assert not wrong, wrong[:5]
    assert len(CASES) >= 200 and len({c["accuracy"] for c in CASES}) > 5  # many distinct scores, not one


def test_overall_and_per_type_scores_equal_the_official_ones():
    predictions = {c["question_id"]: c["prediction"] for c in CASES}
    annotations = {c["question_id"]: c["answers"] for c in CASES}
    result = vqa_accuracy(predictions, annotations,
                          answer_types={c["question_id"]: c["answer_type"] for c in CASES},
                          question_types={c["question_id"]: c["question_type"] for c in CASES})
    assert result["questions"] == len(CASES)
    assert result["overall"] == pytest.approx(GOLDEN["overall"], abs=1e-9)
    assert result["per_answer_type"].keys() == GOLDEN["per_answer_type"].keys()
    for key, value in GOLDEN["per_answer_type"].items():
        assert result["per_answer_type"][key] == pytest.approx(value, abs=1e-9), key
    assert result["per_question_type"].keys() == GOLDEN["per_question_type"].keys()
    for key, value in GOLDEN["per_question_type"].items():
        assert result["per_question_type"][key] == pytest.approx(value, abs=1e-9), key
    printed = GOLDEN["official_printed"]
    assert round(100 * result["overall"], 2) == printed["overall"]
    assert {k: round(100 * v, 2) for k, v in result["per_answer_type"].items()} == printed["perAnswerType"]


def test_normalisation_equals_the_official_processing():
    # the official code's processPunctuation + processDigitArticle of each raw prediction
    wrong = [(c["prediction"], normalize_answer(c["prediction"]), c["normalized_prediction"]) for c in CASES
             if "\n" not in c["prediction"] and "\t" not in c["prediction"] and c["prediction"] == c["prediction"].strip()
             and normalize_answer(c["prediction"]) != c["normalized_prediction"]]
    assert not wrong, wrong[:5]


def test_gqa_exact_match_equals_lavis_rule():
    cases = GOLDEN["gqa"]
    predictions = {c["question_id"]: c["prediction"] for c in cases}
    answers = {c["question_id"]: c["answer"] for c in cases}
    assert exact_match(predictions, answers) == pytest.approx(GOLDEN["gqa_accuracy"], abs=1e-12)
    for c in cases:
        assert exact_match({0: c["prediction"]}, {0: c["answer"]}) == float(c["correct"]), c


def test_unanimous_annotators_are_compared_without_normalisation():
    assert question_accuracy("yes", ["yes"] * 10) == 1.0
    assert question_accuracy("Yes", ["yes"] * 10) == 0.0  # the official quirk, kept
    assert question_accuracy("Yes", ["yes"] * 9 + ["no"]) == 1.0


def test_leave_one_out_formula():
    assert question_accuracy("blue", ["blue"] * 2 + ["red"] * 8) == pytest.approx((8 * 2 / 3 + 2 * 1 / 3) / 10)
    assert question_accuracy("blue", ["blue"] * 3 + ["red"] * 7) == pytest.approx((7 * 1 + 3 * 2 / 3) / 10)
    assert question_accuracy("blue", ["blue"] * 4 + ["red"] * 6) == 1.0


def test_missing_or_extra_predictions_are_refused():
    with pytest.raises(ValueError, match="1 annotated question"):
        vqa_accuracy({1: "a"}, {1: ["a"] * 10, 2: ["b"] * 10})
    with pytest.raises(ValueError, match="1 prediction"):
        vqa_accuracy({1: "a", 3: "c"}, {1: ["a"] * 10})
    with pytest.raises(ValueError):
        vqa_accuracy({}, {})
    with pytest.raises(ValueError, match="without a prediction"):
        exact_match({}, {"q": "a"})
