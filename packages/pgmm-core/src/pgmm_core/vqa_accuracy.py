"""VQA accuracy exactly as the official VQA evaluation scores it, and GQA's exact match.

The official evaluation (``vqaEvaluation/vqaEval.py`` of the VQA challenge, which LAVIS copies) is
what published VQAv2 and OK-VQA numbers mean, so every detail is kept, including the odd ones:

* answers are cleaned (newlines and tabs to spaces, stripped), and then normalised — punctuation,
  number words, articles, contractions — **only when the annotators disagree** (more than one
  distinct cleaned answer); when all ten agree, the prediction must match them as written;
* punctuation is deleted where it touches a space (or where the text has a digit-comma-digit), and
  replaced by a space elsewhere; periods not followed by a digit are deleted, at most 32 of them
  (the official code passes ``re.UNICODE`` where ``re.sub`` takes its ``count``);
* a question scores the mean, over the ten leave-one-out sets of nine annotators, of
  ``min(#annotators in the set who gave the prediction / 3, 1)``.

Scores here are fractions in [0, 1], unrounded; the official script prints ``100 * score`` rounded
to two decimals. ``tests/data/vqa_accuracy_golden.json`` holds scores the official code computed
for a fixed set of tricky cases; the tests check equality to 1e-9.

GQA is scored as LAVIS' ``GQATask`` does: prediction and the one ground-truth answer both through
:func:`normalize_answer`, then exact equality.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}
"""The official map, entries as written there (``"somebody'd": "somebodyd"`` included)."""

NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
ARTICLES: frozenset[str] = frozenset({"a", "an", "the"})
PUNCTUATION: tuple[str, ...] = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-",
                                ">", "<", "@", "`", ",", "?", "!")

# As written in the official code: "(?!<=\d)" is a negative lookahead for "<=" and a digit (it was
# meant as a lookbehind), so in effect a period not followed by a digit is removed.
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
_PERIOD_STRIP_COUNT = re.UNICODE  # the official call passes the flag as re.sub's count (32)


def clean_answer(text: str) -> str:
    """Newlines and tabs to spaces, then stripped: done to every answer before anything else."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def process_punctuation(text: str) -> str:
    """The official ``processPunctuation``."""
    out = text
    comma_between_digits = _COMMA_STRIP.search(text) is not None
    for p in PUNCTUATION:
        if (p + " " in text or " " + p in text) or comma_between_digits:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out, _PERIOD_STRIP_COUNT)


def process_digit_article(text: str) -> str:
    """The official ``processDigitArticle``: lower case, number words to digits, articles dropped,
    contractions restored."""
    words = [NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    words = [word for word in words if word not in ARTICLES]
    return " ".join(CONTRACTIONS.get(word, word) for word in words)


def normalize_answer(text: str) -> str:
    """An answer as the official evaluation compares it when annotators disagree (and as LAVIS
    compares GQA answers): cleaned, punctuation processed, digits/articles/contractions processed."""
    return process_digit_article(process_punctuation(clean_answer(text)))


def question_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """One question's official VQA accuracy in [0, 1] against all its annotators' ``answers``."""
    if not answers:
        raise ValueError("a question needs at least one annotator answer")
    gts = [clean_answer(a) for a in answers]
    prediction = clean_answer(prediction)
    if len(set(gts)) > 1:
        gts = [process_digit_article(process_punctuation(a)) for a in gts]
        prediction = process_digit_article(process_punctuation(prediction))
    matches = sum(1 for a in gts if a == prediction)
    scores = []
    for a in gts:  # leave annotator i out: the others who gave the prediction
        others = matches - (1 if a == prediction else 0)
        scores.append(min(1.0, float(others) / 3))
    return float(sum(scores)) / len(scores)


def _mean(values: list[float]) -> float:
    return float(sum(values)) / len(values)


def vqa_accuracy(predictions: Mapping[Hashable, str], annotations: Mapping[Hashable, Sequence[str]],
                 answer_types: Mapping[Hashable, Any] | None = None,
                 question_types: Mapping[Hashable, Any] | None = None) -> dict[str, Any]:
    """Official VQA accuracy of ``predictions`` (question id -> answer) against ``annotations``
    (question id -> every annotator's raw answer, 10 for VQAv2/OK-VQA).

    Returns fractions in [0, 1] (the official script prints them times 100, rounded to 2 places)::

        {"overall": float, "per_answer_type": {type: float}, "per_question_type": {type: float},
         "per_question": {question_id: float}, "questions": int}

    Like the official code, every annotated question needs a prediction and every prediction an
    annotation (a ``ValueError`` names one that has not); averages run over the questions in the
    order of ``annotations``. Type tables are empty when their mapping is not given.
    """
    if not annotations:
        raise ValueError("no annotated questions to score")
    missing = [qid for qid in annotations if qid not in predictions]
    extra = [qid for qid in predictions if qid not in annotations]
    if missing or extra:
        raise ValueError(
            f"predictions and annotations must cover the same questions: {len(missing)} annotated question(s) "
            f"without a prediction (e.g. {missing[:3]}), {len(extra)} prediction(s) without annotation "
            f"(e.g. {extra[:3]})")
    per_question: dict[Hashable, float] = {}
    by_answer_type: dict[Any, list[float]] = {}
    by_question_type: dict[Any, list[float]] = {}
    for qid, answers in annotations.items():
        score = question_accuracy(predictions[qid], answers)
        per_question[qid] = score
        if answer_types is not None:
            by_answer_type.setdefault(answer_types[qid], []).append(score)
        if question_types is not None:
            by_question_type.setdefault(question_types[qid], []).append(score)
    return {
        "overall": _mean(list(per_question.values())),
        "per_answer_type": {key: _mean(values) for key, values in by_answer_type.items()},
        "per_question_type": {key: _mean(values) for key, values in by_question_type.items()},
        "per_question": per_question,
        "questions": len(per_question),
    }


def exact_match(predictions: Mapping[Hashable, str], answers: Mapping[Hashable, str]) -> float:
    """GQA accuracy as LAVIS scores it: the fraction of questions whose prediction equals the one
    ground-truth answer after :func:`normalize_answer`-style processing of both (LAVIS does not clean
    newlines/tabs first; neither does this). Every answered question needs a prediction."""
    if not answers:
        raise ValueError("no questions to score")
    missing = [qid for qid in answers if qid not in predictions]
    if missing:
        raise ValueError(f"{len(missing)} question(s) without a prediction (e.g. {missing[:3]})")
    hits = 0
    for qid, answer in answers.items():
        pred = process_digit_article(process_punctuation(predictions[qid]))
        gold = process_digit_article(process_punctuation(answer))
        hits += pred == gold
    return hits / len(answers)
