"""GPU hours: examples x epochs / throughput, evaluation overhead, retrieval and unknown targets."""

from __future__ import annotations

import pytest

from transferstats.grid.estimate import (
    EXAMPLES_PER_SECOND,
    estimate_gpu_hours,
    model_size,
)
from transferstats.grid.expand import expand_grid
from transferstats.grid.spec import grid_from_dict


def test_hours_follow_examples_epochs_and_throughput():
    grid = grid_from_dict({
        "model": "xlm-roberta-base", "targets": ["xnli", "tatoeba", "mytarget"], "seeds": [1],
        "baseline": False, "mixes": [{"name": "m", "tasks": {"mnli": 1000}}],
        "hyperparameters": {"intermediate": {"epochs": 2}, "target": {"epochs": 3}},
        "estimate": {"examples_per_second": 100, "target_examples": 500},
        "tasks": {"mytarget": {"role": "target", "format": "classification",
                               "metric": "accuracy"}},
    }, "g")
    estimate = estimate_gpu_hours(expand_grid(grid, "results"))
    assert estimate.intermediate_hours == pytest.approx(1000 * 2 / 100 * 1.1 / 3600)
    assert estimate.target_hours == pytest.approx(500 * 3 / 100 * 1.1 / 3600 + 0.1)
    assert "not counted: mytarget" in estimate.assumption


def test_throughput_assumption_by_model_size():
    assert model_size("xlm-roberta-large", prepared=False) == "large"
    assert model_size("FacebookAI/xlm-roberta-base", prepared=False) == "base"
    assert model_size("anything", prepared=True) == "tiny"
    assert EXAMPLES_PER_SECOND["large"] < EXAMPLES_PER_SECOND["base"]
