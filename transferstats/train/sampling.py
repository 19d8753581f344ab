"""Which examples a mix uses, and which task each training batch comes from. numpy only."""

from __future__ import annotations

import hashlib

import numpy as np


def task_rng(seed: int, task: str) -> np.random.Generator:
    """A generator for one (seed, task): the same examples whatever else is in the mix."""
    return np.random.default_rng([seed, int(hashlib.sha256(task.encode()).hexdigest()[:8], 16)])


def subsample(available: int, requested: int, seed: int, task: str) -> list[int]:
    """``requested`` example indices out of ``available``, sorted, drawn with the run's seed.

    The grid asks for an exact volume, so asking for more than there is, is an error.
    """
    if requested > available:
        raise ValueError(f"the mix asks for {requested} examples of {task!r} but its training data "
                         f"has only {available}")
    if requested == available:
        return list(range(available))
    return sorted(int(i) for i in task_rng(seed, task).choice(available, requested, replace=False))


def task_probabilities(sizes: dict[str, int], sampling: str, temperature: float = 1.0
                       ) -> dict[str, float]:
    """Probability of drawing each task's next batch.

    proportional: p ~ n; temperature: p ~ n^(1/T) (T = 1 is proportional, large T nears uniform);
    uniform: equal.
    """
    exponent = {"proportional": 1.0, "uniform": 0.0}.get(sampling)
    if exponent is None:
        if sampling != "temperature":
            raise ValueError(f"unknown sampling {sampling!r}")
        exponent = 1.0 / temperature
    weights = {task: float(n) ** exponent for task, n in sizes.items()}
    total = sum(weights.values())
    return {task: weight / total for task, weight in weights.items()}


def task_schedule(probabilities: dict[str, float], steps: int, seed: int) -> list[str]:
    """The task of each of ``steps`` batches, drawn independently with ``probabilities``."""
    tasks = list(probabilities)
    draws = np.random.default_rng(seed).choice(len(tasks), size=steps,
                                               p=[probabilities[t] for t in tasks])
    return [tasks[i] for i in draws]


def length_grouped_batches(lengths: list[int], batch_size: int, rng: np.random.Generator,
                           group: int = 50) -> list[list[int]]:
    """One epoch of batches whose members have similar lengths (less padding), in random order.

    Shuffle, sort within windows of ``group`` batches by length, cut into batches, shuffle batches.
    """
    order = rng.permutation(len(lengths))
    window = batch_size * group
    batches: list[list[int]] = []
    for begin in range(0, len(order), window):
        chunk = sorted(order[begin:begin + window], key=lambda i: -lengths[i])
        batches.extend([int(i) for i in chunk[b:b + batch_size]]
                       for b in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]
