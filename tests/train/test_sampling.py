import pytest

pytest.importorskip("torch")

import numpy as np

from transferstats.train.sampling import length_grouped_batches, subsample, task_probabilities, task_schedule

pytestmark = pytest.mark.train


def test_subsample_is_exact_seeded_and_independent_of_the_mix():
    chosen = subsample(1000, 100, seed=3, task="mnli")
    assert len(chosen) == len(set(chosen)) == 100 and chosen == sorted(chosen)
    assert chosen == subsample(1000, 100, seed=3, task="mnli")
    assert chosen != subsample(1000, 100, seed=4, task="mnli")
    assert subsample(5, 5, seed=1, task="qqp") == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="only 5"):
        subsample(5, 6, seed=1, task="qqp")


def test_task_probabilities():
    sizes = {"a": 100, "b": 400}
    assert task_probabilities(sizes, "proportional") == pytest.approx({"a": 0.2, "b": 0.8})
    assert task_probabilities(sizes, "uniform") == pytest.approx({"a": 0.5, "b": 0.5})
    # T = 2: weights sqrt(100) = 10 and sqrt(400) = 20.
    assert task_probabilities(sizes, "temperature", 2.0) == pytest.approx({"a": 1 / 3, "b": 2 / 3})


def test_schedule_follows_the_probabilities():
    schedule = task_schedule({"a": 0.2, "b": 0.5, "c": 0.3}, steps=20000, seed=0)
    shares = {task: schedule.count(task) / len(schedule) for task in "abc"}
    assert shares == pytest.approx({"a": 0.2, "b": 0.5, "c": 0.3}, abs=0.015)


def test_length_grouped_batches_cover_every_example_once():
    rng = np.random.default_rng(0)
    lengths = list(rng.integers(5, 100, size=203))
    batches = length_grouped_batches(lengths, 8, rng, group=4)
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(203))
    # Grouping makes batches far more uniform in length than random batches.
    spread = np.mean([max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches])
    assert spread < 40
