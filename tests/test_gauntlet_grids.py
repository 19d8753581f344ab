"""The gauntlet's grids (tests/gauntlet_grids.py) load without errors and hold what their
descriptions say; the analysis of each is checked elsewhere."""

from __future__ import annotations

import json

import numpy as np
import pytest

import transferstats as ts
from gauntlet_grids import (
    BUILDERS,
    GauntletGrid,
    fixed_budget_language_grid,
    realistic_slopes_grid,
)
from transferstats.analysis.derive import describe_mix
from transferstats.analysis.diagnostics import predict_resample_failures
from transferstats.cli import main


@pytest.fixture(scope="module")
def fixed_budget(tmp_path_factory) -> GauntletGrid:
    return fixed_budget_language_grid(tmp_path_factory.mktemp("fixed_budget"))


#: Writing the bundled grid's 999 run folders and reading them back takes ~13 s.
SLOW_GRIDS = {"bundled_factorial"}


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow)
                                  if name in SLOW_GRIDS else name for name in BUILDERS])
def test_grid_loads_and_matches_its_description(name, tmp_path, fixed_budget):
    grid = fixed_budget if name == "fixed_budget_language" else BUILDERS[name](tmp_path)
    loaded = ts.load_results(grid.path, tasks=grid.analyze_options.get("tasks"), strict=False)
    assert loaded.errors == []
    assert len(loaded.warnings) == sum(grid.failed_runs.values()), "only failed runs warn"
    scores = loaded.scores
    assert tuple(sorted(scores["model"].unique())) == tuple(sorted(grid.models))
    mine = scores[scores["model"] == grid.model]
    assert mine["run_id"].nunique() == grid.runs
    assert set(mine["target_task"]) == set(grid.targets)
    assert mine.loc[mine["mix"] != "none", "mix"].nunique() == grid.mixes
    assert (mine["mix"] == "none").any() == grid.baseline
    assert ("en" in set(mine["language"])) == grid.english_evaluated
    kinds = set(mine.loc[mine["mix"] != "none", "source_kind"].replace("", "task"))
    assert kinds == {grid.kind}
    left_out = sum(grid.dropped.values())
    assert len(scores) == grid.modelled_rows + grid.baseline_rows + left_out, \
        "every score is modelled, a baseline, or left out for a stated reason"
    described = [describe_mix(text, grid.kind) for text in mine["mix_tasks"].unique() if text]
    spread = {factor: np.ptp(np.log2([float(mix[column]) for mix in described]))
              for factor, column in (("diversity", "n_tasks"), ("volume", "examples"))}
    varying = {factor for factor, value in spread.items() if value > 0.03}
    assert varying == ({"diversity", "volume"} if grid.varies == "both" else {grid.varies})


def test_the_fixed_budget_grid_validates_with_its_tasks_file(fixed_budget, tmp_path, capsys):
    grid = fixed_budget
    problems = ["--problems-file", str(tmp_path / "problems.tsv")]
    assert main(["validate", str(grid.path), "--tasks", str(grid.tasks_file), *problems]) == 0
    assert main(["validate", str(grid.path), *problems]) == 1, "its targets are not built in"
    capsys.readouterr()


def test_the_lone_top_mix_is_left_out_of_36_percent_of_resamples(fixed_budget):
    grid = fixed_budget
    scores = ts.load_results(grid.path, tasks=grid.analyze_options["tasks"]).scores
    scores = scores.assign(diversity=[np.log2(describe_mix(text, "language")["n_tasks"])
                                      for text in scores["mix_tasks"]])
    prediction = predict_resample_failures(scores, ("language", "mix"), ("diversity",),
                                           n_monte_carlo=0)
    assert prediction.failure_share("diversity") == pytest.approx((18 / 19) ** 19 + 19.0 ** -19)
    assert "('aya-all52') is left out of 36% of resamples" in prediction.cause("diversity")


def test_the_realistic_grid_records_its_slopes(tmp_path):
    grid = realistic_slopes_grid(tmp_path)
    truth = json.loads((grid.path / "simulation.json").read_text())
    assert truth["target_slope_correlation"] == -0.98
    assert truth["realised"]["diversity"] == grid.truth["diversity"]
    slopes = np.array([[grid.truth["diversity"][t], grid.truth["volume"][t]] for t in grid.targets])
    assert slopes.std(axis=0).min() > 0.5, "the targets' slopes differ"
    assert grid.truth["clipped_share"] < 0.02
