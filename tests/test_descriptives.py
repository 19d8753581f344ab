"""Descriptive tables: their intervals are scipy's, computed in batches and aggregations."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from transferstats.analysis import descriptives


def _scipy_interval(samples: list[np.ndarray], level: float, seed: int) -> tuple[float, float]:
    """One call of scipy's stratified percentile bootstrap of the mean of the sample means."""
    def mean_of_means(*arrays, axis=-1):
        return np.mean([a.mean(axis=axis) for a in arrays], axis=0)

    interval = stats.bootstrap(samples, mean_of_means, n_resamples=descriptives.N_RESAMPLES,
                               confidence_level=level, method="percentile",
                               rng=np.random.default_rng(seed)).confidence_interval
    return float(interval.low), float(interval.high)


def test_batched_intervals_are_those_of_one_scipy_call_per_group(monkeypatch):
    """Groups of one or several samples, of equal and unequal sizes, some split over batches
    (a small MAX_RESAMPLED), and groups with a one-unit sample, which get no interval."""
    monkeypatch.setattr(descriptives, "MAX_RESAMPLED", 3 * descriptives.N_RESAMPLES * 8)
    rng = np.random.default_rng(0)
    sizes = [[8], [8], [8], [8], [8], [5], [8, 5], [8, 5], [3, 3, 4], [1], [6, 1], [8]]
    groups = [[rng.normal(size=n) * (i + 1) for n in group] for i, group in enumerate(sizes)]
    results = descriptives._mean_intervals(groups, 0.9, seed=11)
    for group, (mean, low, high) in zip(groups, results, strict=True):
        assert mean == pytest.approx(np.mean([s.mean() for s in group]))
        if min(len(s) for s in group) < 2:
            assert np.isnan(low) and np.isnan(high)
        else:
            assert (low, high) == pytest.approx(_scipy_interval(group, 0.9, 11), rel=1e-12)
            assert low < mean < high


def test_design_cell_intervals_are_t_intervals_over_the_cells_mixes():
    """interaction_table: per (tasks, examples) cell, the t interval of the mix means; NaN for a
    cell of one mix."""
    rng = np.random.default_rng(1)
    n_tasks = np.array([1, 1, 1, 2, 2, 4, 4, 4, 4, 8])
    examples = np.array([10, 10, 10, 10, 10, 40, 40, 40, 40, 160]) * 1000
    data = pd.DataFrame({"mix": np.repeat([f"m{i}" for i in range(10)], 3),
                         "n_tasks": np.repeat(n_tasks, 3), "examples": np.repeat(examples, 3),
                         "score": rng.normal(size=30)})
    table = descriptives.interaction_table(data, SimpleNamespace(outcome="score", level=0.9))
    assert table["n"].tolist() == [3, 2, 4, 1]
    mix_means = data.groupby("mix")["score"].mean().to_numpy()
    for row, members in zip(table.itertuples(), [[0, 1, 2], [3, 4], [5, 6, 7, 8], [9]],
                            strict=True):
        values = mix_means[members]
        assert row.mean == pytest.approx(values.mean())
        if len(values) == 1:
            assert np.isnan(row.ci_low) and np.isnan(row.ci_high)
        else:
            expected = stats.t.interval(0.9, len(values) - 1, loc=values.mean(),
                                        scale=stats.sem(values))
            assert (row.ci_low, row.ci_high) == pytest.approx(expected, rel=1e-12)
    assert table["volume_examples"].tolist() == [10_000, 10_000, 40_000, 160_000]
