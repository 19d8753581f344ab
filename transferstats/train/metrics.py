"""XTREME's metrics, as percentages. Pure Python and numpy: no torch needed.

- Classification and multiple choice: accuracy.
- Tagging: when every tag is ``O`` or ``B-``/``I-`` prefixed (NER, PAN-X), entity-level F1 with
  seqeval, as XTREME. Otherwise (POS) the token-level micro F1, which for one tag per token equals
  token accuracy; it is what XTREME's POS "F1" amounts to. Both are reported as ``f1``.
- Extractive QA: SQuAD F1 and exact match with MLQA's answer normalisation (lower case, drop
  Unicode punctuation, drop the language's articles, split Chinese into characters), for every QA
  target; languages MLQA does not cover get no article removal and whitespace splitting.
- BUCC: F1 of pairs mined with the ratio-margin score (Artetxe & Schwenk 2019, k = 4), the
  threshold tuned on the dev split.
- Tatoeba: accuracy of the nearest target (cosine) for each source sentence.
"""

from __future__ import annotations

import re
import string
import sys
import unicodedata
from collections import Counter
from functools import cache

import numpy as np


def accuracy(predictions: list, gold: list) -> float:
    return 100.0 * sum(p == g for p, g in zip(predictions, gold, strict=True)) / len(gold)


def is_bio(tags) -> bool:
    return all(tag == "O" or tag[:2] in ("B-", "I-") for tag in tags)


def tagging_f1(predictions: list[list[str]], gold: list[list[str]]) -> float:
    """seqeval entity F1 for BIO tag sets, token-level F1 (= accuracy) otherwise."""
    if is_bio({tag for sentence in gold for tag in sentence}):
        from seqeval.metrics import f1_score

        return 100.0 * f1_score(gold, predictions)
    pairs = [(p, g) for ps, gs in zip(predictions, gold, strict=True) for p, g in zip(ps, gs, strict=True)]
    return 100.0 * sum(p == g for p, g in pairs) / len(pairs)


# MLQA's evaluate_mlqa.py, extended to every language code (see the module docstring).
_ARTICLES = {
    "en": r"\b(a|an|the)\b",
    "es": r"\b(un|una|unos|unas|el|la|los|las)\b",
    "vi": r"\b(của|là|cái|chiếc|những)\b",
    "de": r"\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b",
    "ar": r"\sال^|ال",
}
_MIXED_SEGMENTATION = {"zh"}


@cache
def _punctuation() -> frozenset[str]:
    return frozenset(chr(i) for i in range(sys.maxunicode)
                     if unicodedata.category(chr(i)).startswith("P")) | frozenset(string.punctuation)


def _mixed_segmentation(text: str) -> list[str]:
    """Each CJK character and punctuation mark is a token; runs of other text split on spaces."""
    tokens, run = [], ""
    for char in text:
        if re.search(r"[\u4e00-\u9fa5]", char) or char in _punctuation():
            tokens.extend(run.split())
            run = ""
            tokens.append(char)
        else:
            run += char
    tokens.extend(run.split())
    return tokens


def normalize_answer(text: str, lang: str) -> str:
    text = "".join(char for char in text.lower() if char not in _punctuation())
    if lang in _ARTICLES:
        text = re.sub(_ARTICLES[lang], " ", text)
    tokens = _mixed_segmentation(text) if lang in _MIXED_SEGMENTATION else text.split()
    return " ".join(token for token in tokens if token.strip())


def _f1(prediction: str, truth: str, lang: str) -> float:
    predicted, true = normalize_answer(prediction, lang).split(), normalize_answer(truth, lang).split()
    if not predicted or not true:  # unanswerable: right only if both are empty
        return float(predicted == true)
    common = sum((Counter(predicted) & Counter(true)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(true)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: list[str], answers: list[list[str]], lang: str) -> dict[str, float]:
    """SQuAD F1 and exact match (max over the gold answers; no gold answer: the empty answer)."""
    f1 = exact = 0.0
    for prediction, truths in zip(predictions, answers, strict=True):
        truths = truths or [""]
        f1 += max(_f1(prediction, truth, lang) for truth in truths)
        exact += max(float(normalize_answer(prediction, lang) == normalize_answer(truth, lang))
                     for truth in truths)
    return {"f1": 100.0 * f1 / len(predictions), "exact_match": 100.0 * exact / len(predictions)}


def tatoeba_accuracy(similarity: np.ndarray) -> float:
    """Row i's gold target is column i."""
    return 100.0 * float(np.mean(similarity.argmax(axis=1) == np.arange(similarity.shape[0])))


def nearest(similarity: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k most similar columns: (indices, similarities), best first."""
    k = min(k, similarity.shape[1])
    indices = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    return indices, np.take_along_axis(similarity, indices, axis=1)


def mine_candidates(forward: tuple[np.ndarray, np.ndarray], backward: tuple[np.ndarray, np.ndarray]
                    ) -> list[tuple[int, int, float]]:
    """Max-score mining with the ratio margin (Artetxe & Schwenk 2019).

    ``forward`` holds each source's k nearest targets (indices, cosines), ``backward`` each
    target's k nearest sources. margin(x, y) = cos(x, y) / (mean cos of x's k neighbours / 2 +
    mean cos of y's k neighbours / 2). Each source's best target by margin and each target's best
    source form the candidates, returned with their margins, best first.
    """
    (forward_index, forward_cos), (backward_index, backward_cos) = forward, backward
    source_mean, target_mean = forward_cos.mean(axis=1), backward_cos.mean(axis=1)
    scores = {}
    for i, (targets, cosines) in enumerate(zip(forward_index, forward_cos, strict=True)):
        margins = cosines / ((source_mean[i] + target_mean[targets]) / 2)
        best = int(np.argmax(margins))
        scores[(i, int(targets[best]))] = float(margins[best])
    for j, (sources, cosines) in enumerate(zip(backward_index, backward_cos, strict=True)):
        margins = cosines / ((source_mean[sources] + target_mean[j]) / 2)
        best = int(np.argmax(margins))
        scores[(int(sources[best]), j)] = float(margins[best])
    return sorted(((i, j, score) for (i, j), score in scores.items()), key=lambda c: -c[2])


def pair_f1(predicted: set, gold: set) -> float:
    hits = len(predicted & gold)
    if hits == 0:
        return 0.0
    precision, recall = hits / len(predicted), hits / len(gold)
    return 100.0 * 2 * precision * recall / (precision + recall)


def best_threshold(candidates: list[tuple[int, int, float]], gold: set) -> float:
    """The margin threshold with the best F1 on these (dev) candidates, sorted best first:
    keeping the top r candidates with h gold hits gives F1 = 2h / (r + |gold|)."""
    best_f1, threshold, hits = -1.0, float("inf"), 0
    for rank, (i, j, score) in enumerate(candidates, start=1):
        hits += (i, j) in gold
        f1 = 2 * hits / (rank + len(gold))
        if f1 > best_f1:
            best_f1, threshold = f1, score
    return threshold


def bucc_f1(candidates: list[tuple[int, int, float]], gold: set, threshold: float) -> float:
    return pair_f1({(i, j) for i, j, score in candidates if score >= threshold}, gold)
