"""The generative model of ``transferstats simulate`` and its agreement with ``power``'s."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from transferstats.analysis.power import DEFAULT_SD
from transferstats.simulate import SimulationSettings, simulate_scores

GRID = dict(diversity_levels=(1, 2), volume_levels=(10_000, 40_000), draws=2, seeds=(1, 2),
            targets=("xnli", "pawsx", "panx"), max_languages=3, seed_sd=0.0)


def _improvements(settings: SimulationSettings) -> pd.DataFrame:
    """Score of every (mix, target, language, seed) with its mix and target."""
    runs, scores = simulate_scores(settings)
    meta = pd.DataFrame([{"run_id": r["run_id"], "target": r["target_task"],
                          "mix": r["intermediate"]["name"] if r["intermediate"] else "none"}
                         for r in runs])
    return scores.merge(meta, on="run_id").query("metric != 'exact_match'")


def test_target_by_mix_shifts_whole_cells_and_leaves_the_other_draws():
    """w_tm moves every language and seed of a (mix, target) cell by one amount, different
    across the targets of a mix, and the grid without it has the same other draws."""
    without = _improvements(SimulationSettings(**GRID, target_mix_sd=0.0))
    with_it = _improvements(SimulationSettings(**GRID, target_mix_sd=2.0))
    shift = with_it.assign(shift=with_it["value"] - without["value"])
    per_cell = shift.groupby(["mix", "target"])["shift"]
    assert (per_cell.max() - per_cell.min()).max() < 2e-3          # rounding to 3 decimals
    cells = per_cell.mean().drop("none", level="mix")
    assert cells.groupby(level="mix").std().min() > 0.1            # targets differ within a mix
    assert (shift.loc[shift["mix"] == "none", "shift"].abs() < 1e-12).all()  # baselines unmoved
    assert 1.0 < cells.std() < 3.5


def test_power_defaults_are_the_simulate_defaults():
    """One generative model: power's default components are simulate's, with the language main
    effect and the language-within-target effect as one (target, language) component."""
    s = SimulationSettings()
    assert DEFAULT_SD == {"target": s.target_sd,
                          "target_language": math.hypot(s.language_sd, s.target_language_sd),
                          "mix": s.mix_sd, "target_mix": s.target_mix_sd, "seed": s.seed_sd}
    assert np.isclose(DEFAULT_SD["target_language"], 1.0)
