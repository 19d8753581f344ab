"""Shared fixtures: small simulated results folders in the real contract."""

from __future__ import annotations

import pytest

from transferstats.simulate import SimulationSettings, simulate_results

SMALL = SimulationSettings(diversity_levels=(1, 2, 4), volume_levels=(10_000, 40_000), draws=2,
                           seeds=(1, 2), targets=("xnli", "pawsx", "xquad"), max_languages=4)


@pytest.fixture
def small_results(tmp_path):
    """A small but complete simulated grid: 12 mixes, 3 targets, up to 4 languages, 2 seeds."""
    return simulate_results(tmp_path / "results", SMALL)
