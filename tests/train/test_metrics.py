import pytest

pytest.importorskip("torch")

import numpy as np

from transferstats.train import metrics

pytestmark = pytest.mark.train


def test_seqeval_f1_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    predicted = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O"]]
    # Gold entities: PER(0-1), LOC(3), ORG; predicted: PER(0-1), ORG(3), ORG. 2 right of 3 and 3.
    assert metrics.tagging_f1(predicted, gold) == pytest.approx(100 * 2 / 3)


def test_pos_f1_is_token_accuracy():
    gold = [["NOUN", "VERB", "DET"], ["ADJ"]]
    predicted = [["NOUN", "NOUN", "DET"], ["ADJ"]]
    assert metrics.tagging_f1(predicted, gold) == pytest.approx(75.0)


def test_squad_normalisation_and_scores():
    assert metrics.normalize_answer("The  Eiffel, Tower!", "en") == "eiffel tower"
    assert metrics.normalize_answer("Der Turm", "de") == "turm"
    assert metrics.normalize_answer("北京大学", "zh") == "北 京 大 学"
    # "the big house" vs gold "a big red house": tokens {big, house} vs {big, red, house}.
    scores = metrics.squad_scores(["the big house", "Paris."], [["a big red house"], ["paris", "x"]],
                                  "en")
    precision, recall = 2 / 2, 2 / 3
    f1_first = 2 * precision * recall / (precision + recall)
    assert scores["f1"] == pytest.approx(100 * (f1_first + 1.0) / 2)
    assert scores["exact_match"] == pytest.approx(50.0)


def test_squad_unanswerable():
    scores = metrics.squad_scores(["", "something"], [[], []], "en")
    assert scores == {"f1": 50.0, "exact_match": 50.0}


def test_chinese_f1_counts_characters():
    # 北京 vs 北京大学: 2 common characters; precision 1, recall 1/2.
    assert metrics.squad_scores(["北京"], [["北京大学"]], "zh")["f1"] == pytest.approx(100 * 2 / 3)


def test_tatoeba_accuracy():
    similarity = np.array([[0.9, 0.1, 0.0], [0.2, 0.1, 0.8], [0.0, 0.3, 0.7]])
    assert metrics.tatoeba_accuracy(similarity) == pytest.approx(200 / 3)


def test_margin_mining_and_bucc_f1_by_hand():
    similarity = np.array([[0.9, 0.5, 0.1],
                           [0.4, 0.8, 0.6],
                           [0.1, 0.7, 0.75]])
    k = 2
    forward, backward = metrics.nearest(similarity, k), metrics.nearest(similarity.T, k)
    # Mean of each row's / column's 2 nearest: rows .7 .7 .725; columns .65 .75 .675.
    row, col = np.array([0.7, 0.7, 0.725]), np.array([0.65, 0.75, 0.675])
    margin = similarity / ((row[:, None] + col[None, :]) / 2)
    candidates = metrics.mine_candidates(forward, backward)
    found = {(i, j): s for i, j, s in candidates}
    # Row 2's neighbours are columns 2 (.75) and 1 (.7): margins .75/.7 = 1.0714 and .7/.7375.
    assert set(found) == {(0, 0), (1, 1), (2, 2)}
    for (i, j), score in found.items():
        assert score == pytest.approx(margin[i, j])
    assert [c[:2] for c in candidates] == sorted(found, key=lambda p: -margin[p])

    gold = {(0, 0), (1, 1)}
    # Best first: (0,0) 1.3235, (1,1) 1.1034, (2,2) 1.0714: two hits at rank 2 gives F1 = 1.
    threshold = metrics.best_threshold(candidates, gold)
    assert threshold == pytest.approx(margin[1, 1])
    assert metrics.bucc_f1(candidates, gold, threshold) == pytest.approx(100.0)
    # With every candidate kept: precision 2/3, recall 1, F1 0.8.
    assert metrics.bucc_f1(candidates, gold, 0.0) == pytest.approx(80.0)
