"""Shared fixtures: small simulated results folders in the real contract."""

from __future__ import annotations

import pytest

from transferstats.simulate import (
    LANGUAGE_GRID,
    SimulationSettings,
    flat_table,
    simulate_results,
    simulate_scores,
)

SMALL = SimulationSettings(diversity_levels=(1, 2, 4), volume_levels=(10_000, 40_000), draws=2,
                           seeds=(1, 2), targets=("xnli", "pawsx", "xquad"), max_languages=4)
#: A small grid of language mixes as ``simulate --kind language`` makes them: no baseline, one seed.
LANGUAGE_SMALL = SimulationSettings(**LANGUAGE_GRID | {
    "diversity_levels": (1, 2, 4), "volume_levels": (10_000, 40_000), "draws": 2,
    "targets": ("xnli", "pawsx"), "max_languages": 4})


@pytest.fixture
def small_results(tmp_path):
    """A small but complete simulated grid: 12 mixes, 3 targets, up to 4 languages, 2 seeds."""
    return simulate_results(tmp_path / "results", SMALL)


@pytest.fixture
def language_table():
    """The flat table of :data:`LANGUAGE_SMALL`: 12 language mixes, 2 targets, 1 seed."""
    return flat_table(*simulate_scores(LANGUAGE_SMALL))


@pytest.fixture(scope="session")
def lm_eval_grid(tmp_path_factory):
    """Real lm-evaluation-harness output of 8 tiny random models (4 language mixes x 2 seeds) on
    local XNLI-like (validation) and PAWS-X-like (test) tasks, imported by ``transferstats import
    lm-eval``: the results folder (``tests/lm_eval_grid.py``). Built once per session (about
    30 s on 2 cores), for tests marked ``slow``."""
    for module in ("lm_eval", "transformers", "torch"):
        pytest.importorskip(module)
    from lm_eval_grid import build_lm_eval_grid

    return build_lm_eval_grid(tmp_path_factory.mktemp("lm-eval-grid"))
