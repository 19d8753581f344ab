"""The analysis recovers effects simulated with known values and reaches the right verdict."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from transferstats.analysis.description import DesignCheck
from transferstats.analysis.design import design_check
from transferstats.analysis.pipeline import analyze_loaded
from transferstats.analysis.result import Comparison
from transferstats.analysis.spec import AnalysisSpec, default_spec_text, load_spec
from transferstats.analysis.verdict import decide, minimum_detectable_difference
from transferstats.loading import load_results
from transferstats.problems import ResultsError
from transferstats.simulate import SimulationSettings, simulate_results

GRID = SimulationSettings(diversity_levels=(1, 2, 4, 8), volume_levels=(10_000, 40_000, 160_000),
                          draws=2, seeds=(1, 2), targets=("xnli", "panx", "xquad", "tatoeba"),
                          max_languages=6, mix_sd=0.3, seed_sd=0.8)
FAST = AnalysisSpec(resamples=200, seed=1)


def _analyze(tmp_path, settings, spec=FAST, companions=False):
    """The verdict depends on the primary model only; the plain and per-target companions are
    tested in test_identity.py."""
    results = simulate_results(tmp_path / "results", settings)
    return analyze_loaded(load_results(results), spec, n_jobs=1, progress=False,
                          companions=companions)


def test_clear_diversity_win_is_recovered(tmp_path):
    settings = replace(GRID, diversity_effect=2.0, volume_effect=0.3)
    result = _analyze(tmp_path, settings)
    diversity, volume = result.effect("diversity"), result.effect("volume")
    for effect, truth in ((diversity, 2.0), (volume, 0.3)):
        assert effect["ci_low"] <= truth <= effect["ci_high"]
        assert abs(effect["estimate"] - truth) < 0.5
    comparison = result.estimates["comparison"]
    assert comparison["ci_low"] <= 1.7 <= comparison["ci_high"]
    assert result.verdict == "supported"
    assert result.estimates["source"]["simulated"] is True
    assert result.estimates["source"]["truth"]["diversity_effect"] == 2.0


def test_clear_volume_win_is_refuted(tmp_path):
    result = _analyze(tmp_path, replace(GRID, diversity_effect=0.0, volume_effect=2.0))
    assert result.verdict == "refuted"
    assert result.effect("volume")["ci_low"] <= 2.0 <= result.effect("volume")["ci_high"]


def test_no_difference_is_inconclusive(tmp_path):
    result = _analyze(tmp_path, replace(GRID, diversity_effect=1.0, volume_effect=1.0))
    assert result.verdict == "inconclusive"
    mdd = result.estimates["minimum_detectable_difference"]
    assert 0 < mdd < 3
    assert "could detect" in result.estimates["verdict_reason"]


def test_interaction_is_recovered(tmp_path):
    result = _analyze(tmp_path, replace(GRID, interaction=0.8, seed_sd=0.5))
    effect = result.effect("diversity:volume")
    assert effect["ci_low"] <= 0.8 <= effect["ci_high"] and effect["ci_low"] > 0
    assert effect["p_value"] < 0.01


def test_confounded_design_is_called_confounded(tmp_path):
    # Volume doubles whenever the number of tasks doubles: the effects cannot be separated.
    tasks = ["mnli", "qqp", "squad_v1", "hellaswag", "ccg", "anli", "cosmosqa", "sst2"]
    mixes = tuple((f"m{n}-{draw}", tuple((task, 10_000) for task in np.roll(tasks, draw)[:n]))
                  for n in (1, 2, 4, 8) for draw in range(2))
    result = _analyze(tmp_path, replace(GRID, mixes=mixes))
    assert result.verdict == "confounded"
    assert result.estimates["design"]["confounded"] is True
    reason = result.estimates["verdict_reason"]
    assert "collinear" in reason or "cannot be separated" in reason


def test_design_check_thresholds():
    import pandas as pd
    mixes = pd.DataFrame({"n_tasks": [1, 2, 4, 8, 1, 2, 4, 8], "examples": [1, 2, 4, 8, 8, 4, 2, 1]})
    check = design_check(mixes, "n_tasks", 0.9)
    assert check["correlation"] == pytest.approx(0.0) and check["vif"] == pytest.approx(1.0)
    assert check["confounded"] is False
    mixes["examples"] = [1, 2, 4, 8, 2, 4, 8, 16]
    check = design_check(mixes, "n_tasks", 0.9)
    assert check["correlation"] > 0.9 and check["confounded"] is True
    # A grid that varies one factor is not confounded (tests/test_single_factor.py).
    flat = pd.DataFrame({"n_tasks": [1, 2, 4], "examples": [5, 5, 5]})
    check = design_check(flat, "n_tasks", 0.9)
    assert check["confounded"] is False and check["single_factor"] == "diversity"


def test_minimum_detectable_difference_is_2_8_standard_errors():
    assert minimum_detectable_difference(1.0, 0.95, 0.8) == pytest.approx(1.959964 + 0.841621, rel=1e-5)


#: A design that varies both factors, uncorrelated.
CHECK = DesignCheck(n_mixes=10, varies="both", single_factor=None, fixed_at=None, correlation=0.1,
                    vif=1.0, confounded=False, reason="", max_correlation=0.9,
                    diversity_levels=(), volume_levels=(), centre_log2={})


@pytest.mark.parametrize("low, high, verdict", [(0.1, 1.0, "supported"), (-1.0, -0.1, "refuted"),
                                                (-0.5, 0.5, "inconclusive")])
def test_decide(low, high, verdict):
    comparison = Comparison("diversity - volume", {}, "higher is better", estimate=0.0,
                            ci_low=low, ci_high=high, minimum_detectable_difference=1.2)
    assert decide(comparison, CHECK).value == verdict
    confounded = decide(comparison, replace(CHECK, confounded=True, reason="r = 1"))
    assert (confounded.value, confounded.reason) == ("confounded", "r = 1")


def test_missing_baseline_is_a_warning_and_the_rows_are_named(tmp_path, small_results):
    import shutil
    for run_dir in small_results.glob("*.none.pawsx.s*"):
        shutil.rmtree(run_dir)
    result = analyze_loaded(load_results(small_results), FAST, n_jobs=1, progress=False)
    warnings = result.estimates["warnings"]
    assert any("pawsx" in w and "no baseline" in w for w in warnings)
    assert "pawsx" not in result.estimates["targets"]


def test_run_level_outcomes(tmp_path):
    results = simulate_results(tmp_path / "results", replace(GRID, diversity_effect=1.5, volume_effect=0.0))
    loaded = load_results(results)
    result = analyze_loaded(loaded, replace(FAST, outcome="nonenglish_mean"), n_jobs=1, progress=False)
    assert result.estimates["n_rows"] == result.estimates["n_runs"]
    assert result.effect("diversity")["ci_low"] <= 1.5 <= result.effect("diversity")["ci_high"]
    gap = analyze_loaded(loaded, replace(FAST, outcome="transfer_gap"), n_jobs=1, progress=False)
    assert "tatoeba" not in gap.estimates["targets"]  # retrieval has no English score
    assert gap.estimates["comparison"]["weights"] == {"diversity": -1.0, "volume": 1.0}


def test_several_models_need_a_choice(small_results):
    loaded = load_results(small_results)
    loaded.scores.loc[loaded.scores["run_id"].str.contains(".s2"), "model"] = "other"
    with pytest.raises(ResultsError, match="pick one with --model"):
        analyze_loaded(loaded, FAST, n_jobs=1, progress=False)


def test_descriptive_tables(small_results):
    loaded = load_results(small_results)
    result = analyze_loaded(loaded, FAST, n_jobs=1, progress=False)
    table = result.improvement_table
    mixes = result.model_data["mix"].unique()
    assert set(table["mix"]) == set(mixes)
    assert table.groupby("mix")["target_task"].apply(lambda t: t.iloc[-1]).eq("average").all()
    # A cell's mean is the mean over languages of the seed-averaged improvement.
    row = table[(table["target_task"] == "xnli")].iloc[0]
    data = result.model_data
    rows = data[(data["mix"] == row["mix"]) & (data["target_task"] == "xnli")]
    assert row["mean"] == pytest.approx(rows.groupby("language")["improvement"].mean().mean())
    assert row["ci_low"] <= row["mean"] <= row["ci_high"]
    assert set(result.pairwise.columns) >= {"A", "B", "p_corr", "hedges"}
    assert len(result.pairwise) == len(mixes) * (len(mixes) - 1) // 2
    assert result.estimates["descriptives"]["rm_anova"]["F"] > 0
    assert set(result.interaction_table["n_tasks"]) == {1, 2, 4}
    json.dumps(result.estimates, allow_nan=True)


def test_spec_defaults_and_overrides(tmp_path):
    from pathlib import Path
    assert (Path(__file__).parents[1] / "analysis" / "default.toml").read_text() == default_spec_text()
    assert load_spec() == AnalysisSpec()
    path = tmp_path / "spec.toml"
    path.write_text('[analysis]\noutcome = "worst_language"\n[bootstrap]\nresamples = 300\n')
    spec = load_spec(path, resamples=400)
    assert (spec.outcome, spec.resamples) == ("worst_language", 400)
    path.write_text('[analysis]\noutcomes = "score"\n')
    with pytest.raises(ValueError, match="unknown key 'outcomes' in \\[analysis\\]"):
        load_spec(path)
    path.write_text('[analysis]\ndiversity = "entropy"\n')
    with pytest.raises(ValueError, match="'diversity' must be one of"):
        load_spec(path)


def test_interaction_left_out_when_the_grid_cannot_estimate_it(tmp_path):
    # Three mixes give three distinct design points: four coefficients cannot all be estimated.
    mixes = (("one", (("mnli", 16_000),)),
             ("two", (("hellaswag", 16_000), ("ccg", 16_000))),
             ("four", (("mnli", 4_000), ("squad_v1", 4_000), ("hellaswag", 4_000), ("ccg", 4_000))))
    result = _analyze(tmp_path, replace(GRID, mixes=mixes))
    assert [e["term"] for e in result.estimates["effects"]] == ["diversity", "volume"]
    assert any("interaction is not estimable" in w for w in result.estimates["warnings"])
    assert result.verdict in {"supported", "refuted", "inconclusive"}


def test_target_mix_left_out_past_its_mix_limit_with_a_note(tmp_path, monkeypatch):
    from transferstats.analysis import model

    monkeypatch.setattr(model, "TARGET_MIX_MAX_MIXES", 10)   # the grid has 24 mixes
    result = _analyze(tmp_path, GRID)
    assert "target_task:mix" not in result.estimates["model"]["formula"]
    assert any("target_task:mix left out: the grid has 24 mixes, more than the 10" in w
               for w in result.estimates["warnings"])


def test_many_failed_resamples_forbid_a_directional_verdict():
    comparison = Comparison("diversity - volume", {}, "higher is better", estimate=0.7,
                            ci_low=0.5, ci_high=1.0, minimum_detectable_difference=1.0)
    verdict = decide(comparison, CHECK, failed_share=0.3)
    assert verdict.value == "inconclusive" and "30% of the bootstrap resamples" in verdict.reason
    assert decide(comparison, CHECK, failed_share=0.01).value == "supported"


@pytest.mark.slow
def test_bundled_example_recovers_its_truth_with_default_settings(tmp_path, capsys):
    """The README's example: the default simulated grid and the default analysis (1000 BCa
    resamples) recover every true effect within its interval and say 'supported'."""
    settings = SimulationSettings()
    result = _analyze(tmp_path, settings, spec=AnalysisSpec())
    truth = {"diversity": settings.diversity_effect, "volume": settings.volume_effect,
             "diversity:volume": settings.interaction}
    for term, value in truth.items():
        effect = result.effect(term)
        with capsys.disabled():
            print(f"\n{term}: truth {value}, estimate {effect['estimate']:.3f} "
                  f"[{effect['ci_low']:.3f}, {effect['ci_high']:.3f}]", end="")
        assert effect["ci_low"] <= value <= effect["ci_high"]
    comparison = result.estimates["comparison"]
    assert comparison["ci_low"] <= settings.diversity_effect - settings.volume_effect <= comparison["ci_high"]
    assert result.verdict == "supported"
    assert not result.intervals.failed_resamples


def test_pairwise_comparisons_match_pingouin():
    import pandas as pd
    import pingouin as pg

    from transferstats.analysis.descriptives import pairwise_tests

    rng = np.random.default_rng(0)
    data = pd.DataFrame([{"target_language": f"t{i}", "mix": f"m{j}", "seed": seed,
                          "improvement": rng.normal() + 0.1 * j}
                         for i in range(15) for j in range(7) for seed in (1, 2)])
    means = data.groupby(["target_language", "mix"], as_index=False)["improvement"].mean()
    expected = pg.pairwise_tests(data=means, dv="improvement", within="mix",
                                 subject="target_language", padjust="holm", effsize="hedges")
    ours = pairwise_tests(data, "improvement")
    assert isinstance(ours, pd.DataFrame)
    assert ours[["A", "B"]].values.tolist() == expected[["A", "B"]].values.tolist()
    for column in ("T", "dof", "p_unc", "p_corr", "hedges"):
        np.testing.assert_allclose(ours[column].astype(float), expected[column].astype(float),
                                   rtol=1e-9)
