"""Designs where resampling fails and collinear fixed effects (issue 25, item 4), end to end:
the analysis predicts the failed resamples, names their cause and uses a bootstrap that holds;
it warns past a variance inflation factor of 5."""

from __future__ import annotations

import numpy as np

import transferstats as ts
from gauntlet_grids import fixed_budget_language_grid
from transferstats.simulate import SimulationSettings, flat_table, simulate_scores


def test_a_lone_top_mix_gets_the_parametric_bootstrap_with_its_cause_named(tmp_path):
    grid = fixed_budget_language_grid(tmp_path)
    result = ts.analyze(grid.path, resamples=60, jobs=1, random_slopes="off",
                        **grid.analyze_options)
    intervals = result.intervals
    assert intervals.resampling == "parametric"
    assert "the only mix with 52 languages" in intervals.why
    assert intervals.failed_resamples == 0, "every parametric draw keeps the design's variation"
    assert any("left out of 36% of resamples" in w for w in result.warnings)
    assert result.verdict == "diversity_only"


def test_a_covariate_that_follows_diversity_is_flagged():
    settings = SimulationSettings(draws=3, seeds=(1,), targets=("xnli", "panx"), max_languages=3)
    table = flat_table(*simulate_scores(settings))
    members = table["mix_tasks"].str.count(r"\+") + 1
    rng = np.random.default_rng(0)
    noise = table.groupby("run_id")["run_id"].transform(lambda run: rng.normal(0, 0.05))
    table["lr"] = np.log2(members) + noise.astype(float)
    result = ts.analyze(table, covariates=["lr"], resamples=60, jobs=1, identity="off")
    collinearity = result.collinearity
    assert collinearity is not None and collinearity.warning is not None
    assert "lr" in collinearity.warning and "diversity" in collinearity.warning
    assert any("variance inflation factor above 5" in w for w in result.warnings)
    assert result.to_dict()["collinearity"]["warning"] == collinearity.warning
